"""crisscross.transforms against SPEC section 4: log-mel numbers, audio masks and gain, per-view video parameters,
reproducibility under a torch.Generator, ImageNet normalisation and the augmentation probabilities."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from crisscross.transforms import (AUDIO_STATS, IMAGENET_MEAN, IMAGENET_STD, AudioAugment, AudioEval, AudioParams,
                                   LogMel, VideoAugment, VideoEval, audio_stats, mask_spec, normalize_spec,
                                   resize_crop_spec, sample_resized_crop)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _wave(seed=0, n=32000):
    return 0.1 * torch.randn(n, generator=_gen(seed))


def _clip(T=8, H=72, W=96, offset=0, seed=0):
    "Random smooth-ish content plus a bright square; frame t = frame 0 + offset * t."
    base = torch.randint(0, 120, (H // 8, W // 8, 3), generator=_gen(seed)).float()
    frame = base.repeat_interleave(8, 0).repeat_interleave(8, 1)
    frame[H // 4: H // 2, W // 4: W // 2] = 200.0
    return torch.stack([(frame + offset * t).clamp(0, 255) for t in range(T)]).to(torch.uint8)


# ---------------------------------------------------------------- audio

def _htk_mel(f): return 2595.0 * np.log10(1.0 + f / 700.0)
def _htk_hz(m): return 700.0 * (10 ** (m / 2595.0) - 1.0)


def _numpy_logmel(wave, sr=16000, n_fft=1024, hop=160, n_mels=80, eps=1e-6):
    "Independent float64 log-mel: reflect-padded frames, periodic Hann, |rfft|^2, HTK triangular filters."
    x = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (len(x) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([x[i * hop: i * hop + n_fft] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2                         # (frames, n_fft/2+1)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = _htk_hz(np.linspace(_htk_mel(0.0), _htk_mel(sr / 2), n_mels + 2))
    fb = np.zeros((len(freqs), n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        fb[:, m] = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return np.log(power @ fb + eps).T                                        # (n_mels, frames)


def test_logmel_shape_2s_16k():
    assert LogMel()(_wave()).shape == (1, 80, 201)
    assert LogMel()(torch.randn(2, 32000)).shape == (2, 80, 201)


def test_logmel_scaled_down_settings():
    lm = LogMel(sample_rate=8000, n_fft=256, hop_length=80, n_mels=40)
    assert lm(torch.randn(16000)).shape == (1, 40, 201)
    assert lm.f_max == 4000


@pytest.mark.parametrize("sr,n_fft,hop,n_mels", [(16000, 1024, 160, 80), (8000, 256, 80, 40)])
def test_logmel_matches_independent_numpy(sr, n_fft, hop, n_mels):
    w = _wave(1, n=2 * sr)
    ours = LogMel(sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)(w)[0].double().numpy()
    ref = _numpy_logmel(w.numpy(), sr, n_fft, hop, n_mels)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_logmel_errors():
    with pytest.raises(TypeError, match="float waveform"): LogMel()(torch.zeros(32000, dtype=torch.int16))
    with pytest.raises(ValueError, match="too short"): LogMel()(torch.zeros(300))
    with pytest.raises(ValueError, match="hop_length=0"): LogMel(hop_length=0)


def test_audio_stats_pooled():
    waves = [_wave(s) * (s + 1) for s in range(3)]
    mean, std = audio_stats(waves)
    allspec = torch.cat([LogMel()(w) for w in waves]).double()
    assert mean == pytest.approx(allspec.mean().item(), abs=1e-6)
    assert std == pytest.approx(allspec.std(unbiased=False).item(), abs=1e-6)
    assert audio_stats(iter(waves)) == pytest.approx((mean, std))            # any iterable
    with pytest.raises(ValueError, match="no waveforms"): audio_stats([])


def test_default_stats_are_kinetics_sound():
    assert AUDIO_STATS == (-5.3688107, 4.410007)
    spec = LogMel()(_wave())
    torch.testing.assert_close(AudioEval()(_wave()), (spec + 5.3688107) / 4.410007)


def test_volume_range_and_effect():
    aug = AudioAugment(scale=None, n_freq_masks=0, n_time_masks=0)
    gains = [aug.sample_params(32000, _gen(s)).gain for s in range(400)]
    assert 0.8 <= min(gains) < 0.85 and 1.15 < max(gains) <= 1.2
    w = _wave(2)
    one = aug.apply(w, AudioParams(1.0, [], [], None))
    for g in (0.8, 1.2):
        # power scales by g^2, so the normalised log-mel shifts by 2 log(g) / std (eps is negligible here)
        shifted = aug.apply(w, AudioParams(g, [], [], None))
        torch.testing.assert_close(shifted - one, torch.full_like(one, 2 * math.log(g) / AUDIO_STATS[1]),
                                   atol=1e-3, rtol=0)


def test_mask_widths_follow_spec():
    aug = AudioAugment()
    fw, tw = [], []
    for s in range(500):
        p = aug.sample_params(32000, _gen(s))
        assert len(p.freq_masks) == 2 and len(p.time_masks) == 2
        for start, width in p.freq_masks:
            assert 0 <= start and start + width <= 80; fw.append(width)
        for start, width in p.time_masks:
            assert 0 <= start and start + width <= 201; tw.append(width)
    assert set(fw) == set(range(10))                                         # U{0..9}, all values seen
    assert set(tw) == set(range(20))                                         # U{0..19}


@pytest.mark.parametrize("seed", range(5))
def test_exactly_the_masked_bins_hold_the_mean(seed):
    aug = AudioAugment(scale=None)
    w = _wave(seed)
    p = aug.sample_params(32000, _gen(seed))
    out = aug.apply(w, p)[0]
    ref = normalize_spec(LogMel()(w * p.gain))[0]
    masked = torch.zeros(80, 201, dtype=torch.bool)
    for start, width in p.freq_masks: masked[start:start + width] = True
    for start, width in p.time_masks: masked[:, start:start + width] = True
    assert torch.equal(out[~masked], ref[~masked])
    assert torch.all(out[masked] == ref.mean())


def test_mask_spec_does_not_modify_input():
    spec = torch.randn(1, 80, 201)
    before = spec.clone()
    mask_spec(spec, [(0, 9)], [(0, 19)], 0.0)
    assert torch.equal(spec, before)


def test_resize_crop_window_ranges_and_zoom():
    aug = AudioAugment()
    hs, ws = [], []
    for s in range(400):
        top, left, h, w = aug.sample_params(32000, _gen(s)).window
        hs.append(h / 80); ws.append(w / 201)
        assert (0 <= top and top + h <= 80) if h <= 80 else (top <= 0 and top + h >= 80)
        assert (0 <= left and left + w <= 201) if w <= 201 else (left <= 0 and left + w >= 201)
    assert 0.59 <= min(hs) < 0.7 and 1.4 < max(hs) <= 1.51
    assert 0.6 <= min(ws) + 0.003 and max(ws) <= 1.5 + 0.003
    assert np.corrcoef(hs, ws)[0, 1] < 0.2                                   # independent axes
    spec = torch.randn(1, 80, 201)
    torch.testing.assert_close(resize_crop_spec(spec, (0, 0, 80, 201), 0.0), spec)
    # zoom out x2 in frequency with the spectrogram at the top of the window: lower half is the fill
    out = resize_crop_spec(spec, (-80, 0, 160, 201), 3.0)
    assert out.shape == spec.shape
    assert torch.all(out[0, :39] == 3.0)


def test_audio_augment_reproducible_and_varied():
    aug, w = AudioAugment(), _wave(3)
    a = aug(w, _gen(7))
    assert a.shape == (1, 80, 201) and a.dtype == torch.float32
    assert torch.equal(a, aug(w, _gen(7)))
    assert not torch.equal(a, aug(w, _gen(8)))
    g = _gen(7)
    assert not torch.equal(aug(w, g), aug(w, g))                             # successive views differ
    torch.manual_seed(0); x = aug(w)
    torch.manual_seed(0); assert torch.equal(x, aug(w))                      # global RNG when no generator


def test_audio_augment_errors():
    with pytest.raises(ValueError, match=r"shape \(N,\)"): AudioAugment()(torch.randn(1, 32000))
    with pytest.raises(ValueError, match="scale="): AudioAugment(scale=(1.5, 0.6))


# ---------------------------------------------------------------- video

def test_imagenet_normalisation_of_mid_grey():
    grey = torch.full((2, 40, 40, 3), 128, dtype=torch.uint8)
    out = VideoEval(32)(grey)
    expected = torch.tensor([0.07406, 0.20518, 0.42649])                     # (128/255 - mean) / std
    torch.testing.assert_close(out[:, 0, 5, 5], expected, atol=1e-4, rtol=0)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


def test_video_eval_resize_short_side_and_centre_crop():
    clip = torch.zeros(4, 60, 120, 3, dtype=torch.uint8)
    clip[:, :, 45:75] = 255                                                  # a white band in the centre
    out = VideoEval(30)(clip)                                                # -> 30 x 60, centre 30 x 30
    assert out.shape == (3, 4, 30, 30) and out.dtype == torch.float32
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, 0, 15, 15], white, atol=1e-4, rtol=0)
    assert out[0, 0, 15, 2] < 0                                              # band edges fall inside the crop


def test_video_augment_shape_dtype():
    out = VideoAugment()(_clip(H=128, W=171), _gen(0))
    assert out.shape == (3, 8, 112, 112) and out.dtype == torch.float32


@pytest.mark.parametrize("seed", range(6))
def test_identical_frames_stay_identical(seed):
    clip = _clip(offset=0)
    out = VideoAugment(size=48)(clip, _gen(seed))
    torch.testing.assert_close(out, out[:, :1].expand_as(out), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_clip_equals_frame_by_frame_with_same_params(seed):
    aug, clip = VideoAugment(size=48), _clip(offset=7, seed=seed)
    p = aug.sample_params(72, 96, _gen(seed))
    whole = aug.apply(clip, p)
    for t in range(clip.shape[0]):
        torch.testing.assert_close(whole[:, t], aug.apply(clip[t:t + 1], p)[:, 0], atol=1e-5, rtol=0)


def test_offset_frames_keep_the_geometry():
    "Grey frames that differ by a constant: every frame's bright region lands at the same place."
    T, H, W = 6, 72, 96
    frame = torch.full((H, W), 40.0)
    frame[20:50, 10:40] = 140.0
    clip = torch.stack([frame + 4 * t for t in range(T)])[..., None].expand(T, H, W, 3).to(torch.uint8)
    aug = VideoAugment(size=48, max_cutout=0)
    checked = 0
    for seed in range(40):
        out = aug.apply(clip, aug.sample_params(H, W, _gen(seed)))[0]       # channel 0, (T, S, S)
        lo, hi = out.amin((1, 2), keepdim=True), out.amax((1, 2), keepdim=True)
        bright = out > (lo + hi) / 2
        if bright[0].all() or (~bright[0]).all(): continue                  # this crop missed the square's edge
        agree = (bright == bright[:1]).float().mean().item()
        assert agree > 0.99, f"seed {seed}: frames disagree on {1 - agree:.3%} of pixels"
        checked += 1
    assert checked >= 10


def test_generators_reproduce_and_differ():
    aug, clip = VideoAugment(size=48), _clip()
    a = aug(clip, _gen(1))
    assert torch.equal(a, aug(clip, _gen(1)))
    assert not torch.equal(a, aug(clip, _gen(2)))
    g = _gen(1)
    assert not torch.equal(aug(clip, g), aug(clip, g))                       # two views of one call site differ
    assert aug.sample_params(72, 96, _gen(5)) == aug.sample_params(72, 96, _gen(5))
    torch.manual_seed(3); x = aug(clip)
    torch.manual_seed(3); assert torch.equal(x, aug(clip))


def test_parameter_probabilities_and_ranges():
    aug = VideoAugment()
    ps = [aug.sample_params(128, 171, _gen(s)) for s in range(600)]
    flip = np.mean([p.flip for p in ps]); gray = np.mean([p.grayscale for p in ps])
    blur = np.mean([p.blur_sigma is not None for p in ps])
    assert 0.42 < flip < 0.58, flip                                          # p = 0.5, sd 0.02
    assert 0.14 < gray < 0.26, gray                                          # p = 0.2, sd 0.016
    assert 0.42 < blur < 0.58, blur
    for p in ps:
        assert 0.6 <= p.brightness <= 1.4 and 0.6 <= p.contrast <= 1.4 and 0.6 <= p.saturation <= 1.4
        assert -0.2 <= p.hue <= 0.2 and sorted(p.jitter_order) == [0, 1, 2, 3]
        assert p.blur_sigma is None or 0.1 <= p.blur_sigma <= 2.0
        top, left, side = p.cutout
        assert 1 <= side <= 20 and 0 <= top <= 112 - side and 0 <= left <= 112 - side
    assert max(p.cutout[2] for p in ps) == 20
    assert len({tuple(p.jitter_order) for p in ps}) > 12                     # random order, not fixed


def test_resized_crop_sampler_scale_and_ratio():
    areas, ratios = [], []
    for s in range(500):
        top, left, h, w = sample_resized_crop(128, 171, generator=_gen(s))
        assert 0 <= top and top + h <= 128 and 0 <= left and left + w <= 171
        areas.append(h * w / (128 * 171)); ratios.append(w / h)
    assert min(areas) >= 0.07 and max(areas) <= 1.0 and min(areas) < 0.15
    assert min(ratios) > 0.7 and max(ratios) < 1.4
    for H, W in [(10, 400), (400, 10)]:                                      # fallback path stays inside
        top, left, h, w = sample_resized_crop(H, W, generator=_gen(0))
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W


def test_cutout_scales_with_size_and_fills_zero():
    assert VideoAugment().max_cutout == 20
    assert VideoAugment(size=56).max_cutout == 10
    aug, clip = VideoAugment(size=48), _clip()
    p = dataclasses.replace(aug.sample_params(72, 96, _gen(0)), cutout=(5, 7, 8))
    out = aug.apply(clip, p)
    assert torch.all(out[:, :, 5:13, 7:15] == 0)
    assert (out[:, :, 13:] != 0).float().mean() > 0.9


def test_grayscale_and_flip_do_what_they_say():
    aug, clip = VideoAugment(size=48), _clip()
    p = dataclasses.replace(aug.sample_params(72, 96, _gen(0)), grayscale=True, cutout=None, flip=False)
    out = aug.apply(clip, p)
    m, s = torch.tensor(IMAGENET_MEAN)[:, None, None, None], torch.tensor(IMAGENET_STD)[:, None, None, None]
    rgb = out * s + m
    torch.testing.assert_close(rgb[0], rgb[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb[1], rgb[2], atol=1e-5, rtol=0)
    flipped = aug.apply(clip, dataclasses.replace(p, flip=True))
    torch.testing.assert_close(flipped, out.flip(-1), atol=1e-5, rtol=0)


def test_video_errors():
    with pytest.raises(ValueError, match=r"uint8 clip of shape \(T, H, W, 3\)"): VideoAugment()(_clip().float())
    with pytest.raises(ValueError, match="float32 tensor of shape"): VideoEval()(_clip().float())
    with pytest.raises(ValueError, match="blur_kernel=4"): VideoAugment(blur_kernel=4)
    with pytest.raises(ValueError, match="size=0"): VideoEval(0)


def test_colour_before_upscale_matches_resize_then_colour():
    "The fast path (colour ops on the crop, then resize) stays close to resize-then-colour (the textbook order)."
    import torchvision.transforms.v2.functional as TF
    from crisscross.transforms import VideoAugment, gaussian_blur_separable
    aug = VideoAugment(size=112, max_cutout=0, blur_p=0.0)
    g = torch.Generator().manual_seed(3)
    clip = (torch.rand(8, 64, 64, 3) * 255).to(torch.uint8)
    clip = TF.gaussian_blur(clip.permute(0, 3, 1, 2), [5, 5], [2.0, 2.0]).permute(0, 2, 3, 1).contiguous()  # natural-ish
    diffs = []
    for _ in range(10):
        p = aug.sample_params(64, 64, g)
        fast = aug.apply(clip, p)
        x = TF.resized_crop(clip.permute(0, 3, 1, 2), *p.crop, size=[112, 112], antialias=True)
        x = aug._colour(TF.to_dtype(x, torch.float32, scale=True), p)
        if p.flip: x = TF.hflip(x)
        from crisscross.transforms import _finish
        diffs.append((fast - _finish(x)).abs().mean().item())
    assert max(diffs) < 0.05, diffs      # normalised units (~0.01 of the [0, 1] range)


@pytest.mark.parametrize("size,H,W", [(112, 128, 171), (48, 72, 96)])
def test_video_augment_fast_ops_equal_reference(size, H, W):
    "`VideoAugment(ops='fast')` gives the views of the default reference ops (float rounding, normalised units)."
    import torchvision.transforms.v2.functional as TF
    from crisscross.transforms import adjust_hue
    aug, fast, clip = VideoAugment(size=size), VideoAugment(size=size, ops="fast"), _clip(H=H, W=W, offset=5)
    ps = [aug.sample_params(H, W, _gen(s)) for s in range(12)]
    assert any(p.hue != 0 for p in ps) and any(p.blur_sigma is not None for p in ps)
    for p in ps:
        a, b = aug.apply(clip, p), fast.apply(clip, p)
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="ops='hsv'; expected one of reference, fast"):
        VideoAugment(ops="hsv")
    # and the function alone on random RGB, both signs and the ends of the range
    x = torch.rand(2, 8, 3, 20, 20, generator=_gen(0))
    for h in (-0.5, -0.2, 0.03, 0.2, 0.5):
        torch.testing.assert_close(adjust_hue(x, h), TF.adjust_hue(x, h), atol=1e-5, rtol=0)


def test_reference_ops_are_the_committed_kernels():
    "The default `VideoAugment` still uses torchvision's hue and the 1-channel conv2d blur, bit for bit (the committed runs)."
    import torch.nn.functional as F
    import torchvision.transforms.v2.functional as TF
    from crisscross.transforms import VIDEO_OPS, gaussian_blur_conv
    assert VIDEO_OPS["reference"][0] is TF.adjust_hue and VIDEO_OPS["reference"][1] is gaussian_blur_conv
    x = torch.rand(8, 3, 40, 44, generator=_gen(1))
    t = torch.linspace(-5, 5, 11); k = torch.exp(-0.5 * (t / 1.3) ** 2); k = k / k.sum()
    y = F.pad(x.reshape(-1, 1, 40, 44), (5, 5, 5, 5), mode="reflect")
    want = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1)).reshape(x.shape)
    assert torch.equal(gaussian_blur_conv(x, 11, 1.3), want)
    aug = VideoAugment(size=48)
    assert aug.ops == "reference"
