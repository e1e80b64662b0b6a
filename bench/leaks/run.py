"""Precision and recall of `/heap leaks` over a matrix of real Go processes.

Each run starts the demo Go service (deploy/demo) under one GC regime, as one
instance or as a fleet of three where only one leaks, captures it through
heapbot's own Runtime (HTTP, a real redis-server, the registry's gc policy)
at one capture spacing, and asks ``Runtime.leak_report`` — the verdict users,
watches and paged threads get. The GC behaviour is the process's own: GOGC,
GOMEMLIMIT and the load decide when GCs happen; heapbot forces one only where
its policy does (``--gc-policy default``: leak sampling asks for ``?gc=1``;
``off``: never, so most captures repeat the previous GC's heap profile).

Scoring per run: a leaking scenario counts as found when a suspect's function or
own-code caller belongs to it (on a fleet, attributed to the leaking instance);
a harmless scenario, or anything else, named as a suspect is a false positive.
"Undecided" is not a find (it counts against recall) and not a false positive.

    .venv/bin/python bench/leaks/run.py                      # the full matrix (~10 min)
    .venv/bin/python bench/leaks/run.py --quick              # one seed, gc off only
    .venv/bin/python bench/leaks/run.py --case stale          # the issue's stale-profile case
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.analysis.leaks import HeapSite, LeakReport, analyze  # noqa: E402
from bot.analysis.summary import SnapshotSummary  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from bot.settings import Settings  # noqa: E402
from tests.support.demo import build_demo, start_demo  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402
from tests.support.registry import write_registry  # noqa: E402

LEAKS = {"leakmap": "fast", "slice": "fast", "slowleak": "slow", "blocked": "fast",
         "ticker": "fast", "dripleak": "drip"}
HARMLESS = ("cache", "fillcache", "ttlcache", "churn", "pool")

# GC regimes: environment and per-scenario rate factors (churn drives the GC rate).
REGIMES: dict[str, dict[str, object]] = {
    "gogc100-light": {"env": {"GOGC": "100"}, "churn": 0.2},
    "gogc200": {"env": {"GOGC": "200"}, "churn": 1.0},
    "gogcoff-memlimit": {"env": {"GOGC": "off", "GOMEMLIMIT": "80MiB"}, "churn": 1.0},
    "heavy-churn": {"env": {"GOGC": "100"}, "churn": 25.0},
}
# Gaps (seconds) between the 11 captures of a run.
SPACINGS: dict[str, list[float]] = {
    "even": [10.0] * 10,
    "bursty": [2, 2, 2, 45, 2, 2, 2, 45, 2, 2],
    "long-gap": [8, 8, 8, 120, 8, 8, 8, 8, 8, 8],
}
# Held out: never looked at while tuning the thresholds.
HELD_OUT_REGIMES: dict[str, dict[str, object]] = {
    "gogc50": {"env": {"GOGC": "50"}, "churn": 0.5},
}
# Held out too: the sampling rate. Every real Go service runs Go's default
# runtime.MemProfileRate (512 KiB per sample); the cells above run the demo at 512 B.
# These cells run the same fleets at 64 KiB and 512 KiB, with a drip leak of a few
# kB/s beside the demo's leaks, at every spacing and at captures a minute apart.
SAMPLING_RATES = {"512B": 512, "64KiB": 65536, "512KiB": 524288}
HELD_OUT_SPACINGS: dict[str, list[float]] = {"minutely": [60.0] * 10}
# The stale-profile case: default GOGC, leaks fast enough that the heap (and
# so NextGC) keeps doubling and GCs get rare; plain captures, no forced GC.
STALE = {"env": {"GOGC": "100"}, "churn": 0.2, "leak_factor": 8.0}


@dataclass
class Case:
    regime: str
    spacing: str
    fleet: int
    seed: int
    gc_policy: str  # "off" | "default"
    held_out: bool = False
    memprofilerate: int = 512  # bytes per heap sample (runtime.MemProfileRate)
    drip: bool = False  # the leaking instance also runs dripleak (a few kB/s)

    @property
    def name(self) -> str:
        rate = "" if self.memprofilerate == 512 and not self.drip else f"/mpr{self.rate_name}"
        return (f"{self.regime}/{self.spacing}/x{self.fleet}/s{self.seed}/gc-{self.gc_policy}"
                f"{rate}")

    @property
    def rate_name(self) -> str:
        return next((k for k, v in SAMPLING_RATES.items() if v == self.memprofilerate),
                    str(self.memprofilerate))

    @property
    def cell(self) -> str:
        """The held-out rate cell: sampling rate × spacing × fleet."""
        return f"{self.rate_name} {self.spacing} x{self.fleet}"


@dataclass
class Outcome:
    case: Case
    found: dict[str, bool] = field(default_factory=dict)  # leak scenario -> found
    false_positives: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)  # a leak's function called not a leak
    verdict: str = ""
    detail: str = ""  # the report's suspects, undecided and not-suspects with reasons
    error: str = ""
    seconds: float = 0.0


def scenario_of(*names: str) -> str | None:
    for name in names:
        for scenario in sorted((*LEAKS, *HARMLESS), key=len, reverse=True):
            if name.startswith(f"main.{scenario}"):
                return scenario
    return None


def scenarios_arg(leaking: bool, churn: float, leak_factor: float = 1.0,
                  drip: bool = False) -> str:
    if leak_factor != 1.0:  # the stale case: two heap leaks, a goroutine leak, cache, churn
        return f"churn:{churn:g},cache,leakmap:{leak_factor:g},slice:{leak_factor:g},blocked"
    parts = [f"churn:{churn:g}", "cache", "fillcache", "ttlcache", "pool"]
    if leaking:
        parts += ["leakmap", "slice", "slowleak:2", "blocked:0.3", "ticker:0.3"]
        if drip:
            parts.append("dripleak")
    return ",".join(parts)


async def run_case(case: Case, binary: Path, redis_url: str, workdir: Path,
                   dump: Path | None = None) -> Outcome:
    """Start the fleet, capture it on the case's schedule, judge, score."""
    regime = {**REGIMES, **HELD_OUT_REGIMES, "stale": STALE}[case.regime]
    outcome = Outcome(case)
    started = time.monotonic()
    demos = []
    try:
        for i in range(case.fleet):
            env = {**regime["env"], "DEMO_SEED": str(case.seed * 10 + i),  # type: ignore[dict-item]
                   "DEMO_MAX_ITEMS": "2000000", "DEMO_MAX_GOROUTINES": "200000"}
            demos.append(await asyncio.to_thread(
                start_demo, binary, scenarios_arg(
                    i == 0, float(regime["churn"]),  # type: ignore[arg-type]
                    float(regime.get("leak_factor", 1.0)),  # type: ignore[arg-type]
                    case.drip),
                1.0, env, memprofilerate=case.memprofilerate))
        leaking_target = demos[0].url
        service = f"bench{abs(hash(case.name)) % 10**8}"
        config = write_registry(
            workdir / f"{service}.yaml", {service: [d.url for d in demos]},
            gc_triggers=[] if case.gc_policy == "off" else ["sample", "watch", "alert"],
            cooldown_seconds=30 if case.regime == "stale" and case.seed == 2 else 0)
        runtime = await Runtime.create(Settings(config_path=config, redis_url=redis_url))
        try:
            await asyncio.sleep(3.0)  # the scenarios start; the first capture sees them young
            # --sample's trigger (fresh heap unless the policy is off); the stale case
            # is plain user captures inside the default 30 s cooldown.
            trigger = "user" if case.regime == "stale" else "sample"
            for gap in [0.0, *{**SPACINGS, **HELD_OUT_SPACINGS}[case.spacing]]:
                await asyncio.sleep(gap)
                await runtime.capture(service, trigger=trigger, force=case.regime != "stale")
            report = await runtime.leak_report(service)
            if dump is not None:  # what the verdict read, to replay offline or in tests
                summaries = await runtime.summaries(service)
                path = dump / (case.name.replace("/", "_") + ".json")
                path.write_text(json.dumps({
                    "case": case.name, "leaking": demos[0].url,
                    "summaries": [x.to_dict() for x in summaries],
                    # own-code callers the live report read from the raw heap profile
                    "sites": {x.function: x.own_caller for x in report.suspects}}))
        finally:
            await runtime.close()
        judge(outcome, report, leaking_target)
    except Exception as exc:  # a broken run is reported, not hidden
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        for demo in demos:
            with contextlib.suppress(Exception):
                demo.stop()
        outcome.seconds = time.monotonic() - started
    return outcome


