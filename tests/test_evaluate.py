"""Evaluation protocols: probes that separate signal from chance, C chosen without the test set, retrieval with a known
answer, strict loading of the released layout, bad-input errors, the feature cache, ESC-10 on real data and the
manifest-driven protocols end to end on a tiny generated demo set."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import crisscross.evaluate as ev
from crisscross.evaluate import (Features, RecordingClips, check_labelled, esc50_protocol, evaluate_main, extract_features,
                                 finetune, FinetuneConfig, fit_linear, from_released, knn_accuracy, linear_probe,
                                 load_backbone, random_backbone, read_released_layout, retrieval_eval, retrieval_recall,
                                 state_hash, to_released, validation_split)
from crisscross.manifest import shared_data_dir

DATA = shared_data_dir()
LAYOUT = DATA / "released_backbone_layout.txt" if DATA is not None else None
needs_data = pytest.mark.skipif(DATA is None, reason="../shared/data not found: set CRISSCROSS_SHARED_DATA to run the real-data tests")


def blobs(n, n_classes=5, dim=24, strength=5.0, seed=0):
    "Features whose first n_classes dimensions carry the label (strength > 0) or pure noise (strength = 0)."
    r = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = r.normal(size=(n, dim))
    X[:, :n_classes] += strength * np.eye(n_classes)[y]
    return X, y


# ---------------------------------------------------------------- probes: signal vs chance

@pytest.mark.parametrize("classifier", ["svm", "logreg"])
def test_informative_feature_high_random_feature_chance(classifier):
    Xtr, ytr = blobs(250, seed=1); Xte, yte = blobs(250, seed=2)
    good = fit_linear(Xtr, ytr, Xte, yte, classifier=classifier, Cs=(0.01, 0.1))
    assert good.accuracy > 0.95
    Rtr, _ = blobs(250, strength=0, seed=3); Rte, _ = blobs(250, strength=0, seed=4)
    rand = fit_linear(Rtr, ytr, Rte, yte, classifier=classifier, Cs=(0.01, 0.1))
    assert abs(rand.accuracy - 0.2) < 0.1, rand.accuracy           # 5 classes: chance = 0.2
    assert knn_accuracy(Xtr, ytr, Xte, yte, k=10) > 0.95
    assert abs(knn_accuracy(Rtr, ytr, Rte, yte, k=10) - 0.2) < 0.1


def test_c_is_chosen_on_a_validation_split_of_train_never_on_test(monkeypatch):
    Xtr, ytr = blobs(200, seed=1); Xte, yte = blobs(100, seed=2)
    Xte = Xte + 1000.0                                                # test rows are recognisable by their values
    scored = []
    real = ev.group_accuracy
    monkeypatch.setattr(ev, "group_accuracy", lambda model, X, y, groups=None: scored.append(np.array(X)) or real(model, X, y, groups))
    Cs = (1e-3, 1e-2, 1e-1)
    res = fit_linear(Xtr, ytr, Xte, yte, Cs=Cs, best_on_test=False)
    selection, final = scored[:-1], scored[-1]
    assert len(selection) == len(res.val_accuracy) >= len(Cs)          # every C tried (sweep + edge extension) ...
    assert all((X < 500).all() for X in selection), "a C was scored on test rows"
    assert all(np.array_equal(X, Xtr[res.val_idx].astype(np.float32)) for X in selection)   # ... on the validation rows
    assert (final > 500).all()                                         # the test set is scored once, at the end
    # the validation rows come from train and are disjoint from the rows the sweep was fit on
    assert set(res.val_idx).isdisjoint(res.train_idx) and len(res.val_idx) + len(res.train_idx) == len(Xtr)
    # the chosen C and validation scores do not depend on the test set at all
    other = fit_linear(Xtr, ytr, Xte[::-1], np.random.default_rng(0).permutation(yte), Cs=Cs, best_on_test=False)
    assert (other.C, other.val_accuracy) == (res.C, res.val_accuracy)


def test_sweep_follows_an_edge_optimum_on_validation_only(monkeypatch):
    # a validation score that peaks at C = 1e-2, whatever the data
    monkeypatch.setattr(ev, "group_accuracy", lambda model, X, y, groups=None: 1 - abs(np.log10(model[-1].C) + 2) / 10)
    Xtr, ytr = blobs(100, seed=1); Xte, yte = blobs(50, seed=2)
    up = fit_linear(Xtr, ytr, Xte, yte, Cs=(1e-4, 1e-3), best_on_test=False)
    assert up.C == pytest.approx(1e-2) and sorted(up.val_accuracy) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert not up.C_at_edge
    short = fit_linear(Xtr, ytr, Xte, yte, Cs=(1e-6, 1e-5), best_on_test=False, extend=2)
    assert short.C == pytest.approx(1e-3) and short.C_at_edge         # ran out of extensions: flagged
    down = fit_linear(Xtr, ytr, Xte, yte, Cs=(1.0, 10.0), best_on_test=False, extend=3)
    assert down.C == pytest.approx(1e-2) and not down.C_at_edge
    fixed = fit_linear(Xtr, ytr, Xte, yte, Cs=(1e-4,), best_on_test=False)
    assert list(fixed.val_accuracy) == [1e-4]                          # a single C is a fixed C


def test_best_on_test_is_a_separate_labelled_extra():
    Xtr, ytr = blobs(120, strength=1.0, seed=1); Xte, yte = blobs(120, strength=1.0, seed=2)
    res = fit_linear(Xtr, ytr, Xte, yte, Cs=(1e-4, 1e-3, 1e-2, 1e-1))
    assert res.best_on_test == max(res.test_accuracy_by_C.values()) >= res.accuracy
    assert res.test_accuracy_by_C[res.C] == res.accuracy
    d = res.to_dict()
    assert "train_idx" not in d and d["best_on_test"] == res.best_on_test


def test_validation_split_keeps_groups_whole_and_stratified():
    groups = np.repeat(np.arange(40), 10)                             # 40 recordings x 10 clips
    y = np.repeat(np.arange(40) % 4, 10)
    tr, va = validation_split(y, 0.2, groups=groups, seed=3)
    assert set(groups[tr]).isdisjoint(groups[va]) and len(tr) + len(va) == 400
    assert np.bincount(y[va][::10]).tolist() == [2, 2, 2, 2]           # 8 whole recordings, 2 per class


def test_clip_level_probe_averages_test_scores_per_item():
    # each item: 4 clips, each = the item's class signal + independent noise; averaging the 4 clip scores of a test
    # item must beat scoring single clips
    def items(n, seed):
        r = np.random.default_rng(seed)
        y = np.arange(n) % 5
        x = r.normal(size=(n, 4, 24)); x[:, :, :5] += 1.2 * np.eye(5)[y][:, None]
        return Features(x, y, [f"{seed}-{i}" for i in range(n)])
    tr, te = items(200, 1), items(200, 2)
    averaged = linear_probe(tr, te, level="clip", Cs=(0.01,))
    Xtr, ytr, gtr = tr.clip_level(); Xte, yte, _ = te.clip_level()
    single = fit_linear(Xtr, ytr, Xte, yte, train_groups=gtr, Cs=(0.01,))
    assert averaged.n_test == 200 and single.n_test == 800
    assert averaged.accuracy > single.accuracy + 0.1, (averaged.accuracy, single.accuracy)


# ---------------------------------------------------------------- retrieval

def unit(deg):
    a = np.deg2rad(np.asarray(deg, float))
    return np.stack([np.cos(a), np.sin(a)], 1)


def test_retrieval_recall_known_answer():
    # gallery on the unit circle (cosine distance = angle order): 0 deg class 0, 10 and 90 and 100 deg class 1, 180 and 190 deg class 2
    gallery, gy = unit([0, 10, 90, 100, 180, 190]), np.array([0, 1, 1, 1, 2, 2])
    # q0 (2 deg, class 0): g0 first -> hit at 1.  q1 (88 deg, class 1): g2 first -> hit at 1.
    # q2 (178 deg, class 0): g4, g5, g3, g2, g1, g0 -> its class comes 6th.  q3 (9 deg, class 2): g1, g0, g2, g3, g4 -> 5th.
    queries, qy = unit([2, 88, 178, 9]), np.array([0, 1, 0, 2])
    assert ev.nearest_neighbours(queries, gallery, 6)[2].tolist() == [4, 5, 3, 2, 1, 0]
    r = retrieval_recall(queries, qy, gallery, gy, ks=(1, 2, 4, 5, 6))
    assert r == {1: 0.5, 2: 0.5, 4: 0.5, 5: 0.75, 6: 1.0}


def test_retrieval_directions_and_dimension_checks():
    X, y = blobs(60, seed=1)
    f = Features(X, y, [f"i{i}" for i in range(60)])
    res = retrieval_eval({"video": f, "audio": f}, {"video": f, "audio": f}, ks=(1, 5))
    assert set(res) == {"video->video", "audio->audio", "video->audio", "audio->video"}
    assert res["video->audio"][1] == 1.0                              # every query finds itself
    g = Features(X[:, :10], y, f.ids)
    with pytest.raises(ValueError, match="dimension 24 with audio features of dimension 10"):
        retrieval_eval({"audio": g}, {"video": f}, directions=["video->audio"])
    with pytest.raises(ValueError, match="the gallery size"):
        retrieval_recall(X, y, X[:10], y[:10], ks=(1, 50))


# ---------------------------------------------------------------- backbones

@pytest.mark.skipif(LAYOUT is None or not LAYOUT.is_file(),
                    reason="../shared/data/released_backbone_layout.txt not found: set CRISSCROSS_SHARED_DATA to run the real-data tests")
@pytest.mark.parametrize("modality", ["video", "audio"])
def test_released_layout_loads_strictly(tmp_path, modality):
    layout = read_released_layout()[modality]
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randint(0, 100, shape, generator=g) if k.endswith("num_batches_tracked")
                 else torch.randn(shape, generator=g)) for k, shape in layout.items()}
    path = tmp_path / f"{modality[:3]}_pretext_kinetics_ep99.pth.tar"
    torch.save(state, path)
    enc = load_backbone(path, modality)
    assert enc.source_format == "released" and enc.width_mult == 1.0
    mine = to_released(enc.state_dict(), modality)
    assert mine.keys() == state.keys()                                 # every tensor used, none missing
    assert all(torch.equal(mine[k], state[k]) for k in state)          # each landed where it belongs
    other = "audio" if modality == "video" else "video"
    with pytest.raises(ValueError, match=f"holds the {modality} encoder's weights"):
        load_backbone(path, other)
    for broken, what in ((dict(list(state.items())[:-1]), "1 missing"),
                         ({**state, "fc.weight": torch.zeros(3, 512)}, "no counterpart"),
                         ({**state, "conv1.0.weight": state["conv1.0.weight"][:32]}, "of another shape")):
        with pytest.raises(ValueError, match=what):
            load_backbone(broken, modality)


def test_wrong_architecture_and_preset_fail_clearly(tmp_path):
    small = random_backbone("audio", "small")
    torch.save(small.state_dict(), tmp_path / "audio_backbone.pt")
    assert load_backbone(tmp_path / "audio_backbone.pt", "audio").width_mult == 0.25
    with pytest.raises(ValueError, match="expected the video encoder's"):
        load_backbone(tmp_path / "audio_backbone.pt", "video")
    with pytest.raises(ValueError, match="does not fit AudioResNet18"):
        ev.load_state_strict(ev.build_backbone("audio", 1.0), small.state_dict(), "audio_backbone.pt")
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "tv.pt")
    with pytest.raises(ValueError, match="unrecognised backbone content"):
        load_backbone(tmp_path / "tv.pt", "audio")


def test_released_names_round_trip():
    for m in ("video", "audio"):
        sd = ev.build_backbone(m, 0.25).state_dict()
        back = from_released(to_released(sd, m), m)
        assert list(back) == list(sd)


# ---------------------------------------------------------------- bad input

def test_bad_input_errors():
    Xtr, ytr = blobs(50, seed=1); Xte, yte = blobs(50, seed=2)
    with pytest.raises(ValueError, match="dimension 24 and 20"):
        fit_linear(Xtr, ytr, Xte[:, :20], yte)
    with pytest.raises(ValueError, match=r"absent from the training split: \[4\]"):
        fit_linear(Xtr[ytr < 4], ytr[ytr < 4], Xte, yte)
    with pytest.raises(ValueError, match="absent from the training split: \\['e'\\]"):
        fit_linear(Xtr[ytr < 4], ytr[ytr < 4], Xte, yte, classes=list("abcde"))
    df = pd.DataFrame(dict(clip_id=["a", "b"], path=["a.wav", "b.wav"], split=["train", "test"], label=["", ""]))
    with pytest.raises(ValueError, match="have no label"):
        check_labelled(df, ["train", "test"], "unlabelled.csv")
    with pytest.raises(ValueError, match="have no label"):
        RecordingClips(df, "/nonexistent")
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_linear(np.full((10, 3), np.nan), np.arange(10) % 2, Xte[:, :3], yte % 2)


def test_feature_cache_is_keyed_and_never_silently_overwritten(tmp_path):
    class Items(torch.utils.data.Dataset):
        classes = ["a", "b"]
        def __init__(self, seed): self.x = torch.randn(4, 2, 1, 40, 64, generator=torch.Generator().manual_seed(seed))
        def __len__(self): return 4
        def __getitem__(self, i): return dict(audio=self.x[i], label=i % 2, clip_id=f"r{i}")
    enc = random_backbone("audio", "tiny")
    calls = []
    enc.register_forward_hook(lambda *a: calls.append(1))
    f1 = extract_features(enc, Items(0), "audio", cache_dir=tmp_path, data_key={"set": "x"}, device="cpu")
    n = len(calls)
    f2 = extract_features(enc, Items(1), "audio", cache_dir=tmp_path, data_key={"set": "x"}, device="cpu")
    assert len(calls) == n and np.array_equal(f1.x, f2.x)             # read back, not recomputed
    f3 = extract_features(enc, Items(1), "audio", cache_dir=tmp_path, data_key={"set": "y"}, device="cpu")
    assert not np.array_equal(f1.x, f3.x) and len(list(tmp_path.glob("*.npz"))) == 2
    # a file whose stored description differs from the requested one is an error, not a silent reuse or rewrite
    spec = ev.feature_cache_spec(enc, "audio", "pooled", {"set": "x"})
    path = ev.feature_cache_path(tmp_path, spec)
    before = path.read_bytes()
    bad = dict(spec, kind="conv5_maxpool")
    with pytest.raises(ValueError, match="written for another config"):
        ev._read_cached(path, bad)
    ev._write_cached(path, f3, spec, overwrite=False)                  # same key: the existing file is kept
    assert path.read_bytes() == before


# ---------------------------------------------------------------- ESC-10, real data

@needs_data
def test_esc10_real_data_two_folds(tmp_path):
    from crisscross.manifest import build_esc50
    df = build_esc50(DATA / "esc10", DATA / "manifests" / "esc50" / "esc50.csv", esc10=True)
    assert len(df) == 400 and df["label"].nunique() == 10
    sub = df[df["split"].isin(["fold1", "fold2"])]
    res = esc50_protocol(random_backbone("audio", "tiny"), sub, DATA / "esc10", n_clips=10, Cs=(1e-3, 1e-2), device="cpu",
                         best_on_test=False)
    assert [f["fold"] for f in res.folds] == ["fold1", "fold2"]
    f1 = res.folds[0]
    assert sorted(f1["test_ids"]) == sorted(sub.loc[sub["split"] == "fold1", "clip_id"])
    assert (f1["n_train"], f1["n_test"]) == (80, 80)
    assert res.config["n_clips"] == 10 and res.config["feature_dim"] == 64 * 3 * 3
    assert res.accuracy > 0.3, res.summary()                          # chance = 0.1


# ---------------------------------------------------------------- manifest-driven protocols on a tiny demo set

@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory):
    pytest.importorskip("crisscross.data")
    from crisscross.demo import generate_demo
    root = tmp_path_factory.mktemp("demo")
    return generate_demo(root, n_clips={"pretrain": 0, "train": 16, "val": 0, "test": 8}, workers=1, progress=False)


def test_cli_linear_knn_retrieval_on_demo(demo_manifest, tmp_path):
    common = ["--random", "tiny", "--manifest", str(demo_manifest), "--clips", "2", "--frame-size", "32", "--device", "cpu",
              "--cache-dir", str(tmp_path / "cache")]
    assert evaluate_main(["linear", *common, "--modalities", "video,audio,audio+video", "--Cs", "0.01",
                          "--out", str(tmp_path / "linear.json")]) == 0
    m = json.loads((tmp_path / "linear.json").read_text())["metrics"]
    assert set(m) == {"video", "audio", "audio+video"}
    assert (m["audio"]["n_train"], m["audio"]["n_val"], m["audio"]["n_test"]) == (16, 8, 8)   # 8 classes: 1 val item each
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4          # 2 modalities x 2 splits, reused by a+v
    assert evaluate_main(["knn", *common, "--modalities", "audio,video", "--k", "3", "--out", str(tmp_path / "knn.json")]) == 0
    assert evaluate_main(["retrieval", *common, "--ks", "1,5", "--directions", "video->video,audio->audio",
                          "--out", str(tmp_path / "ret.json")]) == 0
    r = json.loads((tmp_path / "ret.json").read_text())["metrics"]
    assert set(r["video->video"]) == {"1", "5"}
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4          # knn and retrieval read the cached features


def test_finetune_on_demo_end_to_end(demo_manifest):
    train, _ = ev.eval_dataset(demo_manifest, split="train", modalities=("video",), clips_per_video=1, augment=True,
                               frame_size=32)
    test, _ = ev.eval_dataset(demo_manifest, split="test", classes=train.classes, modalities=("video",), clips_per_video=3,
                              frame_size=32)
    cfg = FinetuneConfig(epochs=1, batch_size=8, lr=0.01, milestones=(1,))
    res, model = finetune(random_backbone("video", "tiny"), train, test, cfg=cfg, device="cpu")
    assert (res.n_train, res.n_test, res.n_classes, res.test_clips) == (16, 8, 8, 3)
    assert 0.0 <= res.accuracy <= 1.0 and np.isfinite(res.history[0]["loss"])
    assert model.backbone.pool_type == "max"


def test_cli_finetune_on_demo(demo_manifest, tmp_path):
    assert evaluate_main(["finetune", "--random", "tiny", "--manifest", str(demo_manifest), "--epochs", "1", "--clips", "2",
                          "--frame-size", "32", "--batch-size", "8", "--milestones", "1", "--precise-bn", "--device", "cpu",
                          "--out", str(tmp_path / "ft.json")]) == 0
    m = json.loads((tmp_path / "ft.json").read_text())["metrics"]
    assert (m["n_train"], m["n_test"], m["test_clips"], m["config"]["milestones"]) == (16, 8, 2, [1])


def test_eval_dataset_refuses_unlabelled_and_missing_class(tmp_path, demo_manifest):
    df = pd.read_csv(demo_manifest)
    df.loc[df["split"] == "train", "label"] = ""
    bad = tmp_path / "unlabelled.csv"; df.to_csv(bad, index=False)
    with pytest.raises(ValueError, match="have no label"):
        ev.eval_dataset(bad, Path(demo_manifest).parent, split="train")
    df = pd.read_csv(demo_manifest)
    gone = df.loc[df["split"] == "test", "label"].iloc[0]
    df = df[~((df["split"] == "train") & (df["label"] == gone))]
    missing = tmp_path / "missing.csv"; df.to_csv(missing, index=False)
    assert evaluate_main(["linear", "--random", "tiny", "--manifest", str(missing), "--root", str(Path(demo_manifest).parent),
                          "--modalities", "audio"]) == 1                # early: before any feature is computed
