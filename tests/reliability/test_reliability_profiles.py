"""Bytes that are not a usable heap profile: each gives one clear ProfileError.

Profiles here are encoded by a small protobuf writer in this file (not by the
engine's own generated code), so the decoder is tested against an independent
encoder. The gzip bomb is built by streaming zlib, never held inflated in
memory; its decode runs in a child process so its peak RSS can be measured.

``CASES`` feeds the profile rows of docs/RELIABILITY.md.
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.errors import ProfileError, UsageError
from bot.pprof import Limits, parse_profile, sample_type_index

FIXTURES = Path(__file__).parents[1] / "fixtures"
HEAP = (FIXTURES / "heap_1.pb.gz").read_bytes()
CPU = (FIXTURES / "cpu.pb.gz").read_bytes()
REPO = Path(__file__).resolve().parents[2]


# -- an independent protobuf writer for profile.proto ----------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 negatives are ten-byte varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def packed(number: int, values: Sequence[int]) -> bytes:
    return field_bytes(number, b"".join(varint(v) for v in values))


@dataclass(slots=True)
class Frame:
    function: str
    file: str = "main.go"
    line: int = 10


def encode_profile(
    samples: Sequence[tuple[Sequence[int], Sequence[int]]],
    frames: dict[int, Frame],
    sample_types: Sequence[tuple[str, str]] = (("inuse_objects", "count"),
                                               ("inuse_space", "bytes")),
    *,
    extra_strings: Sequence[str] = (),
    function_name_index: dict[int, int] | None = None,
    extra_locations: Sequence[bytes] = (),
) -> bytes:
    """A profile.proto message; ``samples`` are (location ids, values) with locations 1:1
    to functions (location id == function id). ``function_name_index`` overrides a
    function's name string index (to make it dangle)."""
    strings = [""]

    def intern(text: str) -> int:
        if text not in strings:
            strings.append(text)
        return strings.index(text)

    out = bytearray()
    for kind, unit in sample_types:
        out += field_bytes(1, field_varint(1, intern(kind)) + field_varint(2, intern(unit)))
    for locations, values in samples:
        out += field_bytes(2, packed(1, locations) + packed(2, values))
    for loc_id, frame in frames.items():
        line = field_varint(1, loc_id) + field_varint(2, frame.line)
        out += field_bytes(4, field_varint(1, loc_id) + field_bytes(4, line))
    for raw in extra_locations:
        out += field_bytes(4, raw)
    for fn_id, frame in frames.items():
        name = (function_name_index or {}).get(fn_id, intern(frame.function))
        out += field_bytes(5, field_varint(1, fn_id) + field_varint(2, name)
                           + field_varint(3, name) + field_varint(4, intern(frame.file)))
    out += field_varint(9, time.time_ns())
    out += field_bytes(11, field_varint(1, intern("space")) + field_varint(2, intern("bytes")))
    out += field_varint(12, 524288)
    for text in extra_strings:
        intern(text)
    for text in strings:  # last, once every string above is interned
        out += field_bytes(6, text.encode())
    return bytes(out)


FRAMES = {1: Frame("main.leak"), 2: Frame("main.main"), 3: Frame("runtime.main")}


