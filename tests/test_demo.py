"""The demo world (crisscross.demo): determinism, real decodable media, the manifest, nesting sizes, event alignment,
designed ambiguity, resumability and bad arguments."""
import hashlib
import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from crisscross.demo import (DEMO_SIZES, MANIFEST_COLUMNS, PROBE_SIZES, SPLITS, DemoWorld, clip_id, default_demo_root,
                             demo_clip, demo_counts, demo_plan, generate_demo, render_clip)

TINY = {'pretrain': 3, 'train': 2, 'val': 1, 'test': 2}
NONE = dict.fromkeys(SPLITS, 0)
W = DemoWorld()


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    return root, generate_demo(root, 'xs', seed=0, workers=2, progress=False, n_clips=TINY)


def _decode(path):
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format='rgb24') for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().mean(0) for f in c.decode(audio=0)])
    return frames, audio


# --- determinism -------------------------------------------------------------------------------------------------
def test_same_seed_same_content_different_seed_different():
    v1, a1, e1, c1 = demo_clip(0, 'pretrain', 5)
    v2, a2, e2, c2 = demo_clip(0, 'pretrain', 5)
    assert np.array_equal(v1, v2) and np.array_equal(a1, a2) and c1 == c2
    pd.testing.assert_frame_equal(e1.onsets, e2.onsets)
    v3, a3, _, c3 = demo_clip(1, 'pretrain', 5)
    assert c3 == c1 and not np.array_equal(v1, v3) and not np.array_equal(a1, a3)
    v4, a4, _, _ = demo_clip(0, 'train', 5)   # another split: other content, even at the same index
    assert not np.array_equal(v1, v4)


