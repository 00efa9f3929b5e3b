"""crisscross.manifest: the schema, validation messages, atomic writing, every builder (on the real split files in
../shared/data/manifests when present, and on media trees generated here), and verify."""
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import crisscross.manifest as cm
from crisscross.manifest import (
    DCASE2013_CLASSES, KINETICS_SOUND_32, MANIFEST_COLUMNS, OPTIONAL_COLUMNS, ManifestError, build_audioset,
    build_dcase2013, build_esc50, build_hmdb51, build_kinetics, build_kinetics_sound, build_ucf101, manifest_hash,
    read_class_list, read_manifest, shared_data_dir, verify, verify_main, write_manifest)

REPO = Path(__file__).resolve().parent.parent
SHARED = shared_data_dir()
META = SHARED / "manifests" if SHARED else None
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared/data not found: set CRISSCROSS_SHARED_DATA to run the real-data tests")
HEADER = ",".join(MANIFEST_COLUMNS)


def _manifest(**cols):
    n = len(cols["clip_id"])
    base = dict(split="train", label="", video_duration=None, audio_duration=None, fps=None, sample_rate=None,
                has_audio=None, checksum="")
    base.update(cols)
    return pd.DataFrame({c: base[c] if isinstance(base[c], list) else [base[c]] * n for c in base})[
        list(MANIFEST_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in cols]]


def _touch(root, *rels):
    for r in rels:
        p = Path(root) / r
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


# ---------------------------------------------------------------- the schema and the repository folder
def test_schema_md_documents_every_column():
    text = (REPO / "data_manifests" / "SCHEMA.md").read_text()
    for c in MANIFEST_COLUMNS + OPTIONAL_COLUMNS:
        assert f"| {c} |" in text, f"SCHEMA.md lacks the column {c}"
    assert cm.schema_markdown() in text, "SCHEMA.md's table differs from crisscross.manifest.COLUMN_DOCS"


def test_kinetics_sound_32_file_is_the_constant():
    listed = read_class_list(REPO / "data_manifests" / "kinetics_sound_32.txt")
    assert listed == list(KINETICS_SOUND_32) and len(set(listed)) == 32


def test_data_manifests_holds_no_media_or_copied_metadata():
    names = {p.name for p in (REPO / "data_manifests").rglob("*") if p.is_file()}
    assert not names & {"ks31_classes.txt", "esc50.csv", "validate.csv", "classInd.txt", "eval_segments.csv"}
    assert not [n for n in names if n.rsplit(".", 1)[-1] in ("mp4", "wav", "ogg", "avi", "mkv", "webm")]


# ---------------------------------------------------------------- validation messages (1-based lines, header = 1)
BAD_CASES = [
    ("clip_id,path,split\na,b,train\n", "line 1, column 'label,video_duration,audio_duration,fps,sample_rate,has_audio,checksum'"),
    (HEADER + ",clip_id\n", "line 1, column 'clip_id'"),
    (HEADER + ",colour\n", "unknown column(s) ['colour']"),
    (HEADER + "\na,x.mp4,train,,,,,,,\na,y.mp4,train,,,,,,,\n", "line 3, column 'clip_id', value 'a': expected a unique clip_id (duplicate of line 2)"),
    (HEADER + "\na,,train,,,,,,,\n", "line 2, column 'path', value '': expected a non-empty relative path"),
    (HEADER + "\na,/abs/x.mp4,train,,,,,,,\n", "line 2, column 'path', value '/abs/x.mp4'"),
    (HEADER + "\na,x.mp4,,,,,,,,\n", "line 2, column 'split', value '': expected a non-empty string"),
    (HEADER + "\na,x.mp4,train,,-1,,,,,\n", "line 2, column 'video_duration', value '-1': expected a number >= 0 or empty"),
    (HEADER + "\na,x.mp4,train,,,nan,,,,\n", "line 2, column 'audio_duration', value 'nan'"),
    (HEADER + "\na,x.mp4,train,,,,thirty,,,\n", "line 2, column 'fps', value 'thirty': expected a number > 0 or empty"),
    (HEADER + "\na,x.mp4,train,,,,0,,,\n", "line 2, column 'fps', value '0'"),
    (HEADER + "\na,x.mp4,train,,,,,44.1k,,\n", "line 2, column 'sample_rate', value '44.1k': expected an integer > 0 or empty"),
    (HEADER + "\na,x.mp4,train,,,,,,yes,\n", "line 2, column 'has_audio', value 'yes': expected 0, 1 or empty"),
    (HEADER + "\na,x.mp4,train,,,,,,,abc\n", "line 2, column 'checksum', value 'abc'"),
    (HEADER + "\na,x.mp4,train,,,,,,\n", "line 2, column '*', value 'a,x.mp4,train,,,,,,': expected 10 fields like the header, got 9"),
    (HEADER + "\n\na,x.mp4,train,,,,,,,\n", "line 2, column '*', value '': expected one clip per line (blank line)"),
    (HEADER + ',start,end\na,x.mp4,train,,,,,,,,10,10\n', "line 2, column 'end', value '10': expected a number > start (10)"),
    ("", "line 1, column '*', value '': expected a header row"),
]