def judge(outcome: Outcome, report: LeakReport, leaking_target: str) -> None:
    """Score one report: leaks found (attributed on a fleet), false positives, undecided."""
    case = outcome.case
    regime = {**REGIMES, **HELD_OUT_REGIMES, "stale": STALE}[case.regime]
    outcome.verdict = report.verdict
    outcome.detail = "\n".join(
        [f"  S {s.function} {s.growth_text} {s.attribution} | {'; '.join(s.evidence[:2])}"
         for s in report.suspects]
        + [f"  U {u.function} {u.growth}: {u.reason}" for u in report.undecided]
        + [f"  N {n.function}: {n.reason}" for n in report.not_suspects]
        + [f"  P {sig}" for sig in report.signals])
    for s in report.suspects:
        scenario = scenario_of(s.function, s.own_caller)
        if scenario in LEAKS:
            attributed = case.fleet == 1 or s.instances == [leaking_target] or (
                leaking_target in s.attribution and "only" in s.attribution)
            if attributed:
                outcome.found[scenario] = True
            else:
                outcome.false_positives.append(f"{s.function} (not attributed)")
        else:
            outcome.false_positives.append(f"{s.function} [{scenario or '?'}]")
    outcome.undecided = [u.function for u in report.undecided]
    # A leak's own function cleared (bounded, one-off, noise): a wrong all-clear.
    outcome.cleared = [n.function for n in report.not_suspects
                       if n.kind == "heap" and scenario_of(n.function) in LEAKS]
    leak_factor = float(regime.get("leak_factor", 1.0))  # type: ignore[arg-type]
    running = {part.split(":")[0]
               for part in scenarios_arg(True, 1.0, leak_factor, case.drip).split(",")}
    for leak in LEAKS:
        if leak in running:
            outcome.found.setdefault(leak, False)


