"""Run every benchmark, each in its own process, and print where the results went.

    .venv/bin/python -m benchmarks.run            # the recorded figures -> benchmarks/results/<name>.{json,md}
    .venv/bin/python -m benchmarks.run --quick    # a fast smoke -> benchmarks/results/quick/
    .venv/bin/python -m benchmarks.run --only model,train

Results are appended (one record per run, keyed by timestamp and commit), never overwritten. Order matters a little:
`train` reads the newest `loader` and `model` results of the same mode for its "on paper" section.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from benchmarks.common import MODES, REPO, load_avg

BENCHMARKS = ("loader", "model", "train")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=MODES, default="full")
    p.add_argument("--quick", dest="mode", action="store_const", const="quick", help="same as --mode quick")
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list among {', '.join(BENCHMARKS)}")
    p.add_argument("--out", default=None, help="results directory (default: benchmarks/results[/quick])")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the measuring processes (default 1)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    bad = [n for n in names if n not in BENCHMARKS]
    if bad: p.error(f"--only: unknown benchmark(s) {bad}; expected some of {', '.join(BENCHMARKS)}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    print(f"benchmarks {names} ({args.mode}); load average {load_avg()} on {os.cpu_count()} CPUs", flush=True)
    failed = []
    for n in names:
        cmd = [sys.executable, "-m", f"benchmarks.{n}", "--mode", args.mode, "--threads", str(args.threads)]
        if args.out: cmd += ["--out", args.out]
        t0 = time.perf_counter()
        print(f"\n=== {n}: {' '.join(cmd[1:])}", flush=True)
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
        print(f"=== {n}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc: failed.append(n)
    if failed:
        print(f"\nFAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
