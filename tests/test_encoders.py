"""Encoders and heads against SPEC section 2: exact parameter counts, torchvision equivalence, released tensor groups,
shapes, pooling, initialisation, gradients and argument errors."""
import math
import re

import pytest
import torch
import torch.nn as nn
import torchvision

from crisscross.encoders import ENCODER_PRESETS, AudioResNet18, R2Plus1D18, count_parameters, scaled_width
from crisscross.heads import HeadBlock, MLPHead, Predictor, Projector

SMALL = 0.125
VIDEO_CLIP, AUDIO_CLIP = (3, 8, 112, 112), (1, 80, 201)  # the paper's pre-training inputs (without the batch)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # These tensors are tiny: on a shared 2-core machine OpenMP synchronisation, not arithmetic, dominates
    # (measured 1.7 s vs 4 ms per forward of a width-0.125 video encoder), so run each test on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def meta_count(make):
    "Parameter count of `make()` built on the meta device (nothing is allocated or initialised)."
    with torch.device("meta"):
        return count_parameters(make())


def test_exact_parameter_counts():
    video, audio = meta_count(R2Plus1D18), meta_count(AudioResNet18)
    projector, predictor = meta_count(Projector), meta_count(Predictor)
    assert (video, audio, projector, predictor) == (15_379_136, 11_170_240, 9_455_616, 2_100_736)
    assert projector + predictor == 11_556_352
    assert video + audio + 2 * (projector + predictor) == 49_662_080  # the whole pre-training model
    assert meta_count(lambda: Projector(last_bn_affine=False)) == 9_455_616 - 2 * 2048
    assert count_parameters(R2Plus1D18()) == 15_379_136  # and on the CPU, after initialisation


def _torchvision_audio():
    tv = torchvision.models.resnet18()
    tv.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    tv.fc = nn.Identity()
    return tv


