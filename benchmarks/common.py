"""What every benchmark shares: the machine description, timing helpers, and the results files.

Results live in `benchmarks/results/<name>.json` (every run appended as a record, keyed by its timestamp and git commit:
nothing is ever overwritten) and `benchmarks/results/<name>.md` (a readable page rendered from that JSON: the newest
full run in detail, then one line per run). Timings on a shared machine are noisy: compare figures measured side by
side in one run (ratios), take medians over repeats, and read the load average recorded with each run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SCHEMA = 1
MODES = ("full", "quick", "tiny")
RECORD_KEYS = ("benchmark", "schema", "run_id", "timestamp", "mode", "git", "machine", "load_avg", "settings",
               "results", "summary", "notes", "seconds")
MACHINE_KEYS = ("cpu_model", "logical_cpus", "usable_cpus", "memory_gib", "python", "platform", "versions", "torch_threads")


# ------------------------------------------------------------------------------------------------ the machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    "The CPU features that decide matmul/conv speed (AVX2/AVX-512/bf16/AMX)."
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags")), [])
    keep = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx512_fp16")
    return [f for f in keep if f in flags]


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"): return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


def git_info() -> dict:
    "Commit of the working tree and whether it has uncommitted changes (benchmark scripts themselves excluded)."
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "crisscross", "configs"))
        return {"commit": commit or None, "short": commit[:10] or None, "dirty_library": dirty}
    except Exception:
        return {"commit": None, "short": None, "dirty_library": None}


def machine_info() -> dict:
    "CPU model, cores, memory, library versions, torch threads: what a figure needs beside it to mean anything."
    import torch
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {m: _version(m) for m in ("torch", "torchvision", "torchaudio", "decord", "av", "numpy", "pillow",
                                               "crisscross")},
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": bool(torch.cuda.is_available()),
    }


def load_avg() -> list[float]:
    "1, 5 and 15 minute load averages (other jobs on the machine make timings noisy)."
    try: return [round(x, 2) for x in os.getloadavg()]
    except OSError: return []


def maxrss_mib() -> float:
    """Peak resident memory of this process so far (MiB): VmHWM of /proc/self/status, which starts afresh at exec
    (`getrusage`'s ru_maxrss does not: Linux carries the parent's peak into a child across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"): return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    "Current resident memory of this process (MiB)."
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


# ------------------------------------------------------------------------------------------------ timing
def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def iqr(xs):
    "(25th, 75th) percentiles, to show the spread of repeats."
    xs = sorted(x for x in xs if x is not None)
    if len(xs) < 2: return [xs[0], xs[0]] if xs else None
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return [q[0], q[2]]


class Clock:
    "Wall time and this process's CPU time (all its threads) of a block."
    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self
    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def rotate(items: list, r: int) -> list:
    "`items` rotated by `r` (each repeat starts with a different variant, so drift in load hits all alike)."
    r %= max(len(items), 1)
    return items[r:] + items[:r]


# ------------------------------------------------------------------------------------------------ results files
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def new_record(name: str, mode: str, settings: dict) -> dict:
    "A run record with everything but the results; `finish` completes it."
    if mode not in MODES: raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    git = git_info()
    ts = _now()
    return {"benchmark": name, "schema": SCHEMA, "run_id": f"{ts}-{git['short'] or 'nogit'}", "timestamp": ts,
            "mode": mode, "git": git, "machine": machine_info(), "load_avg": {"start": load_avg()},
            "settings": settings, "results": {}, "summary": {}, "notes": [], "_t0": time.perf_counter()}


def finish(record: dict) -> dict:
    record["load_avg"]["end"] = load_avg()
    record["seconds"] = round(time.perf_counter() - record.pop("_t0"), 1)
    return record


def check_record(rec: dict) -> None:
    "Raise AssertionError unless `rec` follows the run-record schema (the keys, not the speeds)."
    missing = [k for k in RECORD_KEYS if k not in rec]
    assert not missing, f"run record lacks {missing}"
    assert rec["schema"] == SCHEMA, rec["schema"]
    assert rec["mode"] in MODES, rec["mode"]
    assert isinstance(rec["results"], dict) and isinstance(rec["summary"], dict) and isinstance(rec["notes"], list)
    miss = [k for k in MACHINE_KEYS if k not in rec["machine"]]
    assert not miss, f"machine description lacks {miss}"
    assert {"torch", "decord", "av"} <= set(rec["machine"]["versions"]), rec["machine"]["versions"]
    assert "commit" in rec["git"] and "start" in rec["load_avg"] and "end" in rec["load_avg"]
    for k, v in rec["summary"].items():
        assert v is None or isinstance(v, (int, float, str, bool)), f"summary[{k!r}] = {v!r} is not a scalar"
    json.dumps(rec)  # serialisable


def _atomic_write(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_results(name: str, out_dir=RESULTS) -> dict:
    "The results file of benchmark `name` (`{'benchmark', 'schema', 'runs': [...]}`), empty if there is none yet."
    path = Path(out_dir) / f"{name}.json"
    if not path.exists(): return {"benchmark": name, "schema": SCHEMA, "runs": []}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path}: not a benchmark results file (expected an object with a 'runs' list)")
    return data


def latest_run(name: str, out_dir=RESULTS, modes=("full",)) -> dict | None:
    "The newest run of benchmark `name` in one of `modes`, or None."
    try: runs = load_results(name, out_dir)["runs"]
    except (ValueError, json.JSONDecodeError): return None
    runs = [r for r in runs if r.get("mode") in modes]
    return runs[-1] if runs else None


def save_record(record: dict, render, out_dir=RESULTS) -> tuple[Path, Path]:
    """Append `record` to `<out_dir>/<name>.json` (history kept) and re-render `<name>.md` from the whole file with
    `render(record) -> markdown` for the newest full run (or the newest run when there is no full one)."""
    check_record(record)
    out_dir = Path(out_dir); out_dir.mkdir(parents=True, exist_ok=True)
    name = record["benchmark"]
    data = load_results(name, out_dir)
    data["runs"].append(record)
    jpath, mpath = out_dir / f"{name}.json", out_dir / f"{name}.md"
    _atomic_write(jpath, json.dumps(data, indent=1) + "\n")
    _atomic_write(mpath, render_page(data, render))
    return jpath, mpath


def machine_line(rec: dict) -> str:
    m, v = rec["machine"], rec["machine"]["versions"]
    return (f"{m['cpu_model']} ({m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs, "
            f"{m['memory_gib']} GiB; {', '.join(m.get('cpu_flags') or []) or 'no AVX flags read'}), "
            f"Python {m['python']}, torch {v['torch']}, torchvision {v['torchvision']}, torchaudio {v['torchaudio']}, "
            f"decord {v['decord']}, av {v['av']}, numpy {v['numpy']}")


def render_page(data: dict, render) -> str:
    runs = data["runs"]
    full = [r for r in runs if r["mode"] == "full"]
    main = full[-1] if full else runs[-1]
    g = main["git"]
    lines = [f"# Benchmark `{data['benchmark']}`", "",
             f"Rendered from `{data['benchmark']}.json` ({len(runs)} run(s) recorded; the JSON keeps every run). "
             f"Shown in detail: run `{main['run_id']}` (mode {main['mode']}).", "",
             f"- **Machine**: {machine_line(main)}",
             f"- **Code**: commit `{g.get('commit')}`{' (library modified, uncommitted)' if g.get('dirty_library') else ''}",
             f"- **Date**: {main['timestamp']}; took {main['seconds']} s",
             f"- **Load average** (1/5/15 min) at start {main['load_avg'].get('start')}, at end {main['load_avg'].get('end')}"
             f" on {main['machine']['usable_cpus']} CPUs: other jobs were running when it is near or above the CPU count.",
             f"- **Torch threads**: {main['machine']['torch_threads']}", ""]
    lines += [render(main).rstrip(), ""]
    if main["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in main["notes"]] + [""]
    keys = []
    for r in runs:
        keys += [k for k in r["summary"] if k not in keys]
    lines += ["## History (one line per run)", "",
              "| run | mode | load avg (start) | " + " | ".join(keys) + " |",
              "|---|---|---|" + "---|" * len(keys)]
    for r in runs:
        cells = [_fmt(r["summary"].get(k)) for k in keys]
        lines.append(f"| `{r['run_id']}` | {r['mode']} | {r['load_avg'].get('start', [''])[0] if r['load_avg'].get('start') else ''} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(x, digits: int = 3) -> str:
    if x is None: return "–"
    if isinstance(x, bool): return str(x)
    if isinstance(x, int): return f"{x:,}"
    if isinstance(x, float):
        if x != x: return "nan"
        if x == 0: return "0"
        a = abs(x)
        if a >= 1e7: return f"{x:.3g}"
        if a >= 1000: return f"{x:,.0f}"
        if a >= 100: return f"{x:.0f}"
        return f"{x:.{digits}g}"
    return str(x)


fmt = _fmt


def table(header: list[str], rows: list[list]) -> str:
    "A markdown table; floats formatted to 3 significant digits."
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ command line
def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--mode", choices=MODES, default="full",
                   help="full: the recorded figures; quick: a fast smoke (~1-2 min); tiny: the test suite's (< 10 s)")
    p.add_argument("--quick", dest="mode", action="store_const", const="quick", help="same as --mode quick")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results; benchmarks/results/quick "
                                               "for --quick, so that smoke runs do not join the recorded history)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the measuring process (default 1)")
    return p


def out_dir(args) -> Path:
    if args.out: return Path(args.out)
    return RESULTS if args.mode == "full" else RESULTS / args.mode


def set_threads(n: int):
    import torch
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)  # children (DataLoader workers, subprocesses) inherit it


