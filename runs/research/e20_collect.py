"""Research e20 (session 11): worlds where *when* carries the class or the source -> book/data/research_e20/runs.csv.

    .venv/bin/python runs/research/e20_collect.py

One row per run of the e20 directories: the world (its config and `data.demo_world`), the relaxation mode, the seed,
the probes, the other-clip control at evaluation and in training (last 10 % of steps, window means), the training gap
`L_async - L_sync` with its standard error, the evaluation's temporal control (`xm_sync_gap` over the 400 test
videos), the collapse monitor, and the provenance (run id, config hash, commit, manifest hash). Beside it,
`worlds.csv`: per world and relaxation mode, what the views share by construction (`crisscross.demo.relaxation_content`
over 300 pre-training clips, nothing rendered)."""
from pathlib import Path

import pandas as pd

from crisscross.config import load_config
from crisscross.demo import demo_world, relaxation_content
from collect_rows import run_row

REPO = Path(__file__).resolve().parents[2]
WORLDS = {   # run directory -> (world name, config, what it changes from the default world)
    "runs/research/e20_guests5": ("guests5", "configs/research/demo_guests5.yaml", "5 sources (1 guest), shots 2-4 s"),
    "runs/research/e20_long5": ("long5", "configs/research/demo_long5.yaml", "5 sources, shots 2-4 s"),
    "runs/research/e20_segments5": ("segments5", "configs/research/demo_segments5.yaml", "5 sources (1 guest), segments 2-4 s of 0.4-1.8 s shots"),
    "runs/research/e20_segments23": ("segments23", "configs/research/demo_segments23.yaml", "2-3 sources, segments 2.5-5 s of 0.4-1.8 s shots"),
    "runs/research/e20_guests_segments3": ("guests_segments3", "configs/research/demo_guests_segments3.yaml", "3 sources (1 guest), segments 2.5-5 s of 0.4-1.8 s shots"),
    "runs/research/e20_segments23_weakaug": ("segments23", "configs/research/demo_segments23.yaml", "2-3 sources, segments 2.5-5 s of 0.4-1.8 s shots"),
    "runs/research/e20_guests_segments3_weakaug": ("guests_segments3", "configs/research/demo_guests_segments3.yaml", "3 sources (1 guest), segments 2.5-5 s of 0.4-1.8 s shots"),
    "runs/research/e20_default_weakaug": ("default", "configs/demo.yaml", "the committed world"),
    "runs/research/e20_segments23_weakaug_long": ("segments23", "configs/research/demo_segments23.yaml", "2-3 sources, segments 2.5-5 s of 0.4-1.8 s shots"),
}
rows = []
for d, (world, cfg, change) in WORLDS.items():
    for f in sorted((REPO / d).rglob("metrics.json")):
        p, row = run_row(f, REPO)
        trained = bool(p.get("pretrain"))
        rows.append(dict(world=world, change=change, relaxation=p["relaxation"] if trained else "random init",
                         async_loss=p["async_loss"] if trained else "", seed=row.pop("seed"),
                         overrides=p.get("overrides") or "", epochs=p.get("epochs"),
                         **{k: v for k, v in row.items() if k != "run"}, config=cfg, run=row["run"]))
df = pd.DataFrame(rows)
df["train_gap_z"] = df["train_sync_gap"] / df["train_sync_gap_se"]
df["eval_gap_z"] = df["xm_sync_gap"] / df["xm_sync_gap_se"]
out = REPO / "book" / "data" / "research_e20"
out.mkdir(parents=True, exist_ok=True)
df.to_csv(out / "runs.csv", index=False)
print(f"{len(df)} runs -> {out / 'runs.csv'}")

worlds = list(dict.fromkeys([("default", "configs/demo.yaml", "the committed world"), *WORLDS.values()]))   # each world once
shares = []
for name, cfg, change in worlds:
    w = demo_world(load_config(REPO / cfg).data.demo_world)
    rc = relaxation_content(n_clips=300, world=w).reset_index()
    shares.append(rc.assign(world=name, change=change, fingerprint=w.fingerprint()))
ws = pd.concat(shares, ignore_index=True)
ws.to_csv(out / "worlds.csv", index=False)
print(f"{len(ws)} rows -> {out / 'worlds.csv'}")