def replay(directory: Path, verbose: bool) -> list[Outcome]:
    """Judge the captures of earlier runs (``--dump``) again with the current verdict.

    The live run also reads the latest raw heap profile for own-code callers; dumps keep
    the callers of its suspects, older dumps have none, and callers of runtime frames
    are then guessed from the summaries (a suspect may be scored under another scenario).
    """
    outcomes: list[Outcome] = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        parts = data["case"].split("/")
        rate = parts[5][3:] if len(parts) > 5 else "512B"
        case = Case(parts[0], parts[1], int(parts[2][1:]), int(parts[3][1:]), parts[4][3:],
                    held_out=parts[0] == "gogc50" or len(parts) > 5,
                    memprofilerate=SAMPLING_RATES.get(rate, 512), drip=len(parts) > 5)
        outcome = Outcome(case)
        caps = [SnapshotSummary.from_dict(x) for x in data["summaries"]]
        for obs in (o for cap in caps for o in cap.observations):
            # dumps from before the period was stored: it is the demo's memprofilerate
            # (a checkout from before the period existed judges without it)
            if hasattr(obs, "sample_period"):
                obs.sample_period = obs.sample_period or case.memprofilerate
        sites = {fn: HeapSite("", caller) for fn, caller in data.get("sites", {}).items()
                 if caller}
        report = analyze(caps, sites=sites)
        judge(outcome, report, data["leaking"])
        missed = [k for k, v in outcome.found.items() if not v]
        print(f"{case.name:48} {outcome.verdict:16} missed={','.join(missed) or '-'} "
              f"fp={';'.join(outcome.false_positives) or '-'} undecided={len(outcome.undecided)}")
        if verbose:
            print(outcome.detail)
        outcomes.append(outcome)
    return outcomes


