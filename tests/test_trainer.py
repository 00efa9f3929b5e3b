"""The trainer through its real entry points (`python -m crisscross.cli pretrain`, `torchrun`): DDP equivalence,
exact resume after SIGKILL, truncated checkpoints, SIGTERM, seeds, NaN loss and gradients, persistent loader workers,
the online kNN monitor, and config errors before training."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from crisscross.checkpoint import list_checkpoints, read_checkpoint
from crisscross.config import load_config
from crisscross.demo import generate_demo
from crisscross.model import CrissCross
from crisscross.trainer import Trainer, check_run_config, pretrain, read_metrics

REPO = Path(__file__).resolve().parents[1]
DEMO_CFG = REPO / "configs" / "demo.yaml"
LOSS_COLS = ["step", "loss", "intra", "sync", "async", "std_v", "std_a", "xm_margin", "lr_backbone_projector"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return generate_demo(root, size="xs", n_clips={"pretrain": 16, "train": 8, "val": 0, "test": 8}, progress=False)


@pytest.fixture
def one_thread(monkeypatch):
    "In-process runs compared bit for bit use 1 torch thread whatever their num_workers (set_cpu_threads keeps it)."
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def overrides(manifest, out, **extra):
    kv = {"data.dataset": "csv", "data.manifest": str(manifest), "data.num_workers": 0, "optim.batch": 8,
          "optim.epochs": 2, "optim.clips_per_video": 1, "train.log_every_steps": 1, "train.checkpoint_every_steps": 2,
          "train.out_dir": str(out), "train.keep_last": 10}
    kv.update(extra)
    return [f"{k}={v}" for k, v in kv.items()]


def env(threads=1):
    e = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    e.pop("RANK", None); e.pop("WORLD_SIZE", None)
    return e


def cli(args, threads=1, **kw):
    return subprocess.run([sys.executable, "-m", "crisscross.cli", *args], env=env(threads), capture_output=True,
                          text=True, timeout=600, **kw)


def final_state(run_dir):
    return read_checkpoint(list_checkpoints(run_dir)[-1])["model"]


def same_params(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())
        else:
            assert torch.equal(a[k], b[k]), k


def test_ddp_two_processes_equal_one(manifest, tmp_path):
    "2 gloo processes x batch 4 == 1 process x batch 8, with BatchNorm on running statistics (split-independent)."
    ov = overrides(manifest, tmp_path, **{"train.bn_mode": "frozen", "optim.epochs": 1})
    one = cli(["pretrain", "--config", str(DEMO_CFG), "--no-progress", *ov, "train.run_name=one"], threads=2)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "crisscross.cli", "pretrain", "--config", str(DEMO_CFG), "--no-progress", *ov,
                          "train.run_name=two"], env=env(1), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    same_params(final_state(tmp_path / "one"), final_state(tmp_path / "two"), atol=2e-5)
    m1, m2 = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert np.allclose(m1["loss"], m2["loss"], atol=1e-5)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
    closing = [l for l in two.stdout.splitlines() if l.startswith("run ") and " steps in " in l]
    assert len(closing) == 1, two.stdout[-2000:]          # one closing line (rank 0's), not one per process


def test_sigkill_and_resume_is_exact(manifest, tmp_path):
    ov = overrides(manifest, tmp_path)
    ref = cli(["pretrain", "--config", str(DEMO_CFG), "--no-progress", *ov, "train.run_name=ref"])
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "crisscross.cli", "pretrain", "--config", str(DEMO_CFG), "--no-progress",
                          *ov, "train.run_name=killed"], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (run.exists() and any(c.name == "ckpt_step00000002.pt" for c in run.glob("ckpt_step*.pt"))):
        assert p.poll() is None and time.time() - t0 < 300, "the run ended or hung before its first checkpoint"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    steps_done = max(int(c.stem[9:]) for c in run.glob("ckpt_step*.pt"))
    assert steps_done < 4, "killed too late to test a mid-run resume"
    res = cli(["pretrain", "--config", str(DEMO_CFG), "--no-progress", *ov, "train.run_name=killed"])
    assert res.returncode == 0 and "resuming" in res.stdout, res.stderr[-2000:]
    same_params(final_state(tmp_path / "ref"), final_state(run))
    a, b = read_metrics(tmp_path / "ref")[LOSS_COLS], read_metrics(run)[LOSS_COLS]
    assert a.step.tolist() == b.step.tolist() == [1, 2, 3, 4]
    assert np.array_equal(a.to_numpy(), b.to_numpy())
    # a truncated newest checkpoint is detected and the previous one is used; the run ends the same
    newest = list_checkpoints(run)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    (run / "summary.json").unlink()
    res = cli(["pretrain", "--config", str(DEMO_CFG), "--no-progress", *ov, "train.run_name=killed"])
    assert res.returncode == 0 and "skipping checkpoint" in res.stderr and "from ckpt_step00000002.pt" in res.stdout
    same_params(final_state(tmp_path / "ref"), final_state(run))


def test_sigterm_checkpoints_and_resumes(manifest, tmp_path):
    ov = overrides(manifest, tmp_path, **{"optim.epochs": 3, "train.checkpoint_every_steps": 100})
    run = tmp_path / "term"
    p = subprocess.Popen([sys.executable, "-m", "crisscross.cli", "pretrain", "--config", str(DEMO_CFG), "--no-progress",
                          *ov, "train.run_name=term"], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().strip()):
        assert p.poll() is None and time.time() - t0 < 300
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    assert "stopped by a signal" in out
    stopped_at = read_checkpoint(list_checkpoints(run)[-1])["step"]
    assert 1 <= stopped_at < 6 and not (run / "summary.json").exists()
    res = cli(["pretrain", "--config", str(DEMO_CFG), "--no-progress", *ov, "train.run_name=term"])
    assert res.returncode == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
    assert read_metrics(run).step.tolist() == list(range(1, 7))


def test_seeds(manifest, tmp_path):
    curves = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = load_config(DEMO_CFG, overrides(manifest, tmp_path, **{"train.seed": seed, "optim.epochs": 1,
                                                                    "train.run_name": name}))
        pretrain(cfg, progress=False)
        curves[name] = read_metrics(tmp_path / name)["loss"].to_numpy()
    assert np.array_equal(curves["a"], curves["b"])
    assert not np.allclose(curves["a"], curves["c"])


def test_window_means_are_the_means_of_the_steps(manifest, tmp_path):
    "`<key>_win` is the mean of every step of a logging window; the plain columns are its last step; training is the same."
    logs = {}
    for every in (1, 2):
        cfg = load_config(DEMO_CFG, overrides(manifest, tmp_path, **{"train.log_every_steps": every,
                                                                    "train.run_name": f"log{every}"}))
        pretrain(cfg, progress=False)
        logs[every] = read_metrics(tmp_path / f"log{every}").set_index("step")
    one, two = logs[1], logs[2]
    assert two.index.tolist() == [2, 4] and two.win_steps.tolist() == [2, 2] and one.win_steps.tolist() == [1] * 4
    for k in ("loss", "sync", "async", "xm_margin"):
        np.testing.assert_allclose(two[k], one[k].loc[[2, 4]], rtol=0, atol=1e-7, err_msg=k)          # last step
        np.testing.assert_allclose(two[f"{k}_win"], [one[k].loc[[1, 2]].mean(), one[k].loc[[3, 4]].mean()],
                                   rtol=0, atol=1e-7, err_msg=k)
    same_params(final_state(tmp_path / "log1"), final_state(tmp_path / "log2"))


def test_nan_loss_stops_with_the_step(manifest, tmp_path):
    from crisscross.data import dataset_from_config

    class Poisoned(torch.utils.data.Dataset):
        def __init__(self, ds): self.ds = ds
        def __len__(self): return len(self.ds)
        def set_epoch(self, e): self.ds.set_epoch(e)
        def __getitem__(self, i):
            s = self.ds[i]
            if self.ds.epoch == 1: s["v1"] = s["v1"] * float("nan")
            return s

    cfg = load_config(DEMO_CFG, overrides(manifest, tmp_path, **{"train.run_name": "nan"}))
    with pytest.raises(FloatingPointError, match="at step 2 "):
        Trainer(cfg, dataset=Poisoned(dataset_from_config(cfg, progress=False)), progress=False).fit()
    assert read_checkpoint(list_checkpoints(tmp_path / "nan")[-1])["step"] == 2   # the good epoch-end checkpoint


def poisoned_grad_model(at_call: int):
    "A CrissCross whose 6th-last parameter gets a NaN gradient at its `at_call`-th backward (1-based); (model_fn, name)."
    box = {}
    def model_fn(cfg):
        m = CrissCross(cfg.model)
        name, param = list(m.named_parameters())[-6]
        calls = {"n": 0}
        def hook(g):
            calls["n"] += 1
            return g * float("nan") if calls["n"] == at_call else g
        param.register_hook(hook)
        box["name"] = name
        return m
    return model_fn, box


def test_nonfinite_gradient_stops_with_the_step_and_parameter(manifest, tmp_path):
    cfg = load_config(DEMO_CFG, overrides(manifest, tmp_path, **{"train.run_name": "nangrad"}))
    model_fn, box = poisoned_grad_model(at_call=3)      # steps 0, 1 fine (epoch 0 and its checkpoint), step 2 poisoned
    with pytest.raises(FloatingPointError) as e:
        Trainer(cfg, model_fn=model_fn, progress=False).fit()
    msg = str(e.value)
    assert "at step 2 " in msg and f"first offending parameter {box['name']} " in msg and "loss was finite" in msg, msg
    ckpts = list_checkpoints(tmp_path / "nangrad")
    assert [read_checkpoint(c)["step"] for c in ckpts] == [2]          # the good epoch-end checkpoint, nothing after it
    state = read_checkpoint(ckpts[-1])["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_bf16_on_cpu_is_refused_before_training(manifest, tmp_path):
    with pytest.raises(ValueError, match="train.precision='bf16' is refused on CPU"):
        check_run_config(load_config(DEMO_CFG, ["train.precision=bf16"]), 1, "cpu")
    assert check_run_config(load_config(DEMO_CFG, ["train.precision=bf16"]), 1, "cuda") == "bf16"
    r = cli(["pretrain", "--config", str(DEMO_CFG), "--no-progress", *overrides(manifest, tmp_path),
             "train.precision=bf16", "train.device=cpu"])
    assert r.returncode != 0
    assert "train.precision='bf16' is refused on CPU" in r.stderr and "bf16_conv3d_probe" in r.stderr, r.stderr[-2000:]
    assert "train.precision='fp32'" in r.stderr
    assert not list(tmp_path.glob("*/ckpt_step*.pt"))


def test_persistent_workers_equal_the_main_process_and_resume_exactly(manifest, tmp_path, one_thread):
    """2 loader workers kept for the whole run (3 epochs, so 2 epoch boundaries), stopped mid-epoch by max_steps and
    resumed with workers again, end bit-identical to a run that loads everything in the main process."""
    ov = lambda **kw: overrides(manifest, tmp_path, **{"optim.epochs": 3, "train.checkpoint_every_steps": 100, **kw})
    pretrain(load_config(DEMO_CFG, ov(**{"data.num_workers": 0, "train.run_name": "main"})), progress=False)
    part = pretrain(load_config(DEMO_CFG, ov(**{"data.num_workers": 2, "train.run_name": "workers", "train.max_steps": 3})),
                    progress=False)
    assert part["steps"] == 3                           # 1 step into epoch 1 (2 steps per epoch)
    full = pretrain(load_config(DEMO_CFG, ov(**{"data.num_workers": 2, "train.run_name": "workers"})), progress=False)
    assert full["steps"] == 6
    same_params(final_state(tmp_path / "main"), final_state(tmp_path / "workers"))
    a, b = read_metrics(tmp_path / "main")[LOSS_COLS], read_metrics(tmp_path / "workers")[LOSS_COLS]
    assert a.step.tolist() == b.step.tolist() == [1, 2, 3, 4, 5, 6]
    assert np.array_equal(a.to_numpy(), b.to_numpy())


def test_knn_monitor_is_logged_and_leaves_training_alone(manifest, tmp_path, one_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ov = lambda **kw: overrides(manifest, tmp_path, **{"train.bn_mode": "frozen", **kw})   # frozen: BN modes must survive it
    pretrain(load_config(DEMO_CFG, ov(**{"train.run_name": "plain"})), progress=False)
    pretrain(load_config(DEMO_CFG, ov(**{"train.run_name": "knn", "train.knn_every_epochs": 1, "train.knn_k": 3})),
             progress=False)
    m = read_metrics(tmp_path / "knn")
    assert m.step.tolist() == [1, 2, 3, 4]
    assert m.knn_v.notna().tolist() == m.knn_a.notna().tolist() == [False, True, False, True]   # each epoch end
    for col in ("knn_v", "knn_a"):
        assert m[col].dropna().between(0, 1).all(), m[col]
    assert (m.knn_s.dropna() > 0).all()
    # the monitor changes nothing in the training
    same_params(final_state(tmp_path / "plain"), final_state(tmp_path / "knn"))
    assert np.array_equal(read_metrics(tmp_path / "plain")[LOSS_COLS].to_numpy(), m[LOSS_COLS].to_numpy())
    ea = EventAccumulator(str(tmp_path / "knn" / "tb")).Reload()
    assert {"knn_v", "knn_a"} <= set(ea.Tags()["scalars"])
    assert [e.step for e in ea.Scalars("knn_v")] == [2, 4]
    # every 2nd epoch only; a manifest without the labelled splits fails before training, naming the key
    pretrain(load_config(DEMO_CFG, ov(**{"train.run_name": "knn2", "optim.epochs": 4, "train.knn_every_epochs": 2,
                                         "train.knn_k": 3})), progress=False)
    assert read_metrics(tmp_path / "knn2").dropna(subset=["knn_v"]).step.tolist() == [4, 8]
    with pytest.raises(ValueError, match="train.knn_every_epochs=1 needs labelled videos"):
        Trainer(load_config(DEMO_CFG, ov(**{"train.run_name": "bad", "train.knn_every_epochs": 1,
                                            "train.knn_splits": "[train, val]"})), progress=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("override,message", [
    ("optim.bacth=8", "bacth"),
    ("sampler.mode=sideways", "sampler.mode='sideways'"),
    ("optim.base_lr=-0.1", "optim.base_lr"),
    ("optim.batch=7", "optim.batch=7: expected a multiple of world size 2"),
])
def test_bad_config_fails_before_training(manifest, tmp_path, override, message):
    if override.startswith("optim.batch"):
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "-m", "crisscross.cli", "pretrain", "--config", str(DEMO_CFG), "--no-progress",
                            *overrides(manifest, tmp_path), override], env=env(), capture_output=True, text=True, timeout=300)
    else:
        r = cli(["pretrain", "--config", str(DEMO_CFG), "--no-progress", *overrides(manifest, tmp_path), override])
    assert r.returncode != 0
    assert message in r.stderr, r.stderr[-2000:]
    assert not list(tmp_path.glob("*/ckpt_step*.pt"))


def test_resume_refuses_a_changed_config(manifest, tmp_path):
    ov = overrides(manifest, tmp_path, **{"optim.epochs": 1, "train.run_name": "x"})
    assert cli(["pretrain", "--config", str(DEMO_CFG), "--no-progress", *ov]).returncode == 0
    r = cli(["pretrain", "--config", str(DEMO_CFG), "--no-progress", *ov, "sampler.mode=extreme"])
    assert r.returncode == 2 and "sampler.mode" in r.stderr and "refusing to resume" in r.stderr
