"""The whole CrissCross model: parameter counts, outputs of the four views, gradients, optimiser groups."""
import pytest
import torch

from crisscross.encoders import count_parameters
from crisscross.losses import VIEWS, crisscross_loss
from crisscross.model import CrissCross, MODEL_PRESETS, ModelConfig, model_config


def test_full_size_counts_match_the_paper():
    m = CrissCross()
    assert count_parameters(m) == 49_662_080
    groups = m.param_groups()
    assert sum(q.numel() for q in groups["backbone"]) == 15_379_136 + 11_170_240
    assert sum(q.numel() for q in groups["projector"]) == 2 * 9_455_616
    assert sum(q.numel() for q in groups["predictor"]) == 2 * 2_100_736
    ids = [id(q) for g in groups.values() for q in g]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))


@pytest.mark.parametrize("preset", ["small", "tiny"])
def test_scaled_presets_forward_backward(preset):
    torch.manual_seed(0)
    m = CrissCross(model_config(preset))
    cfg = MODEL_PRESETS[preset]
    assert count_parameters(m) < count_parameters(CrissCross()) / 10
    v = [torch.randn(3, 3, 4, 32, 32) for _ in range(2)]
    a = [torch.randn(3, 1, 40, 101) for _ in range(2)]
    out = m(*v, *a)
    assert set(out.z) == set(out.p) == set(VIEWS)
    for k in VIEWS:
        assert out.z[k].shape == out.p[k].shape == (3, cfg.proj_dim)
    crisscross_loss(out.z, out.p).total.backward()
    missing = [n for n, q in m.named_parameters() if q.grad is None or not torch.isfinite(q.grad).all()]
    assert not missing


def test_views_go_through_their_own_modality():
    torch.manual_seed(0)
    m = CrissCross(model_config("tiny")).eval()
    v1, v2 = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 3, 4, 32, 32)
    a1, a2 = torch.randn(2, 1, 40, 101), torch.randn(2, 1, 40, 101)
    out = m(v1, v2, a1, a2)
    z_v1, p_v1 = m.project(v1, "v")
    z_a2, _ = m.project(a2, "a")
    torch.testing.assert_close(out.z["v1"], z_v1)
    torch.testing.assert_close(out.p["v1"], p_v1)
    torch.testing.assert_close(out.z["a2"], z_a2)
    assert not torch.allclose(out.z["v1"], out.z["v2"])


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="audio_width=-1"):
        ModelConfig(audio_width=-1)
    with pytest.raises(ValueError, match="proj_dim=0"):
        ModelConfig(proj_dim=0)
    with pytest.raises(ValueError, match="expected one of full, small, tiny"):
        model_config("giant")


# ------------------------------------------------------------------------------------------------ speed options
def _views(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 3, 4, 32, 32, generator=g), torch.randn(B, 3, 4, 32, 32, generator=g),
            torch.randn(B, 1, 40, 101, generator=g), torch.randn(B, 1, 40, 101, generator=g))


def _outputs_and_grads(model, views):
    model.zero_grad(set_to_none=True)
    out = model(*views)
    crisscross_loss(out.z, out.p).total.backward()
    return out, torch.cat([q.grad.reshape(-1) for q in model.parameters()])


def _pair(**opts):
    torch.manual_seed(0)
    ref = CrissCross(model_config("tiny"))
    other = CrissCross(model_config("tiny", **opts))
    other.load_state_dict(ref.state_dict())
    return ref, other


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("opts", [dict(batch_views=True), dict(channels_last=True),
                                  dict(batch_views=True, channels_last=True)])
def test_speed_options_shapes_and_order(opts):
    _, m = _pair(**opts)
    out = m(*_views(B=3))
    assert list(out.z) == list(out.p) == list(VIEWS)
    for k in VIEWS:
        assert out.z[k].shape == out.p[k].shape == (3, 128)


@pytest.mark.parametrize("opts", [dict(batch_views=True), dict(channels_last=True),
                                  dict(batch_views=True, channels_last=True)])
