"""Random Go programs that allocate through random call graphs, for comparisons with pprof.

Each program has noinline functions that call each other (with recursion, bounded
by depth), small helpers the compiler inlines (so locations carry several lines),
and allocations kept alive or dropped, so every heap sample type differs. It runs
with MemProfileRate=1 and writes its heap profile.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from bot.gotool import find_go, go_env


def program(seed: int, functions: int = 9, helpers: int = 4) -> str:
    rnd = random.Random(seed)
    out = ["package main", "", 'import (\n\t"os"\n\t"runtime"\n\t"runtime/pprof"\n)', "",
           "var keep [][]byte", "var sink []byte", ""]
    for h in range(helpers):
        size = rnd.choice([8, 24, 64, 200, 1024])
        out.append(f"func h{h}(n int) []byte {{ return make([]byte, n%{size}+{size}) }}")
        out.append("")
    for i in range(functions):
        body = ["\tif d > 6 {", "\t\treturn", "\t}"]
        for _ in range(rnd.randint(0, 2)):
            size = rnd.choice([16, 48, 96, 512, 4096])
            if rnd.random() < 0.5:
                body.append(f"\tkeep = append(keep, make([]byte, {size}+x%17))")
            else:
                body.append(f"\tsink = make([]byte, {size}+x%13)")
        if rnd.random() < 0.7:
            h = rnd.randrange(helpers)
            target = "keep = append(keep, " if rnd.random() < 0.6 else "sink = ("
            body.append(f"\t{target}h{h}(x))")
        callees = [rnd.randrange(functions) for _ in range(rnd.randint(1, 3))]
        body.append(f"\tswitch x % {len(callees) + 1} {{")
        for k, c in enumerate(callees):
            body.append(f"\tcase {k}:")
            body.append(f"\t\tf{c}(d+1, x/3+{k})")
        body.append("\t}")
        out += ["//go:noinline", f"func f{i}(d, x int) {{", *body, "}", ""]
    out += [
        "func main() {",
        "\truntime.MemProfileRate = 1",
        f"\tfor i := 0; i < {rnd.randint(2000, 5000)}; i++ {{",
        f"\t\tf{rnd.randrange(functions)}(0, i)",
        f"\t\tf{rnd.randrange(functions)}(0, i*7)",
        "\t}",
        "\truntime.GC()",
        "\tf, err := os.Create(os.Args[1])",
        "\tif err != nil {",
        "\t\tpanic(err)",
        "\t}",
        '\tpprof.Lookup("heap").WriteTo(f, 0)',
        "\tf.Close()",
        "}",
    ]
    return "\n".join(out) + "\n"


def build_and_run(seed: int, workdir: Path) -> Path:
    """Write, build and run the program of ``seed``; return its heap profile's path."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text("module randheap\n\ngo 1.22\n")
    (workdir / "main.go").write_text(program(seed))
    env = go_env()
    env["GOFLAGS"] = "-mod=mod"
    subprocess.run([find_go(), "build", "-o", "prog", "."], cwd=workdir, env=env, check=True,
                   capture_output=True, timeout=300)
    profile = workdir / "heap.pb.gz"
    subprocess.run([str(workdir / "prog"), str(profile)], cwd=workdir, check=True,
                   capture_output=True, timeout=120)
    return profile
