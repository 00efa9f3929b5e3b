"""The temporal relaxation sampler against SPEC section 1: each mode's geometry under both policies, fallbacks for
short clips, windows inside their streams, determinism across processes and epochs, and the error messages."""
import multiprocessing as mp
import pickle

import numpy as np
import pytest

from crisscross.sampler import (ALIASES, ALL_MODES, MODES, POLICIES, RelaxationSampler, ViewWindows, Window,
                                make_sampler, min_duration, plot_relaxation_modes, rng_for, sample_windows)

TV, TA = 0.5, 2.0   # the default view lengths (s)
VIEWS = ("v1", "v2", "a1", "a2")


def draws(mode, policy, Tv, Ta, n, seed=0, epoch=0):
    return [sample_windows(Tv, Ta, rng_for(seed, epoch, i), mode, policy) for i in range(n)]


def views(w):
    return [getattr(w, k) for k in VIEWS]


def assert_inside_streams(w, Tv, Ta):
    # no tolerance: a window past the end of its stream would make the decoder pad or fail
    for name, x, T in (("v1", w.v1, Tv), ("v2", w.v2, Tv), ("a1", w.a1, Ta), ("a2", w.a2, Ta)):
        assert 0.0 <= x.start <= x.end <= T, (name, x, T, w)


def assert_nominal_lengths(w, Tv, Ta):
    for x, nominal, T in ((w.v1, TV, Tv), (w.v2, TV, Tv), (w.a1, TA, Ta), (w.a2, TA, Ta)):
        assert x.duration == pytest.approx(min(nominal, T), abs=1e-9), (x, nominal, T)


def assert_geometry(w, geometry, policy, T):
    "The relations SPEC section 1 states for `geometry`, on a clip whose common range [0, T] holds it."
    approx = lambda x: pytest.approx(x, abs=1e-9)
    inside = lambda inner, outer: outer.start <= inner.start and inner.end <= outer.end
    if policy == "official" and geometry in ("none", "mixed"):   # each video view somewhere inside its audio view
        assert inside(w.v1, w.a1) and inside(w.v2, w.a2), w
    if policy == "official" and geometry in ("mild", "medium"):  # the decoded video span inside the audio span
        assert inside(Window(w.v1.start, w.v2.end), Window(w.a1.start, w.a2.end)), w
    if policy == "shared":  # every audio view centred on its video view
        assert (w.a1.centre, w.a2.centre) == (approx(w.v1.centre), approx(w.v2.centre)), w
    if geometry == "none":
        assert w.v1 == w.v2 and w.a1 == w.a2, w
    elif geometry == "mild" and policy == "official":
        assert w.v2.start - w.v1.start == approx(TV / 2) and w.a2.start - w.a1.start == approx(TA / 2), w
        assert w.v1.overlap(w.v2) == approx(TV / 2) and w.a1.overlap(w.a2) == approx(TA / 2), w
    elif geometry == "medium" and policy == "official":
        assert w.v2.start == approx(w.v1.end) and w.a2.start == approx(w.a1.end), w
        assert w.v1.overlap(w.v2) == approx(0) and w.a1.overlap(w.a2) == approx(0), w
    elif geometry in ("mild", "medium"):  # shared: one shift for both modalities, in video view lengths
        shift = TV / 2 if geometry == "mild" else TV
        assert w.v2.start - w.v1.start == approx(shift) and w.a2.start - w.a1.start == approx(shift), w
    elif geometry == "extreme":
        assert max(w.v1.end, w.a1.end) <= T / 2 + 1e-9 and min(w.v2.start, w.a2.start) >= T / 2 - 1e-9, w
        assert w.v2.start - w.v1.start == approx(T / 2), w
        if policy == "official":
            assert (w.v1.start, w.v2.start) == (w.a1.start, w.a2.start), w