def test_audio_is_torchvision_resnet18():
    tv, ours = _torchvision_audio().eval(), AudioResNet18().eval()
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in tv.parameters()]
    assert count_parameters(ours) == count_parameters(tv) == 11_170_240
    # same tensors under the same names, apart from the stem; then the same function
    renamed = {re.sub(r"^conv1\.", "stem.0.", re.sub(r"^bn1\.", "stem.1.", k)): v for k, v in tv.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ours.load_state_dict(renamed)
    x = torch.randn(1, *AUDIO_CLIP)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


def _released_video_keys():
    "State-dict keys of the released AVID-style R(2+1)D-18, built from the naming in SPEC section 2 / the notebook."
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.0.weight", *(f"conv1.1.{s}" for s in bn)]
    for stage in range(2, 6):
        for block in range(2):
            p = f"conv{stage}x.{block}."
            for conv, norm in (("spt_conv1", "spt_bn1"), ("tmp_conv1", "tmp_bn1"), ("spt_conv2", "spt_bn2"), ("tmp_conv2", "out_bn")):
                keys += [p + conv + ".weight", *(p + norm + "." + s for s in bn)]
            if stage > 2 and block == 0:
                keys.append(p + "res_conv.weight")
    return set(keys)


OUR_TO_RELEASED = [(r"^stem\.", "conv1."), (r"^layer(\d)", lambda m: f"conv{int(m.group(1)) + 1}x"),
                   (r"\.spatial1\.", ".spt_conv1."), (r"\.spatial_bn1\.", ".spt_bn1."), (r"\.temporal1\.", ".tmp_conv1."),
                   (r"\.temporal_bn1\.", ".tmp_bn1."), (r"\.spatial2\.", ".spt_conv2."), (r"\.spatial_bn2\.", ".spt_bn2."),
                   (r"\.temporal2\.", ".tmp_conv2."), (r"\.shortcut\.", ".res_conv.")]


def test_video_has_one_module_per_released_tensor_group():
    sd = R2Plus1D18().state_dict()
    renamed = {}
    for key, value in sd.items():
        for pattern, repl in OUR_TO_RELEASED:
            key = re.sub(pattern, repl, key)
        renamed[key] = value
    assert set(renamed) == _released_video_keys()
    assert renamed["conv1.0.weight"].shape == (64, 3, 3, 7, 7)
    for stage, c_in, c_out in ((3, 64, 128), (4, 128, 256), (5, 256, 512)):
        assert renamed[f"conv{stage}x.0.res_conv.weight"].shape == (c_out, c_in, 1, 1, 1)
        assert renamed[f"conv{stage}x.0.spt_conv1.weight"].shape == (c_out, c_in, 1, 3, 3)
        assert renamed[f"conv{stage}x.0.tmp_conv1.weight"].shape == (c_out, c_out, 3, 1, 1)


def test_video_strides_and_biases():
    v = R2Plus1D18(SMALL)
    for i in (2, 3, 4):
        first = getattr(v, f"layer{i}")[0]
        assert (first.spatial1.stride, first.temporal1.stride, first.shortcut.stride) == ((1, 2, 2), (2, 1, 1), (2, 2, 2))
    assert isinstance(v.layer1[0].shortcut, nn.Identity) and isinstance(v.layer4[1].shortcut, nn.Identity)
    assert all(m.bias is None for m in v.modules() if isinstance(m, nn.Conv3d))


def _randomise_batchnorm(module):
    "Non-trivial BN statistics and affine parameters, so that a BN in the wrong place changes the output."
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            for t in (m.running_mean, m.weight, m.bias):
                t.data.normal_(0, 0.5)
            m.running_var.data.uniform_(0.5, 2.0)


def _reference_video_forward(net, x):
    "SPEC section 2 written out with torch.nn.functional, reading the weights of `net` (in eval mode)."
    F = nn.functional
    bn = lambda m, h: F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    conv0, bn0 = net.stem[0], net.stem[1]
    h = F.relu(bn(bn0, F.conv3d(x, conv0.weight, stride=(1, 2, 2), padding=(1, 3, 3))))
    h = F.max_pool3d(h, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    for stage, stride in zip((net.layer1, net.layer2, net.layer3, net.layer4), (1, 2, 2, 2)):
        for i, b in enumerate(stage):
            s = stride if i == 0 else 1
            y = F.relu(bn(b.spatial_bn1, F.conv3d(h, b.spatial1.weight, stride=(1, s, s), padding=(0, 1, 1))))
            y = F.relu(bn(b.temporal_bn1, F.conv3d(y, b.temporal1.weight, stride=(s, 1, 1), padding=(1, 0, 0))))
            y = F.relu(bn(b.spatial_bn2, F.conv3d(y, b.spatial2.weight, padding=(0, 1, 1))))
            y = F.conv3d(y, b.temporal2.weight, padding=(1, 0, 0))
            shortcut = F.conv3d(h, b.shortcut.weight, stride=s) if isinstance(b.shortcut, nn.Conv3d) else h
            h = F.relu(bn(b.out_bn, y + shortcut))
    return h.mean(dim=(2, 3, 4)), h


def test_video_computes_the_spec_formula():
    net = R2Plus1D18(SMALL)
    _randomise_batchnorm(net)
    net.eval()
    x = torch.randn(2, 3, 8, 48, 48)
    with torch.no_grad():
        feats, fmap = net(x, return_map=True)
        ref_feats, ref_map = _reference_video_forward(net, x)
    torch.testing.assert_close(fmap, ref_map)
    torch.testing.assert_close(feats, ref_feats)


def test_paper_shapes():
    video, audio = R2Plus1D18().eval(), AudioResNet18().eval()
    with torch.no_grad():
        f, m = video(torch.randn(1, *VIDEO_CLIP), return_map=True)
        assert f.shape == (1, 512) and m.shape == (1, 512, 1, 4, 4)
        f, m = audio(torch.randn(2, *AUDIO_CLIP), return_map=True)
        assert f.shape == (2, 512) and m.shape == (2, 512, 3, 7)


@pytest.mark.parametrize("frames,size,map_shape", [(8, 112, (1, 4, 4)), (8, 224, (1, 7, 7)), (32, 224, (4, 7, 7)), (9, 113, (2, 4, 4))])
def test_video_map_shapes_on_meta(frames, size, map_shape):
    with torch.device("meta"):
        f, m = R2Plus1D18(pool="max").eval()(torch.empty(2, 3, frames, size, size), return_map=True)
    assert f.shape == (2, 512) and m.shape == (2, 512, *map_shape)


@pytest.mark.parametrize("width,widths", [(0.125, (8, 16, 32, 64)), (0.25, (16, 32, 64, 128)), (0.1, (6, 13, 26, 51))])
def test_scaled_shapes(width, widths):
    v, a = R2Plus1D18(width_mult=width), AudioResNet18(width_mult=width)
    assert v.widths == a.widths == widths and v.out_dim == a.out_dim == widths[-1]
    assert [getattr(v, f"layer{i}")[1].temporal2.out_channels for i in (1, 2, 3, 4)] == list(widths)
    assert [getattr(a, f"layer{i}")[1].conv2.out_channels for i in (1, 2, 3, 4)] == list(widths)
    fv, mv = v(torch.randn(2, 3, 4, 32, 32), return_map=True)
    fa, ma = a(torch.randn(2, 1, 40, 101), return_map=True)
    assert (fv.shape, mv.shape) == ((2, widths[-1]), (2, widths[-1], 1, 1, 1))
    assert (fa.shape, ma.shape) == ((2, widths[-1]), (2, widths[-1], 2, 4))


def test_width_rounding_and_presets():
    assert ENCODER_PRESETS == {"full": 1.0, "small": 0.25, "tiny": 0.125}
    assert R2Plus1D18().width_mult == AudioResNet18().width_mult == 1.0  # full size is the default
    assert scaled_width(5, 0.5) == 3 and scaled_width(7, 0.5) == 4  # half up, not Python's half-to-even
    assert scaled_width(512, 1e-6) == 1


@pytest.mark.parametrize("cls,x", [(R2Plus1D18, torch.randn(2, 3, 8, 64, 64)), (AudioResNet18, torch.randn(2, 1, 80, 101))])
def test_max_pool_differs_from_avg(cls, x):
    mx, av = cls(SMALL, pool="max").eval(), cls(SMALL, pool="avg").eval()
    av.load_state_dict(mx.state_dict())
    with torch.no_grad():
        fmax, fmap = mx(x, return_map=True)
        favg, fmap_avg = av(x, return_map=True)
    dims = tuple(range(2, fmap.dim()))
    torch.testing.assert_close(fmap, fmap_avg)  # the pool is the only difference
    torch.testing.assert_close(fmax, fmap.amax(dim=dims))
    torch.testing.assert_close(favg, fmap.mean(dim=dims))
    assert not torch.allclose(fmax, favg)
    assert not torch.equal(mx(x), av(x))


@pytest.mark.parametrize("cls", [R2Plus1D18, AudioResNet18])
def test_initialisation(cls):
    enc = cls()
    # a conv with in != out channels tells fan_out (required) from fan_in
    convs = [m for m in enc.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.in_channels != m.out_channels]
    big = max(convs, key=lambda m: m.weight.numel())
    fan_out = big.out_channels * math.prod(big.kernel_size)
    assert abs(big.weight.std().item() / math.sqrt(2 / fan_out) - 1) < 0.02
    bns = [m for m in enc.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d))]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)