def shared_av_clips() -> Path | None:
    "`<shared data>/av_clips` when present ($CRISSCROSS_SHARED_DATA or ../shared/data), else None."
    from crisscross.manifest import shared_data_dir
    d = shared_data_dir()
    if d is None:
        cand = REPO.parent / "shared" / "data"
        d = cand if cand.is_dir() else None
    p = Path(d) / "av_clips" if d is not None else None
    return p if p is not None and p.is_dir() else None


def demo_manifest(n_pretrain: int, root=None, progress: bool = False) -> Path:
    """A demo manifest with `n_pretrain` pre-training clips (no probe splits), generated where missing. The default root
    is the demo's own (`~/.cache/crisscross/demo` or $CRISSCROSS_DEMO_ROOT): clips are deterministic, so the media the
    demo already generated are reused and the benchmark only writes what is missing plus its own manifest."""
    from crisscross.demo import default_demo_root, generate_demo
    root = Path(root) if root is not None else default_demo_root()
    return generate_demo(root, size="xs", n_clips={"pretrain": n_pretrain, "train": 0, "val": 0, "test": 0},
                         progress=progress, workers=2)


def print_summary(record: dict, paths):
    print(f"\n{record['benchmark']}: {record['mode']} run {record['run_id']} in {record['seconds']} s "
          f"(load avg {record['load_avg']['start']} -> {record['load_avg']['end']})")
    for k, v in record["summary"].items():
        print(f"  {k:48s} {_fmt(v)}")
    for p in paths: print(f"  -> {p}")
    sys.stdout.flush()
