"""The ablation machinery through its real entry points: `papermill nbs/ablation.ipynb ...` exactly as typed (a tiny
pre-training on a generated demo set), a bad parameter stopping before anything is written, the sweep skipping finished
runs and surviving a failed one, and the collect step writing tables that book/bookdata.py reads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from crisscross.config import load_config
from crisscross.demo import generate_demo
from crisscross.experiment import (AblationParams, BASELINE, check_params, collect, esc10_inputs, esc10_metrics,
                                   initial_backbones, run_dir, run_name, run_sweep, sweep_plan)
from crisscross.manifest import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
PAPERMILL = Path(sys.executable).parent / "papermill"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    "A demo set of 8 clips per split (one per class): 2 pre-training steps per epoch at batch 4."
    root = tmp_path_factory.mktemp("demo")
    return generate_demo(root, n_clips={"pretrain": 8, "train": 8, "val": 8, "test": 8}, workers=1, progress=False)


def tiny(manifest, out_dir, **extra) -> dict:
    "Parameters of a run that takes seconds: 3 steps on the tiny set, 1 clip per video in the probes, no ESC-10."
    return {"out_dir": str(out_dir), "max_steps": 3, "eval_clips": 1, "eval_esc10": False, "num_workers": 0,
            "overrides": f"data.dataset=csv data.manifest={manifest} optim.batch=4", **extra}


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"): e.pop(k, None)
    return e


def papermill(*params, cwd=REPO):
    "`papermill nbs/ablation.ipynb -p name value ...` as typed at the repository root (stdout captured, so no OUTPUT_PATH)."
    args = [str(PAPERMILL), "nbs/ablation.ipynb"]
    for name, value in params: args += ["-p", name, str(value)]
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- parameters and names

@pytest.mark.parametrize("name, value, message", [
    ("relaxation", "sideways", "parameter relaxation='sideways' is not valid: expected one of none, mild, medium, mixed, extreme"),
    ("seed", -1, "parameter seed=-1 is not valid: expected an int >= 0"),
    ("dataset_size", "xxl", "parameter dataset_size='xxl' is not valid: expected one of xs, s, m, l"),
    ("async_loss", "maybe", "parameter async_loss='maybe' is not valid: expected one of off, on"),
    ("epochs", 0, "parameter epochs=0 is not valid: expected an int >= 1 or None"),
    ("policy", "both", "parameter policy='both' is not valid: expected one of official, shared"),
])
def test_invalid_parameters_name_themselves(name, value, message):
    with pytest.raises(ValueError) as e:
        check_params(**{name: value})
    assert message in str(e.value)


def test_run_dir_names_follow_the_parameters(tmp_path):
    assert run_name(check_params(relaxation="extreme")) == "relaxation=extreme/async_loss=on/size=s/seed=0"
    assert run_name(check_params(async_loss="off", dataset_size="l", seed=2)) == "relaxation=mild/async_loss=off/size=l/seed=2"
    assert run_name(check_params(pretrain=False, seed=1)) == "random_init/size=s/seed=1"
    assert run_name(check_params(epochs=5, policy="shared")) == "relaxation=mild/async_loss=on/size=s/seed=0,policy=shared,epochs=5"
    assert run_dir(check_params(out_dir=str(tmp_path), seed=3)) == tmp_path / "relaxation=mild/async_loss=on/size=s/seed=3"


def test_baseline_starts_from_the_trainers_initial_weights():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    a, b = initial_backbones(cfg, 7), initial_backbones(cfg, 8)
    assert type(a["video"]).__name__ == "R2Plus1D18" and type(a["audio"]).__name__ == "AudioResNet18"
    assert not all((x == y).all() for x, y in zip(a["video"].parameters(), b["video"].parameters()))


def test_notebook_parameters_are_the_library_parameters():
    "Papermill reads every parameter of the notebook (no line it cannot parse), with the library's defaults."
    import ast
    import papermill as pm
    from crisscross.experiment import PARAMETERS
    found = pm.inspect_notebook(str(REPO / "nbs" / "ablation.ipynb"))
    assert list(found) == list(PARAMETERS)
    defaults = AblationParams()
    for name, p in found.items():
        assert ast.literal_eval(p["default"]) == getattr(defaults, name), name
        assert p["help"], f"parameter {name} has no help comment"


def test_ablation_notebook_runs_its_cheap_cells_under_nbdev_test():
    "nbdev_test executes the parameter and derive cells only: the heavy cells are `#| eval: false`."
    from nbdev.test import test_nb
    ok, _ = test_nb(REPO / "nbs" / "ablation.ipynb", showerr=True)
    assert ok


# ---------------------------------------------------------------- the notebook through papermill

@pytest.mark.slow
def test_papermill_bad_parameter_stops_before_writing(tmp_path):
    out = tmp_path / "runs"
    r = papermill(("relaxation", "sideways"), ("out_dir", out))
    assert r.returncode != 0
    assert "parameter relaxation='sideways' is not valid: expected one of none, mild, medium, mixed, extreme" in r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_papermill_end_to_end(manifest, tmp_path):
    p = tiny(manifest, tmp_path / "runs")
    r = papermill(("relaxation", "extreme"), *p.items())
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["cells"], "papermill writes the executed notebook to stdout when it is captured"
    rd = run_dir(check_params(relaxation="extreme", **p))
    rec = json.loads((rd / "metrics.json").read_text())
    m = rec["metrics"]
    for k in ("probe_v", "probe_a", "probe_av", "knn_v", "knn_a", "knn_av", "retrieval_v2v_r1", "retrieval_a2a_r5"):
        assert 0 <= m[k] <= 1, (k, m[k])
    assert "esc10" not in m
    assert rec["parameters"]["relaxation"] == "extreme" and rec["pretrain"]["steps"] == 3
    assert rec["run_id"].startswith("csv-tiny-extreme-async-seed0-") and len(rec["config_hash"]) == 12
    assert rec["manifest_hash"].startswith("sha256:") and rec["timings"]["total_seconds"] > 0
    fp = rec["pretrain"]["input_fingerprint"]       # what the model was fed, to compare machines; and where it ran
    assert set(fp) == {"v1", "v2", "a1", "a2", "decoded", "n", "epoch"} and all(len(fp[k]) == 16 for k in ("v1", "decoded"))
    assert rec["environment"]["cpu_capability"] and rec["environment"]["cpu"]
    assert rec["demo_reference"] is None          # a csv dataset; demo runs compare their clips with the committed ones
    assert [e["step"] for e in rec["epochs"]] == [2, 3] and [e["epoch"] for e in rec["epochs"]] == [1.0, 1.5]
    cfg = load_config(rd / "config.yaml")          # the resolved config, reloadable
    assert (cfg.sampler.mode, cfg.loss.async_, cfg.train.max_steps) == ("extreme", True, 3)
    for f in ("loss_curve.png", "knn_by_epoch.png", "metrics.jsonl", "backbones/video_backbone.pt"):
        assert (rd / f).is_file(), f
    assert [c.name for c in rd.glob("ckpt_step*.pt")] == ["ckpt_step00000003.pt"]   # only the newest is kept


# ---------------------------------------------------------------- the sweep and the collect step

def test_sweep_skips_finished_runs_survives_a_failure_and_collects(manifest, tmp_path):
    out, data = tmp_path / "runs", tmp_path / "data"
    base = tiny(manifest, out)
    plan = sweep_plan(base, seeds=[0], ablations=["async_loss"])
    assert [r.name.split(",")[0] for r in plan] == ["random_init/size=s/seed=0", "relaxation=mild/async_loss=off/size=s/seed=0",
                                                    "relaxation=mild/async_loss=on/size=s/seed=0"]
    broken = AblationParams(**{**base, "seed": 1, "overrides": "data.dataset=csv data.manifest=/nonexistent/manifest.csv optim.batch=4"})
    from crisscross.experiment import PlannedRun
    plan.insert(1, PlannedRun(broken, run_name(broken), (("async_loss", "on"),)))
    log = []
    rows = run_sweep(plan, "direct", log=log.append)
    assert [r["status"] for r in rows] == ["done", "failed", "done", "done"], rows
    assert "/nonexistent/manifest.csv" in rows[1]["error"]
    assert "4 runs" in log[-1] and "3 done" in log[-1] and "1 failed" in log[-1]

    # again, through papermill: the finished runs are skipped, the failed one is tried again (and kept as a notebook)
    rows2 = run_sweep(plan, "papermill", log=lambda *a: None)
    assert [r["status"] for r in rows2] == ["skipped", "failed", "skipped", "skipped"], rows2
    assert "FileNotFoundError" in rows2[1]["error"]
    assert (run_dir(broken) / "ablation.ipynb").is_file()
    assert len((out / "sweeps.jsonl").read_text().splitlines()) == 2

    written = collect(out, data, base, ablations=["async_loss"], log=lambda *a: None)
    assert sorted(Path(k).name for k in written) == ["async_loss.csv", "async_loss_epochs.csv"]
    sys.path.insert(0, str(REPO / "book"))
    try:
        import bookdata
        df = bookdata.read_results("async_loss", data)
        ep = bookdata.read_results("async_loss", data, per_epoch=True)
        summary = bookdata.summarise(df, bookdata.ABLATIONS["async_loss"])
    finally:
        sys.path.remove(str(REPO / "book"))
    assert df["setting"].tolist() == [BASELINE, "off", "on"] and df["seed"].tolist() == [0, 0, 0]
    assert df["run_id"].str.startswith("random_init-").tolist() == [True, False, False]
    assert {"probe_v", "probe_a", "probe_av", "knn_v", "retrieval_v2v_r1"} <= set(df.columns)
    assert sorted(set(ep["setting"])) == ["off", "on"] and len(ep) == 4
    assert list(summary.index) == [BASELINE, "off", "on"]


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data not found: set CRISSCROSS_SHARED_DATA to run the real-data tests")
def test_esc10_at_the_demo_models_log_mel_settings(tmp_path):
    "ESC-10 (2 folds) through the run's log-mel settings (40 mels for the demo model), cached inputs."
    cfg = load_config(REPO / "configs" / "demo.yaml")
    esc = esc10_inputs(cfg, tmp_path / "cache", folds=(1, 2))
    assert esc is not None
    df, root, inputs = esc
    assert len(df) == 160 and inputs["audio"].shape[:3] == (160, 10, 1) and inputs["audio"].shape[3] == cfg.data.n_mels
    r = esc10_metrics(initial_backbones(cfg, 0)["audio"], esc)
    assert [f["fold"] for f in r["folds"]] == ["fold1", "fold2"]
    assert 0.2 < r["esc10"] <= 1, r                              # chance is 0.1
    assert len(list((tmp_path / "cache").glob("inputs-*.pt"))) == 1


def test_demo_runs_record_how_their_clips_compare_with_the_committed_ones(tmp_path):
    "`AblationRun.demo_reference`: the comparison for a demo run, None for another dataset, an error recorded, not raised."
    from types import SimpleNamespace
    from crisscross.experiment import AblationRun
    man = generate_demo(tmp_path, "xs", seed=0, workers=1, progress=False, n_clips={"pretrain": 2, "train": 1, "val": 0, "test": 0})
    run = SimpleNamespace(cfg=load_config(REPO / "configs" / "demo.yaml"), manifest=man)
    c = AblationRun.demo_reference(run)
    assert (c["available"], c["compared"], c["not_in_reference"]) == (True, 3, 0) and 0 <= c["differ"] <= 3
    said = []                                   # a run says so in its log when some clips differ, and only then
    run.name, run.log, run.demo_reference = "r", said.append, lambda: AblationRun.demo_reference(run)
    import crisscross.demo as demo
    calls = []
    real = demo.compare_demo_reference
    demo.compare_demo_reference = lambda man, *a: calls.append(man) or real(man, *a)
    try:                                        # the log line and the record share one comparison per manifest
        AblationRun.say_demo_reference(run)
        assert AblationRun.demo_reference(run) is c and calls == []
    finally:
        demo.compare_demo_reference = real
    assert len(said) == (1 if c["differ"] else 0)
    m = pd.read_csv(man)
    m.loc[0, "checksum"] = "sha256:" + "0" * 16
    m.to_csv(tmp_path / "changed.csv", index=False)
    run.manifest = tmp_path / "changed.csv"
    said.clear()
    assert AblationRun.say_demo_reference(run)["differ"] >= 1
    assert len(said) == 1 and said[0].startswith("r: ") and m.clip_id[0] in said[0]
    run.manifest = tmp_path / "gone.csv"
    assert "gone.csv does not exist" in AblationRun.demo_reference(run)["error"]
    run.cfg = load_config(REPO / "configs" / "demo.yaml", ["data.dataset=csv", f"data.manifest={man}"])
    assert AblationRun.demo_reference(run) is None
