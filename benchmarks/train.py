"""Training benchmark (issues 4 and 8): end-to-end demo pre-training throughput (clips/s) and the fraction of step time
spent waiting for data, through the real trainer (`crisscross.trainer.pretrain`, 1 process, several `num_workers`) and
`torchrun --nproc_per_node 2` (gloo); then the published setting "on paper": expected time per epoch on 8 GPUs from the
measured FLOPs per clip of the full model, and the clips/s per GPU the data loader must deliver.

The figures come from the run's own `metrics.jsonl` (`clips_per_s`, `wait_frac` per logging window, read with
`crisscross.trainer.read_metrics`); the first window (worker start-up, first batches) is left out, the others are
pooled (total clips / total time). Every run uses `configs/demo.yaml` with `data.dataset=csv` on a demo manifest, the
same global batch (32: 1 x 32 or 2 x 16), and `train.max_steps`.

    .venv/bin/python -m benchmarks.train [--quick]
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (REPO, Clock, base_parser, demo_manifest, finish, fmt, latest_run, median, new_record,
                               out_dir, print_summary, save_record, set_threads, table)

NAME = "train"
DEMO_CFG = REPO / "configs" / "demo.yaml"
# (label, processes, num_workers per process, torch threads per process, decoded cache)
RUNS_FULL = [
    ("1 proc, 0 workers", 1, 0, 1, True),
    ("1 proc, 1 worker", 1, 1, 1, True),
    ("1 proc, 2 workers (config default)", 1, 2, 1, True),
    ("1 proc, 2 workers, 2 threads", 1, 2, 2, True),
    ("1 proc, 2 workers, no decoded cache", 1, 2, 1, False),
    ("torchrun 2 procs, 0 workers", 2, 0, 1, True),
    ("torchrun 2 procs, 2 workers each (config default)", 2, 2, 1, True),
]
SETTINGS = {
    "full": dict(n_clips=320, max_steps=30, log_every=3, batch=32, runs=RUNS_FULL),
    "quick": dict(n_clips=96, max_steps=8, log_every=2, batch=16,
                  runs=[RUNS_FULL[0], RUNS_FULL[2], ("torchrun 2 procs, 1 worker each", 2, 1, 1, True)]),
    "tiny": dict(n_clips=8, max_steps=3, log_every=1, batch=4, runs=[RUNS_FULL[0]]),
}
# The published setting (SPEC section 5) and the GPUs it is priced on. Stated assumptions, not measurements.
DATASETS = {"Kinetics-Sound": 22_000, "Kinetics-400": 240_000, "AudioSet": 1_800_000}
CLIPS_PER_VIDEO, EPOCHS, GLOBAL_BATCH, N_GPUS = 5, 100, 2048, 8
GPUS = {"V100 (fp16 tensor cores, 125 TFLOP/s peak)": 125e12, "A100 (bf16/fp16 tensor cores, 312 TFLOP/s peak)": 312e12}
FRACTIONS = (0.10, 0.20, 0.40)   # assumed achievable share of the tensor-core peak for this (2+1)D conv net under AMP
CENTRAL_FRACTION = 0.20


# ------------------------------------------------------------------------------------------------ runs
def overrides(manifest, out, name, workers, batch, max_steps, log_every, cache):
    return [f"data.dataset=csv", f"data.manifest={manifest}", f"data.num_workers={workers}",
            f"data.decoded_cache={'true' if cache else 'false'}", f"optim.batch={batch}", "optim.epochs=1000",
            f"train.max_steps={max_steps}", f"train.log_every_steps={log_every}", "train.checkpoint_every_steps=100000",
            f"train.out_dir={out}", f"train.run_name={name}", "train.keep_last=1", "train.device=cpu"]


def run_one(label, procs, workers, threads, cache, manifest, work, s) -> dict:
    "One pre-training run; its metrics and wall time."
    import torch
    from crisscross.config import load_config
    from crisscross.trainer import pretrain, read_metrics
    name = f"run{procs}p{workers}w{threads}t{'c' if cache else 'n'}"
    ov = overrides(manifest, work, name, workers, s["batch"], s["max_steps"], s["log_every"], cache)
    rd = Path(work) / name
    with Clock() as c:
        if procs == 1:
            old = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                pretrain(load_config(DEMO_CFG, ov), rd, resume=False, progress=False)
            finally:
                torch.set_num_threads(old)
            err = None
        else:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
            for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"): env.pop(k, None)
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
                   "-m", "crisscross.cli", "pretrain", "--config", str(DEMO_CFG), "--no-progress", *ov]
            p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
            err = None if p.returncode == 0 else (p.stderr or p.stdout)[-800:]
    out = {"label": label, "processes": procs, "num_workers": workers, "threads": threads, "decoded_cache": cache,
           "wall_s": c.wall, "command": ("torchrun --standalone --nproc_per_node %d -m crisscross.cli pretrain --config "
                                         "configs/demo.yaml " % procs if procs > 1 else "pretrain(load_config(configs/demo.yaml, overrides)) ")
           + " ".join(x for x in ov if not x.startswith(("data.manifest", "train.out_dir")))}
    if err:
        out["error"] = err
        return out
    m = read_metrics(rd)
    out.update(pool_windows(m, s["batch"], s["log_every"]))
    return out


def pool_windows(m, global_batch: int, log_every: int) -> dict:
    "Pool the logging windows after the first: clips/s = clips / time, wait = waited time / time."
    m = m.sort_values("step").reset_index(drop=True)
    steps = m["step"].diff().fillna(m["step"]).astype(int)
    clips = steps * global_batch
    dt = clips / m["clips_per_s"]
    keep = m.index >= 1 if len(m) > 1 else m.index >= 0
    c, t = clips[keep].sum(), dt[keep].sum()
    return {"clips_per_s": float(c / t), "wait_frac": float((m["wait_frac"][keep] * dt[keep]).sum() / t),
            "clips_per_s_windows": [round(float(x), 2) for x in m["clips_per_s"]],
            "wait_frac_windows": [round(float(x), 3) for x in m["wait_frac"]],
            "median_clips_per_s": float(median(list(m["clips_per_s"][keep]))),
            "median_wait_frac": float(median(list(m["wait_frac"][keep]))),
            "windows_pooled": int(keep.sum()), "steps": int(m["step"].max()), "final_loss": float(m["loss"].iloc[-1])}


def warm_cache(manifest) -> dict:
    "Fill the decoded cache the runs will use (as `dataset_from_config` places it) and time that one-off cost."
    from crisscross.config import load_config
    from crisscross.data import dataset_from_config
    ds = dataset_from_config(load_config(DEMO_CFG, ["data.dataset=csv", f"data.manifest={manifest}"]), progress=False)
    built, secs = 0, []
    for v in range(ds.n_videos):
        have = all(Path(f).exists() for f in ds.cache._files(ds.path(v)))
        with Clock() as c: ds.cache.build(ds.path(v))
        if not have: built += 1; secs.append(c.wall)
    return {"dir": str(ds.cache.dir), "clips": ds.n_videos, "built_now": built,
            "build_s_per_clip": median(secs) if secs else None}


# ------------------------------------------------------------------------------------------------ on paper
def full_model_flops(batch: int = 2) -> dict:
    "FLOPs of forward + backward of the full-size model per clip-pair (4 views, paper input sizes), counted on fake tensors."
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode
    from crisscross.losses import crisscross_loss
    from crisscross.model import CrissCross, model_config
    with FakeTensorMode():
        m = CrissCross(model_config("full"))
        views = (torch.randn(batch, 3, 8, 112, 112), torch.randn(batch, 3, 8, 112, 112),
                 torch.randn(batch, 1, 80, 201), torch.randn(batch, 1, 80, 201))
        fc = FlopCounterMode(display=False)
        with fc:
            out = m(*views)
            crisscross_loss(out.z, out.p).total.backward()
    total = fc.get_total_flops() / batch
    return {"flops_per_clip_pair": total, "gflop_per_clip_pair": total / 1e9,
            "method": "FlopCounterMode (convolutions and matrix products, forward + backward) on FakeTensorMode"}


def on_paper(flops_per_clip: float, loader=None, model=None) -> dict:
    "Time per epoch of the published setting on 8 GPUs and what the data loader must deliver, under stated assumptions."
    rows = []
    for gpu, peak in GPUS.items():
        for frac in FRACTIONS:
            per_gpu = peak * frac / flops_per_clip                     # clip-pairs per second per GPU
            for ds, videos in DATASETS.items():
                samples = videos * CLIPS_PER_VIDEO
                epoch_s = samples / (per_gpu * N_GPUS)
                rows.append({"gpu": gpu, "fraction": frac, "dataset": ds, "videos": videos, "samples_per_epoch": samples,
                             "steps_per_epoch": samples // GLOBAL_BATCH, "clips_per_s_per_gpu": per_gpu,
                             "epoch_hours": epoch_s / 3600, "total_days_100_epochs": EPOCHS * epoch_s / 86400})
    out = {"assumptions": {"n_gpus": N_GPUS, "global_batch": GLOBAL_BATCH, "clips_per_video": CLIPS_PER_VIDEO,
                           "epochs": EPOCHS, "datasets_videos": DATASETS, "gpu_peaks_flops": GPUS,
                           "fractions": FRACTIONS, "central_fraction": CENTRAL_FRACTION,
                           "flops_per_clip_pair": flops_per_clip},
           "table": rows}
    need = {g: peak * CENTRAL_FRACTION / flops_per_clip for g, peak in GPUS.items()}
    out["loader_need_clips_per_s_per_gpu"] = need
    if loader:   # CPU cores per GPU the measured loader would need (per CPU-second rates on the real clips)
        real = loader["results"].get("real", {}).get("variants", {})
        rates = {k: v["pairs_per_cpu_s"] for k, v in real.items() if k in ("ours/decord", "ours/pyav", "ours/cache", "baseline")}
        out["cores_per_gpu"] = {g: {k: n / r for k, r in rates.items() if r} for g, n in need.items()}
        out["loader_run"] = loader["run_id"]
        out["loader_rates_per_cpu_s"] = rates
    if model:
        full = model["results"]["configs"].get("full")
        if full:
            gflops = full["gflops"]
            out["this_cpu"] = {"model_run": model["run_id"], "gflops": gflops, "threads": model["settings"]["threads"],
                               "epoch_hours": {ds: v * CLIPS_PER_VIDEO * flops_per_clip / (gflops * 1e9) / 3600
                                               for ds, v in DATASETS.items()}}
    return out


# ------------------------------------------------------------------------------------------------ report
def render(rec: dict) -> str:
    R, s = rec["results"], rec["settings"]
    lines = ["## Demo pre-training through the trainer", "",
             f"`configs/demo.yaml` (preset tiny, 32 px, 40 mels, `mild`) on {s['n_clips']} demo clips, global batch "
             f"{s['batch']}, {s['max_steps']} steps, logged every {s['log_every']}; clips/s and wait fraction pooled over "
             "the logging windows after the first (worker start-up excluded; epoch boundaries included: since the "
             "persistent-worker change one loader iterator serves the whole run, before it the workers restarted every "
             "epoch). Under torchrun, clips/s is the sum over the processes and the data wait is rank "
             "0's. Wall time = the whole run (start-up, checkpoint, backbone export).", ""]
    c = R.get("cache")
    if c:
        lines += [f"Decoded cache: `{c['dir']}`, {c['clips']} clips, {c['built_now']} built before the runs"
                  + (f" ({fmt(c['build_s_per_clip'])} s per clip)" if c.get("build_s_per_clip") else "") + ".", ""]
    rows = []
    for r in R["runs"]:
        if "error" in r:
            rows.append([r["label"], r["processes"], r["num_workers"], r["threads"], "yes" if r["decoded_cache"] else "no",
                         "error", "", "", "", r["wall_s"]]); continue
        rows.append([r["label"], r["processes"], r["num_workers"], r["threads"], "yes" if r["decoded_cache"] else "no",
                     r["clips_per_s"], f"{100 * r['wait_frac']:.0f} %", r["median_clips_per_s"],
                     f"{100 * r['median_wait_frac']:.0f} %", r["wall_s"]])
    lines += [table(["run", "procs", "workers/proc", "threads/proc", "decoded cache", "clips/s", "data wait",
                     "clips/s (median window)", "wait (median window)", "wall s"], rows), ""]
    errs = [r for r in R["runs"] if "error" in r]
    for r in errs: lines += [f"`{r['label']}` failed: ```{r['error'][-300:]}```", ""]
    lines += ["Commands (manifest and output directory left out):", ""] + [f"- {r['label']}: `{r['command']}`" for r in R["runs"]] + [""]
    P = R.get("on_paper")
    if P:
        a = P["assumptions"]
        lines += ["## The published setting, on paper", "",
                  f"Measured: **{fmt(a['flops_per_clip_pair'] / 1e9)} GFLOP per clip-pair** for forward + backward of the "
                  "full-size model (4 views: 2 x 8x112x112 video, 2 x 1x80x201 audio; `FlopCounterMode`, convolutions and "
                  "matrix products). Assumed: " + f"{a['n_gpus']} GPUs, global batch {a['global_batch']}, an epoch = "
                  f"{a['clips_per_video']} clip-pairs per video, {a['epochs']} epochs (SPEC section 5); mixed precision "
                  "reaching a stated fraction of the GPU's tensor-core peak (an assumption, not a measurement: (2+1)D "
                  "convolutions with few frames use tensor cores less well than 2D ResNets; shown at "
                  f"{'/'.join(str(int(100 * f)) for f in a['fractions'])} %, central figure "
                  f"{int(100 * a['central_fraction'])} %); the optimiser, BatchNorm and communication are ignored.", ""]
        rows = []
        for t in P["table"]:
            if t["fraction"] != a["central_fraction"]: continue
            others = [u for u in P["table"] if u["gpu"] == t["gpu"] and u["dataset"] == t["dataset"]]
            rng = f"{fmt(min(u['epoch_hours'] for u in others))}–{fmt(max(u['epoch_hours'] for u in others))}"
            rows.append([t["gpu"].split(" (")[0], t["dataset"], t["videos"], t["samples_per_epoch"], t["steps_per_epoch"],
                         t["clips_per_s_per_gpu"], t["epoch_hours"], rng, t["total_days_100_epochs"]])
        lines += [table(["8 x GPU", "dataset", "videos", "clip-pairs/epoch", "steps/epoch", "clips/s per GPU",
                         "h/epoch", f"h/epoch at {'/'.join(str(int(100 * f)) for f in a['fractions'])} %", "days for 100 epochs"], rows), ""]
        need = P["loader_need_clips_per_s_per_gpu"]
        lines += ["**The data loader must deliver, per GPU:** " + "; ".join(
            f"{g.split(' (')[0]}: {fmt(n)} clip-pairs/s" for g, n in need.items())
            + f" (at {int(100 * a['central_fraction'])} % of peak).", ""]
        if "cores_per_gpu" in P:
            ks = list(P["loader_rates_per_cpu_s"])
            rows = [[g.split(" (")[0], *[d.get(k) for k in ks]] for g, d in P["cores_per_gpu"].items()]
            lines += [f"CPU cores per GPU at this machine's measured per-core loader rates on the real clips (loader run "
                      f"`{P['loader_run']}`: " + ", ".join(f"{k} {fmt(v)} pairs/CPU-s" for k, v in P["loader_rates_per_cpu_s"].items())
                      + "):", "", table(["GPU", *[f"`{k}`" for k in ks]], rows), ""]
        if "this_cpu" in P:
            tc = P["this_cpu"]
            lines += [f"For scale, on this CPU ({tc['threads']} thread(s), {fmt(tc['gflops'])} GFLOP/s measured for the "
                      f"full model in model run `{tc['model_run']}`), one epoch would take " + ", ".join(
                          f"{ds} {fmt(h)} h" for ds, h in tc["epoch_hours"].items()) + ".", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None, help="demo data root (default: the demo's, ~/.cache/crisscross/demo)")
    p.add_argument("--keep-runs", default=None, help="keep the run directories here (default: a deleted temp dir)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    s = dict(SETTINGS[args.mode])
    settings = {k: v for k, v in s.items() if k != "runs"}
    settings["runs"] = [list(r) for r in s["runs"]]
    settings["config"] = "configs/demo.yaml"
    rec = new_record(NAME, args.mode, settings)
    man = demo_manifest(s["n_clips"], args.data_root)
    rec["settings"]["manifest"] = str(man)
    rec["results"]["cache"] = warm_cache(man)
    runs = []
    with tempfile.TemporaryDirectory(prefix="crisscross-bench-train-") as tmp:
        work = args.keep_runs or tmp
        for spec in s["runs"]:
            print(f"train: {spec[0]}", flush=True)
            runs.append(run_one(*spec, man, work, s))
    rec["results"]["runs"] = runs
    fl = full_model_flops()
    od = out_dir(args)
    rec["results"]["on_paper"] = on_paper(fl["flops_per_clip_pair"], latest_run("loader", od, (args.mode, "full")),
                                          latest_run("model", od, (args.mode, "full")))
    rec["results"]["full_model_flops"] = fl
    S = rec["summary"]
    for r in runs:
        if "error" in r:
            rec["notes"].append(f"run '{r['label']}' failed: {r['error'][-200:]}"); continue
        S[f"{r['label']}: clips/s"] = round(r["clips_per_s"], 1)
        S[f"{r['label']}: wait %"] = round(100 * r["wait_frac"], 1)
    S["full model GFLOP/clip-pair"] = round(fl["gflop_per_clip_pair"], 2)
    v100 = next(t for t in rec["results"]["on_paper"]["table"] if t["gpu"].startswith("V100")
                and t["fraction"] == CENTRAL_FRACTION and t["dataset"] == "Kinetics-400")
    S["K400 min/epoch on 8 V100 @20%"] = round(60 * v100["epoch_hours"], 1)
    S["loader need clips/s per V100 @20%"] = round(v100["clips_per_s_per_gpu"], 1)
    default = [r for r in runs if r["processes"] == 1 and r["num_workers"] == 2 and r["threads"] == 1
               and r["decoded_cache"] and "error" not in r]
    if default and default[0]["wait_frac"] > 0.10:
        rec["notes"].append(f"the default setting (1 process, 2 workers, decoded cache) waits for data "
                            f"{100 * default[0]['wait_frac']:.0f} % of the time (target < 10 %).")
    finish(rec)
    paths = save_record(rec, render, od)
    print_summary(rec, paths)
    return rec


if __name__ == "__main__":
    main()
    sys.exit(0)
