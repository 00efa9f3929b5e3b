"""The columns the research collect scripts (e19_collect.py, e20_collect.py) share: one flat row per run record."""
import json
from pathlib import Path

from crisscross.experiment import training_tail


def run_row(metrics_json: Path, repo: Path) -> tuple[dict, dict]:
    """`(parameters, row)` of the run whose record is `metrics_json`: the seed, steps, probes, the other-clip and temporal
    controls at evaluation, the trainer's last 10 % of steps (`training_tail`, pre-trained runs only), final loss,
    pre-training seconds, torch threads, and the provenance (run id, config hash, commit, manifest hash, run directory
    relative to `repo`)."""
    rec = json.loads(Path(metrics_json).read_text())
    p, m, s = rec["parameters"], rec["metrics"], rec.get("pretrain") or {}
    t = training_tail(Path(metrics_json).parent) if p.get("pretrain") else {}
    return p, dict(seed=p["seed"], steps=s.get("steps"),
                   probe_v=m["probe_v"], probe_a=m["probe_a"], probe_av=m["probe_av"], xm_margin=m.get("xm_margin"),
                   xm_sync_gap=m.get("xm_sync_gap"), xm_sync_gap_se=m.get("xm_sync_gap_se"), xm_t_r1=m.get("xm_t_r1"),
                   train_xm_margin=t.get("train_xm_margin"), train_std_v=t.get("train_std_v"),
                   train_sync_gap=t.get("train_sync_gap"), train_sync_gap_se=t.get("train_sync_gap_se"),
                   train_tail_steps=t.get("train_tail_steps"),
                   final_loss=s.get("final_loss"), pretrain_seconds=(rec.get("timings") or {}).get("pretrain_seconds"),
                   torch_threads=(rec.get("environment") or {}).get("torch_threads"),
                   run_id=rec["run_id"], config_hash=rec["config_hash"], git_commit=rec["git_commit"],
                   manifest_hash=rec["manifest_hash"], run=str(Path(metrics_json).parent.relative_to(repo)))
