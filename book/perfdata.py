"""Read the committed benchmark results (`benchmarks/results/<name>.json`) and render them for the book's performance
chapter: the machine, the loader, the model and the training figures, and which targets of issue 8 are met.

The book never benchmarks. `make bench` appends one record per run to each results file (never overwriting); this
module picks the newest full run of each benchmark and turns its figures into tables and sentences, so a page always
shows the committed numbers with the machine and the run id they came from. Figures are ratios measured side by side
in one run (the machines are shared and small): absolute times of different runs are not comparable.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

BOOK = Path(__file__).resolve().parent
REPO = BOOK.parent
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))

from benchmarks.common import fmt, load_results, machine_line  # noqa: E402

#: issue 8's targets
LOADER_TARGET = 3.0      # clip-pairs per CPU-second, ours / frame-by-frame baseline
WAIT_TARGET = 0.10       # data wait fraction of the step time at the demo setting, default workers
STEP_TARGET = 1.3        # training step, best option / straightforward fp32
LOADER_VARIANTS = ("ours/decord", "ours/pyav", "ours/cache", "ours/cache+fast", "baseline")   # +fast: VideoAugment(ops="fast"), opt-in
FLOORS = {"ours/decord": "decode/decord", "ours/pyav": "decode/pyav", "ours/cache": "cache-read",
          "ours/cache+fast": "cache-read", "baseline": "baseline-decode"}


# ---------------------------------------------------------------------------------------------------- records
def latest(name: str, results_dir=None, mode: str = "full") -> dict | None:
    "The newest `mode` run of benchmark `name`, or None when there is none."
    runs = [r for r in load_results(name, results_dir or RESULTS)["runs"] if r.get("mode") == mode]
    return runs[-1] if runs else None


def latest_all(results_dir=None) -> dict:
    "`{'loader': rec|None, 'model': ..., 'train': ...}`."
    return {n: latest(n, results_dir) for n in ("loader", "model", "train")}


def history(name: str, results_dir=None, mode: str = "full") -> list:
    return [r for r in load_results(name, results_dir or RESULTS)["runs"] if r.get("mode") == mode]


def machine_table(recs: dict) -> pd.DataFrame:
    "One row per benchmark: its run id, date, machine, code and load (what every figure needs beside it)."
    rows = []
    for name, r in recs.items():
        if r is None: continue
        la = r["load_avg"]
        rows.append({"benchmark": name, "run": r["run_id"], "machine": machine_line(r),
                     "torch threads": r["machine"]["torch_threads"],
                     "code": (r["git"].get("short") or "?") + (" + uncommitted library changes" if r["git"].get("dirty_library") else ""),
                     "load average at start / end (1 min)": f"{(la.get('start') or ['?'])[0]} / {(la.get('end') or ['?'])[0]} "
                                                            f"on {r['machine']['usable_cpus']} CPUs",
                     "took": f"{fmt(r['seconds'])} s"})
    return pd.DataFrame(rows)


def same_machine(recs: dict) -> bool:
    "Whether the newest runs were all taken on one kind of machine (CPU model and count)."
    keys = {(r["machine"]["cpu_model"], r["machine"]["usable_cpus"]) for r in recs.values() if r is not None}
    return len(keys) <= 1


# ---------------------------------------------------------------------------------------------------- loader
def loader_ratio(rec: dict, source: str, variant: str) -> float:
    """Per-core ratio of `variant` to the baseline: the record's own (the median of the ratios within each repeat) when
    it has one, else the ratio of the medians."""
    R = rec["results"][source]
    key = f"ours_{variant.split('/')[1].replace('+', '_')}_vs_baseline_cpu" if variant.startswith("ours/") else None
    if key and key in R.get("ratios", {}): return R["ratios"][key]
    return R["variants"][variant]["pairs_per_cpu_s"] / R["variants"]["baseline"]["pairs_per_cpu_s"]


def loader_table(rec: dict, source: str) -> pd.DataFrame:
    """Clip-pairs/s (wall and per CPU-second) of each pipeline, against the baseline (the median of within-repeat
    ratios) and the decoding floor."""
    R = rec["results"][source]
    V = R["variants"]
    rows = []
    for n in LOADER_VARIANTS:
        if n not in V: continue
        v, floor = V[n], V.get(FLOORS[n], {})
        rows.append({"pipeline": n, "pairs/s (wall)": fmt(v["pairs_per_s"]), "pairs per CPU-second": fmt(v["pairs_per_cpu_s"]),
                     "x baseline per core": fmt(loader_ratio(rec, source, n)) if n != "baseline" else "1",
                     f"meets {fmt(LOADER_TARGET)}x": "–" if n == "baseline" else ("yes" if loader_ratio(rec, source, n) >= LOADER_TARGET else "no"),
                     "floor (its decoding alone), pairs/CPU-s": fmt(floor.get("pairs_per_cpu_s")),
                     "share of the floor reached": fmt(v["pairs_per_cpu_s"] / floor["pairs_per_cpu_s"]) if floor else "–"})
    return pd.DataFrame(rows)


def loader_best(rec: dict, source: str) -> tuple[str, float]:
    "The fastest of our pipelines per core on `source` and its ratio to the baseline."
    V = rec["results"][source]["variants"]
    ours = [n for n in LOADER_VARIANTS if n != "baseline" and n in V]
    best = max(ours, key=lambda n: loader_ratio(rec, source, n))
    return best, loader_ratio(rec, source, best)


# ---------------------------------------------------------------------------------------------------- model
def model_overview(rec: dict) -> pd.DataFrame:
    "Per model size: FLOPs, the straightforward step, its GFLOP/s against the matmul peak measured in the same run."
    R = rec["results"]
    peak = R["peak"]["fp32"]["gflops"]
    rows = []
    for key, r in R["configs"].items():
        c, st = r["config"], r["options"]["straightforward"]
        mem = r.get("memory", {}).get("straightforward", {})
        rows.append({"model": f"{key} (preset {c['preset']})",
                     "inputs": f"{c['frames']}x{c['frame_size']}x{c['frame_size']} video, 1x{c['n_mels']}x{c['audio_frames']} audio",
                     "batch": r["batch"], "parameters": f"{r['parameters']:,}",
                     "GFLOP per clip-pair (fwd+bwd)": fmt(r["gflop_per_clip"]),
                     "straightforward step, ms per clip-pair": fmt(1000 * st["step_s"] / r["batch"]),
                     "GFLOP/s": fmt(r["gflops"]), "fp32 matmul peak, GFLOP/s": fmt(peak),
                     "% of peak": fmt(100 * r["gflops"] / peak),
                     "peak RSS, MiB": fmt(mem.get("maxrss_mib"))})
    return pd.DataFrame(rows)


def _agreement(r: dict, name: str) -> str:
    e = r["equivalence"].get(name, {})
    if name == "straightforward": return "reference"
    if not e.get("grads_finite", True): return "no: NaN/inf gradients"
    ok = e.get("within_tolerance")
    if e.get("model") == "batched views" or (e.get("model") is None and "batched" in name):
        fz = r.get("batched_vs_published", {}).get("frozen_bn/batched_views", {})
        if not fz: return "BatchNorm over both views (not checked)"
        return ("same with frozen BatchNorm; BatchNorm over both views in training" if fz.get("within_tolerance") and ok is not False
                else "no")
    return "yes" if ok else "no"


def model_options(rec: dict, key: str) -> pd.DataFrame:
    "Every step option of one model size: time, speed-up over straightforward (same run, interleaved), agreement."
    r = rec["results"]["configs"][key]
    peak = rec["results"]["peak"]["fp32"]["gflops"]
    rows = []
    for n, o in r["options"].items():
        e = r["equivalence"].get(n, {})
        iq = o.get("speedup_iqr")
        rows.append({"option": n, "ms per clip-pair": fmt(1000 * o["step_s"] / r["batch"]),
                     "speed-up": fmt(o["speedup"]) + (f" ({fmt(iq[0])}–{fmt(iq[1])})" if iq else ""),
                     "% of fp32 peak": fmt(100 * r["gflop_per_clip"] * r["batch"] / o["fwd_bwd_s"] / peak),
                     "gradient error vs float64": fmt(e.get("grad_rel_err_vs_fp64")),
                     "same result": _agreement(r, n),
                     "compile s": fmt(o["compile_s"]) if "compile_s" in o else "–"})
    return pd.DataFrame(rows)


def step_best(rec: dict, key: str, same_semantics: bool = False) -> tuple[str | None, float | None]:
    """The fastest fp32 option that gives the same result (`same_semantics`: also in training mode, i.e. not batched
    views), from the record's own verdicts; (None, None) when no option qualifies."""
    r = rec["results"]["configs"][key]
    label = "best_same_semantics" if same_semantics else "best_fp32"
    if label in r: return r[label]["option"], r[label]["speedup"]
    return None, None