def gzip_bomb(inflated: int, chunk: int = 1 << 20) -> bytes:
    """gzip of ``inflated`` zero bytes, built by streaming (a GiB of zeros is ~1 MB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    zeros = bytes(chunk)
    parts = [compressor.compress(zeros) for _ in range(inflated // chunk)]
    parts.append(compressor.flush())
    return b"".join(parts)


# -- bad input, each with the message users see ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileCase:
    case_id: str
    description: str
    data: bytes
    expect: tuple[str, ...]  # any of these fragments (lowercase) is in the message


def _cases() -> list[ProfileCase]:
    rng = random.Random(8)
    good = encode_profile([([1, 2, 3], [4, 4096])], FRAMES)
    return [
        ProfileCase("not-gzip", "plain text, neither gzip nor protobuf",
                    b"this is not a profile\n" * 20, ("not", "profile")),
        ProfileCase("truncated-gzip", "a real heap profile cut in half",
                    HEAP[: len(HEAP) // 2], ("truncated", "incomplete", "corrupt", "gzip")),
        ProfileCase("gzip-of-garbage", "valid gzip around random bytes",
                    gzip.compress(rng.randbytes(4096)), ("not", "profile", "protobuf")),
        ProfileCase("empty", "zero bytes", b"", ("empty", "no data", "not")),
        ProfileCase("dangling-location", "a sample names location 99 that does not exist",
                    encode_profile([([99, 2], [1, 64])], FRAMES), ("location",)),
        ProfileCase("dangling-string", "a function name points past the string table",
                    encode_profile([([1], [1, 64])], FRAMES, function_name_index={1: 10_000}),
                    ("string",)),
        ProfileCase("dangling-function", "a location line names function 77",
                    encode_profile([([5], [1, 64])], FRAMES, extra_locations=[
                        field_varint(1, 5) + field_bytes(4, field_varint(1, 77))]),
                    ("function",)),
        ProfileCase("value-count-mismatch", "a sample with 3 values for 2 sample types",
                    encode_profile([([1], [1, 2, 3])], FRAMES), ("value",)),
        ProfileCase("truncated-protobuf", "a raw protobuf cut mid-field",
                    good[: len(good) - 7], ("truncat", "not", "protobuf", "corrupt")),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_bad_profile_gives_one_clear_error(case: ProfileCase) -> None:
    with pytest.raises(ProfileError) as raised:
        parse_profile(case.data)
    message = raised.value.user_message()
    assert any(fragment in message.lower() for fragment in case.expect), message
    assert "Traceback" not in message and len(message) < 600


def test_gzip_bomb_stops_at_the_limit_without_inflating() -> None:
    bomb = gzip_bomb(256 << 20)  # 256 MiB of zeros, ~260 kB compressed
    assert len(bomb) < 1 << 20
    started = time.perf_counter()
    with pytest.raises(ProfileError) as raised:
        parse_profile(bomb, Limits(max_compressed=64 << 20, max_decompressed=16 << 20))
    assert time.perf_counter() - started < 10
    message = raised.value.user_message().lower()
    assert "16" in message and ("limit" in message or "larger" in message or "over" in message)


@pytest.mark.slow
def test_gigabyte_gzip_bomb_with_default_limits_keeps_memory_bounded(tmp_path: Path) -> None:
    """A few MB inflating to 4 GiB, default limits, in a child process: peak RSS reported."""
    bomb_path = tmp_path / "bomb.gz"
    with open(bomb_path, "wb") as out:  # streamed to disk: never 4 GiB in memory
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(1 << 20)
        for _ in range(4096):
            out.write(compressor.compress(zeros))
        out.write(compressor.flush())
    assert bomb_path.stat().st_size < 8 << 20
    script = (
        "import json, re, sys, time\n"
        "from bot.pprof import parse_profile\n"
        "from bot.errors import ProfileError\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    parse_profile(data); outcome = 'parsed'\n"
        "except ProfileError as exc:\n"
        "    outcome = exc.user_message()\n"
        # VmHWM, not ru_maxrss: Linux carries the parent's peak RSS across fork+exec into
        # ru_maxrss, so late in a suite the child "peaked" at pytest's own size
        "status = open('/proc/self/status').read()\n"
        "rss = int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) * 1024\n"
        "print(json.dumps({'outcome': outcome, 'rss': rss, 's': time.perf_counter() - t}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(bomb_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"4 GiB gzip bomb: {result}")
    assert result["outcome"] != "parsed"
    assert "512" in result["outcome"] or "limit" in result["outcome"].lower()
    # the bomb is measured without being held: at most the 64 MiB first pass, never the
    # 512 MiB cap (let alone 4 GiB), on top of the interpreter and the 4 MB input
    assert result["rss"] < 256 << 20, result


def test_zero_samples_is_a_clear_answer() -> None:
    """A heap profile with no samples has nothing to show: say so, once."""
    with pytest.raises(ProfileError) as raised:
        parse_profile(encode_profile([], FRAMES))
    assert "no samples" in raised.value.user_message()


def test_negative_values_are_kept_not_crashed_on() -> None:
    """pprof allows negative values (diff bases). Expected numbers come from pprof itself:
    ``go tool pprof -top`` on the same bytes says "4kB, 33.33% of 12kB total" (its total
    sums absolute values) with main.leak flat 4kB."""
    data = encode_profile([([1, 2], [-3, -4096]), ([1, 2], [5, 8192])], FRAMES)
    profile = parse_profile(data)
    from bot.analysis.top import TopOptions, top

    report = top(profile, TopOptions(sample_type="inuse_space"))
    pprof = _pprof_top(data, "inuse_space")
    assert pprof["main.leak"] == "4kB" and "of 12kB total" in pprof["header"]
    assert report.total == 12 * 1024
    assert report.rows[0].function == "main.leak" and report.rows[0].flat == 4096
    assert round(report.rows[0].flat_pct, 2) == 33.33


def _pprof_top(data: bytes, sample_index: str) -> dict[str, str]:
    """function → flat, plus the "Showing nodes…" header, from ``go tool pprof -top``."""
    import tempfile

    from bot.gotool import find_go, go_env

    with tempfile.NamedTemporaryFile(suffix=".pb.gz") as handle:
        handle.write(gzip.compress(data))
        handle.flush()
        out = subprocess.run([find_go(), "tool", "pprof", "-top", f"-sample_index={sample_index}",
                              handle.name], env=go_env(), capture_output=True, text=True,
                             timeout=120, check=True).stdout
    rows = {"header": next(ln for ln in out.splitlines() if ln.startswith("Showing"))}
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) == 6 and parts[1].endswith("%"):
            rows[parts[5]] = parts[0]
    return rows


def test_cpu_profile_where_a_heap_profile_was_expected() -> None:
    profile = parse_profile(CPU)
    with pytest.raises(UsageError) as raised:
        sample_type_index(profile, "inuse_space")
    message = raised.value.user_message()
    assert "inuse_space" in message
    assert "cpu" in message or "samples" in message  # names the types it does have


@pytest.mark.slow
def test_millions_of_samples_decode_in_bounded_time() -> None:
    """2 million distinct samples (~20 MB of protobuf): decodes, totals are exact."""
    frames = {i: Frame(f"main.f{i}", line=i) for i in range(1, 1001)}
    rng = random.Random(1)
    count = 2_000_000
    ids = [b""] + [varint(n) for n in range(1, 1001)]  # cached: encoding 2M is the slow part
    values = [varint(n) for n in range(4097)]
    body = bytearray()
    total = 0
    for i in range(count):
        locations = ids[1 + i % 1000] + ids[1 + (i // 1000) % 1000]
        value = 1 + rng.randrange(4096)
        total += value
        counts = values[1] + values[value]
        sample = (b"\x0a" + bytes([len(locations)]) + locations
                  + b"\x12" + bytes([len(counts)]) + counts)
        body += b"\x12" + bytes([len(sample)]) + sample
    header = encode_profile([], frames)
    data = header + bytes(body)
    started = time.perf_counter()
    profile = parse_profile(data)
    elapsed = time.perf_counter() - started
    print(f"2M samples, {len(data) / 1e6:.1f} MB: parsed in {elapsed:.2f}s")
    from bot.analysis.top import TopOptions, top

    report = top(profile, TopOptions(sample_type="inuse_space", node_count=5))
    assert report.total == total
    assert elapsed < 60