@pytest.mark.parametrize("text,message", BAD_CASES, ids=range(len(BAD_CASES)))
def test_every_validation_error_names_line_column_value(tmp_path, text, message):
    p = tmp_path / "m.csv"
    p.write_text(text)
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    assert message in str(e.value) and str(p) in str(e.value)


def test_all_bad_rows_in_one_error(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(HEADER + "\n" + "".join(f"c{i},x{i}.mp4,train,,-{i + 1},,,,,\n" for i in range(60)))
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    assert [q.line for q in e.value.problems] == list(range(2, 62))
    assert "and 10 more" in str(e.value)


def test_read_types_and_optional_columns(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(HEADER + ",start,end,label_id\na,x.mp4,train,\"Speech, man\",10,10.5,29.97,44100,1,sha256:0123456789abcdef,1.5,11.5,/m/1\n"
                 "b,y.mp4,val,,,,,,,,,,\n")
    df = read_manifest(p)
    assert df.loc[0, "label"] == "Speech, man" and df.loc[1, "label"] == ""
    assert df.loc[0, "sample_rate"] == 44100 and str(df.sample_rate.dtype) == "Int64"
    assert df.loc[0, "has_audio"] == 1 and pd.isna(df.loc[1, "has_audio"])
    assert df.loc[0, "fps"] == pytest.approx(29.97) and pd.isna(df.loc[1, "fps"]) and df.loc[0, "end"] == 11.5


# ---------------------------------------------------------------- writing and hashing
def test_write_is_atomic_and_never_silently_overwrites(tmp_path):
    m = _manifest(clip_id=["a", "b"], path=["a.mp4", "b.mp4"], fps=[25.0, None], sample_rate=[16000, None])
    out = tmp_path / "sub" / "m.csv"
    write_manifest(m, out)
    pd.testing.assert_frame_equal(read_manifest(out), m.astype({"sample_rate": "Int64", "has_audio": "Int64",
                                                                "video_duration": float, "audio_duration": float}), check_dtype=False)
    before = out.read_bytes()
    write_manifest(m, out)  # identical: allowed, unchanged
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_manifest(m.iloc[:1], out)
    assert out.read_bytes() == before
    with pytest.raises(ManifestError, match="not written"):
        write_manifest(m.assign(has_audio=[2, 1]), out, overwrite=True)
    assert out.read_bytes() == before and not [p for p in out.parent.iterdir() if p.name != "m.csv"]
    write_manifest(m.iloc[:1], out, overwrite=True)
    assert len(read_manifest(out)) == 1


def test_hash_is_of_normalised_content(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text(HEADER + "\nx,x.mp4,train,,10.0,,25,16000,1,\n")
    b.write_bytes(b"\xef\xbb\xbf" + (HEADER + "\r\nx,x.mp4,train,,10,,25.0,16000.0,1,\r\n").encode())
    c.write_text(HEADER + "\nx,x.mp4,train,,10.5,,25,16000,1,\n")
    assert manifest_hash(a) == manifest_hash(b) != manifest_hash(c)
    assert manifest_hash(a).startswith("sha256:") and len(manifest_hash(a)) == 7 + 64


# ---------------------------------------------------------------- builders on the real split files
@needs_shared
def test_kinetics400_validate():
    k = build_kinetics(None, META / "kinetics400" / "validate.csv")
    assert len(k) == 17770 and k.label.nunique() == 400 and set(k.split) == {"val"}
    assert k.clip_id.is_unique
    row = k[k.clip_id == "--07WQ2iBlw_000001_000011"].iloc[0]
    assert row.path == "val/javelin throw/--07WQ2iBlw_000001_000011.mp4" and row.label == "javelin throw"
    k2 = build_kinetics(None, META / "kinetics400" / "test.csv", pattern="{split_raw}/{label_}/{clip_id}.mp4")
    assert len(k2) == 34811 and k2.path.str.startswith("test/").all() and not k2.path.str.contains(" ").any()


@needs_shared
def test_kinetics_sound_32_and_31():
    csvs = [META / "kinetics400" / "validate.csv", META / "kinetics400" / "test.csv"]
    k400_labels = set(build_kinetics(None, csvs).label)
    assert {c.replace("_", " ") for c in KINETICS_SOUND_32} <= k400_labels, "all 32 KS classes are Kinetics-400 labels"
    ks = build_kinetics_sound(None, csvs)
    assert set(ks.label) == {c.replace("_", " ") for c in KINETICS_SOUND_32}
    assert (ks.split == "val").sum() == 1445 and (ks.split == "test").sum() == 2820
    ks31 = build_kinetics_sound(None, csvs, classes=META / "kinetics_sound" / "ks31_classes.txt")
    assert ks31.label.nunique() == 31
    assert set(ks.label) - set(ks31.label) == {"strumming guitar"}


@needs_shared
def test_audioset_balanced_and_eval():
    A = META / "audioset"
    a = build_audioset(None, [A / "balanced_train_segments.csv", A / "eval_segments.csv"], A / "class_labels_indices.csv")
    assert (a.split == "balanced_train").sum() == 22160 and (a.split == "eval").sum() == 20371
    assert a.clip_id.is_unique and (a.label != "").all()
    assert (a.label.str.count(";") == a.label_id.str.count(";")).all()
    first = a.iloc[0]
    assert first.clip_id == "--PJHxphWEs_30000" and first.label.split(";")[0] == "Speech" and first.end - first.start == 10
    assert a.label_id.str.split(";").explode().nunique() == 527


@needs_shared
@pytest.mark.parametrize("k,n_train,n_test", [(1, 9537, 3783), (2, 9586, 3734), (3, 9624, 3696)])
def test_ucf101_splits(k, n_train, n_test):
    u = build_ucf101(None, META / "ucf101", split=k)
    assert (u.split == f"train{k}").sum() == n_train and (u.split == f"test{k}").sum() == n_test
    assert u.label.nunique() == 101 and len(u) == 13320 and u.clip_id.is_unique
    assert u.groupby("label").label_id.nunique().eq(1).all()


@needs_shared
@pytest.mark.parametrize("k", [1, 2, 3])
def test_hmdb51_splits(k):
    h = build_hmdb51(None, META / "hmdb51", split=k)
    assert (h.split == f"train{k}").sum() == 3570 and (h.split == f"test{k}").sum() == 1530
    assert h.label.nunique() == 51 and h.clip_id.is_unique
    per_class = h.groupby(["split", "label"]).size()
    assert set(per_class[f"train{k}"]) == {70} and set(per_class[f"test{k}"]) == {30}, "70/30 clips per class"


@needs_shared
def test_hmdb51_official_format_gives_the_same_manifest(tmp_path):
    "The official testTrainMulti_7030_splits lists (<class>_test_split1.txt: '<file> 1|2') give the same clips."
    h = build_hmdb51(None, META / "hmdb51", split=1)
    for label, g in h.groupby("label"):
        lines = [f"{p.rsplit('/', 1)[1]} {1 if s == 'train1' else 2} \n" for p, s in zip(g.path, g.split)]
        (tmp_path / f"{label}_test_split1.txt").write_text("".join(lines) + "unused_clip.avi 0 \n")
    o = build_hmdb51(None, tmp_path, split=1)
    key = ["clip_id", "path", "split", "label", "label_id"]
    pd.testing.assert_frame_equal(o[key].sort_values("clip_id").reset_index(drop=True),
                                  h[key].sort_values("clip_id").reset_index(drop=True))


@needs_shared
def test_esc50_and_esc10():
    csv50 = META / "esc50" / "esc50.csv"
    e = build_esc50(None, csv50)
    assert len(e) == 2000 and e.label.nunique() == 50 and sorted(e.split.unique()) == [f"fold{i}" for i in range(1, 6)]
    assert set(e.groupby("split").size()) == {400}
    e10 = build_esc50(SHARED / "esc10", csv50, esc10=True)      # finds '001 - Dog bark/1-100032-A.ogg'
    assert len(e10) == 400 and e10.attrs["n_missing"] == 0 and e10.label.nunique() == 10
    assert set(e10.groupby(["split", "label"]).size()) == {8}
    assert all((SHARED / "esc10" / p).is_file() for p in e10.path)
    with pytest.warns(UserWarning, match="1600 of 2000 file"):
        e50 = build_esc50(SHARED / "esc10", csv50)
    pd.testing.assert_frame_equal(e50, e10)


@needs_shared
def test_real_manifest_roundtrip(tmp_path):
    u = build_ucf101(None, META / "ucf101", split=1)
    write_manifest(u, tmp_path / "ucf.csv")
    back = read_manifest(tmp_path / "ucf.csv")
    assert back.clip_id.tolist() == u.clip_id.tolist() and back.label_id.tolist() == u.label_id.tolist()
    write_manifest(back, tmp_path / "ucf2.csv")
    assert manifest_hash(tmp_path / "ucf.csv") == manifest_hash(tmp_path / "ucf2.csv")


# ---------------------------------------------------------------- builders on generated trees (missing files)
@pytest.fixture
def kinetics_tree(tmp_path):
    (tmp_path / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                           "playing drums,aaa,3,13,validate\nbowling,bbb,0,10,validate\ntickling,ccc,5,15,validate\n")
    _touch(tmp_path / "media", "val/playing drums/aaa_000003_000013.mp4", "val/bowling/bbb_000000_000010.mp4")
    return tmp_path


def test_missing_policy(kinetics_tree):
    t = kinetics_tree
    with pytest.warns(UserWarning, match=r"1 of 3 file\(s\) not found .*ccc_000005_000015.mp4.*dropped"):
        d = build_kinetics(t / "media", t / "validate.csv")
    assert d.clip_id.tolist() == ["aaa_000003_000013", "bbb_000000_000010"] and d.attrs["n_missing"] == 1
    with pytest.warns(UserWarning, match="kept them"):
        assert len(build_kinetics(t / "media", t / "validate.csv", missing="keep")) == 3
    with pytest.raises(FileNotFoundError, match="1 of 3"):
        build_kinetics(t / "media", t / "validate.csv", missing="raise")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        build_kinetics(t / "nope", t / "validate.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(build_kinetics(None, t / "validate.csv")) == 3   # no root: no file checks, no warning
    with pytest.warns(UserWarning, match="1 of 2"):
        ks = build_kinetics_sound(t / "media", t / "validate.csv", classes=["playing_drums", "tickling"], missing="keep")
    assert ks.label.tolist() == ["playing drums", "tickling"]


def test_checksum_and_probe_need_root(kinetics_tree, monkeypatch):
    t = kinetics_tree
    (t / "media" / "val/bowling/bbb_000000_000010.mp4").write_bytes(b"hello")
    with pytest.warns(UserWarning):
        d = build_kinetics(t / "media", t / "validate.csv", checksum=True)
    assert d.checksum.tolist()[1] == "sha256:2cf24dba5fb0a30e"
    with pytest.raises(ValueError, match="need the dataset root"):
        build_kinetics(None, t / "validate.csv", probe=True)
    fake = lambda p: SimpleNamespace(has_video=True, has_audio=p.stat().st_size > 0, video_duration=10.0,
                                     audio_duration=9.98, fps=30.0, sample_rate=44100)
    monkeypatch.setattr(cm, "_probe_fn", lambda probe: fake)
    with pytest.warns(UserWarning):
        d = build_kinetics(t / "media", t / "validate.csv", probe=True)
    assert d.has_audio.tolist() == [0, 1] and d.fps.tolist() == [30.0, 30.0]
    assert pd.isna(d.audio_duration[0]) and d.audio_duration[1] == 9.98 and d.sample_rate[1] == 44100


def test_ucf_hmdb_esc_audioset_missing_files(tmp_path):
    m = tmp_path / "meta"
    m.mkdir()
    (m / "classInd.txt").write_text("1 Archery\n2 Bowling\n")
    (m / "trainlist01.txt").write_text("Archery/v_Archery_g08_c01.avi 1\nBowling/v_Bowling_g08_c01.avi 2\n")
    (m / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    (m / "hmdb51_train_split_1_videos.txt").write_text("clap/a.avi 1\njump/b.avi 2\n")
    (m / "hmdb51_val_split_1_videos.txt").write_text("clap/c.avi 1\n")
    (m / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n1-1-A-0.wav,1,0,dog,True,1,A\n2-2-A-1.wav,2,1,rooster,True,2,A\n")
    (m / "labels.csv").write_text('index,mid,display_name\n0,/m/1,"Speech"\n')
    (m / "eval_segments.csv").write_text('# c\n# c\n# YTID, start_seconds, end_seconds, positive_labels\nq, 0.000, 10.000, "/m/1"\nr, 5.000, 15.000, "/m/1"\n')
    root = tmp_path / "media"
    _touch(root, "Archery/v_Archery_g08_c01.avi", "clap/c.avi", "audio/1-1-A-0.wav", "eval/r_5000.mp4")
    with pytest.warns(UserWarning, match="2 of 3"):
        assert build_ucf101(root, m, 1).clip_id.tolist() == ["v_Archery_g08_c01"]
    with pytest.warns(UserWarning, match="2 of 3"):
        assert build_hmdb51(root, m, 1).clip_id.tolist() == ["c"]
    with pytest.warns(UserWarning, match="1 of 2"):
        assert build_esc50(root, m / "esc50.csv").path.tolist() == ["audio/1-1-A-0.wav"]
    with pytest.warns(UserWarning, match="1 of 2"):
        a = build_audioset(root, m / "eval_segments.csv", m / "labels.csv")
    assert a.clip_id.tolist() == ["r_5000"] and a.start.tolist() == [5.0]


def test_dcase2013_tree(tmp_path):
    for split in ("development", "evaluation"):
        _touch(tmp_path / split, *[f"{c}{k:02d}.wav" for c in DCASE2013_CLASSES for k in range(1, 11)])
    d = build_dcase2013(tmp_path, {"train": "development", "test": "evaluation"})
    assert len(d) == 200 and d.label.nunique() == 10 and set(d.groupby(["split", "label"]).size()) == {10}
    assert d.clip_id.is_unique and set(d.label) == set(DCASE2013_CLASSES)
    assert d[d.clip_id == "test_busystreet07"].path.item() == "evaluation/busystreet07.wav"
    _touch(tmp_path / "evaluation", "cafe01.wav", "bus1.wav")
    with pytest.raises(ValueError, match=r"2 file\(s\) are not named <class><NN>"):
        build_dcase2013(tmp_path, {"train": "development", "test": "evaluation"})


# ---------------------------------------------------------------- verify
def _fake_probe(p):
    data = p.read_bytes()
    if data == b"":
        raise OSError("cannot open")
    if data == b"noaudio":
        e = RuntimeError("no audio stream")
        e.reason = "no_audio"
        raise e
    return SimpleNamespace(has_video=p.suffix != ".wav", has_audio=True, video_duration=10.0, audio_duration=1.0
                           if data == b"short" else 10.0, fps=25.0, sample_rate=16000)


@pytest.fixture
def verify_tree(tmp_path):
    for name, data in [("ok.mp4", b"x"), ("empty.mp4", b""), ("noaud.mp4", b"noaudio"), ("short.wav", b"short"),
                       ("fps.mp4", b"x")]:
        (tmp_path / name).write_bytes(data)
    m = _manifest(clip_id=["ok", "empty", "noaud", "short", "fps", "gone"],
                  path=["ok.mp4", "empty.mp4", "noaud.mp4", "short.wav", "fps.mp4", "gone.mp4"],
                  fps=[25.0, None, None, None, 50.0, None], has_audio=[1, None, None, 0, None, None])
    write_manifest(m, tmp_path / "m.csv")
    return tmp_path


def test_verify_report(verify_tree, capsys):
    rep = verify(verify_tree / "m.csv", probe=_fake_probe, progress=False, min_duration=2,
                 report=verify_tree / "out" / "report.json")
    got = [(p["clip_id"], p["line"], p["problem"]) for p in rep.problems]
    assert got == [("empty", 3, "unreadable"), ("noaud", 4, "no_audio"), ("short", 5, "too_short"),
                   ("short", 5, "has_audio_mismatch"), ("fps", 6, "fps_mismatch"), ("gone", 7, "missing")]
    assert rep.n_clips == 6 and rep.n_ok == 1 and not rep.ok
    out = capsys.readouterr().out
    assert "6 clips, 1 ok, 5 with problems" in out and "missing: 1" in out
    j = json.loads((verify_tree / "out" / "report.json").read_text())
    assert j["counts"] == rep.counts and j["n_clips"] == 6
    assert set(j["problems"][0]) == {"clip_id", "path", "line", "problem", "detail"}


def test_verify_main_exit_code(verify_tree, monkeypatch, capsys):
    monkeypatch.setattr(cm, "_probe_fn", lambda probe: _fake_probe)
    assert verify_main([str(verify_tree / "m.csv"), "--no-progress", "--report", str(verify_tree / "r.json")]) == 1
    assert json.loads((verify_tree / "r.json").read_text())["counts"]["missing"] == 1
    write_manifest(_manifest(clip_id=["ok"], path=["ok.mp4"]), verify_tree / "ok.csv")
    assert verify_main([str(verify_tree / "ok.csv"), "--no-progress"]) == 0
    assert "1 ok" in capsys.readouterr().out


@needs_shared
def test_verify_real_probe_on_shared_clips(tmp_path):
    pytest.importorskip("crisscross.io", reason="crisscross.io (probe) not written yet")
    clips = SHARED / "av_clips"
    names = ["chaplin.mp4", "kinetics_style_noaudio.mp4", "big_buck_bunny_1s.webm"]
    if not all((clips / n).is_file() for n in names):
        pytest.skip(f"expected {names} in {clips}")
    m = _manifest(clip_id=["c", "n", "b", "x"], path=names + ["not_there.mp4"])
    write_manifest(m, tmp_path / "m.csv")
    rep = verify(tmp_path / "m.csv", root=clips, progress=False, min_duration=2, workers=2)
    probs = {(p["clip_id"], p["problem"]) for p in rep.problems}
    assert ("x", "missing") in probs and ("n", "no_audio") in probs and ("b", "too_short") in probs
    assert not [p for p in rep.problems if p["clip_id"] == "c"], rep.problems
