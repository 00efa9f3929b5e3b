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
