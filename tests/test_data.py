"""crisscross.data: reproducible pre-training samples, evaluation items, and the bad-clip policies on every kind of
awkward input: clips written here and the real clips of ../shared/data/av_clips (skipped when absent)."""
import os
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from crisscross.data import (AVEvalDataset, AVPretrainDataset, SkipCounter, SkippedClip, clip_starts, collate_views,
                             dataset_from_config, load_rows)
from crisscross.io import MediaError, write_test_clip
from crisscross.manifest import shared_data_dir
from crisscross.sampler import RelaxationSampler

SHARED = shared_data_dir()
CLIPS = SHARED / "av_clips" if SHARED else None
needs_shared = pytest.mark.skipif(CLIPS is None or not CLIPS.is_dir(),
                                  reason="../shared/data not found: set CRISSCROSS_SHARED_DATA to run the real-data tests")
SMALL = dict(frame_size=32, n_mels=40)


def manifest_for(root, files, labels=None, durations=True):
    "A manifest DataFrame over `files` (relative to `root`); durations left empty unless asked (so they are probed)."
    rows = []
    for i, f in enumerate(files):
        rows.append(dict(clip_id=f"c{i}", path=str(f), split="train", label=(labels[i] if labels else ""),
                         video_duration=np.nan, audio_duration=np.nan, fps=np.nan, sample_rate=np.nan,
                         has_audio=np.nan, checksum=""))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    out = {}
    for i in range(4):
        out[f"good{i}"] = write_test_clip(d / f"good{i}.mp4", duration=4.0, freq=300 + 100 * i)
    out["silent"] = write_test_clip(d / "silent.mp4", duration=4.0, silent=True)
    out["noaudio"] = write_test_clip(d / "noaudio.mp4", duration=4.0, audio=False)
    out["tiny"] = write_test_clip(d / "tiny.mov", duration=0.2)
    out["wav"] = write_test_clip(d / "sound.wav", duration=4.0)
    out["two_audio"] = write_test_clip(d / "two_audio.mkv", duration=4.0, n_audio_streams=2)
    out["short"] = write_test_clip(d / "short.mp4", duration=1.0)
    good = out["good0"].read_bytes()
    (d / "truncated.mp4").write_bytes(good[: len(good) // 3]); out["truncated"] = d / "truncated.mp4"
    (d / "garbage.mp4").write_bytes(b"\x00not a video" * 200); out["garbage"] = d / "garbage.mp4"
    out["missing"] = d / "missing.mp4"
    return d, out


def one(d, path, policy="skip", **kw):
    return AVPretrainDataset(manifest_for(d, [path.name]), root=d, bad_clip_policy=policy, **SMALL, **kw)


def test_sample_shapes_and_windows(media):
    d, m = media
    ds = one(d, m["good0"], sampler=RelaxationSampler("mild", seed=3))
    s = ds[0]
    assert s["v1"].shape == s["v2"].shape == (3, 8, 32, 32)
    assert s["a1"].shape == s["a2"].shape == (1, 40, 201)
    w = s["windows"]
    assert torch.allclose(w[:, 1] - w[:, 0], torch.tensor([0.5, 0.5, 2.0, 2.0], dtype=torch.float64))
    assert (w >= 0).all() and (w <= 4.0 + 1e-9).all()
    assert s["clip_id"] == "c0" and s["index"] == 0 and s["fallback"] == ""


def test_views_are_augmented_independently(media):
    d, m = media
    s = one(d, m["good0"], sampler=RelaxationSampler("none"))[0]
    # `none`: identical windows, so any difference between the two views comes from independent augmentation
    assert torch.equal(s["windows"][0], s["windows"][1])
    assert not torch.allclose(s["v1"], s["v2"]) and not torch.allclose(s["a1"], s["a2"])


def test_decoded_frames_follow_the_windows(media):
    "Without augmentation, the decoded frames of v1 are the frames of the sampled window (counter frames)."
    from crisscross.io import frame_index
    d, m = media
    raw = lambda clip, generator=None: clip
    ds = one(d, m["good1"], sampler=RelaxationSampler("extreme", seed=1), video_transform=raw)
    for epoch in range(3):
        ds.set_epoch(epoch)
        s = ds[0]
        for k, row in (("v1", 0), ("v2", 1)):
            start = float(s["windows"][row, 0])
            expected = np.floor((start + np.arange(8) / 16) * 25 + 1e-6).astype(int)
            assert np.abs(frame_index(s[k]).numpy() - expected).max() <= 1


def test_reproducible_across_workers_and_epochs(media):
    d, m = media
    files = [m[f"good{i}"].name for i in range(4)]
    ds = AVPretrainDataset(manifest_for(d, files), root=d, sampler=RelaxationSampler("medium", seed=5), **SMALL)
    main = collate_views([ds[i] for i in range(4)])
    workers = next(iter(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_views)))
    for k in ("v1", "v2", "a1", "a2", "windows"):
        assert torch.equal(main[k], workers[k]), k
    ds.set_epoch(1)
    other = collate_views([ds[i] for i in range(4)])
    assert not torch.equal(main["windows"], other["windows"])
    reseeded = AVPretrainDataset(manifest_for(d, files), root=d, sampler=RelaxationSampler("medium", seed=6), **SMALL)
    assert not torch.equal(main["windows"], collate_views([reseeded[i] for i in range(4)])["windows"])


def test_distributed_sampler_partitions_the_epoch(media):
    "Two ranks under DistributedSampler see disjoint indices covering the dataset, with the same samples as one process."
    d, m = media
    files = [m[f"good{i}"].name for i in range(4)]
    ds = AVPretrainDataset(manifest_for(d, files), root=d, sampler=RelaxationSampler("mild", seed=0),
                           clips_per_video=2, **SMALL)
    assert len(ds) == 8
    seen = {}
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1); ds.set_epoch(1)
        for b in DataLoader(ds, batch_size=2, sampler=sampler, collate_fn=collate_views):
            for i, w in zip(b["index"].tolist(), b["windows"]):
                assert i not in seen
                seen[i] = w
    assert sorted(seen) == list(range(8))
    for i in (0, 5):
        assert torch.equal(seen[i], ds[i]["windows"])
    # item i and i + n_videos are the same clip with different windows
    assert ds[1]["clip_id"] == ds[5]["clip_id"] and not torch.equal(seen[1], seen[5])


