"""Where the CPU of a plain-HTTP `tracker check` pass goes: start-up, fetching, observing, writing.

    .venv/bin/python bench/http_breakdown.py [--n 2000] [--hosts 8] [--rounds 3]

bench/throughput.py compares whole `tracker check` runs with a bare fetch-and-parse loop. This script says
what the difference is made of, by ablation, on the same generated pages and server (bench/common.py):
each variant is a child process that loads the same config as throughput.py's pass 1, opens a fresh SQLite
database and runs the pass in one process (`check_in_processes(processes=1)`), with parts of the pipeline
replaced by no-ops:

- full:               the real pass;
- without observing:  `tracker.pipeline.observe_page` (bot-wall check + product extraction) returns a fixed
                      observation instead of reading the page;
- without writes too: also `Checker._write` (the group-committed record_checks) writes nothing.

It also answers what the pass-1 targets of bench/throughput.py (60 % of the bare loop's pages/s) would need
from extraction: in each round, the full pass and the pass without observing run once more as whole
processes split over processes as `tracker check` splits them (one per core), timed by wall clock like
throughput.py's runs, next to the bare loop. If the pass without observing is already below 60 % of the bare
loop, no speed-up of extraction alone can reach the target.

So observing = full - without observing; writing = without observing - without writes; what is left is
fetching (aiohttp, the per-domain gates, the page digest) and the pipeline's own bookkeeping. Start-up is
the CPU spent before the pass (imports, config, database, planning). CPU is process CPU (user + system)
per page, the median of --rounds interleaved rounds; the bare aiohttp + lexbor loop of throughput.py runs
in each round for reference. Only CPU is reported: wall time adds the server's share of the 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from common import PY, Server, machine, run_measured  # noqa: E402

VARIANTS = ("full", "without observing", "without observing or writes")


def _child(config_path: str, variant: str, processes: str = "1") -> None:
    """One measured pass (run as a child process): in one process, or split as `tracker check` splits it
    (processes "auto")."""
    from decimal import Decimal

    from tracker import pipeline
    from tracker.app import check_in_processes, open_database
    from tracker.config import load_config
    from tracker.store import Observed, Recorded

    if variant != "full":
        def fixed_observation(page, product=None, selectors=None):  # type: ignore[no-untyped-def]
            return Observed("ok", price=Decimal("1.00"), currency="EUR")

        pipeline.observe_page = fixed_observation  # observe_product looks it up at call time
    if variant == "without observing or writes":
        async def no_write(self, fn):  # type: ignore[no-untyped-def]
            return fn.outcome(Recorded(duplicate=False))

        pipeline.Checker._write = no_write  # type: ignore[method-assign]
    config = load_config(Path(config_path))
    db = open_database(config)
    import gc

    gc.freeze()  # as `tracker check` does before its pass
    before = time.process_time()
    wall = time.perf_counter()
    summary = check_in_processes(config, db, processes=None if processes == "auto" else int(processes))
    statuses: dict[str, int] = {}
    for counts in summary.counts.values():
        for status, k in counts.items():
            statuses[status] = statuses.get(status, 0) + k
    # start-up: this process's CPU before the pass, from the interpreter's start (as for `tracker check`)
    print(json.dumps({"startup_cpu": before, "pass_cpu": time.process_time() - before,
                      "pass_wall": time.perf_counter() - wall, "statuses": statuses}))


def run_child(argv: list[str]) -> dict:
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bare_run(url_file: Path, connections: int, pages: int):  # -> common.Measured
    """throughput.py's bare loop (its run: every price checked)."""
    import throughput

    m = throughput.run_bare("bare", [PY, str(HERE / "throughput.py"), "_bare_http", str(url_file), str(connections)],
                            pages)
    if m.ok != pages:
        raise SystemExit(f"bare loop: {m.notes[-1]}")
    return m


def check_statuses(variant: str, statuses: dict[str, int], pages: int) -> None:
    if statuses != {"ok": pages}:
        raise SystemExit(f"{variant}: unexpected statuses {statuses}")


