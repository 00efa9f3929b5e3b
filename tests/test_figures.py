"""`crisscross figures` on tiny real runs (a 2-class demo set, 2 pre-training steps per run): the four figures and their
provenance sidecars are written, a missing run stops the command with its run directory and the sweep command that
makes it, and a figure made from other runs (or without a sidecar) is never replaced without --overwrite."""
import contextlib
import io
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from crisscross.cli import main
from crisscross.demo import DEFAULT_CLASSES, DemoWorld, generate_demo
from crisscross.experiment import run_ablation
from crisscross.figures import FIGURES, MissingRunError, figure_status, finished_run, make_figures, run_params

REPO = Path(__file__).resolve().parents[1]


def cli(*argv) -> tuple:
    "`crisscross figures ...` in-process: (exit code, stderr)."
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["figures", *map(str, argv)])
    return code, err.getvalue()


def set_args(base: dict) -> list:
    "`--out-dir` and `--set name=value` arguments for the parameters of `base`."
    args = ["--out-dir", base["out_dir"]]
    for k, v in base.items():
        if k != "out_dir": args += ["--set", f"{k}={v}"]
    return args


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Base parameters of finished tiny runs: L_async on and off for seeds 0 and 1, and the seed-0 random-init baseline."
    root = tmp_path_factory.mktemp("figures")
    man = generate_demo(root / "demo", n_clips={"pretrain": 4, "train": 4, "val": 2, "test": 4}, workers=1, progress=False,
                        world=DemoWorld(classes=DEFAULT_CLASSES[:2], duration=3.5))
    base = {"out_dir": str(root / "runs"), "max_steps": 2, "eval_clips": 1, "eval_esc10": False, "num_workers": 0,
            "overrides": f"data.dataset=csv data.manifest={man} optim.batch=4"}
    quiet = lambda *a: None
    for seed in (0, 1):
        for setting in ("on", "off"): run_ablation(run_params(base, setting, seed), log=quiet)
    run_ablation(run_params(base, seed=0, baseline=True), log=quiet)
    return base


@pytest.fixture
def fast_umap(monkeypatch):
    "UMAP's numba compilation takes ~30 s per process: a PCA stand-in here (umap_figure itself is tested in test_analysis)."
    import crisscross.analysis as analysis
    def pca(X, seed=0, *args, **kwargs):
        X = np.asarray(X, np.float64) - np.mean(X, 0)
        return (X @ np.linalg.svd(X, full_matrices=False)[2][:2].T).astype(np.float32)
    monkeypatch.setattr(analysis, "umap_embedding", pca)


def run_id(base, setting, seed=0, baseline=False) -> str:
    return finished_run(run_params(base, setting, seed, baseline)).stored["run_id"]


def test_writes_the_figures_and_their_sidecars(runs, fast_umap, tmp_path):
    out = tmp_path / "figures"
    argv = ["--figures-dir", str(out), *set_args(runs)]
    code, err = cli(*argv)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}{s}" for n in FIGURES for s in (".png", ".json"))
    import matplotlib.pyplot as plt
    on, off = run_id(runs, "on"), run_id(runs, "off")
    expected_runs = {
        "umap_async_loss": [on, off],
        "acc_vs_epoch_async_loss": [on, run_id(runs, "on", 1), off, run_id(runs, "off", 1), run_id(runs, None, 0, baseline=True)],
        "saliency_async_loss_on": [on],
        "retrieval_async_loss_on": [on],
    }
    for name, ids in expected_runs.items():
        img = plt.imread(out / f"{name}.png")
        assert img.ndim == 3 and min(img.shape[:2]) > 200 and img[..., :3].std() > 0.05, name   # an image, not blank
        meta = json.loads((out / f"{name}.json").read_text())
        assert meta["run_ids"] == ids, name
        assert meta["command"] == shlex.join(["crisscross", "figures", *argv])
        assert meta["caption"] and "seed 0" in meta["caption"] or "seeds 0, 1" in meta["caption"], meta["caption"]
    assert "mean over seeds 0, 1 with ± 1 std band" in json.loads((out / "acc_vs_epoch_async_loss.json").read_text())["caption"]
    assert expected_runs["acc_vs_epoch_async_loss"][-1].startswith("random_init-")
    # the book reads these sidecars
    sys.path.insert(0, str(REPO / "book"))
    try:
        import bookdata
        assert [p.name for p in bookdata.figure_files("umap_async*", out)] == ["umap_async_loss.png"]
        assert bookdata.figure_provenance(out / "umap_async_loss.png")["run_ids"] == [on, off]
    finally:
        sys.path.remove(str(REPO / "book"))