BAD = [("missing", "missing"), ("garbage", "unreadable"), ("noaudio", "no_audio"), ("wav", "no_video"),
       ("silent", "silent_audio"), ("tiny", "too_short")]


@pytest.mark.parametrize("name,reason", BAD)
def test_bad_clip_policies(media, name, reason):
    d, m = media
    files = [m["good0"].name, m[name].name, m["good2"].name]
    man = manifest_for(d, files)
    skip = AVPretrainDataset(man, root=d, bad_clip_policy="skip", **SMALL)
    out = skip[1]
    assert isinstance(out, SkippedClip) and out.reason == reason and out.clip_id == "c1"
    batch = collate_views([skip[i] for i in range(3)])
    assert batch["n"] == 2 and batch["skipped"] == [("c1", reason)] and batch["clip_id"] == ["c0", "c2"]
    rep = AVPretrainDataset(man, root=d, bad_clip_policy="replace", **SMALL)
    s = rep[1]
    assert s["clip_id"] == "c2" and s["replaced"][0].reason == reason
    assert collate_views([s])["skipped"] == [("c1", reason)]
    with pytest.raises(MediaError) as e:
        AVPretrainDataset(man, root=d, bad_clip_policy="raise", **SMALL)[1]
    assert e.value.reason == reason and m[name].name in str(e.value)


def test_truncated_file_is_bad_or_decodes_within_its_data(media):
    d, m = media
    ds = one(d, m["truncated"])
    out = ds[0]
    if isinstance(out, SkippedClip):
        assert out.reason in ("unreadable", "decode_error", "too_short")
    else:   # a truncated file may still hold a valid prefix: the windows must then lie inside what decodes
        assert out["v1"].shape == (3, 8, 32, 32)


def test_replace_gives_up_after_max_replace(media):
    d, m = media
    man = manifest_for(d, [m["missing"].name, m["garbage"].name])
    with pytest.raises(MediaError, match="consecutive clips"):
        AVPretrainDataset(man, root=d, bad_clip_policy="replace", max_replace=3, **SMALL)[0]


def test_short_clip_uses_the_sampler_fallback(media):
    d, m = media
    s = one(d, m["short"], sampler=RelaxationSampler("extreme"))[0]
    assert s["fallback"] != "" and s["a1"].shape == (1, 40, 201)
    assert (s["windows"][:2, 1] <= 1.0 + 1e-9).all()


