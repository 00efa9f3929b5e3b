"""Encoders and heads against SPEC section 2: exact parameter counts, torchvision equivalence, shapes, pooling, gradients, errors."""
import pytest
import torch
import torch.nn as nn
import torchvision

from crisscross.encoders import AudioResNet18, R2Plus1D18, count_parameters
from crisscross.heads import Predictor, Projector

SMALL = 0.125


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_exact_parameter_counts():
    assert count_parameters(R2Plus1D18()) == 15_379_136
    assert count_parameters(AudioResNet18()) == 11_170_240
    assert count_parameters(Projector()) == 9_455_616
    assert count_parameters(Predictor()) == 2_100_736
    assert count_parameters(Projector(last_bn_affine=False)) == 9_455_616 - 2 * 2048
    # whole pre-training model (SPEC section 2): two encoders, two projectors, two predictors
    assert (count_parameters(R2Plus1D18()) + count_parameters(AudioResNet18())
            + 2 * count_parameters(Projector()) + 2 * count_parameters(Predictor())) == 49_662_080


def test_audio_matches_torchvision_resnet18():
    tv = torchvision.models.resnet18()
    tv.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    tv.fc = nn.Identity()
    ours = AudioResNet18()
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in tv.parameters()]
    assert count_parameters(ours) == count_parameters(tv)


def test_video_layout_matches_released_tensor_groups():
    sd = R2Plus1D18().state_dict()
    assert "layer1.0.shortcut.weight" not in sd  # identity shortcut, like the released conv2x.0
    for i, c_in, c_out in ((2, 64, 128), (3, 128, 256), (4, 256, 512)):
        assert sd[f"layer{i}.0.shortcut.weight"].shape == (c_out, c_in, 1, 1, 1)
        assert sd[f"layer{i}.0.spatial1.weight"].shape == (c_out, c_in, 1, 3, 3)
        assert sd[f"layer{i}.0.temporal1.weight"].shape == (c_out, c_out, 3, 1, 1)
    assert sd["stem.0.weight"].shape == (64, 3, 3, 7, 7)
    assert not any(k.endswith("bias") and "bn" not in k and "stem.1" not in k for k in sd)  # no conv biases


def test_paper_shapes():
    video, audio = R2Plus1D18().eval(), AudioResNet18().eval()
    with torch.no_grad():
        f, m = video(torch.randn(1, 3, 8, 112, 112), return_map=True)
        assert f.shape == (1, 512) and m.shape == (1, 512, 1, 4, 4)
        f, m = audio(torch.randn(2, 1, 80, 201), return_map=True)
        assert f.shape == (2, 512) and m.shape == (2, 512, 3, 7)


@pytest.mark.parametrize("width,dim", [(0.125, 64), (0.25, 128), (0.5, 256)])
def test_scaled_shapes(width, dim):
    v, a = R2Plus1D18(width_mult=width), AudioResNet18(width_mult=width)
    assert v.out_dim == dim and a.out_dim == dim
    assert v(torch.randn(2, 3, 4, 32, 32)).shape == (2, dim)
    fa, ma = a(torch.randn(2, 1, 40, 101), return_map=True)
    assert fa.shape == (2, dim) and ma.shape == (2, dim, 2, 4)
    assert [v.layer1[0].spatial1.out_channels, v.layer4[0].spatial1.out_channels] == [dim // 8, dim]


@pytest.mark.parametrize("cls,x", [(R2Plus1D18, torch.randn(2, 3, 8, 64, 64)), (AudioResNet18, torch.randn(2, 1, 80, 101))])
def test_max_pool_differs_from_avg(cls, x):
    mx, av = cls(SMALL, pool="max").eval(), cls(SMALL, pool="avg").eval()
    av.load_state_dict(mx.state_dict())
    with torch.no_grad():
        fmax, fmap = mx(x, return_map=True)
        favg = av(x)
    dims = tuple(range(2, fmap.dim()))
    torch.testing.assert_close(fmax, fmap.amax(dim=dims))
    torch.testing.assert_close(favg, fmap.mean(dim=dims))
    assert not torch.allclose(fmax, favg)


@pytest.mark.parametrize("cls,x", [(R2Plus1D18, torch.randn(2, 3, 4, 32, 32)), (AudioResNet18, torch.randn(2, 1, 40, 101))])
def test_backward_every_parameter_finite(cls, x):
    enc = cls(SMALL)
    head = nn.Sequential(Projector(enc.out_dim, 32, 16), Predictor(16, 8, 16))
    out = head(enc(x))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in [*enc.named_parameters(), *head.named_parameters()]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in enc.parameters())


@pytest.mark.parametrize("cls", [R2Plus1D18, AudioResNet18])
def test_parameters_grow_with_width(cls):
    counts = [count_parameters(cls(w)) for w in (0.125, 0.25, 0.5, 1.0)]
    assert counts == sorted(counts) and len(set(counts)) == 4


def test_heads_shapes_and_batchnorm():
    assert Projector(512, 1024, 256)(torch.randn(4, 512)).shape == (4, 256)
    assert Predictor(256, 64, 256)(torch.randn(4, 256)).shape == (4, 256)
    z = Projector(64, 128, 32).train()(torch.randn(256, 64))
    torch.testing.assert_close(z.mean(0), torch.zeros(32), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(32), atol=1e-2, rtol=0)


@pytest.mark.parametrize("make,match", [
    (lambda: R2Plus1D18(pool="median"), r"pool='median'.*\('avg', 'max'\)"),
    (lambda: AudioResNet18(pool="median"), r"pool='median'.*\('avg', 'max'\)"),
    (lambda: R2Plus1D18(width_mult=0), r"width_mult=0.*> 0"),
    (lambda: AudioResNet18(width_mult=-0.5), r"width_mult=-0.5.*> 0"),
    (lambda: R2Plus1D18(SMALL)(torch.randn(3, 4, 32, 32)), r"\(3, 4, 32, 32\).*5-d tensor"),
    (lambda: R2Plus1D18(SMALL)(torch.randn(1, 1, 4, 32, 32)), r"1 channels.*in_channels=3"),
    (lambda: AudioResNet18(SMALL)(torch.randn(1, 40, 101)), r"\(1, 40, 101\).*4-d tensor"),
    (lambda: AudioResNet18(SMALL)(torch.randn(1, 3, 40, 101)), r"3 channels.*in_channels=1"),
    (lambda: Projector(num_layers=0), r"num_layers=0"),
    (lambda: Projector(8, 4, 2)(torch.randn(3, 7)), r"in_dim=8"),
])
def test_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()