# (video s, audio s) -> the fallback of none, mild, medium, mixed, extreme under each policy
FALLBACK_TABLE = [
    (10.0, 10.0, [None] * 5, [None] * 5),
    (30.0, 30.0, [None] * 5, [None] * 5),
    (4.0, 4.0, [None] * 5, [None] * 5),
    (10.0, 3.2, [None, None, "mild", None, "mild"], [None, None, None, None, "medium"]),
    (3.0, 3.0, [None, None, "mild", None, "mild"], [None, None, None, None, "medium"]),
    (2.5, 2.5, [None, "none", "none", None, "none"], [None, None, None, None, "medium"]),
    (2.3, 2.3, [None, "none", "none", None, "none"], [None, None, "mild", None, "mild"]),
    (2.0, 2.0, [None, "none", "none", None, "none"], [None, "none", "none", None, "none"]),
    (1.5, 10.0, [None, "none", "none", None, "none"], [None, "none", "none", None, "none"]),
    (1.0, 1.0, ["clipped", *["none+clipped"] * 2, "clipped", "none+clipped"],
     ["clipped", *["none+clipped"] * 2, "clipped", "none+clipped"]),
    (0.1, 0.1, ["clipped", *["none+clipped"] * 2, "clipped", "none+clipped"],
     ["clipped", *["none+clipped"] * 2, "clipped", "none+clipped"]),
    (0.1, 10.0, ["clipped", *["none+clipped"] * 2, "clipped", "none+clipped"],
     ["clipped", *["none+clipped"] * 2, "clipped", "none+clipped"]),
    (10.0, 9.0, [None] * 5, [None] * 5),
    (8.0, 12.0, [None] * 5, [None] * 5),
]
CASES = [(Tv, Ta, policy, mode, row[j])
         for Tv, Ta, official, shared in FALLBACK_TABLE
         for policy, row in (("official", official), ("shared", shared))
         for j, mode in enumerate(MODES)]


@pytest.mark.parametrize("Tv,Ta,policy,mode,fallback", CASES)
def test_mode_geometry_and_fallback_table(Tv, Ta, policy, mode, fallback):
    T = min(Tv, Ta)
    geometry = mode if fallback in (None, "clipped") else fallback.split("+")[0]
    for w in draws(mode, policy, Tv, Ta, 100):
        assert isinstance(w, ViewWindows) and (w.mode, w.policy) == (mode, policy)
        assert w.fallback == fallback
        assert_inside_streams(w, Tv, Ta)
        assert_nominal_lengths(w, Tv, Ta)
        if T >= max(TV, TA):  # the geometry is only defined where the common range holds an audio view
            assert_geometry(w, geometry, policy, T)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", MODES)
def test_min_duration_is_where_the_fallback_starts(mode, policy):
    T = min_duration(mode, policy)
    assert sample_windows(T, T, rng_for(0, 0, 0), mode, policy).fallback is None
    below = sample_windows(T - 1e-6, T - 1e-6, rng_for(0, 0, 0), mode, policy).fallback
    assert below is not None if mode not in ("none", "mixed") else below == "clipped"


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", ALL_MODES)
def test_10000_random_draws_stay_inside_their_streams(mode, policy):
    # 10 000 draws per mode, split between the policies, on random stream lengths from 0 to 12 s
    durations = np.random.default_rng(123).uniform(0, 12, size=(5000, 2))
    durations[::3, 1] = durations[::3, 0]     # a third with equal streams
    durations[1::7] *= 0.2                    # some very short clips
    for i, (Tv, Ta) in enumerate(durations):
        w = sample_windows(Tv, Ta, rng_for(1, 2, i), mode, policy)
        assert_inside_streams(w, Tv, Ta)
        assert_nominal_lengths(w, Tv, Ta)