def test_quiet_silence_policy_off(media):
    d, m = media
    s = one(d, m["silent"], reject_silent_audio=False)[0]
    assert not isinstance(s, SkippedClip)


def test_several_audio_streams_take_the_first(media):
    d, m = media
    s = one(d, m["two_audio"])[0]
    assert s["a1"].shape == (1, 40, 201)


def test_skip_counter():
    c = SkipCounter()
    c.update_from({"skipped": [("a", "missing"), ("b", "no_audio")]}).update_from({"skipped": [("c", "missing")]})
    assert c == {"missing": 2, "no_audio": 1} and str(c) == "3 bad clips: missing 2, no_audio 1"
    assert str(SkipCounter()) == "no bad clips"
    assert collate_views([SkippedClip(0, "x", "missing")]) == {"skipped": [("x", "missing")], "n": 0}


def test_clip_starts():
    assert np.allclose(clip_starts(10, 2, 1), [4.0])
    assert np.allclose(clip_starts(10, 2, 5), [0, 2, 4, 6, 8])
    assert np.allclose(clip_starts(1, 2, 3), [0, 0, 0])


def test_eval_dataset(media):
    d, m = media
    files = [m[f"good{i}"].name for i in range(4)]
    man = manifest_for(d, files, labels=["b", "a", "b", "a"])
    ev = AVEvalDataset(man, root=d, clips_per_video=4, **SMALL)
    assert ev.classes == ["a", "b"] and ev.labels.tolist() == [1, 0, 1, 0]
    e = ev[2]
    assert e["video"].shape == (4, 3, 8, 32, 32) and e["audio"].shape == (4, 1, 40, 201) and e["label"] == 1
    assert torch.allclose(e["starts"], torch.tensor([0.0, 2 / 3, 4 / 3, 2.0], dtype=torch.float64))
    assert torch.equal(ev[2]["video"], e["video"])                                     # deterministic
    aug = AVEvalDataset(man, root=d, augment=True, seed=1, **SMALL)
    a0 = aug[0]["video"]; aug.set_epoch(1)
    assert not torch.equal(a0, aug[0]["video"])                                        # fine-tuning augments per epoch
    v = AVEvalDataset(man, root=d, modalities=("video",), video_frames=32, **SMALL)[0]
    assert v["video"].shape == (1, 3, 32, 32, 32) and "audio" not in v


def test_eval_dataset_errors(media):
    d, m = media
    with pytest.raises(ValueError, match="no label"):
        AVEvalDataset(manifest_for(d, [m["good0"].name]), root=d)
    man = manifest_for(d, [m["good0"].name, m["missing"].name], labels=["a", "a"])
    with pytest.raises(MediaError, match="missing.mp4"):
        AVEvalDataset(man, root=d)[1]
    assert AVEvalDataset(man, root=d, bad_clip_policy="skip")[1].reason == "missing"
    with pytest.raises(ValueError, match="not in classes"):
        AVEvalDataset(man, root=d, classes=["b"])
    with pytest.raises(ValueError, match="clips_per_video"):
        AVEvalDataset(man, root=d, clips_per_video=0)


def test_load_rows_errors(tmp_path):
    with pytest.raises(TypeError, match="manifest="):
        load_rows(42)
    with pytest.raises(ValueError, match="its splits are"):
        load_rows(pd.DataFrame(dict(split=["train"])), split="test")


def test_dataset_from_config(tmp_path, monkeypatch):
    from crisscross.config import load_config
    from crisscross.demo import generate_demo
    root = tmp_path / "demo"
    man = generate_demo(root, size="xs", n_clips={"pretrain": 2, "train": 0, "val": 0, "test": 0}, progress=False)
    cfg = load_config(None, [f"data.dataset=csv", f"data.manifest={man}", "data.frame_size=32", "data.n_mels=40",
                             "sampler.mode=extreme", "train.seed=7", "optim.clips_per_video=3"])
    ds = dataset_from_config(cfg, progress=False)
    assert len(ds) == 6 and ds.sampler.mode == "extreme" and ds.seed == 7 and ds.root == root.resolve()
    assert ds[0]["v1"].shape == (3, 8, 32, 32)
    assert ds.cache is None                                       # data.decoded_cache off (the default)
    cfg = load_config(None, ["data.dataset=csv", f"data.manifest={tmp_path / 'nope.csv'}"])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        dataset_from_config(cfg)