def test_same_seed_byte_identical_files_and_manifest(tiny, tmp_path):
    root, m = tiny
    m2 = generate_demo(tmp_path, 'xs', seed=0, workers=1, progress=False, n_clips=TINY)
    assert m2.read_bytes() == m.read_bytes()
    for rel in pd.read_csv(m).path:
        assert (root / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    m3 = generate_demo(tmp_path, 'xs', seed=1, workers=1, progress=False, n_clips={'train': 1, 'pretrain': 0, 'val': 0, 'test': 0})
    assert pd.read_csv(m3).checksum[0] not in set(pd.read_csv(m).checksum)


# --- the files ---------------------------------------------------------------------------------------------------
def test_files_decode_with_expected_streams(tiny):
    root, m = tiny
    for row in pd.read_csv(m).itertuples():
        with av.open(str(root / row.path)) as c:
            assert (len(c.streams.video), len(c.streams.audio)) == (1, 1)
            vs, aus = c.streams.video[0], c.streams.audio[0]
            assert vs.codec_context.name == 'h264' and aus.codec_context.name == 'aac'
            assert float(vs.average_rate) == W.fps == row.fps
            assert (vs.width, vs.height) == (W.size, W.size)
            assert aus.rate == W.sample_rate == row.sample_rate and aus.channels == 1
            assert vs.frames == W.duration * W.fps
            assert abs(float(vs.duration * vs.time_base) - 10.0) < 1e-6
            assert abs(float(aus.duration * aus.time_base) - 10.0) < 0.05


def test_decoded_content_matches_render_and_stays_aligned(tiny):
    root, m = tiny
    df = pd.read_csv(m)
    row = df[df.split == 'train'].iloc[1]
    frames, audio = _decode(root / row.path)
    v, a, _, c = demo_clip(0, 'train', 1)
    assert W.class_names[c] == row.label
    assert frames.shape == v.shape
    assert np.abs(frames.astype(np.float32) - v).mean() < 6      # lossy, but the same pictures in the same order
    assert len(audio) >= len(a)
    # the AAC track starts where the rendered audio starts: cross-correlation peaks at lag 0
    lags = np.arange(-1024, 1025, 1)
    seg = a[22050:22050 * 3]
    xc = [np.dot(audio[22050 + L:22050 * 3 + L], seg) for L in lags]
    assert lags[int(np.argmax(xc))] == 0
    assert np.corrcoef(audio[:len(a)], a)[0, 1] > 0.9


# --- the manifest ------------------------------------------------------------------------------------------------
def test_manifest_schema_and_counts(tiny):
    root, m = tiny
    assert m.name == 'demo_n3-2-1-2_seed0.csv'
    df = pd.read_csv(m, keep_default_na=False)
    assert tuple(df.columns) == MANIFEST_COLUMNS
    assert df.split.value_counts().to_dict() == TINY
    assert list(df.split.unique()) == list(SPLITS)
    assert df.clip_id.is_unique and (df.label != '').all() and set(df.label) <= set(W.class_names)
    assert (df.video_duration == 10.0).all() and (df.audio_duration == 10.0).all() and (df.has_audio == 1).all()
    for row in df.itertuples():
        assert not Path(row.path).is_absolute() and row.path == f"media/{row.split}/{row.clip_id}.mp4"
        assert row.checksum == 'sha256:' + hashlib.sha256((root / row.path).read_bytes()).hexdigest()[:16]
    # probe splits are balanced round-robin
    full = demo_plan('xs')
    for s, n in PROBE_SIZES.items():
        counts = full[full.split == s].label.value_counts()
        assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_named_sizes():
    assert max(DEMO_SIZES.values()) / min(DEMO_SIZES.values()) >= 8
    for size, n in DEMO_SIZES.items():
        assert demo_counts(size) == {'pretrain': n, **PROBE_SIZES}


def test_sizes_nest():
    plans = {s: demo_plan(s, seed=3) for s in DEMO_SIZES}
    order = sorted(DEMO_SIZES, key=DEMO_SIZES.get)
    for small, big in zip(order, order[1:]):
        a, b = plans[small], plans[big]
        pa, pb = a[a.split == 'pretrain'].clip_id.tolist(), b[b.split == 'pretrain'].clip_id.tolist()
        assert pa == pb[:len(pa)] and len(pb) > len(pa)
        assert a[a.split != 'pretrain'].clip_id.tolist() == b[b.split != 'pretrain'].clip_id.tolist()


def test_sizes_nest_on_disk(tiny, tmp_path):
    "A clip's bytes depend on (seed, split, index) only, not on how many clips were asked for."
    root, m = tiny
    m2 = generate_demo(tmp_path, 'xs', seed=0, workers=1, progress=False,
                       n_clips={'pretrain': 1, 'train': 0, 'val': 0, 'test': 0})
    assert pd.read_csv(m2).checksum[0] == pd.read_csv(m).checksum[0]


# --- events ------------------------------------------------------------------------------------------------------
def _alignment(v, a, frames, samples):
    "Fraction of events whose frame is brighter than the one before, and whose audio is louder after than before."
    L = W.sample_rate // W.fps
    fm = v.astype(np.float32).mean((1, 2, 3))
    frames = frames[(frames > 0) & (frames < len(v))]
    samples = samples[(samples > L) & (samples < len(a) - L)]
    rms = lambda x: np.sqrt(np.mean(x ** 2))
    vis = np.mean(fm[frames] > fm[frames - 1])
    aud = np.mean([rms(a[s:s + L]) > rms(a[s - L:s]) for s in samples])
    return vis, aud


@pytest.mark.parametrize('cls', range(len(W.classes)))
def test_events_align(cls):
    v, a, ev = render_clip(cls, np.random.default_rng([42, cls]))
    on = ev.onsets
    assert len(on) >= 5 and on.time.is_monotonic_increasing
    d = on.frame / W.fps - on.time
    assert ((d >= 0) & (d < 1 / W.fps)).all()              # the visual event is on the first frame at or after the onset
    assert (np.abs(on['sample'] / W.sample_rate - on.time) <= 1 / W.sample_rate).all()
    shots = ev.shots
    assert shots.start.iloc[0] == 0 and shots.end.iloc[-1] == W.duration
    assert np.allclose(shots.end.iloc[:-1].to_numpy(), shots.start.iloc[1:].to_numpy())
    assert (shots.source.diff().iloc[1:] != 0).all()        # a cut always changes the active source
    for o in on.itertuples():
        sh = shots.iloc[o.shot]
        assert sh.start <= o.time < sh.end and sh.source == o.source
    vis, aud = _alignment(v, a, on.frame.to_numpy(), on['sample'].to_numpy())
    assert vis > 0.9 and aud > 0.9
    # control: the same test at times shifted by half a shot length must not pass (the check can fail)
    rng = np.random.default_rng(0)
    fake = np.sort(rng.uniform(0.1, 9.9, 60))
    fvis, faud = _alignment(v, a, np.ceil(fake * W.fps).astype(int), np.round(fake * W.sample_rate).astype(int))
    assert fvis < 0.75 and faud < 0.75


def test_shots_are_short_and_scenes_have_several_sources():
    lens, n_src = [], []
    for i in range(12):
        _, _, ev, _ = demo_clip(0, 'val', i)
        lens += (ev.shots.end - ev.shots.start).tolist()
        n_src.append(ev.shots.source.nunique())
    lens = np.array(lens)
    lo, hi = W.shot_seconds
    assert (lens <= hi + lo / 2 + 1e-9).all() and (lens < 1.0).mean() > 0.25   # the last shot may absorb a sliver
    assert min(n_src) >= 2 and max(n_src) == 3


# --- classes -----------------------------------------------------------------------------------------------------
def test_ambiguous_pairs_are_exact():
    "From the same generator, look-alike classes render identical frames, sound-alike classes identical sound."
    assert W.ambiguous_pairs('video') and W.ambiguous_pairs('audio')
    for mod, pairs in (('video', W.ambiguous_pairs('video')), ('audio', W.ambiguous_pairs('audio'))):
        for i, j in pairs:
            vi, ai, _ = render_clip(i, np.random.default_rng(11))
            vj, aj, _ = render_clip(j, np.random.default_rng(11))
            same, other = ((vi, vj), (ai, aj)) if mod == 'video' else ((ai, aj), (vi, vj))
            assert np.array_equal(*same), (mod, i, j)
            assert not np.array_equal(*other), (mod, i, j)
    # and every other pair differs in both modalities
    vi, ai, _ = render_clip(0, np.random.default_rng(11))
    vj, aj, _ = render_clip(2, np.random.default_rng(11))
    assert not np.array_equal(vi, vj) and not np.array_equal(ai, aj)


def test_classes_differ_on_average_except_the_designed_pairs():
    "Pairwise linear separability on cheap features: high for different signatures, lower for the designed pairs."
    sk = pytest.importorskip('sklearn')
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    world, n = DemoWorld(duration=4.0), 16
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 32, (3, 7, 7), stride=(1, 2, 2))

    def feats(v, a):
        x = torch.from_numpy(v[::2]).permute(3, 0, 1, 2).float()[None] / 255 - 0.45
        with torch.no_grad():
            h = torch.relu(conv(x))
        fv = torch.cat([h.mean((2, 3, 4)), h.amax((2, 3, 4))], 1)[0].numpy()
        hop = 512
        k = len(a) // hop
        spec = np.log(np.abs(np.fft.rfft(a[:k * hop].reshape(k, hop) * np.hanning(hop), axis=1)) + 1e-3)
        spec = spec[:, 1:].reshape(k, 32, -1).mean(2)
        env = spec.mean(1)
        fa = np.concatenate([spec.mean(0), spec.std(0), np.abs(np.fft.rfft(env - env.mean()))[:20]])
        return fv, fa

    F = {c: [feats(*render_clip(c, np.random.default_rng([9, c, i]), world)[:2]) for i in range(n)]
         for c in range(len(world.classes))}
    for k, mod in enumerate(('video', 'audio')):
        amb = set(world.ambiguous_pairs(mod))
        acc = {}
        for i in F:
            for j in F:
                if i < j:
                    X = np.array([f[k] for f in F[i]] + [f[k] for f in F[j]])
                    y = np.r_[np.zeros(n), np.ones(n)]
                    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
                    acc[i, j] = cross_val_score(clf, X, y, cv=4).mean()
        others = np.mean([v for p, v in acc.items() if p not in amb])
        designed = np.mean([acc[p] for p in amb])
        assert others > 0.7, (mod, others)
        assert designed < others - 0.1, (mod, designed, others)