def test_a_missing_run_names_its_directory_and_the_sweep_command(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "figures"
    (runs_dir / "relaxation=mild/async_loss=off/size=s/seed=0").mkdir(parents=True)     # started, not finished
    code, err = cli("--out-dir", runs_dir, "--figures-dir", out)
    assert code == 1
    assert "2 run(s) that the figures need are not finished" in err
    assert (f"run directory {runs_dir}/relaxation=mild/async_loss=on/size=s/seed=0 does not exist; make it with: "
            f"crisscross sweep --seeds 0 --ablations async_loss --out-dir {runs_dir}") in err
    assert f"run directory {runs_dir}/relaxation=mild/async_loss=off/size=s/seed=0 has no metrics.json yet" in err
    assert not out.exists()
    # only the saliency figure: only the L_async run is needed
    with pytest.raises(MissingRunError, match=r"(?s)1 run\(s\) .*async_loss=on/size=s/seed=0 does not exist"):
        make_figures({"out_dir": str(runs_dir)}, figures_dir=out, names=["saliency_async_loss_on"])
    code, err = cli("--only", "umap")
    assert code == 2 and "unknown figure(s) umap; expected some of umap_async_loss" in err


def test_no_silent_overwrite(runs, fast_umap, tmp_path):
    out = tmp_path / "figures"
    out.mkdir()
    ids = sorted([run_id(runs, "on"), run_id(runs, "off")])
    # a figure made from other runs, and one without a sidecar: refused before any work, nothing written
    (out / "umap_async_loss.png").write_bytes(b"old umap")
    (out / "umap_async_loss.json").write_text(json.dumps({"caption": "c", "run_ids": ["other-run"], "command": "x"}))
    (out / "saliency_async_loss_on.png").write_bytes(b"old saliency")
    code, err = cli("--figures-dir", out, *set_args(runs))
    assert code == 1
    assert f"umap_async_loss.png was made from runs other-run; the figure now would come from {', '.join(ids)}" in err
    assert sorted(p.name for p in out.iterdir()) == ["saliency_async_loss_on.png", "umap_async_loss.json", "umap_async_loss.png"]
    assert (out / "umap_async_loss.png").read_bytes() == b"old umap"
    with pytest.raises(FileExistsError, match="exists without a provenance sidecar"):
        make_figures(runs, figures_dir=out, names=["saliency_async_loss_on"], log=lambda *a: None)
    assert (out / "saliency_async_loss_on.png").read_bytes() == b"old saliency"

    # the same runs again: re-rendered ('updated'); other runs with --overwrite: 'replaced'
    one = ["acc_vs_epoch_async_loss"]
    assert list(make_figures(runs, figures_dir=out, names=one, seeds=[0], log=lambda *a: None).values()) == ["written"]
    assert list(make_figures(runs, figures_dir=out, names=one, seeds=[0], log=lambda *a: None).values()) == ["updated"]
    with pytest.raises(FileExistsError, match="acc_vs_epoch_async_loss.png was made from runs"):
        make_figures(runs, figures_dir=out, names=one, seeds=[0, 1], log=lambda *a: None)      # seed 1 has finished since
    code, err = cli("--figures-dir", out, "--only", "umap_async_loss", "--overwrite", *set_args(runs))
    assert code == 0, err
    assert json.loads((out / "umap_async_loss.json").read_text())["run_ids"] == [run_id(runs, "on"), run_id(runs, "off")]
    assert figure_status(out / "umap_async_loss.png", ids) == "updated"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