def test_input_fingerprint_separates_data_from_augmentation(tmp_path):
    "Same data and seed: same digests; another training seed: other views, same decoded data; epoch restored."
    from crisscross.config import load_config
    from crisscross.data import input_fingerprint
    from crisscross.demo import generate_demo
    man = generate_demo(tmp_path / "demo", size="xs", n_clips={"pretrain": 3, "train": 0, "val": 0, "test": 0}, progress=False)
    make = lambda seed: dataset_from_config(load_config(None, ["data.dataset=csv", f"data.manifest={man}", "data.frame_size=32",
                                                                "data.n_mels=40", f"train.seed={seed}"]), progress=False)
    a, b, c = make(0), make(0), make(1)
    a.set_epoch(5)
    fa, fb, fc = input_fingerprint(a, n=2), input_fingerprint(b, n=2), input_fingerprint(c, n=2)
    assert a.epoch == 5 and fa == fb and fa["n"] == 2 and fa["epoch"] == 0
    assert fa["decoded"] == fc["decoded"] and all(fa[k] != fc[k] for k in ("v1", "v2", "a1", "a2"))
    assert input_fingerprint(a, n=2, epoch=1)["v1"] != fa["v1"] and input_fingerprint(a, n=10 ** 6)["n"] == len(a)


def test_decoded_cache_is_shared_by_pretraining_and_evaluation(tmp_path):
    "Pre-training and the demo evaluation decode into the same `<root>/.decoded/<size>_<rate>` directory."
    from crisscross.config import load_config
    from crisscross.data import decoded_cache
    from crisscross.demo import generate_demo
    from crisscross.experiment import demo_eval_inputs
    root = tmp_path / "demo"
    man = generate_demo(root, size="xs", n_clips={"pretrain": 1, "train": 0, "val": 0, "test": 1}, progress=False)
    cfg = load_config(None, ["data.dataset=csv", f"data.manifest={man}", "data.frame_size=32", "data.n_mels=40",
                             "data.decoded_cache=true", "data.decode_size=48"])
    ds = dataset_from_config(cfg, progress=False)
    assert ds.cache.dir == decoded_cache(cfg.data, root).dir == root.resolve() / ".decoded" / "48_16000"
    ds[0]
    before = sorted(p.name for p in ds.cache.dir.rglob("*") if p.is_file())
    assert before, "pre-training wrote nothing to the decoded cache"
    demo_eval_inputs(cfg, man, root.resolve(), "test", clips=1)
    after = sorted(p.name for p in ds.cache.dir.rglob("*") if p.is_file())
    assert set(before) < set(after), "the evaluation did not decode into the pre-training cache"
    assert decoded_cache(load_config(None, []).data, root) is None


def test_dataset_from_config_renders_only_the_pretrain_split(tmp_path, monkeypatch):
    "On a fresh demo root, pre-training renders only its split; callers without `splits` still get every split."
    import crisscross.demo as demo
    from crisscross.config import load_config
    from crisscross.data import pretrain_manifest
    monkeypatch.setitem(demo.DEMO_SIZES, "xs", 3)          # a tiny 'xs': 3 pre-training clips, 1 per probe split
    for split in demo.PROBE_SIZES: monkeypatch.setitem(demo.PROBE_SIZES, split, 1)
    root = tmp_path / "demo"
    cfg = load_config(None, ["data.dataset=demo", f"data.root={root}", "data.demo_size=xs", "data.frame_size=32",
                             "data.n_mels=40"])
    ds = dataset_from_config(cfg, progress=False)
    assert ds.n_videos == 3 and (ds.rows.split == "pretrain").all()
    assert sorted(p.name for p in root.glob("*.csv")) == ["demo_xs_seed0_pretrain.csv"]
    assert sorted(p.parent.name for p in root.rglob("*.mp4")) == ["pretrain"] * 3       # nothing else rendered
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*.mp4")}
    man, r = pretrain_manifest(cfg.data, progress=False)     # as the kNN monitor and the ablation runs call it
    assert man.name == "demo_xs_seed0.csv" and r == root
    assert pd.read_csv(man).split.value_counts().to_dict() == {"pretrain": 3, "train": 1, "val": 1, "test": 1}
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())                   # the pretrain clips were reused
    pd.testing.assert_frame_equal(load_rows(man, "pretrain"), ds.rows)                # the same rows either way
    man1, _ = pretrain_manifest(cfg.data, seed=1, progress=False, splits=("pretrain",))   # another demo world seed
    assert man1.name == "demo_xs_seed1_pretrain.csv"
    assert not set(pd.read_csv(man1).clip_id) & set(ds.rows.clip_id)


