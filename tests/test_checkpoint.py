"""Checkpoints: exact round trips, corrupt-file fallback, config refusal, atomicity, DDP prefixes, backbone export."""
import contextlib
import os
import random
import warnings

import numpy as np
import pytest
import torch

import crisscross.checkpoint as ckpt
from crisscross.checkpoint import (checkpoint_path, export_backbones, latest_checkpoint, list_checkpoints,
                                   load_checkpoint, read_checkpoint, save_checkpoint)
from crisscross.config import load_config
from crisscross.encoders import AudioResNet18, R2Plus1D18
from crisscross.model import CrissCross
from crisscross.optim import build_optimizer, build_scheduler

TINY = ["model.preset=tiny", "optim.epochs=2", "optim.per_device_batch=4", "optim.reference_batch=4"]


def _setup(seed=0, overrides=()):
    cfg = load_config(overrides=TINY + list(overrides))
    torch.manual_seed(seed)
    model = CrissCross(cfg.model)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, steps_per_epoch=5)
    return cfg, model, opt, sched


def _step(model, opt, sched):
    v = [torch.randn(2, 3, 2, 16, 16) for _ in range(2)]
    a = [torch.randn(2, 1, 16, 32) for _ in range(2)]
    out = model(v[0], v[1], a[0], a[1])
    loss = sum(-torch.nn.functional.cosine_similarity(out.p[k], out.z[j].detach()).mean()
               for k, j in [("v1", "v2"), ("v2", "v1"), ("a1", "v1"), ("v1", "a2")])
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    return loss.item()


def _save(path, cfg, model, opt, sched, step, **kw):
    return save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, epoch=0, step=step, config=cfg, **kw)


def test_round_trip_restores_parameters_optimizer_schedule_and_rng(tmp_path):
    cfg, model, opt, sched = _setup()
    _step(model, opt, sched); _step(model, opt, sched)
    path = _save(checkpoint_path(tmp_path, 2), cfg, model, opt, sched, 2, extra={"note": "x"})
    # the uninterrupted continuation, with its random numbers
    losses = [_step(model, opt, sched) for _ in range(2)]
    after = {k: v.clone() for k, v in model.state_dict().items()}
    expected_rng = (random.random(), np.random.rand())

    _, model2, opt2, sched2 = _setup(seed=123)          # different initialisation
    random.seed(5); np.random.seed(5); torch.manual_seed(5)
    info = load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2, config=cfg)
    assert (info["step"], info["epoch"], info["extra"]) == (2, 0, {"note": "x"})
    assert info["code_version"]["version"] and sched2.last_step == 2
    losses2 = [_step(model2, opt2, sched2) for _ in range(2)]   # draws the same torch random inputs
    assert losses2 == losses
    for k, v in model2.state_dict().items():
        assert torch.equal(v, after[k]), k
    assert (random.random(), np.random.rand()) == expected_rng
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for i in s1["state"]:
        for n in s1["state"][i]:
            assert torch.equal(torch.as_tensor(s1["state"][i][n]), torch.as_tensor(s2["state"][i][n]))


def test_truncated_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path):
    cfg, model, opt, sched = _setup()
    for s in (1, 2, 3):
        _step(model, opt, sched); _save(checkpoint_path(tmp_path, s), cfg, model, opt, sched, s)
    newest = checkpoint_path(tmp_path, 3)
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="ckpt_step00000003.pt"):
        assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 2)
    with pytest.raises(ValueError, match="cannot be read"):
        read_checkpoint(newest)
    (tmp_path / "ckpt_step00000004.pt").write_bytes(b"")   # empty file, e.g. a full disk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 2)
    assert latest_checkpoint(tmp_path / "absent") is None