def whole_pass_wall(cfg: Path, variant: str, pages: int) -> float:
    """Wall time of a whole process running the pass split as `tracker check` splits it."""
    m = run_measured(variant, [PY, __file__, "_child", str(cfg), variant, "auto"], pages=pages)
    if m.returncode != 0:
        raise SystemExit(f"{variant} (whole process) failed: {m.stderr.strip()[-300:]}")
    check_statuses(f"{variant} (whole process)", json.loads(m.stdout.strip().splitlines()[-1])["statuses"], pages)
    return m.wall_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="static pages (default 2000)")
    ap.add_argument("--hosts", type=int, default=8, help="distinct 127.0.0.x hosts = rivals (default 8)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are shown (default 3)")
    args = ap.parse_args()

    import throughput

    work = Path(tempfile.mkdtemp(prefix="rw-breakdown-"))
    print(f"machine: {machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print(f"pages: {args.n} static (~10 KB, JSON-LD + markup price) over {args.hosts} hosts; one process; "
          f"median of {args.rounds} rounds\n")
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    bare: list[float] = []
    walls: dict[str, list[float]] = {"bare": [], "full": [], "without observing": []}
    try:
        with Server(args.n, 0) as server:
            static = throughput.urls(server.port, args.n, args.hosts, "p")
            (work / "static.txt").write_text("\n".join(static))
            for r in range(args.rounds):
                m = bare_run(work / "static.txt", 32, args.n)
                bare.append(m.cpu_s)
                walls["bare"].append(m.wall_s)
                for i, variant in enumerate(VARIANTS):
                    db = work / f"r{r}-{i}.db"
                    cfg = throughput.tracker_config(work / f"r{r}-{i}.json", db, static, args.hosts, "http", 8)
                    res = run_child([PY, __file__, "_child", str(cfg), variant])
                    check_statuses(variant, res["statuses"], args.n)
                    results[variant].append(res)
                for variant in ("full", "without observing"):
                    cfg = throughput.tracker_config(work / f"w{r}-{variant[0]}.json", work / f"w{r}-{variant[0]}.db",
                                                    static, args.hosts, "http", 8)
                    walls[variant].append(whole_pass_wall(cfg, variant, args.n))
                print(f"  round {r + 1}: " + ", ".join(
                    f"{v} {1000 * results[v][-1]['pass_cpu'] / args.n:.2f} ms/page" for v in VARIANTS), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(variant: str, key: str) -> float:
        return statistics.median(x[key] for x in results[variant])

    per_page = {v: 1000 * med(v, "pass_cpu") / args.n for v in VARIANTS}
    startup = statistics.median(x["startup_cpu"] for v in VARIANTS for x in results[v])
    observing = per_page["full"] - per_page["without observing"]
    writing = per_page["without observing"] - per_page["without observing or writes"]
    rest = per_page["without observing or writes"]
    bare_pp = 1000 * statistics.median(bare) / args.n
    total = per_page["full"] + 1000 * startup / args.n
    print(f"\n{'part of a pass-1 check (CPU per page)':<52} {'ms':>6} {'share':>7}")
    print("-" * 67)
    for label, value in (
            ("start-up (imports, config, database, plan), spread", 1000 * startup / args.n),
            ("observing (bot-wall check + product extraction)", observing),
            ("writing (record_checks, group commit, SQLite)", writing),
            ("fetching + pipeline (aiohttp, gates, digest)", rest)):
        print(f"{label:<52} {value:>6.2f} {100 * value / total:>6.1f} %")
    print("-" * 67)
    print(f"{'tracker, whole process':<52} {total:>6.2f}")
    print(f"{'bare aiohttp + lexbor loop, whole process':<52} {bare_pp:>6.2f}")
    print(f"\nstart-up: {startup:.2f} s CPU before the first page (median); pass wall (one process): "
          + ", ".join(f"{v} {med(v, 'pass_wall'):.2f} s" for v in VARIANTS))
    wall = {k: statistics.median(v) for k, v in walls.items()}
    print("\nwhole processes split as `tracker check` splits them, wall (median): "
          f"full {wall['full']:.2f} s, without observing {wall['without observing']:.2f} s; "
          f"bare loop {wall['bare']:.2f} s")
    for v in ("full", "without observing"):
        share = 100 * wall["bare"] / wall[v]
        print(f"  {v:<20} {share:5.1f} % of the bare loop's pages/s (target >= 60 %: "
              f"{'OK' if share >= 60 else 'BELOW'})")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(*sys.argv[2:5])
    else:
        main()