def test_speed_options_equal_separate_passes_in_eval_mode(opts):
    "BatchNorm on its running statistics: outputs and gradients equal the published forward's up to rounding."
    ref, m = _pair(**opts)
    ref.eval(); m.eval()
    views = _views()
    (o1, g1), (o2, g2) = _outputs_and_grads(ref, views), _outputs_and_grads(m, views)
    for k in VIEWS:
        torch.testing.assert_close(o2.z[k], o1.z[k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(o2.p[k], o1.p[k], rtol=1e-5, atol=1e-6)
    assert _rel(g2, g1) < 1e-5


def test_batch_views_is_a_different_model_in_training_mode():
    "In training mode BatchNorm normalises over both views: outputs differ, and the view 1 half alone changes v1's output."
    ref, m = _pair(batch_views=True)
    views = _views()
    o1, o2 = ref(*views), m(*views)
    assert (o1.z["v1"] - o2.z["v1"]).abs().max() > 1e-3
    # v2's content reaches v1's output only through BatchNorm's statistics: replacing v2 changes z_v1 when batched...
    other = (views[0], torch.randn_like(views[1]), views[2], views[3])
    assert (m(*other).z["v1"] - o2.z["v1"]).abs().max() > 1e-3
    # ...and not in the published, separate passes
    torch.testing.assert_close(ref(*other).z["v1"], o1.z["v1"])


def test_channels_last_keeps_training_mode_semantics():
    "Same weights, same inputs, training mode: gradient error vs float64 of the same order as the default layout's."
    ref, m = _pair(channels_last=True)
    exact = CrissCross(model_config("tiny")).double()
    exact.load_state_dict(ref.state_dict())
    views = _views(B=8)
    g1, g2 = _outputs_and_grads(ref, views)[1], _outputs_and_grads(m, views)[1]
    g64 = _outputs_and_grads(exact, [v.double() for v in views])[1]
    assert _rel(g2, g64) < max(10 * _rel(g1, g64), 1e-3), (_rel(g2, g64), _rel(g1, g64))
    convs = [mod for mod in m.video.modules() if isinstance(mod, torch.nn.Conv3d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last_3d) for c in convs)


def test_batch_views_needs_equal_view_shapes():
    _, m = _pair(batch_views=True)
    v1, v2, a1, a2 = _views()
    with pytest.raises(ValueError, match="views a1 and a2 have shapes"):
        m(v1, v2, a1, a2[:, :, :20])


class _Synthetic(torch.utils.data.Dataset):
    "Deterministic random clip-pairs keyed by (epoch, index): what the trainer needs from a dataset, without decoding."
    def __init__(self, n=16): self.n, self.epoch = n, 0
    def __len__(self): return self.n
    def set_epoch(self, epoch): self.epoch = epoch
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1000 * self.epoch + i)
        return {"v1": torch.randn(3, 4, 32, 32, generator=g), "v2": torch.randn(3, 4, 32, 32, generator=g),
                "a1": torch.randn(1, 40, 101, generator=g), "a2": torch.randn(1, 40, 101, generator=g),
                "clip_id": f"synthetic{i}"}


def _train(tmp_path, name, *extra):
    from crisscross.config import load_config
    from crisscross.trainer import Trainer
    cfg = load_config(overrides=["model.preset=tiny", "data.num_workers=0", "optim.batch=8", "optim.reference_batch=8",
                                 "optim.epochs=1", "optim.warmup_epochs=0", "train.precision=fp32", "train.device=cpu",
                                 "train.log_every_steps=1", f"train.out_dir={tmp_path}", f"train.run_name={name}", *extra])
    t = Trainer(cfg, dataset=_Synthetic(), progress=False)
    return cfg, t, t.fit()


def test_trainer_runs_with_the_speed_options_and_resumes(tmp_path, monkeypatch):
    "A tiny run with both options: it trains, names the option in its run id, checkpoints, resumes, exports backbones."
    from crisscross.checkpoint import read_checkpoint
    from crisscross.config import run_id
    from crisscross.encoders import R2Plus1D18
    from crisscross.trainer import read_metrics
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    opts = ["model.batch_views=true", "model.channels_last=true"]
    cfg, t, s = _train(tmp_path, "fast", *opts, "train.max_steps=1")
    assert s["steps"] == 1 and "-tiny-bv-" in run_id(cfg)
    assert isinstance(t.model, CrissCross) and t.model.cfg.batch_views and t.model.cfg.channels_last
    cfg, t, s = _train(tmp_path, "fast", *opts)                  # resumes from step 1 into a channels-last model
    assert s["steps"] == 2
    m = read_metrics(tmp_path / "fast")
    assert list(m["step"]) == [1, 2] and m["loss"].notna().all()
    video = R2Plus1D18(width_mult=cfg.model.video_width)
    video.load_state_dict(torch.load(s["backbones"]["video"], map_location="cpu"))   # plain layout loads the export
    state = read_checkpoint(s["checkpoint"])["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_trainer_speed_options_equal_published_with_frozen_batchnorm(tmp_path, monkeypatch):
    "train.bn_mode=frozen: two optimiser steps with both options give the published forward's parameters (rounding)."
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, t1, _ = _train(tmp_path, "published", "train.bn_mode=frozen")
        _, t2, _ = _train(tmp_path, "fast", "train.bn_mode=frozen", "model.batch_views=true", "model.channels_last=true")
    finally:
        torch.set_num_threads(old)
    p1 = torch.cat([p.detach().reshape(-1) for p in t1.model.parameters()])
    torch.manual_seed(0)                                 # the trainer's initialisation (train.seed 0)
    p0 = torch.cat([p.detach().reshape(-1) for p in CrissCross(model_config("tiny")).parameters()])
    p2 = torch.cat([p.detach().reshape(-1) for p in t2.model.parameters()])
    moved = float((p1 - p0).norm())
    assert moved > 1e-3                                  # the steps changed the weights...
    print(f"moved {moved:.3g}, difference {float((p2 - p1).norm()):.3g}")
    assert float((p2 - p1).norm()) < 1e-4 * moved, (float((p2 - p1).norm()), moved)   # ...the same way