def test_inside_streams_for_any_view_lengths():
    # non-dyadic lengths (8 frames at 15 fps) round: start + length can land a hair past the end of the stream
    rng = np.random.default_rng(7)
    for i in range(3000):
        Tv, Ta = rng.uniform(0, 9, size=2)
        lv, la = 8 / 15, rng.uniform(0.3, 3.0)
        mode, policy = ALL_MODES[i % len(ALL_MODES)], POLICIES[i % 2]
        w = sample_windows(Tv, Ta, rng_for(3, 0, i), mode, policy, video_len=lv, audio_len=la)
        assert_inside_streams(w, Tv, Ta)
        for x, nominal, T in ((w.v1, lv, Tv), (w.v2, lv, Tv), (w.a1, la, Ta), (w.a2, la, Ta)):
            assert x.duration == pytest.approx(min(nominal, T), abs=1e-9)


@pytest.mark.parametrize("policy", POLICIES)
def test_mixed_views_are_independent(policy):
    ws = draws("mixed", policy, 30.0, 30.0, 3000)
    t1, t2 = np.array([w.v1.start for w in ws]), np.array([w.v2.start for w in ws])
    assert abs(np.corrcoef(t1, t2)[0, 1]) < 0.06
    assert (t2 - t1 > 1).mean() > 0.3 and (t2 - t1 < -1).mean() > 0.3   # either view may come first
    # the same statistic separates a tied mode, so the test above can fail
    m = draws("mild", policy, 30.0, 30.0, 200)
    assert np.corrcoef([w.v1.start for w in m], [w.v2.start for w in m])[0, 1] > 0.99


@pytest.mark.parametrize("policy", POLICIES)
def test_extreme_covers_each_half(policy):
    T = 10.0
    s1 = np.array([w.v1.start for w in draws("extreme", policy, T, T, 2000)])
    lo, hi = (0.0, T / 2 - TA) if policy == "official" else ((TA - TV) / 2, T / 2 - (TA + TV) / 2)
    assert s1.min() >= lo and s1.max() <= hi
    assert s1.min() < lo + 0.05 and s1.max() > hi - 0.05   # uniform over the whole first half, not a fixed point


def test_official_video_is_placed_uniformly_inside_its_audio_window():
    offsets = np.array([w.v1.start - w.a1.start for w in draws("none", "official", 10.0, 10.0, 2000)])
    assert offsets.min() >= 0 and offsets.max() <= TA - TV
    assert abs(offsets.mean() - (TA - TV) / 2) < 0.05 and offsets.std() > 0.4   # U(0, 1.5): mean 0.75, sd 0.43


def test_shared_audio_is_shifted_not_shrunk_when_the_clip_is_short():
    for w in draws("none", "shared", 1.5, 10.0, 200):
        assert w.a1.duration == pytest.approx(TA) and w.a1.start >= 0
        assert w.a1.start <= w.v1.start and w.v1.end <= w.a1.end


@pytest.mark.parametrize("policy", POLICIES)
def test_ablation_modes_are_extreme_with_one_modality_duplicated(policy):
    for i in range(100):
        ext = sample_windows(10.0, 10.0, rng_for(4, 0, i), "extreme", policy)
        vfar = sample_windows(10.0, 10.0, rng_for(4, 0, i), "v_far_a_same", policy)
        afar = sample_windows(10.0, 10.0, rng_for(4, 0, i), "v_same_a_far", policy)
        assert views(vfar) == [ext.v1, ext.v2, ext.a1, ext.a1] and vfar.v1 != vfar.v2
        assert views(afar) == [ext.v1, ext.v1, ext.a1, ext.a2] and afar.a1 != afar.a2
    assert sample_windows(3.2, 3.2, rng_for(0, 0, 0), "v_far_a_same", policy).fallback == (
        "mild" if policy == "official" else "medium")


def test_aliases_give_the_same_windows():
    for alias, name in ALIASES.items():
        assert make_sampler(alias, seed=5) == RelaxationSampler(name, seed=5)
        assert make_sampler(alias, seed=5)(10, 10, 3, 4) == RelaxationSampler(name, seed=5)(10, 10, 3, 4)


def _windows_in_worker(sampler):
    return [views(sampler(12.0, 11.5, epoch=2, index=i)) for i in range(20)]