# --- resumability and atomic writes ------------------------------------------------------------------------------
def test_resume_regenerates_only_missing_or_broken(tiny, tmp_path):
    root, m = tiny
    work = tmp_path / 'copy'
    shutil.copytree(root, work)
    df = pd.read_csv(m)
    gone, broken = work / df.path[1], work / df.path[4]
    want_gone, want_broken = gone.read_bytes(), broken.read_bytes()
    mtimes = {p: (work / p).stat().st_mtime_ns for p in df.path}
    gone.unlink()
    broken.write_bytes(want_broken[:len(want_broken) // 3])     # a truncated file is not valid
    (work / 'media/train/.leftover.mp4.tmp123').write_bytes(b'x')  # a crashed run's temp file is ignored
    m2 = generate_demo(work, 'xs', seed=0, workers=2, progress=False, n_clips=TINY)
    assert gone.read_bytes() == want_gone and broken.read_bytes() == want_broken
    for p in df.path:
        if work / p not in (gone, broken):
            assert (work / p).stat().st_mtime_ns == mtimes[p], p
    assert m2.read_bytes() == m.read_bytes()


def test_overwrite_rewrites_everything(tiny, tmp_path):
    root, m = tiny
    work = tmp_path / 'copy'
    shutil.copytree(root, work)
    p = work / pd.read_csv(m).path[0]
    before, t0 = p.read_bytes(), p.stat().st_mtime_ns
    generate_demo(work, 'xs', seed=0, workers=1, progress=False, n_clips=TINY, overwrite=True)
    assert p.stat().st_mtime_ns != t0 and p.read_bytes() == before


# --- partial generation (only some splits) -----------------------------------------------------------------------
def test_partial_generation_writes_only_the_requested_splits(tiny, tmp_path):
    root, m = tiny
    full = pd.read_csv(m)
    mp = generate_demo(tmp_path, 'xs', seed=0, workers=2, progress=False, n_clips=TINY, splits=('pretrain',))
    assert mp.name == 'demo_n3-2-1-2_seed0_pretrain.csv'
    df = pd.read_csv(mp)
    assert tuple(df.columns) == MANIFEST_COLUMNS and df.split.value_counts().to_dict() == {'pretrain': TINY['pretrain']}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob('*.mp4')) == sorted(df.path)
    assert [p.name for p in tmp_path.glob('*.csv')] == [mp.name]          # no full manifest written
    # the same rows, in the same order, as the full manifest's pretrain split (same bytes on disk)
    pd.testing.assert_frame_equal(df, full[full.split == 'pretrain'].reset_index(drop=True))
    # several splits: named in SPLITS order whatever order they are given in
    m2 = generate_demo(tmp_path, 'xs', seed=0, workers=1, progress=False, n_clips=TINY, splits=['test', 'pretrain'])
    assert m2.name == 'demo_n3-2-1-2_seed0_pretrain-test.csv'
    assert pd.read_csv(m2).split.tolist() == ['pretrain'] * TINY['pretrain'] + ['test'] * TINY['test']
    assert not (tmp_path / 'media' / 'train').exists() and not (tmp_path / 'media' / 'val').exists()


def test_full_generation_after_partial_reuses_the_clips(tiny, tmp_path):
    root, m = tiny
    mp = generate_demo(tmp_path, 'xs', seed=0, workers=1, progress=False, n_clips=TINY, splits=('pretrain',))
    part = pd.read_csv(mp)
    mtimes = {p: (tmp_path / p).stat().st_mtime_ns for p in part.path}
    before = mp.read_bytes()
    mf = generate_demo(tmp_path, 'xs', seed=0, workers=2, progress=False, n_clips=TINY)
    assert mf.name == m.name and mf.read_bytes() == m.read_bytes()    # the full manifest, as from scratch
    assert {p: (tmp_path / p).stat().st_mtime_ns for p in part.path} == mtimes   # pretrain clips kept, not rewritten
    assert mp.read_bytes() == before                                  # the partial manifest is left as it was
    # every split asked for explicitly is the full generation, under the usual name
    assert generate_demo(tmp_path, 'xs', seed=0, workers=1, progress=False, n_clips=TINY, splits=SPLITS) == mf


def test_world_fingerprint_is_computed_once_per_world(monkeypatch):
    import crisscross.demo as demo
    calls = []
    real = demo.asdict
    monkeypatch.setattr(demo, 'asdict', lambda x: calls.append(1) or real(x))
    w = DemoWorld(click_rate=0.25)
    fp = w.fingerprint()
    assert [w.fingerprint() for _ in range(5)] == [fp] * 5 and len(calls) == 1
    assert demo_plan('xs', world=w).clip_id.str.startswith(f"demo{fp}-").all() and len(calls) == 1
    assert DemoWorld(click_rate=0.25).fingerprint() == fp and len(calls) == 2   # an equal world: the same hash
    monkeypatch.setattr(demo, 'DEMO_VERSION', demo.DEMO_VERSION + 1)             # a new version is never served stale
    assert w.fingerprint() != fp
    assert w == DemoWorld(click_rate=0.25) and 'fingerprint' not in repr(w)     # the cache is not a field


# --- arguments ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs, msg', [
    (dict(size='huge'), "size='huge' is not one of ['xs', 's', 'm', 'l']"),
    (dict(seed=-1), "seed=-1 must be a non-negative int"),
    (dict(seed=1.5), "seed=1.5 must be a non-negative int"),
    (dict(seed=True), "seed=True must be a non-negative int"),
    (dict(workers=0), "workers=0 must be an int >= 1"),
    (dict(n_clips={'trian': 2}), "n_clips split='trian' is not one of"),
    (dict(n_clips={'val': 2.5}), "n_clips['val']=2.5 must be a non-negative int"),
    # (no clips asked for: if a bad `splits` got through, the test would fail fast instead of rendering size s)
    (dict(splits='pretrain', n_clips=NONE), "splits='pretrain' is not a non-empty subset of ['pretrain', 'train', 'val', 'test']"),
    (dict(splits=('pretrain', 'dev'), n_clips=NONE), "splits=('pretrain', 'dev') is not a non-empty subset of ['pretrain', 'train'"),
    (dict(splits=(), n_clips=NONE), "splits=() is not a non-empty subset of"),
    (dict(splits=3, n_clips=NONE), "splits=3 is not a non-empty subset of"),
])
def test_bad_arguments(tmp_path, kwargs, msg):
    with pytest.raises(ValueError) as e:
        generate_demo(tmp_path, **{'progress': False, **kwargs})
    assert msg in str(e.value)
    assert not list(tmp_path.rglob('*.mp4'))