def scores(outcomes: list[Outcome]) -> tuple[float, float, int, int, int]:
    tp = sum(sum(o.found.values()) for o in outcomes)
    fn = sum(sum(not v for v in o.found.values()) for o in outcomes)
    fp = sum(len(o.false_positives) for o in outcomes)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, tp, fp, fn


def table(title: str, outcomes: list[Outcome], key: str) -> None:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[str(getattr(o.case, key))].append(o)
    print(f"\n{title}")
    print(f"{key:18} {'runs':>4} {'precision':>9} {'recall':>7}   tp  fp  fn")
    for name, group in sorted(groups.items()):
        p, r, tp, fp, fn = scores(group)
        print(f"{name:18} {len(group):4d} {p:9.2f} {r:7.2f}  {tp:3d} {fp:3d} {fn:3d}")


def speed_table(outcomes: list[Outcome]) -> None:
    print("\nby leak speed (recall)")
    for speed in ("fast", "slow", "drip"):
        leaks = [k for k, v in LEAKS.items() if v == speed]
        found = sum(o.found.get(k, False) for o in outcomes for k in leaks)
        total = sum(k in o.found for o in outcomes for k in leaks)
        if total:
            print(f"{speed:18} {found}/{total} = {found / total:.2f}")


def rate_tables(outcomes: list[Outcome]) -> None:
    """The held-out sampling-rate cells: per cell, then recall per rate × leak."""
    table("held out: sampling rate (bytes per heap sample) × spacing × fleet", outcomes, "cell")
    print("\nheld out: recall per sampling rate and leak (found/runs)")
    leaks = [k for k in LEAKS if any(k in o.found for o in outcomes)]
    print(f"{'rate':18} " + " ".join(f"{k:>9}" for k in leaks))
    by_rate: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_rate[o.case.rate_name].append(o)
    for rate, group in sorted(by_rate.items(), key=lambda kv: SAMPLING_RATES.get(kv[0], 0)):
        cells = []
        for k in leaks:
            runs = [o for o in group if k in o.found]
            cells.append(f"{sum(o.found[k] for o in runs)}/{len(runs)}")
        print(f"{rate:18} " + " ".join(f"{c:>9}" for c in cells))


def matrix(args: argparse.Namespace) -> list[Case]:
    cases: list[Case] = []
    seeds = [1] if args.quick else [1, 2, 3]
    for seed in seeds:
        for r_index, regime in enumerate(REGIMES):
            for s_index, spacing in enumerate(SPACINGS):
                fleet = 3 if (r_index + s_index + seed) % 2 else 1
                cases.append(Case(regime, spacing, fleet, seed, "off"))
    if args.rates_only:
        return rate_cases()
    if not args.quick:
        for r_index, regime in enumerate(REGIMES):
            for s_index, spacing in enumerate(SPACINGS):
                fleet = 1 if (r_index + s_index) % 2 else 3
                cases.append(Case(regime, spacing, fleet, 7, "default"))
        for spacing in SPACINGS:
            for fleet in (1, 3):
                cases.append(Case("gogc50", spacing, fleet, 101, "off", held_out=True))
        if not args.no_rates:
            cases += rate_cases()
    return cases


def rate_cases() -> list[Case]:
    """Held out: the sampling rate × spacing (minutely included) × 1 or 3 instances, with
    the drip leak; at 512 B too, so the rate's effect is told from the drip leak's."""
    cases: list[Case] = []
    spacings = [*SPACINGS, *HELD_OUT_SPACINGS]
    for r_index, rate in enumerate(SAMPLING_RATES.values()):
        for s_index, spacing in enumerate(spacings):
            fleet = 3 if (r_index + s_index) % 2 else 1
            cases.append(Case("gogc100-light", spacing, fleet, 201, "off", held_out=True,
                              memprofilerate=rate, drip=True))
    return cases


