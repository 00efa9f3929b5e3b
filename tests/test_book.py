"""The Jupyter Book: its table helpers, its published tables, and the built HTML opened in headless Chromium.

The browser tests build the book first (`make book`) when `book/_build/html` is missing or older than its sources,
drive the system Chromium (`/usr/bin/chromium`, Debian's `chromium`; override with CRISSCROSS_CHROMIUM) through
Playwright, never a downloaded browser, and skip with a message where there is no browser. Screenshots of the main
pages go to tests/artifacts/book/ (git-ignored). Requests that leave the built site (the MathJax CDN) are blocked, so
the test is the same offline and online.
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
HTML = BOOK / "_build" / "html"
ARTIFACTS = REPO / "tests" / "artifacts" / "book"
MAIN_PAGES = ["intro", "relaxation", "demo_dataset", "ablation_relaxation", "ablation_async", "ablation_data_size",
              "analyses", "esc10", "published", "multi_gpu", "performance", "api/index"]
ABLATION_PAGES = {"relaxation": "ablation_relaxation", "async_loss": "ablation_async", "data_size": "ablation_data_size"}

sys.path.insert(0, str(BOOK))
import bookdata as bd  # noqa: E402
import perfdata as pf  # noqa: E402


# ------------------------------------------------------------------------------------------ helpers, no browser
def _runs(settings=("none", "mild", "extreme"), seeds=(0, 1, 2), base=0.5, step=0.05, ablation="relaxation"):
    rows = []
    for k, s in enumerate(("random_init",) + tuple(settings)):
        for seed in seeds:
            v = base + step * k + 0.01 * seed
            rows.append(dict(ablation=ablation, setting=s, seed=seed, run_id=f"{ablation}-{s}-s{seed}",
                             config_hash=f"cfg{k}{seed}" * 4, git_commit="abc123" * 7, manifest_hash="m" * 64,
                             probe_v=v, probe_a=v - 0.1, probe_av=v + 0.1, knn_v=v - 0.2, pretrain_seconds=60.0 + seed))
    return pd.DataFrame(rows)


def test_summarise_mean_std_every_seed():
    df = bd.validate_results(_runs(), "t.csv", "relaxation")
    s = bd.summarise(df, bd.ABLATIONS["relaxation"], ["probe_v"])
    assert list(s.index) == ["random_init", "none", "mild", "extreme"]  # baseline first, then the sampler's order
    assert s.loc["mild", ("probe_v", "mean")] == pytest.approx(0.6 + 0.01)
    assert s.loc["mild", ("probe_v", "std")] == pytest.approx(np.std([0.60, 0.61, 0.62], ddof=1))
    assert s.loc["mild", ("seeds", "")] == [0, 1, 2] and s.loc["mild", ("run_ids", "")] == ["relaxation-mild-s0", "relaxation-mild-s1", "relaxation-mild-s2"]
    assert bd.fmt_pct(0.61, 0.01, 3) == "61.0 ± 1.0 (n=3)" and bd.fmt_pct(0.5) == "50.0" and bd.fmt_pct(np.nan) == "n/a"


def test_runs_table_shows_every_run_id_and_provenance():
    df = bd.validate_results(_runs(), "t.csv", "relaxation")
    html = bd.runs_html(df, bd.ABLATIONS["relaxation"])
    for rid in df["run_id"]: assert rid in html
    assert "config_hash" in html and "git_commit" in html and "manifest_hash" in html and "pretrain_seconds" in html
    summary = bd.summary_html(df, bd.ABLATIONS["relaxation"], source="book/data/relaxation.csv")
    assert "random init (baseline)" in summary and "61.0 ± 1.0" in summary and "book/data/relaxation.csv" in summary


def test_reading_says_which_settings_clear_the_baseline():
    df = bd.validate_results(_runs(), "t.csv", "relaxation")
    text = bd.reading_md(df, bd.ABLATIONS["relaxation"], ["probe_v"])
    assert "best extreme" in text and "every seed above every baseline seed: none, mild, extreme" in text
    flat = df.assign(probe_v=0.5)  # nothing beats the baseline
    assert "every seed above every baseline seed: no setting; every seed below: no setting" in bd.reading_md(flat, bd.ABLATIONS["relaxation"], ["probe_v"])


def test_temporal_table_reads_the_gaps(tmp_path):
    "The demo page's 'does the model use when?' table: one row per run with temporal columns, values from the table."
    df = _runs(settings=("none", "extreme"), ablation="relaxation", base=0.3, step=0.1)
    df.to_csv(tmp_path / "relaxation.csv", index=False)
    assert bd.temporal_table(tmp_path) is None                        # no temporal columns yet
    df = df.assign(xm_margin=0.1, xm_sync=0.30, xm_async=0.28, xm_sync_gap=0.02, xm_sync_gap_se=0.004, xm_t_r1=0.4,
                   train_sync_gap=-0.001, train_sync_gap_se=0.002)
    df.loc[df["setting"] == "random_init", ["xm_sync", "xm_async", "xm_sync_gap", "xm_sync_gap_se", "xm_t_r1"]] = np.nan
    df.to_csv(tmp_path / "relaxation.csv", index=False)
    t = bd.temporal_table(tmp_path)
    assert sorted(set(t["setting"])) == ["extreme", "none"] and len(t) == len(df[df["setting"] != "random_init"])
    assert (t["xm_sync_gap ± se"] == "+0.0200 ± 0.0040").all() and (t["gap / se"] == 5.0).all()
    assert (t["train_sync_gap ± se"] == "-0.0010 ± 0.0020").all() and t["train steps"].isna().all()
    df.assign(train_tail_steps=240).to_csv(tmp_path / "relaxation.csv", index=False)
    assert (bd.temporal_table(tmp_path)["train steps"] == 240).all()
    assert set(t["run_id"]) == set(df.loc[df["setting"] != "random_init", "run_id"])


def test_paired_runs_aligns_settings_and_seeds(tmp_path):
    "Two collected tables of the same settings (e.g. before/after a code change): rows paired by (setting, seed)."
    a = _runs(settings=("none", "extreme"), ablation="relaxation", base=0.3, step=0.1)
    b = a.assign(probe_v=a["probe_v"] + np.where(a["setting"] == "extreme", 0.05, 0.0), run_id=a["run_id"] + "-b")
    (tmp_path / "a").mkdir(); (tmp_path / "b").mkdir()
    a.to_csv(tmp_path / "a" / "relaxation.csv", index=False)
    b[b["seed"] != 2].to_csv(tmp_path / "b" / "relaxation.csv", index=False)
    m = bd.paired_runs(tmp_path / "a", tmp_path / "b")
    assert len(m) == len(a[a["seed"] != 2])
    d = m.set_index(["setting", "seed"])["probe_v b - a"]
    assert np.allclose(d.loc["extreme"], 0.05) and np.allclose(d.loc["none"], 0.0)
    assert (m["run_id (b)"] == m["run_id (a)"] + "-b").all()
    assert bd.paired_runs(tmp_path / "a", tmp_path / "nowhere") is None


def test_sweep_records_give_the_wall_time_per_run(tmp_path):
    "The sweep time table: one row per recorded sweep, jobs (1 when the record predates the option), wall time per run ran."
    runs = [{"name": f"r{i}", "status": s, "seconds": t, "error": ""}
            for i, (s, t) in enumerate([("done", 100.0), ("done", 140.0), ("skipped", 0.0), ("failed", 60.0)])]
    rec = tmp_path / "sweeps.jsonl"
    rec.write_text(json.dumps({"finished": "t1", "seconds": 300.0, "git": {"commit": "abcdef1234567", "dirty": False}, "runs": runs}) + "\n"
                   + json.dumps({"finished": "t2", "seconds": 120.0, "jobs": 2, "git": {"commit": "0123456789ab", "dirty": True},
                                 "runs": runs[:2]}) + "\n")
    t = bd.sweep_records(tmp_path, tmp_path / "nowhere")
    assert t["jobs"].tolist() == [1, 2] and t["runs ran"].tolist() == [3, 2] and t["skipped"].tolist() == [1, 0]
    assert t["wall per run ran (s)"].tolist() == [100.0, 60.0] and t["mean run time (s)"].tolist() == [100.0, 120.0]
    assert t["code"].tolist() == ["abcdef1234", "0123456789 (dirty)"] and t["failed"].tolist() == [1, 0]
    assert bd.sweep_records(tmp_path / "nowhere") is None


def test_recipe_check_is_computed_from_the_table(tmp_path):
    "Issue 6's criteria on the demo page: each verdict follows the numbers of async_loss.csv."
    df = _runs(settings=("off", "on"), ablation="async_loss", base=0.3, step=0.1)
    df = df.assign(xm_margin=0.05, train_xm_margin=0.02, train_std_v=0.08, train_std_a=0.09, train_sync=-0.4, train_async=-0.3)
    df.to_csv(tmp_path / "async_loss.csv", index=False)
    r = bd.recipe_check(tmp_path)
    checks = dict(zip(r["checks"]["criterion (issue 6)"], r["checks"]["holds"]))
    assert all(checks.values()) and len(checks) >= 9, checks
    assert set(r["table"]["run_id"]) == set(df.loc[df["setting"].isin(["on", "random_init"]), "run_id"])
    on = df[df["setting"] == "on"]
    both = r["checks"].loc[r["checks"]["criterion (issue 6)"].str.contains("both modalities"), "measured"].item()
    assert both == f"a {100 * on['probe_a'].mean():.1f}, v {100 * on['probe_v'].mean():.1f}, a+v {100 * on['probe_av'].mean():.1f}"
    # on no better than random init (a margin of 0.2 - 0.2), a shortcut and a collapse: the verdicts flip
    bad = df.assign(probe_v=np.where(df["setting"] == "on", df["probe_v"] - 0.2, df["probe_v"]), xm_margin=0.0, train_std_v=0.001)
    bad.to_csv(tmp_path / "async_loss.csv", index=False)
    checks = dict(zip(*bd.recipe_check(tmp_path)["checks"][["criterion (issue 6)", "holds"]].T.values))
    assert [k for k, v in checks.items() if not v] == [
        "linear probe, video: margin over random init larger than the seed spread (>= 3 seeds each)",
        "other-clip control at evaluation: own clip closer than other clips (xm_margin > 0, every seed)",
        f"no collapse: train_std_v away from 0 (healthy ~ 1/sqrt(dim) = {1 / np.sqrt(128):.3f})"]
    # the sync-async gaps with their standard errors replace the plain difference of the loss terms when present
    gaps = df.assign(train_sync_gap=0.01, train_sync_gap_se=0.002, xm_sync_gap=0.02, xm_sync_gap_se=0.005)
    gaps.to_csv(tmp_path / "async_loss.csv", index=False)
    c = bd.recipe_check(tmp_path)["checks"]
    gap_rows = c[c["criterion (issue 6)"].str.contains("2 standard errors")]
    assert len(gap_rows) == 2 and gap_rows["holds"].all(), gap_rows
    assert not c["criterion (issue 6)"].str.contains(r"L_async - L_sync, every seed\)").any()
    assert gap_rows["measured"].iloc[0] == ", ".join(["+0.0100 ± 0.0020"] * 3)
    gaps.assign(train_sync_gap=np.where(gaps["seed"] == 1, 0.003, 0.01), xm_sync_gap=-0.02).to_csv(tmp_path / "async_loss.csv", index=False)
    c = bd.recipe_check(tmp_path)["checks"]
    assert not c.loc[c["criterion (issue 6)"].str.contains("2 standard errors"), "holds"].any()   # seed 1 within 2 SE; gap < 0
    df[df["seed"] < 2].to_csv(tmp_path / "async_loss.csv", index=False)      # 2 seeds are not enough
    assert not bd.recipe_check(tmp_path)["summary"]["margin > spread"].any()
    assert bd.recipe_check(tmp_path / "nowhere") is None
    # any setting of any collected table against its random_init rows (a research recipe), with its own label
    rel = _runs(settings=("none", "extreme"), ablation="relaxation", base=0.3, step=0.1)
    rel.to_csv(tmp_path / "relaxation.csv", index=False)
    r = bd.recipe_check(tmp_path, "extreme", "relaxation", "guests recipe")
    assert set(r["table"]["setting"]) == {"guests recipe", "random init"}
    assert set(r["table"]["run_id"]) == set(rel.loc[rel["setting"].isin(["extreme", "random_init"]), "run_id"])
    assert bd.recipe_check(tmp_path, "mixed", "relaxation") is None          # no such setting in the table


def test_perturbation_summary_groups_runs_against_random_init(tmp_path):
    "Research e19's table: mean/std per (change, condition), margins over the committed random init, the video check."
    _runs(settings=("on",), ablation="async_loss").to_csv(tmp_path / "async_loss.csv", index=False)   # random init: v 0.50-0.52
    runs = pd.DataFrame([dict(experiment="e", change=c, condition=k, seed=s, probe_v=v + 0.01 * s, probe_a=0.6, probe_av=0.7,
                              xm_margin=0.1 - 0.01 * s)
                         for c, k, v in (("none", "A", 0.60), ("none", "B", 0.51), ("lr", "A", 0.70)) for s in (0, 1, 2)])
    runs.to_csv(tmp_path / "runs.csv", index=False)
    t = bd.perturbation_summary(tmp_path / "runs.csv", tmp_path)
    assert t[["change from the recipe", "condition"]].values.tolist() == [["none", "A"], ["none", "B"], ["lr", "A"]]
    assert t["probe_v margin (points)"].tolist() == [10.0, 1.0, 20.0]       # 0.61 / 0.52 / 0.71 against 0.51
    assert t["every video probe > best random seed"].tolist() == [True, False, True]   # B's seed 0 (0.51) < 0.52
    assert t["smallest xm_margin"].tolist() == [0.08, 0.08, 0.08] and t["seeds"].iloc[0] == "0, 1, 2"
    assert bd.perturbation_summary(tmp_path / "absent.csv", tmp_path) is None
    runs.drop(columns="xm_margin").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['xm_margin'\]"):
        bd.perturbation_summary(tmp_path / "bad.csv", tmp_path)

@pytest.mark.parametrize("change, message", [
    (lambda d: d.drop(columns="run_id"), "missing column(s) run_id"),
    (lambda d: d.drop(columns=["probe_v", "probe_a", "probe_av", "knn_v"]), "no metric column"),
    (lambda d: d.assign(seed=-1), "seed must be a non-negative integer"),
    (lambda d: d.assign(probe_v=61.0), "metric probe_v must be a fraction in [0, 1]"),
    (lambda d: d.assign(run_id="same"), "duplicate run_id"),
    (lambda d: d.assign(ablation="async_loss"), "column ablation must be 'relaxation'"),
    (lambda d: d.iloc[:0], "the table has no rows"),
])
def test_bad_tables_are_refused_naming_the_file(change, message):
    with pytest.raises(ValueError) as e: bd.validate_results(change(_runs()), "book/data/relaxation.csv", "relaxation")
    assert "book/data/relaxation.csv" in str(e.value) and message in str(e.value)


def test_show_ablation_from_a_table_and_without_one(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    shown = []
    monkeypatch.setattr(bd, "_display", lambda *objs: shown.extend(o.data for o in objs))
    assert bd.show_ablation("relaxation", tmp_path) is None
    assert "**Not yet run.**" in shown[0] and "relaxation.csv` does not exist yet" in shown[0]
    shown.clear()
    _runs().to_csv(tmp_path / "relaxation.csv", index=False)
    df = bd.show_ablation("relaxation", tmp_path)
    assert len(df) == 12 and "12 runs from" in shown[0] and "seeds 0, 1, 2" in shown[0]
    assert "Settings not run yet: medium, mixed" in shown[0]
    assert all(r in shown[-1] for r in df["run_id"])  # the table of every run
    epochs = pd.concat([_runs(ablation="async_loss", settings=("off", "on")).assign(epoch=e) for e in (1, 2, 3)])
    epochs.to_csv(tmp_path / "async_loss_epochs.csv", index=False)
    assert len(bd.show_epochs("async_loss", tmp_path)) == 27
    with pytest.raises(ValueError, match="ablation='sideways' is not one of relaxation, async_loss, data_size"):
        bd.show_ablation("sideways", tmp_path)


def test_figures_carry_their_provenance(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    shown = []
    monkeypatch.setattr(bd, "_display", lambda *objs: shown.extend(objs))
    fig = plt.figure(figsize=(1, 1)); fig.savefig(tmp_path / "umap_async_on.png"); plt.close(fig)
    (tmp_path / "umap_async_on.json").write_text('{"caption": "c", "run_ids": ["r1"], "command": "make ablations"}')
    assert [p.name for p in bd.figure_files("umap_*", tmp_path)] == ["umap_async_on.png"]
    assert bd.figure_provenance(tmp_path / "umap_async_on.png")["run_ids"] == ["r1"]
    assert bd.show_figures("saliency_*", "Saliency", "later", tmp_path) == []
    assert "**Not yet produced.** Saliency" in shown[-1].data
    assert [p.name for p in bd.show_figures("umap_*", "UMAP", "later", tmp_path)] == ["umap_async_on.png"]
    assert "Runs: `r1`. Made by `make ablations`." in shown[-1].data
    (tmp_path / "umap_async_on.json").unlink()
    bd.show_figures("umap_*", "UMAP", "later", tmp_path)
    assert "no provenance sidecar: run ids unknown" in shown[-1].data


# The paper's numbers, as SPEC section 7 and the poster give them: the transcription must not drift.
PUBLISHED = {
    "tab1_async": [("UCF101", 75.8, 79.9), ("ESC50", 78.5, 82.0), ("Kinetics-Sound (a)", 43.2, 47.1),
                   ("Kinetics-Sound (v)", 53.3, 55.7), ("Kinetics-Sound (a+v)", 65.0, 66.7)],
    "tab2_data_size": [("HMDB51", 45.7, 50.0, 56.2), ("UCF101", 78.1, 83.9, 87.7), ("Kinetics400", 39.0, 44.5, 50.1),
                       ("ESC50", 82.8, 86.8, 90.5), ("DCASE", 93.0, 96.0, 97.0)],
    "summary": [("Kinetics-Sound (22K)", 88.3, 60.5, 82.8, 93.0), ("Kinetics-400 (240K)", 91.5, 64.7, 86.8, 96.0),
                ("AudioSet (1.8M)", 92.4, 67.4, 90.5, 97.0)],
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_tables_match_the_paper(name):
    df = bd.read_published(name)
    assert "Published by Sarkar & Etemad" in bd.published_note(name)
    numeric = df.select_dtypes("number")
    if name == "tab1_async": numeric = df[["without_async", "with_async"]]
    got = [(r.iloc[0 if name != "tab1_async" else 1], *numeric.loc[i].tolist()) for i, r in df.iterrows()]
    assert got == PUBLISHED[name]


def test_published_sota_tables():
    action = bd.read_published("tab3_sota_action")
    cc = action[action["method"] == "CrissCross"]
    assert cc[["UCF101", "HMDB51"]].values.tolist() == [[88.3, 60.5], [86.9, 54.3], [91.5, 64.7], [89.4, 58.3], [92.4, 67.4]]
    assert len(action) == 17
    sound = bd.read_published("tab4_sota_sound").set_index("method")
    assert sound.loc["CrissCross"].tolist()[:4] == [86.8, 90.5, 96, 97]


# ------------------------------------------------------------------------------------------ the performance chapter
def _bench_records():
    recs = pf.latest_all()
    if any(r is None for r in recs.values()): pytest.skip("benchmarks/results lacks a full run of some benchmark")
    return recs


def test_performance_targets_follow_the_numbers():
    "Each target's verdict is computed from the record: change a figure, the verdict changes."
    import copy
    recs = _bench_records()
    df = pf.targets(recs)
    assert df["target"].str.contains("Data wait").any() and df["target"].str.contains("frame-by-frame").any()
    assert df["target"].str.contains("Training step").any() and set(df["run"]) >= {r["run_id"] for r in recs.values()}
    slow = copy.deepcopy(recs)
    for x in slow["train"]["results"]["runs"]: x["wait_frac"] = 0.5
    for key, r in slow["model"]["results"]["configs"].items():
        r["best_fp32"] = {"option": "channels_last", "speedup": 1.01, "speedup_iqr": [1.0, 1.02]}
        r["best_same_semantics"] = dict(r["best_fp32"])
    got = pf.targets(slow)
    assert set(got.loc[got["target"].str.contains("Data wait|Training step"), "met"]) == {"no"}
    fast = copy.deepcopy(slow)
    for key, r in fast["model"]["results"]["configs"].items():
        r["best_fp32"] = {"option": "batched_views+channels_last", "speedup": 1.4, "speedup_iqr": [1.3, 1.5]}
    got = pf.targets(fast)
    assert set(got.loc[got["target"].str.contains("Training step"), "met"]) == {"yes, with both views in one batch (BatchNorm over both views)"}
    assert "**not met**" in pf.targets_md(slow) and "1.01x" in pf.targets_md(slow)
    # the loader target: on the fly, with the default cache path, or only with the opt-in fast kernels
    if "ours/cache+fast" in recs["loader"]["results"]["demo"].get("variants", {}):
        loader = lambda r: r.loc[r["target"].str.contains("frame-by-frame.*demo clips"), "met"].item()
        q = copy.deepcopy(recs)
        R = q["loader"]["results"]["demo"]["ratios"]
        R.update(ours_decord_vs_baseline_cpu=1.1, ours_pyav_vs_baseline_cpu=1.2, ours_cache_vs_baseline_cpu=2.5,
                 ours_cache_fast_vs_baseline_cpu=3.4)
        assert loader(pf.targets(q)).startswith("only with the decoded cache and the opt-in fast kernels (ours/cache+fast")
        R.update(ours_cache_vs_baseline_cpu=3.1)
        assert loader(pf.targets(q)) == "with the decoded cache only (ours/cache)"
        R.update(ours_cache_vs_baseline_cpu=2.0, ours_cache_fast_vs_baseline_cpu=2.9)
        assert loader(pf.targets(q)) == "no"


def test_performance_tables_name_the_machine_and_the_reference():
    recs = _bench_records()
    m = pf.machine_table(recs)
    assert list(m["benchmark"]) == ["loader", "model", "train"]
    assert all(recs[n]["machine"]["cpu_model"] in line for n, line in zip(m["benchmark"], m["machine"]))
    for key in recs["model"]["results"]["configs"]:
        opts = pf.model_options(recs["model"], key)
        assert opts.iloc[0]["option"] == "straightforward" and opts.iloc[0]["speed-up"].startswith("1")
    assert "% of peak" in pf.model_overview(recs["model"]).columns


# ------------------------------------------------------------------------------------------ the built book
def _sources() -> list:
    "Everything the built book depends on."
    files = [p for p in BOOK.rglob("*") if p.is_file() and "_build" not in p.parts and "api" != p.relative_to(BOOK).parts[0]
             and "__pycache__" not in p.parts]
    files += list((REPO / "nbs").glob("*.ipynb")) + list((REPO / "crisscross").glob("*.py")) + list((REPO / "configs").glob("*.yaml"))
    return files


def _stale() -> str | None:
    "Why the built book must be rebuilt, or None."
    index = HTML / "intro.html"
    if not index.exists(): return f"{index.relative_to(REPO)} does not exist"
    built = index.stat().st_mtime
    newer = [p for p in _sources() if p.stat().st_mtime > built]
    return f"{len(newer)} source(s) newer than the build, e.g. {newer[0].relative_to(REPO)}" if newer else None


@pytest.fixture(scope="session")
def built_book():
    "The built HTML directory, rebuilt with `make book` when missing or stale."
    why = _stale()
    if why is not None:
        if shutil.which("make") is None: pytest.skip(f"the book needs building ({why}) and `make` is not available")
        t = time.perf_counter()
        r = subprocess.run(["make", "-s", "book"], cwd=REPO, capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, f"`make book` failed ({why}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
        print(f"built the book in {time.perf_counter() - t:.0f} s ({why})")
    return HTML


def _chromium() -> str | None:
    for c in (os.environ.get("CRISSCROSS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
              shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if c and Path(c).exists(): return c
    return None


@pytest.fixture(scope="session")
def browser():
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium at /usr/bin/chromium (or CRISSCROSS_CHROMIUM): install Debian's `chromium` "
                    "(`apt-get install -y chromium`, which .ci/run does as root) to run the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (`pip install playwright`; never `playwright install`: the tests "
                    "drive the system Chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


class _Targets(HTMLParser):
    "Every id and name an HTML page defines, for checking #fragment links."
    def __init__(self):
        super().__init__(); self.ids = set()
    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("id", "name") and v: self.ids.add(v)


_TARGET_CACHE = {}


def _targets(path: Path) -> set:
    if path not in _TARGET_CACHE:
        p = _Targets(); p.feed(path.read_text(encoding="utf-8", errors="replace")); _TARGET_CACHE[path] = p.ids
    return _TARGET_CACHE[path]


def check_page(page, url: str, root: Path) -> dict:
    """Open `url` and return what is wrong with it: JS errors, failed local requests, images that did not load, and
    internal links to a missing file or fragment. Links outside `root` (other sites) are not followed."""
    problems = {"js_errors": [], "failed": [], "images": [], "links": []}
    page.on("pageerror", lambda e: problems["js_errors"].append(str(e)))
    page.on("requestfailed", lambda r: problems["failed"].append(r.url) if r.url.startswith("file:") else None)
    resp = page.goto(url, wait_until="load")
    if resp is not None and not resp.ok: problems["failed"].append(f"{url} ({resp.status})")
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
    try: page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=10_000)
    except Exception: pass  # reported below as images with no width
    problems["images"] = page.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.currentSrc || i.src)")
    for href in page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
        if not href.startswith("file:"): continue  # http(s), mailto: not ours to check
        target, frag = urldefrag(href)
        path = Path(unquote(urlparse(target).path))
        if root not in path.parents and path != root: continue
        if path.is_dir(): path = path / "index.html"
        if not path.exists(): problems["links"].append(f"{href} (no such file)")
        elif frag and path.suffix == ".html" and unquote(frag) not in _targets(path):
            problems["links"].append(f"{href} (no element with id {unquote(frag)!r})")
    return problems


def _block_other_sites(context, blocked: list):
    def handle(route):
        if route.request.url.startswith(("file:", "data:", "blob:")): route.continue_()
        else: blocked.append(route.request.url); route.abort()
    context.route("**/*", handle)


def test_the_link_checker_catches_broken_pages(browser, tmp_path):
    "The checker itself: a page with a broken link, a missing fragment and a missing image must be reported."
    (tmp_path / "a.html").write_text("<html><body><h1 id='top'>a</h1><a href='b.html#top'>ok</a>"
                                     "<a href='missing.html'>broken</a><a href='b.html#nowhere'>bad anchor</a>"
                                     "<a href='https://example.org/'>external</a><img src='gone.png'></body></html>")
    (tmp_path / "b.html").write_text("<html><body><h1 id='top'>b</h1></body></html>")
    ctx = browser.new_context(); blocked = []; _block_other_sites(ctx, blocked)
    got = check_page(ctx.new_page(), (tmp_path / "a.html").as_uri(), tmp_path)
    ctx.close()
    assert [l.split(" (")[0].rsplit("/", 1)[-1] for l in got["links"]] == ["missing.html", "b.html#nowhere"]
    assert len(got["images"]) == 1 and got["images"][0].endswith("gone.png")


def test_book_pages_load_with_images_and_links(built_book, browser):
    pages = sorted(p for p in built_book.rglob("*.html")
                   if not {"_static", "_sources", "_images", "jupyter_execute"} & set(p.relative_to(built_book).parts))
    expected = [f"{m}.html" for m in MAIN_PAGES]
    expected += [f"api/{nb.stem}.html" for nb in sorted((REPO / "nbs").glob("[0-9]*.ipynb")) if "default_exp" in nb.read_text()]
    missing = [e for e in expected if not (built_book / e).exists()]
    assert not missing, f"pages missing from the built book: {missing}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}); blocked = []
    _block_other_sites(ctx, blocked)
    report, n_images = {}, 0
    for path in pages:
        redirect = re.search(r'http-equiv="refresh" content="\d+; url=([^"]+)"', path.read_text(encoding="utf-8"), re.I)
        if redirect:  # index.html points at the root page
            if not (path.parent / redirect.group(1)).exists(): report[path.name] = {"redirect": [redirect.group(1)]}
            continue
        page = ctx.new_page()
        got = check_page(page, path.as_uri(), built_book)
        n_images += page.evaluate("document.images.length")
        rel = path.relative_to(built_book).with_suffix("").as_posix()
        if rel in MAIN_PAGES: page.screenshot(path=str(ARTIFACTS / f"{rel.replace('/', '_')}.png"), full_page=True)
        bad = {k: v for k, v in got.items() if v}
        if bad: report[rel] = bad
        page.close()
    ctx.close()
    assert not report, "problems in the built book:\n" + "\n".join(f"{p}: {v}" for p, v in report.items())
    assert n_images >= 3, "the relaxation timelines and the demo clips should be images in the book"
    print(f"{len(pages)} pages, {n_images} images checked; blocked {len(set(blocked))} request(s) to other sites")


def test_every_result_on_a_page_traces_to_its_run_ids(built_book, browser):
    "An ablation page lists every run id of its committed table, or says plainly that the ablation has not run."
    ctx = browser.new_context(); _block_other_sites(ctx, [])
    page = ctx.new_page()
    for name, html in ABLATION_PAGES.items():
        page.goto((built_book / f"{html}.html").as_uri())
        text = page.inner_text("main")
        df = bd.read_results(name)
        if df is None:
            assert "Not yet run" in text and f"book/data/{name}.csv" in text, f"{html}: no table and no 'not yet run' notice"
        else:
            missing = [r for r in df["run_id"] if r not in text]
            assert not missing, f"{html}: run ids of book/data/{name}.csv not shown: {missing[:5]}"
    ctx.close()


def test_published_numbers_are_on_the_published_page(built_book, browser):
    ctx = browser.new_context(); _block_other_sites(ctx, [])
    page = ctx.new_page()
    page.goto((built_book / "published.html").as_uri())
    text = page.inner_text("main")
    for name in ("summary", "tab1_async", "tab2_data_size", "tab3_sota_action", "tab4_sota_sound"):
        df = bd.read_published(name)
        for v in df.select_dtypes("number").to_numpy().ravel():
            assert re.search(rf"(?<![\d.]){re.escape(f'{v:g}')}(?![\d])", text), f"{name}: {v} not on published.html"
    assert text.count("Published by Sarkar & Etemad") >= 5 and "Not re-run here." in text
    ctx.close()


def test_api_pages_document_every_export(built_book):
    "Every symbol in a module's __all__ (read from crisscross/*.py without importing it) is on its reference page."
    for nb in sorted((REPO / "nbs").glob("[0-9]*.ipynb")):
        m = re.search(r"#\|\s*default_exp\s+(\w+)", nb.read_text())
        if not m: continue
        tree = ast.parse((REPO / "crisscross" / f"{m.group(1)}.py").read_text())
        names = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, "id", None) == "__all__" for t in n.targets)), [])
        page = (built_book / "api" / f"{nb.stem}.html").read_text()
        missing = [n for n in names if f"<span class=\"pre\">{n}</span>" not in page and f">{n}<" not in page]
        assert not missing, f"api/{nb.stem}.html does not document {missing}"