def test_bad_render_arguments():
    with pytest.raises(ValueError, match=r"class_idx=8 must be an int in \[0, 8\)"):
        render_clip(8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="split='dev' is not one of"):
        demo_clip(0, 'dev', 0)
    with pytest.raises(ValueError, match="motion='wobble' is not one of"):
        DemoWorld(classes=(W.classes[0], W.classes[1].__class__('x', W.classes[0].visual.__class__('disk', 'solid', 'wobble'),
                                                                  W.classes[0].acoustic)))


def test_world_fingerprint_names_the_media():
    assert clip_id(0, 'train', 1) == clip_id(0, 'train', 1, DemoWorld())
    assert clip_id(0, 'train', 1) != clip_id(0, 'train', 1, DemoWorld(snr_db=(0.0, 10.0)))
    assert clip_id(0, 'train', 1) != clip_id(1, 'train', 1)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv('CRISSCROSS_DEMO_ROOT', str(tmp_path / 'x'))
    assert default_demo_root() == tmp_path / 'x'
    monkeypatch.delenv('CRISSCROSS_DEMO_ROOT')
    assert default_demo_root() == Path.home() / '.cache' / 'crisscross' / 'demo'


def test_generate_demo_command_renders_the_chosen_splits(tmp_path, monkeypatch, capsys):
    "`crisscross generate-demo --splits` passes the splits on; a bad split name fails before anything is rendered."
    import crisscross.demo as demo
    from crisscross.cli import main
    got = {}
    monkeypatch.setattr(demo, "generate_demo", lambda root, **k: got.update(root=root, **k) or tmp_path / "m.csv")
    assert main(["generate-demo", "--size", "xs", "--splits", "pretrain, test", "--root", str(tmp_path), "--no-progress"]) == 0
    assert got["splits"] == ["pretrain", "test"] and got["size"] == "xs" and got["root"] == str(tmp_path)
    assert main(["generate-demo", "--root", str(tmp_path), "--no-progress"]) == 0 and got["splits"] is None
    monkeypatch.undo()
    assert main(["generate-demo", "--splits", "pretrain,sideways", "--root", str(tmp_path / "d"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "splits=['pretrain', 'sideways']" in err and "'val'" in err
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").rglob("*.mp4"))


# --- guests: sources of another class in a clip --------------------------------------------------------------------
def test_guests_leave_the_default_world_unchanged():
    "guests was added after the default world was rendered and committed: at 0 it is not part of the fingerprint (the"
    "formula of the days before guests, recomputed here), and the sources' draws are those of before (cls = the class)."
    import json
    from dataclasses import asdict
    import crisscross.demo as demo
    before = {k: v for k, v in asdict(W).items() if k not in ('guests', 'segment_seconds')}   # both added later
    blob = json.dumps({'v': demo.DEMO_VERSION, **before}, sort_keys=True, default=str)
    assert W.fingerprint() == DemoWorld(guests=0).fingerprint() == hashlib.sha256(blob.encode()).hexdigest()[:6]
    assert DemoWorld(n_sources=(2, 2), guests=1).fingerprint() != DemoWorld(n_sources=(2, 2)).fingerprint()
    for i in range(8):
        ev = demo.demo_scene(0, 'pretrain', i)
        assert (ev.sources.cls == i % 8).all()


def test_guest_shots_are_rendered_with_the_guests_class(monkeypatch):
    import crisscross.demo as demo
    w = DemoWorld(n_sources=(3, 3), guests=1, shot_seconds=(1.5, 3.0))
    seen = []   # (source, class spec) of every shot's picture and sound
    real_v, real_a = demo._render_shot_video, demo._render_shot_audio
    monkeypatch.setattr(demo, '_render_shot_video', lambda world, spec, src, *a: seen.append(('v', src.name, spec)) or real_v(world, spec, src, *a))
    monkeypatch.setattr(demo, '_render_shot_audio', lambda world, spec, src, *a: seen.append(('a', src.name, spec)) or real_a(world, spec, src, *a))
    guest_classes = set()
    for i in range(8):
        seen.clear()
        video, audio, ev, c = demo_clip(0, 'pretrain', i, w)
        src = ev.sources
        assert list(src.cls[:2]) == [c, c] and src.cls[2] != c                     # the last source is the guest
        guest_classes.add(int(src.cls[2]))
        g = w.classes[int(src.cls[2])]
        off = (src.hue[2] - demo.COLOURS[g.visual.colour] + 0.5) % 1 - 0.5
        assert abs(off) <= w.hue_spread + 1e-9                                     # in the guest's colour family
        assert sorted(s for _, s, _ in seen) == sorted(2 * list(ev.shots.source))   # one picture, one sound per shot
        assert all(spec == w.classes[int(src.cls[s])] for _, s, spec in seen)
        assert 2 in set(ev.shots.source) or len(ev.shots) < 3
        scene = demo.demo_scene(0, 'pretrain', i, w)                               # the fast path draws the same scene
        assert scene.sources.equals(src) and scene.shots.equals(ev.shots)
    assert len(guest_classes) >= 3                                                 # guests come from several classes
    with pytest.raises(ValueError, match=r"guests=2 must be an int in \[0, n_sources\[0\]=2\)"):
        DemoWorld(guests=2)


def test_relaxation_content_reports_class_shares_only_with_guests():
    from crisscross.demo import relaxation_content
    plain = relaxation_content(modes=['extreme'], n_clips=20)
    assert list(plain.columns) == ['v1~v2', 'v1~a1', 'v1~a2', 'shift_s']
    w = DemoWorld(n_sources=(3, 3), guests=1, shot_seconds=(1.5, 3.0))
    rc = relaxation_content(modes=['none', 'extreme'], n_clips=40, world=w)
    # a class plays at least whenever its source does; only a guest makes the class share smaller than 1
    assert (rc['v1~a1 class'] >= rc['v1~a1'] - 1e-12).all() and (rc['v1~a2 class'] >= rc['v1~a2'] - 1e-12).all()
    assert (rc[['v1~a1 class', 'v1~a2 class']] < 1).all().all()
    assert rc.loc['none', 'v1~a1 class'] == rc.loc['none', 'v1~a2 class']               # no relaxation: same window
    assert rc.loc['extreme', 'v1~a1 class'] - rc.loc['extreme', 'v1~a2 class'] > 0.1    # far apart: another class often


# --- segments: a source's time cut into shots ------------------------------------------------------------------------
def test_segments_leave_the_default_world_unchanged():
    "segment_seconds was added after the default world was committed: at (0, 0) it leaves the fingerprint and the shots as"
    "they were (the draws of the code before segments, re-implemented here from the same rng)."
    import crisscross.demo as demo
    assert DemoWorld(segment_seconds=(0.0, 0.0)).fingerprint() == W.fingerprint() == '5395a7'   # the committed clip ids
    assert DemoWorld(segment_seconds=(2.0, 4.0)).fingerprint() != W.fingerprint()
    for i in range(6):
        rng = np.random.default_rng([0, 0, i]).spawn(3)[0]
        srcs = demo._draw_sources(W, rng, int(rng.integers(W.n_sources[0], W.n_sources[1] + 1)), i % 8)
        lo, hi = W.shot_seconds
        bounds = [0.0]
        while bounds[-1] < W.duration: bounds.append(bounds[-1] + rng.uniform(lo, hi))
        bounds[-1] = W.duration
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < lo / 2: del bounds[-2]
        src = [int(rng.integers(len(srcs)))]
        for _ in range(len(bounds) - 2): src.append(int((src[-1] + rng.integers(1, len(srcs))) % len(srcs)))
        shots = demo.demo_scene(0, 'pretrain', i).shots
        assert np.array_equal(shots.start, bounds[:-1]) and np.array_equal(shots.end, bounds[1:]) and list(shots.source) == src


def test_segments_cut_a_sources_time_into_shots():
    import crisscross.demo as demo
    w = DemoWorld(n_sources=(3, 3), guests=1, segment_seconds=(2.0, 4.0))
    runs, n_shots = [], 0
    for i in range(40):
        sh = demo.demo_scene(0, 'pretrain', i, w).shots
        assert sh.start.iloc[0] == 0 and sh.end.iloc[-1] == w.duration and np.allclose(sh.start.iloc[1:], sh.end.iloc[:-1])
        lens = (sh.end - sh.start).to_numpy()
        assert lens.max() <= w.shot_seconds[1] + w.shot_seconds[0] / 2 + 1e-9      # shots as long as the default's
        n_shots += len(sh)
        change = np.r_[True, sh.source.to_numpy()[1:] != sh.source.to_numpy()[:-1]]
        seg = np.add.reduceat(lens, np.flatnonzero(change))                       # a source's time between changes
        runs += list(seg[:-1])                                                     # (the last one is cut by the clip's end)
    assert n_shots > 40 * 4                                                        # several shots per clip ...
    assert min(runs) >= 2.0 - 1e-9 and max(runs) <= 4.0 + 1.0 + 1e-9               # ... and 2-4 s per source (+ a sliver)
    assert np.mean(runs) > 2.5
    with pytest.raises(ValueError, match=r"segment_seconds=\(3.0, 1.0\) must be \(lo, hi\)"):
        DemoWorld(segment_seconds=(3.0, 1.0))
    from crisscross.demo import demo_world
    assert demo_world({'segment_seconds': [2, 4]}).segment_seconds == (2.0, 4.0)


def test_segments_make_the_synchronous_audio_the_guests_more_often():
    "The point of segments (research e20): far-apart audio hears v1's class much less often than synchronous audio."
    from crisscross.demo import relaxation_content
    seg = relaxation_content(modes=['extreme'], n_clips=60, world=DemoWorld(n_sources=(5, 5), guests=1, segment_seconds=(2.0, 4.0)))
    cut = relaxation_content(modes=['extreme'], n_clips=60, world=DemoWorld(n_sources=(5, 5), guests=1))
    d = lambda r: r.loc['extreme', 'v1~a1 class'] - r.loc['extreme', 'v1~a2 class']
    assert d(seg) > 0.15 and d(seg) > 2 * d(cut)


# --- the clips of the committed runs -------------------------------------------------------------------------------
def test_the_reference_lists_every_clip_of_the_s_demo():
    "data_manifests/demo_reference.csv: one checksum for every clip of the default world's `l` demo, seed 0 (no more)."
    from crisscross.demo import DEMO_REFERENCE
    ref = pd.read_csv(DEMO_REFERENCE, dtype=str)
    assert ref.columns.tolist() == ['clip_id', 'checksum']
    assert sorted(ref.clip_id) == sorted(demo_plan('l', 0).clip_id) and ref.clip_id.is_unique
    assert set(demo_plan('s', 0).clip_id) < set(ref.clip_id)          # l holds every smaller size
    assert ref.checksum.str.fullmatch(r'sha256:[0-9a-f]{16}').all()


def test_tiny_demo_compared_with_the_reference(tiny):
    "Every clip of the tiny demo is in the reference; `differ` counts the clips whose bytes differ on this machine."
    from crisscross.demo import DEMO_REFERENCE, compare_demo_reference
    _, man = tiny
    c = compare_demo_reference(man)
    m, ref = pd.read_csv(man), pd.read_csv(DEMO_REFERENCE).set_index('clip_id').checksum
    assert (c['available'], c['compared'], c['not_in_reference']) == (True, sum(TINY.values()), 0)
    assert c['differ'] == int((ref[m.clip_id].to_numpy() != m.checksum.to_numpy()).sum())


def test_generate_demo_warns_when_clips_differ_from_the_reference(tiny, tmp_path, monkeypatch, caplog):
    import logging
    import crisscross.demo as demo
    root, man = tiny
    m = pd.read_csv(man)
    ref = m[['clip_id', 'checksum']].copy()
    ref.loc[1, 'checksum'] = 'sha256:' + 'f' * 16       # as if the committed runs' machine had rendered clip 1 otherwise
    ref.to_csv(tmp_path / 'ref.csv', index=False)
    monkeypatch.setattr(demo, 'DEMO_REFERENCE', tmp_path / 'ref.csv')
    (root / m.path[3]).unlink()                          # one clip to render again: the call compares and warns
    with caplog.at_level(logging.WARNING, logger='crisscross.demo'):
        generate_demo(root, 'xs', seed=0, workers=1, progress=False, n_clips=TINY)
    msg = [r.getMessage() for r in caplog.records if r.name == 'crisscross.demo']
    assert len(msg) == 1 and f"1 of {len(m)} demo clips differ" in msg[0] and m.clip_id[1] in msg[0]
    caplog.clear()                                       # nothing rendered (every run calls it): no comparison, no warning
    with caplog.at_level(logging.WARNING, logger='crisscross.demo'):
        generate_demo(root, 'xs', seed=0, workers=1, progress=False, n_clips=TINY)
    assert not [r for r in caplog.records if r.name == 'crisscross.demo']
    ref.loc[1, 'checksum'] = m.checksum[1]               # the reference agrees again: rendering warns no more
    ref.to_csv(tmp_path / 'ref.csv', index=False)
    (root / m.path[3]).unlink()
    with caplog.at_level(logging.WARNING, logger='crisscross.demo'):
        generate_demo(root, 'xs', seed=0, workers=1, progress=False, n_clips=TINY)
    assert not [r for r in caplog.records if r.name == 'crisscross.demo']


def test_the_stage_reference_agrees_with_the_clip_reference():
    "data_manifests/demo_reference_stages.csv: the first 8 pre-training clips, whose file digests are the clip reference's."
    from crisscross.demo import DEMO_REFERENCE, DEMO_STAGES_REFERENCE, STAGES
    st = pd.read_csv(DEMO_STAGES_REFERENCE, dtype=str)
    ref = pd.read_csv(DEMO_REFERENCE, dtype=str).set_index('clip_id').checksum
    assert st.columns.tolist() == ['clip_id', *STAGES]
    assert st.clip_id.tolist() == [clip_id(0, 'pretrain', i) for i in range(8)]
    assert ('sha256:' + st.file).tolist() == ref[st.clip_id].tolist()
    assert st[list(STAGES)].apply(lambda c: c.str.fullmatch(r'[0-9a-f]{16}')).all().all()