def test_keep_last_prunes_older_checkpoints(tmp_path):
    cfg, model, opt, sched = _setup()
    for s in (10, 20, 30, 40):
        _save(checkpoint_path(tmp_path, s), cfg, model, opt, sched, s, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_step00000030.pt", "ckpt_step00000040.pt"]


def test_config_difference_that_matters_refuses_and_ignored_one_does_not(tmp_path):
    cfg, model, opt, sched = _setup()
    path = _save(checkpoint_path(tmp_path, 1), cfg, model, opt, sched, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, other, _, _ = _setup(seed=9)
    other_state = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError) as e:
        load_checkpoint(path, model=other, config=load_config(overrides=TINY + ["sampler.mode=extreme"]))
    assert "sampler.mode" in str(e.value) and "'mild'" in str(e.value) and "'extreme'" in str(e.value)
    assert all(torch.equal(v, other_state[k]) for k, v in other.state_dict().items())   # untouched by the refusal
    load_checkpoint(path, model=other, config=load_config(overrides=TINY + ["train.max_steps=7"]))
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    with pytest.raises(ValueError, match="optim.base_lr"):
        load_checkpoint(path, model=other, config=load_config(overrides=TINY + ["optim.base_lr=1e-2"]))


def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    cfg, model, opt, sched = _setup()
    target = checkpoint_path(tmp_path, 1)
    _save(target, cfg, model, opt, sched, 1)
    good = target.read_bytes()

    def broken_save(obj, f, *a, **k):   # torch.save takes a path or a file object
        with (open(f, "wb") if isinstance(f, (str, os.PathLike)) else contextlib.nullcontext(f)) as fh:
            fh.write(b"partial bytes")
        raise OSError("disk full")
    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(target, cfg, model, opt, sched, 1)
    with pytest.raises(OSError, match="disk full"):
        _save(checkpoint_path(tmp_path, 2), cfg, model, opt, sched, 2)
    assert target.read_bytes() == good and not checkpoint_path(tmp_path, 2).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]   # no temporary files left


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_checkpoints_and_backbones_get_the_ordinary_file_mode(tmp_path, umask):
    "Written through a temporary file, yet with the mode of any new file (0666 minus the umask), not mkstemp's 0600:"
    "on a shared cluster the group must be able to read a run's checkpoints and exported backbones."
    cfg, model, opt, sched = _setup()
    old = os.umask(umask)
    try:
        ck = _save(checkpoint_path(tmp_path, 1), cfg, model, opt, sched, 1)
        written = export_backbones(ck, tmp_path / "export")
    finally:
        os.umask(old)
    for f in [ck, *written.values()]:
        assert (f.stat().st_mode & 0o777) == 0o666 & ~umask, f"{f.name}: mode {oct(f.stat().st_mode & 0o777)}"


def test_ddp_style_prefixes_are_stripped_and_restored(tmp_path):
    cfg, model, opt, sched = _setup()

    class Wrapper(torch.nn.Module):    # stands in for DistributedDataParallel: the model under `.module`
        def __init__(self, m):
            super().__init__(); self.module = m
    path = _save(checkpoint_path(tmp_path, 1), cfg, Wrapper(model), opt, sched, 1)
    state = read_checkpoint(path)["model"]
    assert not any(k.startswith("module.") for k in state)
    _, model2, _, _ = _setup(seed=4)
    load_checkpoint(path, model=Wrapper(model2))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    # a state saved *with* the prefix (e.g. by other tools) also loads
    raw = read_checkpoint(path); raw["model"] = {"module." + k: v for k, v in raw["model"].items()}
    _, model3, _, _ = _setup(seed=5)
    load_checkpoint(raw, model=model3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model3.state_dict().values()))


def test_export_backbones_gives_loadable_state_dicts(tmp_path):
    cfg, model, opt, sched = _setup()
    path = _save(checkpoint_path(tmp_path, 1), cfg, model, opt, sched, 1)
    files = export_backbones(path, tmp_path / "export")
    assert {p.name for p in files.values()} == {"video_backbone.pt", "audio_backbone.pt"}
    v, a = torch.load(files["video"], weights_only=True), torch.load(files["audio"], weights_only=True)
    video, audio = R2Plus1D18(width_mult=cfg.model.video_width), AudioResNet18(width_mult=cfg.model.audio_width)
    assert set(v) == set(video.state_dict()) and set(a) == set(audio.state_dict())
    video.load_state_dict(v); audio.load_state_dict(a)
    assert all(torch.equal(x, y) for x, y in zip(video.state_dict().values(), model.video.state_dict().values()))
    assert export_backbones(path, tmp_path / "export") == files        # identical: no error
    _step(model, opt, sched)
    path2 = _save(checkpoint_path(tmp_path, 2), cfg, model, opt, sched, 2)
    with pytest.raises(FileExistsError, match="video_backbone.pt exists and differs"):
        export_backbones(path2, tmp_path / "export")
    export_backbones(path2, tmp_path / "export", overwrite=True)
    new = torch.load(files["video"], weights_only=True)
    assert all(torch.equal(new[k], t) for k, t in model.video.state_dict().items())