# ---------------------------------------------------------------- the real clips in ../shared/data/av_clips
REAL_OK = ["kinetics_flipping_pancake.mkv", "ucf_style_test.avi", "chaplin.mp4", "big_buck_bunny_0_30.webm",
           "big_buck_bunny_1s.webm", "fire_quiet.mp4", "smpte_bars_tone.mp4"]
REAL_BAD = {"kinetics_style_noaudio.mp4": "no_audio", "silent_audio_no_duration.webm": "silent_audio",
            "ucf_style_test.wav": "no_video", "decord_video_0.mov": "no_audio"}


@needs_shared
@pytest.mark.parametrize("name", REAL_OK)
def test_real_clips_load(name):
    ds = AVPretrainDataset(manifest_for(CLIPS, [name]), root=CLIPS, bad_clip_policy="raise",
                           sampler=RelaxationSampler("mild", seed=0), decode_size=64, **SMALL)
    s = ds[0]
    assert s["v1"].shape == (3, 8, 32, 32) and s["a1"].shape == (1, 40, 201)
    assert torch.isfinite(s["a1"]).all() and torch.isfinite(s["v1"]).all()
    vd, ad = ds.durations(0)
    assert (s["windows"][:2, 1] <= vd + 1e-6).all() and (s["windows"][2:, 1] <= max(ad, 2.0) + 1e-6).all()


@needs_shared
@pytest.mark.parametrize("name,reason", sorted(REAL_BAD.items()))
def test_real_bad_clips(name, reason):
    ds = AVPretrainDataset(manifest_for(CLIPS, [name]), root=CLIPS, bad_clip_policy="skip", decode_size=64, **SMALL)
    out = ds[0]
    assert isinstance(out, SkippedClip) and out.reason == reason, out


# ---------------------------------------------------------------- the decoded cache
def test_decoded_cache_matches_direct_decoding(media, tmp_path):
    from crisscross.data import DecodedCache
    from crisscross.transforms import LogMel
    d, m = media
    files = [m[f"good{i}"].name for i in range(3)] + [m["two_audio"].name]
    man = manifest_for(d, files)
    raw = lambda x, generator=None: x
    kw = dict(root=d, sampler=RelaxationSampler("medium", seed=2), video_transform=raw, audio_transform=raw, **SMALL)
    direct = AVPretrainDataset(man, **kw)
    cached = AVPretrainDataset(man, cache=DecodedCache(tmp_path / "c"), **kw)
    mel = LogMel(n_mels=40)
    for i in range(4):
        a, b = direct[i], cached[i]
        assert torch.equal(a["v1"], b["v1"]) and torch.equal(a["v2"], b["v2"])
        assert (mel(a["a1"]) - mel(b["a1"])).abs().mean() < 0.05
    assert len(list((tmp_path / "c").rglob("*.audio.npy"))) == 4


def test_decoded_cache_bad_files_and_changes(media, tmp_path):
    import shutil
    from crisscross.data import DecodedCache
    d, m = media
    cache = DecodedCache(tmp_path / "c")
    for name, reason in (("missing", "missing"), ("noaudio", "no_audio"), ("garbage", "unreadable")):
        with pytest.raises(MediaError) as e:
            cache.video(m[name], 0.0, 0.5, 16)
        assert e.value.reason == reason
    f = tmp_path / "clip.mp4"
    shutil.copy(m["good0"], f)
    before = cache.audio(f, 0.5, 1.0)
    shutil.copy(m["good3"], f)                       # the file changes: the cache must not serve the old clip
    os.utime(f, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    after = cache.audio(f, 0.5, 1.0)
    assert not torch.allclose(before, after)


@needs_shared
@pytest.mark.parametrize("name", ["kinetics_flipping_pancake.mkv", "ucf_style_test.avi"])
def test_decoded_cache_real_clips(name, tmp_path):
    from crisscross.data import DecodedCache
    from crisscross.io import decode_video
    cache = DecodedCache(tmp_path, decode_size=64)
    for start in (0.0, 1.23, 4.5):
        assert torch.equal(cache.video(CLIPS / name, start, start + 0.5, 16),
                           decode_video(CLIPS / name, start, start + 0.5, size=64))