# ---------------------------------------------------------------------------------------------------- training
def _run(rec: dict, procs: int):
    "The trainer run at the demo config's default workers with `procs` processes."
    runs = [x for x in rec["results"]["runs"] if x.get("processes") == procs and "config default" in x["label"] and "error" not in x]
    return runs[0] if runs else None


def train_table(rec: dict) -> pd.DataFrame:
    rows = []
    for x in rec["results"]["runs"]:
        if "error" in x:
            rows.append({"run": x["label"], "clips/s": "error", "data wait": x["error"][-80:]}); continue
        rows.append({"run": x["label"], "processes": x["processes"], "workers per process": x["num_workers"],
                     "torch threads per process": x["threads"], "decoded cache": "yes" if x["decoded_cache"] else "no",
                     "clips/s": fmt(x["clips_per_s"]), "data wait": f"{100 * x['wait_frac']:.0f} %",
                     f"wait < {100 * WAIT_TARGET:.0f} %": "yes" if x["wait_frac"] < WAIT_TARGET else "no"})
    return pd.DataFrame(rows)


def on_paper_table(rec: dict) -> pd.DataFrame:
    P = rec["results"]["on_paper"]
    c = P["assumptions"]["central_fraction"]
    rows = [{"GPU": t["gpu"].split(" (")[0], "dataset": t["dataset"], "videos": f"{t['videos']:,}",
             "steps per epoch": t["steps_per_epoch"], "clip-pairs/s per GPU": fmt(t["clips_per_s_per_gpu"]),
             "minutes per epoch": fmt(60 * t["epoch_hours"]), "days for 100 epochs": fmt(t["total_days_100_epochs"])}
            for t in P["table"] if t["fraction"] == c]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- targets
