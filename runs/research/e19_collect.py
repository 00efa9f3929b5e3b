"""Research e19 (session 10): one row per run of the e19 directories -> book/data/research_e19/runs.csv.

    .venv/bin/python runs/research/e19_collect.py

Each row: the experiment (directory), what it changes from the committed recipe, the condition it ran in (torch
threads, video kernels), the seed, the probes, the other-clip control at evaluation and in training (last 10 % of
steps), the collapse monitor, pre-training seconds, and the provenance (run id, config hash, commit, manifest hash).
The committed sweep's mild runs and research e12 (the RGB hue kernels, seed 0) are included for comparison."""
from pathlib import Path

import pandas as pd

from collect_rows import run_row

REPO = Path(__file__).resolve().parents[2]
DIRS = {   # directory -> (experiment, change from the committed recipe, condition)
    "runs/ablations/relaxation=mild/async_loss=on/size=s": ("committed", "none (configs/demo.yaml)", "1 thread, reference kernels (the committed sweep)"),
    "runs/research/e19_repro": ("e19_repro", "none (configs/demo.yaml)", "1 thread, reference kernels"),
    "runs/research/e19_avx512": ("e19_threads2", "none (configs/demo.yaml)", "2 threads, reference kernels"),
    "runs/research/e12_temporal/relaxation=mild": ("e12", "none (configs/demo.yaml)", "1 thread, RGB hue (video_ops=fast)"),
    "runs/research/e19_fast": ("e19_fast", "none (configs/demo.yaml)", "1 thread, RGB hue (video_ops=fast)"),
    "runs/research/e19_paper_lr_ratio": ("e19_R1", "final_lr 5e-4 (the paper's final/base ratio 1/2)", "2 threads, reference kernels"),
    "runs/research/e19_paper_lr_ratio_fast": ("e19_R1", "final_lr 5e-4 (the paper's final/base ratio 1/2)", "1 thread, RGB hue (video_ops=fast)"),
    "runs/research/e19_plr3e-2_fast": ("e19_R2", "predictor_lr 3e-2 (30x base)", "1 thread, RGB hue (video_ops=fast)"),
    "runs/research/e19_b16": ("e19_R4", "batch 16, 1,250 steps (same clips seen, LR as written)", "1 thread, reference kernels"),
}
rows = []
for d, (exp, change, cond) in DIRS.items():
    for f in sorted((REPO / d).rglob("metrics.json")):
        p, row = run_row(f, REPO)
        if not p.get("pretrain") or p.get("relaxation") != "mild": continue
        rows.append(dict(experiment=exp, change=change, condition=cond,
                         **{k: v for k, v in row.items() if k not in ("xm_sync_gap", "xm_sync_gap_se", "xm_t_r1")}))
out = REPO / "book" / "data" / "research_e19" / "runs.csv"
out.parent.mkdir(parents=True, exist_ok=True)
df = pd.DataFrame(rows)
df.to_csv(out, index=False)
print(f"{len(df)} runs -> {out}")
