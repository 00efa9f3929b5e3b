"""The benchmarks in their tiniest mode: each runs end to end and writes a results record with the machine described
and the expected figures, appended to its JSON history (never overwritten) and rendered to Markdown. Speeds are not
checked (timings belong to `make bench`, never to a test)."""
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_out"), tmp_path_factory.mktemp("bench_demo")


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def check_files(out, name, n_runs=1):
    data = json.loads((out / f"{name}.json").read_text())
    assert data["benchmark"] == name and len(data["runs"]) == n_runs
    for rec in data["runs"]: common.check_record(rec)
    md = (out / f"{name}.md").read_text()
    assert md.startswith(f"# Benchmark `{name}`") and "**Machine**" in md and "History" in md
    assert data["runs"][-1]["machine"]["cpu_model"] in md
    return data["runs"][-1]


def test_loader_tiny(dirs):
    from benchmarks import loader
    out, demo = dirs
    rec = loader.main(["--mode", "tiny", "--out", str(out), "--data-root", str(demo)])
    saved = check_files(out, "loader")
    assert saved["run_id"] == rec["run_id"]
    demo_r = rec["results"]["demo"]
    assert set(demo_r["variants"]) == {"ours/decord", "ours/pyav", "ours/cache", "ours/cache+fast", "baseline", "decode/decord",
                                       "decode/pyav", "cache-read", "baseline-decode"}
    for v in demo_r["variants"].values():
        assert v["pairs_per_s"] > 0 and v["pairs_per_cpu_s"] > 0
    assert demo_r["shapes"] == {"v1": [3, 8, 112, 112], "v2": [3, 8, 112, 112], "a1": [1, 80, 201], "a2": [1, 80, 201]}
    assert {"ours_decord_vs_baseline_cpu", "ours_pyav_vs_baseline_cpu", "ours_cache_vs_baseline_cpu",
            "ours_cache_fast_vs_baseline_cpu"} <= set(demo_r["ratios"])
    assert "ours (cache, ops=fast" in (out / "loader.md").read_text()
    assert demo_r["cache"]["clips"] == 2 and demo_r["cache"]["mib_per_clip"] > 0
    ops = rec["results"]["augment_ops"]
    assert ops["ms_per_view"]["hue"]["ours"] > 0
    assert set(ops["opt_in_ms_per_view"]) == {"hue (ops=fast, opt-in)", "blur (ops=fast, opt-in)"}
    assert all(v["ours"] > 0 for v in ops["opt_in_ms_per_view"].values())
    assert not set(ops["opt_in_ms_per_view"]) & set(ops["ms_per_view"])     # reported beside the sum, not in it
    assert "blur (ops=fast, opt-in) (not in the sum)" in (out / "loader.md").read_text()
    real = rec["results"]["real"]
    assert "skipped" in real or ("variants" in real and len(real["clips"]) == 1)


def test_model_tiny(dirs):
    from benchmarks import model
    out, _ = dirs
    rec = model.main(["--mode", "tiny", "--out", str(out)])
    check_files(out, "model")
    r = rec["results"]["configs"]["demo"]
    assert r["flops"] > 0 and r["gflops"] > 0 and 0 < r["fraction_of_peak"]
    assert rec["results"]["peak"]["fp32"]["gflops"] > 0
    assert {"straightforward", "channels_last", "bf16", "batched_views"} <= set(r["options"])
    assert r["equivalence"]["channels_last"]["same_semantics"] and not r["equivalence"]["batched_views"]["same_semantics"]
    # the batched-views model (ModelConfig.batch_views) is the published one with BatchNorm frozen, not in training mode
    assert r["equivalence"]["batched_views+channels_last"]["model"] == "batched views"
    bvp = r["batched_vs_published"]
    assert bvp["frozen_bn/batched_views"]["within_tolerance"] and bvp["frozen_bn/batched_views+channels_last"]["within_tolerance"]
    assert bvp["train_mode_fp64"]["grad_rel_diff"] > 1e-3
    assert r["equivalence"]["channels_last"]["within_tolerance"] and r["best_fp32"]["option"] in r["options"]
    assert isinstance(rec["summary"]["demo: fp32 step target 1.3x met"], bool)
    assert r["memory"]["straightforward"]["maxrss_mib"] > 0


def test_train_tiny(dirs):
    from benchmarks import train
    out, demo = dirs
    rec = train.main(["--mode", "tiny", "--out", str(out), "--data-root", str(demo)])
    check_files(out, "train")
    (run,) = rec["results"]["runs"]
    assert "error" not in run, run.get("error")
    assert run["clips_per_s"] > 0 and 0 <= run["wait_frac"] <= 1 and run["steps"] == 3
    paper = rec["results"]["on_paper"]
    assert len(paper["table"]) == len(train.GPUS) * len(train.FRACTIONS) * len(train.DATASETS)
    assert 30 < rec["results"]["full_model_flops"]["gflop_per_clip_pair"] < 60   # ~41.7 GFLOP (fwd + bwd, 4 views)


def test_results_are_appended_not_overwritten(tmp_path):
    recs = [common.finish(common.new_record("unit", "tiny", {"i": i})) for i in range(2)]
    for i, r in enumerate(recs): r["summary"]["value"] = float(i)
    for r in recs: common.save_record(r, lambda rec: "body", tmp_path)
    data = common.load_results("unit", tmp_path)
    assert [r["settings"]["i"] for r in data["runs"]] == [0, 1]
    md = (tmp_path / "unit.md").read_text()
    assert md.count("| `") == 2            # one history line per run
    with pytest.raises(AssertionError, match="lacks"):
        bad = dict(recs[0]); bad.pop("machine"); common.check_record(bad)