@pytest.mark.parametrize("policy", POLICIES)
def test_same_windows_in_a_spawned_worker(policy):
    samplers = [RelaxationSampler(m, policy, seed=7) for m in ALL_MODES]
    with mp.get_context("spawn").Pool(1) as pool:   # a fresh interpreter, as a DataLoader worker may be
        there = pool.map(_windows_in_worker, samplers)
    assert there == [_windows_in_worker(s) for s in samplers]


def test_different_epochs_and_indices_give_different_windows():
    for mode in ALL_MODES:
        s = RelaxationSampler(mode, seed=7)
        e2 = [views(s(10.0, 10.0, 2, i)) for i in range(10)]
        assert e2 == [views(s(10.0, 10.0, 2, i)) for i in range(10)]
        assert all(a != b for a, b in zip(e2, [views(s(10.0, 10.0, 3, i)) for i in range(10)]))
        assert len({tuple(map(tuple, w)) for w in e2}) == 10
    assert RelaxationSampler(seed=1)(10, 10, 0, 0) != RelaxationSampler(seed=2)(10, 10, 0, 0)


def test_sampler_pickles():
    s = RelaxationSampler("medium", "shared", 0.5, 2.0, seed=9)
    assert pickle.loads(pickle.dumps(s)) == s and pickle.loads(pickle.dumps(s))(9, 9, 1, 1) == s(9, 9, 1, 1)


@pytest.mark.parametrize("call,message", [
    (lambda: sample_windows(10, 10, rng_for(0, 0, 0), mode="sideways"),
     "mode='sideways' is not a relaxation mode; expected one of none, mild, medium, mixed, extreme, v_far_a_same, "
     "v_same_a_far or a released-code alias (same_timestamp, overlapped, adjacent, random, far_apart)"),
    (lambda: sample_windows(10, 10, rng_for(0, 0, 0), policy="poster"),
     "policy='poster' is not a placement policy; expected one of official, shared"),
    (lambda: sample_windows(-1.0, 10, rng_for(0, 0, 0)),
     "video_duration=-1.0 is not a stream duration; expected a finite number of seconds >= 0"),
    (lambda: sample_windows(10, float("inf"), rng_for(0, 0, 0)), "audio_duration=inf is not a stream duration"),
    (lambda: sample_windows(10, float("nan"), rng_for(0, 0, 0)), "audio_duration=nan is not a stream duration"),
    (lambda: sample_windows(10, 10, rng_for(0, 0, 0), video_len=0.0),
     "video_len=0.0 is not a view length; expected a finite number of seconds > 0"),
    (lambda: sample_windows(10, 10, rng_for(0, 0, 0), audio_len=-2), "audio_len=-2 is not a view length"),
    (lambda: sample_windows(10, 10, None), "rng=None is not a generator; expected a numpy.random.Generator"),
    (lambda: rng_for(0, -1, 0), "epoch=-1 is not a generator key; expected an int >= 0"),
    (lambda: rng_for(0, 0, 1.5), "index=1.5 is not a generator key"),
    (lambda: RelaxationSampler("diagonal"), "mode='diagonal' is not a relaxation mode"),
    (lambda: RelaxationSampler(audio_len=float("nan")), "audio_len=nan is not a view length"),
    (lambda: RelaxationSampler(seed=-3), "seed=-3 is not a generator key"),
    (lambda: make_sampler("random", policy="loose"), "policy='loose' is not a placement policy"),
])
def test_errors_name_the_parameter_value_and_choices(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


def test_plot_draws_four_windows_per_mode_and_saves(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plot_relaxation_modes(10.0, path=tmp_path / "modes.png")
    assert (tmp_path / "modes.png").stat().st_size > 1000
    assert [len(ax.collections) for ax in fig.axes] == [4 * len(MODES)] * len(POLICIES)
    v1, v2, a1, a2 = [c.get_paths()[0].get_extents() for c in fig.axes[0].collections[:4]]   # the `none` row
    assert (v1.x0, v1.x1) == pytest.approx((v2.x0, v2.x1)) and (a1.x0, a1.x1) == pytest.approx((a2.x0, a2.x1))
    plt.close(fig)