def targets(recs: dict) -> pd.DataFrame:
    "Each target of issue 8 against the newest full runs: what was measured, whether it is met, and where."
    L, M, T = recs.get("loader"), recs.get("model"), recs.get("train")
    rows = []
    if T is not None:
        for procs, what in ((1, "1 process"), (2, "torchrun, 2 processes")):
            x = _run(T, procs)
            if x is None: continue
            rows.append({"target": f"Data wait under {100 * WAIT_TARGET:.0f} % of the step time, demo setting, default workers ({what})",
                         "measured": f"{100 * x['wait_frac']:.1f} % ({fmt(x['clips_per_s'])} clips/s, {x['num_workers']} workers per process)",
                         "met": "yes" if x["wait_frac"] < WAIT_TARGET else "no", "run": T["run_id"]})
    if L is not None:
        for source, what in (("demo", "demo clips"), ("real", "real clips")):
            if source not in L["results"] or "variants" not in L["results"][source]: continue
            V = L["results"][source]["variants"]
            parts = [f"{n.split('/')[1]} {fmt(loader_ratio(L, source, n))}x" for n in LOADER_VARIANTS if n != "baseline" and n in V]
            best, ratio = loader_best(L, source)
            otf = max(loader_ratio(L, source, n) for n in ("ours/decord", "ours/pyav") if n in V)
            default_best = max(loader_ratio(L, source, n) for n in ("ours/decord", "ours/pyav", "ours/cache") if n in V)
            if otf >= LOADER_TARGET: met = "yes"
            elif default_best >= LOADER_TARGET: met = "with the decoded cache only (ours/cache)"
            elif ratio >= LOADER_TARGET:
                met = f"only with the decoded cache and the opt-in fast kernels ({best}; default ops {fmt(default_best)}x)"
            else: met = "no"
            rows.append({"target": f"Loader at least {fmt(LOADER_TARGET)}x the frame-by-frame baseline per core ({what})",
                         "measured": "per CPU-second: " + ", ".join(parts), "met": met, "run": L["run_id"]})
    if M is not None:
        for key in M["results"]["configs"]:
            opt, sp = step_best(M, key)
            opt_s, sp_s = step_best(M, key, same_semantics=True)
            c = M["results"]["configs"][key]["config"]
            if opt is None:
                rows.append({"target": f"Training step at least {fmt(STEP_TARGET)}x the straightforward fp32 step ({key} model)",
                             "measured": "no fp32 option judged to give the same result in this run", "met": "no",
                             "run": M["run_id"]})
                continue
            measured = f"{opt} {fmt(sp)}x"
            if opt_s is not None and opt_s != opt: measured += f"; with the published BatchNorm semantics: {opt_s} {fmt(sp_s)}x"
            met = "yes" if sp >= STEP_TARGET else "no"
            if sp >= STEP_TARGET and "batched" in opt:
                met = "yes, with both views in one batch (BatchNorm over both views)" if (sp_s or 0) < STEP_TARGET else "yes"
            rows.append({"target": f"Training step at least {fmt(STEP_TARGET)}x the straightforward fp32 step, same result "
                                   f"({key} model, preset {c['preset']}, batch {M['results']['configs'][key]['batch']})",
                         "measured": measured, "met": met, "run": M["run_id"]})
    rows.append({"target": "The full ablation sweep and the demo within their time budgets (about 1 h 10 min on 2 cores)",
                 "measured": "not measured by these benchmarks: the sweep records its own wall times (ablation pages)",
                 "met": "–", "run": "–"})
    return pd.DataFrame(rows)


def targets_md(recs: dict) -> str:
    "One sentence per target, for the page's reading."
    df = targets(recs)
    out = []
    for _, r in df.iterrows():
        if r["met"] == "–": continue
        out.append(f"- {r['target']}: **{'met' if r['met'] == 'yes' else ('not met' if r['met'] == 'no' else r['met'])}** "
                   f"({r['measured']}).")
    return "\n".join(out)
