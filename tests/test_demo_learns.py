"""Guard of issue 6: on the demo world, the demo recipe (configs/demo.yaml: the full loss, the default relaxation mode,
600 steps) learns what a randomly initialised encoder of the same architecture (BatchNorm re-estimated) does not have,
without collapse.

It runs the real thing at reduced probe splits: the default world's 400 pre-training clips (the `s` set, so exactly the
recipe's 600 steps) and labelled splits of 160 / 80 / 160 videos instead of 400 / 200 / 400, through the project's own
generator, trainer and evaluation (`run_ablation`). About 8 minutes on 2 cores (rendering ~3 unless the demo cache
already holds the clips, pre-training ~4); it is the one slow test that checks that the ablations are asked in a world where CrissCross learns. The thresholds are
set from this test's first two runs (2026-12-03, seed 0, the same code: kNN video 0.325 / 0.287 vs 0.188, probe audio
0.600 / 0.706 vs 0.431, audio+video 0.619 / 0.688 vs 0.388, probe video 0.263 / 0.225 vs 0.212): about half the
smaller measured margins. The runs are not bit-reproducible across machines and loads, hence the margins. It caught a
real regression on its first CI run: a loader speed-up branch whose pre-training learned nothing (kNN video 0.150 vs
0.181, audio+video 0.362 vs 0.388), which was therefore reverted.

The other-clip control is asserted since the recipe gives the predictors 10x the base learning rate (the published
ratio; session 5): a video view's prediction must be closer to its own clip's audio than to other clips' at evaluation.
With the earlier recipe (predictor lr = base lr) it was 0.002 (own 0.416, other 0.414: the cross-modal terms were met
through an input-independent direction); with the current one, seed 0: 0.109 on the sweep's 400 test videos; on this test's 160: 0.128
(main) and 0.076 (the loader branch); the threshold is 0.03. Each run writes what it measured to
tests/artifacts/demo_learns.json."""
import json
from pathlib import Path

import pytest

from crisscross.demo import DEMO_SIZES, default_demo_root, generate_demo
from crisscross.experiment import check_params, run_ablation, run_dir, training_tail

pytestmark = pytest.mark.slow

COUNTS = {"pretrain": DEMO_SIZES["s"], "train": 160, "val": 80, "test": 160}
REPORT = Path(__file__).parent / "artifacts" / "demo_learns.json"   # git-ignored: what this run measured, pass or fail


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "The demo recipe pre-trained on a reduced-probe copy of the demo world, and the seed's random-init baseline."
    root = tmp_path_factory.mktemp("guard")
    # the clips go to the demo cache (deterministic, reused by `crisscross demo`, the sweep and later runs of this test)
    man = generate_demo(default_demo_root(), n_clips=COUNTS, workers=2, progress=False)
    base = {"out_dir": str(root / "runs"), "eval_esc10": False, "epoch_knn": False, "seed": 0,
            "overrides": f"data.dataset=csv data.manifest={man}"}
    quiet = lambda *a: None
    trained = run_ablation(check_params(**base), log=quiet)
    baseline = run_ablation(check_params(**base, pretrain=False), log=quiet)
    tail = training_tail(run_dir(check_params(**trained["parameters"])))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"trained": trained["metrics"], "baseline": baseline["metrics"], "train_tail": tail,
                                  "git_commit": trained.get("git_commit"), "git_dirty": trained.get("git_dirty"),
                                  "pretrain": trained["pretrain"]},
                                 indent=1, default=str))
    return trained, baseline, tail


def test_the_recipe_is_the_demo_recipe(runs):
    trained = runs[0]
    assert trained["pretrain"]["steps"] == 600, trained["pretrain"]     # 50 epochs x 400 clips // 32


def test_pretraining_beats_random_init_for_video_and_audio_video(runs):
    trained, baseline = runs[0], runs[1]
    m, b = trained["metrics"], baseline["metrics"]
    report = json.dumps({k: (round(m[k], 3), round(b[k], 3)) for k in ("probe_v", "probe_a", "probe_av", "knn_v")})
    # video: the kNN margin (0.137 and 0.099 in two runs); the logistic probe on 160 videos is noisier (+0.051, +0.013)
    assert m["knn_v"] - b["knn_v"] >= 0.05 and m["probe_v"] >= b["probe_v"] - 0.02, report
    # audio: +0.169 / +0.275 (earlier recipe), +0.094 (current recipe, main), +0.157 (loader branch) on 160 test videos
    assert m["probe_av"] - b["probe_av"] >= 0.10 and m["probe_a"] - b["probe_a"] >= 0.05, report
    assert max(b["probe_v"], b["probe_a"]) < 0.7, report          # the baseline is not at the ceiling


def test_no_collapse(runs):
    # the trainer's collapse monitor over the last 10% of the logged windows (healthy ~ 1/sqrt(128) = 0.088, collapse -> 0)
    tail = runs[2]
    assert tail["train_std_v"] > 0.02 and tail["train_std_a"] > 0.02, tail


def test_crossmodal_terms_use_correspondence(runs):
    "The other-clip control: the cross-modal loss is not met through an input-independent direction."
    m = runs[0]["metrics"]
    assert {"xm_own", "xm_other", "xm_margin", "xm_r1"} <= set(m), sorted(m)
    report = {k: round(m[k], 4) for k in ("xm_own", "xm_other", "xm_margin", "xm_r1")}
    assert m["xm_own"] > m["xm_other"] and m["xm_margin"] >= 0.03, report