async def main_async(args: argparse.Namespace) -> int:
    if args.replay:
        clock = time.monotonic()
        report_tables(replay(args.replay, args.verbose), clock)
        return 0
    binary = await asyncio.to_thread(build_demo)
    with tempfile.TemporaryDirectory(prefix="heapbot-bench-leaks-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        await asyncio.to_thread(redis.start)
        try:
            if args.case == "stale":
                # seed 2 keeps the default 30 s cooldown: 4 of the 11 captures are stored
                cases = [Case("stale", "even", 1, 1, "off"), Case("stale", "even", 1, 2, "off")]
            else:
                cases = matrix(args)
            cases = [c for c in cases if args.only in c.name]
            limit = asyncio.Semaphore(args.parallel)

            async def one(case: Case) -> Outcome:
                async with limit:
                    outcome = await run_case(case, binary, redis.url, workdir, args.dump)
                missed = [k for k, v in outcome.found.items() if not v]
                print(f"{case.name:48} {outcome.verdict:16} missed={','.join(missed) or '-'} "
                      f"fp={';'.join(outcome.false_positives) or '-'} "
                      f"undecided={len(outcome.undecided)} {outcome.seconds:.0f}s"
                      + (f" ERROR {outcome.error}" if outcome.error else ""), flush=True)
                if args.verbose:
                    print(outcome.detail, flush=True)
                return outcome

            clock = time.monotonic()
            outcomes = list(await asyncio.gather(*(one(c) for c in cases)))
        finally:
            await asyncio.to_thread(redis.stop)
    return report_tables(outcomes, clock)


def report_tables(outcomes: list[Outcome], clock: float) -> int:
    """Precision and recall per cell: tuned matrix, held-out cells, sampling-rate cells."""
    tuned = [o for o in outcomes if not o.case.held_out and not o.error]
    held = [o for o in outcomes if o.case.held_out and not o.error and not o.case.drip]
    rated = [o for o in outcomes if o.case.drip and not o.error]
    errors = [o for o in outcomes if o.error]
    for policy in ("off", "default"):
        subset = [o for o in tuned if o.case.gc_policy == policy]
        if not subset:
            continue
        table(f"gc {policy}: by GC regime", subset, "regime")
        table(f"gc {policy}: by capture spacing", subset, "spacing")
        table(f"gc {policy}: by fleet (instances, one leaking)", subset, "fleet")
        speed_table(subset)
    if held:
        table("held out (not tuned against): by spacing", held, "spacing")
    if rated:
        rate_tables(rated)
        p, r, tp, fp, fn = scores(rated)
        print(f"\nheld out, sampling rates: precision {p:.2f} recall {r:.2f} over "
              f"{len(rated)} runs ({tp} found, {fp} false positives, {fn} missed); "
              f"a leak's function cleared as not a leak {sum(len(o.cleared) for o in rated)} "
              f"times: {', '.join(sorted({f for o in rated for f in o.cleared})) or '-'}")
    p, r, tp, fp, fn = scores(tuned)
    print(f"\noverall (tuned matrix): precision {p:.2f} recall {r:.2f} over {len(tuned)} runs "
          f"({tp} found, {fp} false positives, {fn} missed; a leak's function cleared "
          f"{sum(len(o.cleared) for o in tuned)} times); errors {len(errors)}; "
          f"wall {time.monotonic() - clock:.0f}s")
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, gc off only")
    parser.add_argument("--case", choices=["stale"], help="one named case only")
    parser.add_argument("--parallel", type=int, default=8, help="runs at once")
    parser.add_argument("--rates-only", action="store_true",
                        help="only the held-out sampling-rate cells (12 runs)")
    parser.add_argument("--no-rates", action="store_true",
                        help="the full matrix without the sampling-rate cells")
    parser.add_argument("--dump", type=Path, help="write each run's stored summaries here")
    parser.add_argument("--replay", type=Path,
                        help="judge the runs --dump wrote there again, with today's verdict")
    parser.add_argument("--only", default="",
                        help="run only cases whose name contains this text")
    parser.add_argument("--verbose", action="store_true", help="print each report's findings")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