@pytest.mark.parametrize("cls,x", [(R2Plus1D18, torch.randn(2, 3, 4, 32, 32)), (AudioResNet18, torch.randn(2, 1, 40, 101))])
def test_backward_every_parameter_finite(cls, x):
    enc = cls(SMALL)
    head = nn.Sequential(Projector(enc.out_dim, 32, 16), Predictor(16, 8, 16))
    out = head(enc(x))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in [*enc.named_parameters(), *head.named_parameters()]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert enc.stem[0].weight.grad.abs().sum() > 0  # the signal reaches the first layer


@pytest.mark.parametrize("cls", [R2Plus1D18, AudioResNet18])
def test_parameters_grow_with_width(cls):
    counts = [meta_count(lambda: cls(w)) for w in (0.1, 0.125, 0.25, 0.5, 1.0)]
    assert all(a < b for a, b in zip(counts, counts[1:])), counts


def test_heads_shapes_and_batchnorm():
    assert Projector(512, 1024, 256)(torch.randn(4, 512)).shape == (4, 256)
    assert Predictor(256, 64, 256)(torch.randn(4, 256)).shape == (4, 256)
    p = Projector()
    assert [type(m).__name__ for m in p.layers] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    assert all(m.bias is not None for m in p.layers if isinstance(m, nn.Linear))
    assert [type(m).__name__ for m in Predictor().layers] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    for affine in (True, False):
        z = Projector(64, 128, 32, last_bn_affine=affine).train()(torch.randn(256, 64))
        torch.testing.assert_close(z.mean(0), torch.zeros(32), atol=1e-4, rtol=0)
        torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(32), atol=1e-2, rtol=0)
    assert MLPHead([HeadBlock(8, 4), (4, 2, False, False, False)])(torch.randn(3, 8)).shape == (3, 2)


@pytest.mark.parametrize("make,match", [
    (lambda: R2Plus1D18(pool="median"), r"pool='median' is not supported; expected one of \('avg', 'max'\)"),
    (lambda: AudioResNet18(pool="median"), r"pool='median' is not supported; expected one of \('avg', 'max'\)"),
    (lambda: R2Plus1D18(width_mult=0), r"width_mult=0 is invalid; expected a finite number > 0"),
    (lambda: AudioResNet18(width_mult=-0.5), r"width_mult=-0.5 is invalid; expected a finite number > 0"),
    (lambda: R2Plus1D18(width_mult=float("nan")), r"width_mult=nan is invalid"),
    (lambda: AudioResNet18(in_channels=0), r"in_channels=0 is invalid; expected an integer >= 1"),
    (lambda: R2Plus1D18(SMALL)(torch.randn(3, 4, 32, 32)), r"shape \(3, 4, 32, 32\).*expected a 5-d tensor \(B, C, T, H, W\)"),
    (lambda: R2Plus1D18(SMALL)(torch.randn(1, 1, 4, 32, 32)), r"input has 1 channels.*expected in_channels=3"),
    (lambda: AudioResNet18(SMALL)(torch.randn(1, 40, 101)), r"shape \(1, 40, 101\).*expected a 4-d tensor \(B, C, F, T\)"),
    (lambda: AudioResNet18(SMALL)(torch.randn(1, 3, 40, 101)), r"input has 3 channels.*expected in_channels=1"),
    (lambda: Projector(num_layers=0), r"Projector: num_layers=0 is invalid; expected an integer >= 1"),
    (lambda: Predictor(hidden_dim=-1), r"Predictor: hidden_dim=-1 is invalid; expected an integer >= 1"),
    (lambda: MLPHead([(8, 4), (5, 2)]), r"block 1 in_dim=5 does not fit; expected the previous block's out_dim=4"),
    (lambda: Projector(8, 4, 2)(torch.randn(3, 7)), r"input has shape \(3, 7\); expected \(B, in_dim=8\)"),
])
def test_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()
