"""Run configs: every YAML in configs/ loads, overrides and type checks, unknown keys, hash/run id, diffs."""
from pathlib import Path

import pytest

from crisscross.config import (RESUME_IGNORED_KEYS, RunConfig, config_hash, diff_config, from_dict, load_config,
                               run_id, save_config, to_dict)
from crisscross.model import model_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))   # configs/research/ too


def test_configs_dir_has_the_published_and_demo_configs():
    assert {p.stem for p in CONFIGS} >= {"demo", "kinetics_sound", "kinetics400", "audioset"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert path.read_text().startswith("#"), "each config starts with a comment header"
    assert load_config(save_config(cfg, tmp_path / "c.yaml")) == cfg
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("name", ["kinetics_sound", "kinetics400", "audioset"])
def test_published_configs_are_the_published_setting(name):
    cfg = load_config(Path(__file__).parent.parent / "configs" / f"{name}.yaml")
    o = cfg.optim
    assert cfg.model == model_config("full")
    assert o.global_batch(8) == 2048 and o.lr_scale(8) == 1.0
    assert (o.base_lr, o.final_lr, o.predictor_lr, o.warmup_epochs, o.epochs) == (2e-4, 1e-4, 2e-3, 2, 100)
    assert (o.weight_decay, o.larc_trust, o.larc_clip, o.clips_per_video, o.betas) == (1e-4, 1e-3, True, 5, (0.9, 0.999))
    assert cfg.data.manifest == f"data_manifests/{name}.csv"


def test_demo_config_is_small_and_fp32():
    cfg = load_config(Path(__file__).parent.parent / "configs" / "demo.yaml")
    assert cfg.model == model_config("tiny") and cfg.data.dataset == "demo" and cfg.train.precision == "fp32"
    # the demo's budget is in steps (about 3 min on 2 cores): the s set's 400 clips at the configured batch
    from crisscross.demo import DEMO_SIZES
    steps = cfg.optim.epochs * (DEMO_SIZES[cfg.data.demo_size] // cfg.optim.batch)
    assert cfg.data.frame_size <= 64 and cfg.data.n_mels <= 64 and 300 <= steps <= 800, steps


def test_overrides_parse_and_type_check():
    cfg = load_config(overrides=["optim.base_lr=1e-3", "sampler.mode=extreme", "loss.async_=false",
                                 "optim.betas=[0.5, 0.9]", "train.max_steps=null", "data.decode_size=128"])
    assert (cfg.optim.base_lr, cfg.sampler.mode, cfg.loss.async_) == (1e-3, "extreme", False)
    assert cfg.optim.betas == (0.5, 0.9) and cfg.train.max_steps is None and cfg.data.decode_size == 128
    with pytest.raises(TypeError, match=r"optim.per_device_batch='many': expected int, got str"):
        load_config(overrides=["optim.per_device_batch=many"])
    with pytest.raises(TypeError, match=r"loss.async_=3: expected bool"):
        load_config(overrides=["loss.async_=3"])


@pytest.mark.parametrize("override,message", [
    ("optim.base_lrr=1", "unknown config key optim.base_lrr; valid keys of 'optim': per_device_batch"),
    ("trian.seed=1", "unknown config section 'trian'"),
    ("sampler.mode=sideways", "sampler.mode='sideways': expected one of none, mild, medium, mixed, extreme"),
    ("sampler.policy=loose", "sampler.policy='loose': expected one of official, shared"),
    ("optim.base_lr=-1e-3", "optim.base_lr=-0.001: expected a finite number > 0"),
    ("optim.per_device_batch=0", "optim.per_device_batch=0"),
    ("train.precision=fp8", "train.precision='fp8': expected one of auto, fp32, bf16, fp16"),
    ("data.backend=opencv", "data.backend='opencv': expected one of decord, pyav"),
    ("data.video_ops=turbo", "data.video_ops='turbo': expected one of reference, fast"),
    ("data.demo_world={n_source: 3}", "data.demo_world: unknown key 'n_source'; valid keys: duration, fps"),
    ("data.demo_world={n_sources: [2.5, 3]}", "data.demo_world.n_sources=[2.5, 3]: expected 2 integers like the default [2, 3]"),
    ("data.demo_world={flash: yes}", "data.demo_world.flash=True: expected a number like the default 0.6"),
    ("data.demo_world={n_sources: [3, 2]}", "data.demo_world: DemoWorld: n_sources=(3, 2) must be (lo, hi)"),
    ("data.demo_world={classes: []}", "data.demo_world: unknown key 'classes'"),
    ("data.demo_world=3", "data.demo_world=3: expected dict, got int"),
])
def test_bad_values_fail_naming_key_and_valid_values(override, message):
    with pytest.raises((KeyError, TypeError, ValueError)) as e:
        load_config(overrides=[override])
    assert message in str(e.value)


def test_unknown_key_in_a_partial_yaml_names_the_file(tmp_path):
    p = tmp_path / "partial.yaml"
    p.write_text("optim:\n  epochs: 3\n")
    assert load_config(p).optim.epochs == 3 and load_config(p).optim.base_lr == 2e-4
    p.write_text("data:\n  fsp: 16\n")
    with pytest.raises(KeyError) as e:
        load_config(p)
    assert "data.fsp" in str(e.value) and "fps" in str(e.value) and str(p) in str(e.value)


def test_hash_run_id_and_diff():
    a, b = RunConfig(), load_config(overrides=["sampler.mode=extreme"])
    assert len(config_hash(a)) == 12 and config_hash(a) == config_hash(RunConfig()) and config_hash(a) != config_hash(b)
    assert run_id(a) != run_id(b) and "extreme" in run_id(b) and "seed0" in run_id(a)
    c = load_config(overrides=["train.max_steps=7", "data.num_workers=0", "train.out_dir=elsewhere"])
    assert run_id(c) == run_id(a) and config_hash(c) != config_hash(a)
    assert diff_config(a, c, ignore=RESUME_IGNORED_KEYS) == []
    assert diff_config(a, to_dict(b)) == [("sampler.mode", "mild", "extreme")]
    assert {"train.max_steps", "train.log_every_steps", "data.num_workers", "train.checkpoint_every_steps",
            "train.out_dir"} <= set(RESUME_IGNORED_KEYS)


def test_video_ops_is_hash_neutral_at_reference_and_reaches_the_augmentation(monkeypatch):
    "data.video_ops was added after the sweep's runs were recorded: at 'reference' the hash, run id and diff are those of"
    "a config without the key (the committed runs stay valid); 'fast' is a different run; the choice reaches VideoAugment."
    import crisscross.data as cdata
    from crisscross.config import VIDEO_OPS_NAMES
    from crisscross.transforms import VIDEO_OPS
    assert set(VIDEO_OPS_NAMES) == set(VIDEO_OPS)
    path = Path(__file__).parent.parent / "configs" / "demo.yaml"
    demo, fast = load_config(path), load_config(path, ["data.video_ops=fast"])
    without = to_dict(demo); del without["data"]["video_ops"]
    assert demo.data.video_ops == "reference"
    assert config_hash(demo) == config_hash(without) and diff_config(demo, without) == []
    assert config_hash(fast) != config_hash(demo) and run_id(fast) != run_id(demo)
    assert [(k, b) for k, _, b in diff_config(demo, fast)] == [("data.video_ops", "fast")]
    made = []   # the dataset dataset_from_config builds, without its data: record the video transform's kernels
    monkeypatch.setattr(cdata, "pretrain_manifest", lambda *a, **k: ("m.csv", Path(".")))
    monkeypatch.setattr(cdata, "AVPretrainDataset", lambda *a, **k: made.append(k["video_transform"].ops))
    cdata.dataset_from_config(demo, progress=False); cdata.dataset_from_config(fast, progress=False)
    assert made == ["reference", "fast"]


def test_a_config_extends_another_and_resolves_as_if_spelt_out(tmp_path):
    "configs/research/demo_guests.yaml is configs/demo.yaml plus a world; it resolves to the run id of the committed e16"
    "mild seed-0 run, made when the file still repeated demo.yaml. A child's mapping value replaces the base's whole."
    import pandas as pd
    root = Path(__file__).parent.parent
    guests, demo = load_config(root / "configs/research/demo_guests.yaml"), load_config(root / "configs/demo.yaml")
    assert "extends: ../demo.yaml" in (root / "configs/research/demo_guests.yaml").read_text()
    assert sorted(k for k, _, _ in diff_config(demo, guests)) == ["data.demo_world.guests", "data.demo_world.n_sources",
                                                                   "data.demo_world.shot_seconds"]
    e16 = pd.read_csv(root / "book/data/research_e16/relaxation.csv")
    assert run_id(guests) == e16.loc[e16["setting"] == "mild", "run_id"].item()
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {root / 'configs/research/demo_guests.yaml'}\ndata: {{demo_world: {{guests: 0}}}}\noptim: {{epochs: 200}}\n")
    c = load_config(child)
    assert c.data.demo_world == {"guests": 0} and c.optim.epochs == 200 and c.optim.base_lr == demo.optim.base_lr
    child.write_text("extends: ../nowhere/base.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"base.yaml does not exist \(extended by .*child.yaml\)"):
        load_config(child)


def test_demo_world_is_hash_neutral_when_empty_and_reaches_the_generator(monkeypatch):
    "data.demo_world was added after the sweep's runs were recorded: {} keeps the committed run id (read from the"
    "committed mild seed-0 run), a change is a different run, and pretrain_manifest renders that world."
    import json
    import crisscross.demo as cdemo
    from crisscross.data import pretrain_manifest
    root = Path(__file__).parent.parent
    demo = load_config(root / "configs" / "demo.yaml")
    changed = load_config(root / "configs" / "demo.yaml", ["data.demo_world={n_sources: [3, 3], shot_seconds: [2, 4]}"])
    committed = json.loads((root / "runs/ablations/relaxation=mild/async_loss=on/size=s/seed=0/metrics.json").read_text())
    assert demo.data.demo_world == {} and run_id(demo) == committed["run_id"]
    without = to_dict(demo); del without["data"]["demo_world"]
    assert config_hash(demo) == config_hash(without) and diff_config(demo, without) == []
    assert run_id(changed) != run_id(demo)
    assert sorted(k for k, _, _ in diff_config(demo, changed)) == ["data.demo_world.n_sources", "data.demo_world.shot_seconds"]
    w = cdemo.demo_world(changed.data.demo_world)
    assert (w.n_sources, w.shot_seconds, w.hue_spread) == ((3, 3), (2.0, 4.0), cdemo.DemoWorld().hue_spread)
    assert cdemo.demo_world({}) == cdemo.demo_world(None) == cdemo.DemoWorld()
    seen = []
    monkeypatch.setattr(cdemo, "generate_demo", lambda root, **k: seen.append(k["world"]) or Path(root) / "m.csv")
    for cfg in (demo, changed): pretrain_manifest(cfg.data, progress=False)
    assert [x.fingerprint() for x in seen] == [cdemo.DemoWorld().fingerprint(), w.fingerprint()] and seen[0] != seen[1]
    with pytest.raises(ValueError, match="data.demo_world=.*dataset 'kinetics'"):
        load_config(overrides=["data.dataset=kinetics", "data.manifest=m.csv", "data.demo_world={n_sources: [3, 3]}"])


def test_research_e20_runs_trace_to_their_configs():
    "Every run of book/data/research_e20/runs.csv resolves, from the committed config file and its recorded parameters,"
    "to its recorded config hash and run id: the research configs of e20 still describe the runs the book cites."
    import json
    import pandas as pd
    from crisscross.config import config_hash, run_id
    from crisscross.experiment import BASELINE, PARAMETERS, check_params, resolve_config
    root = Path(__file__).parent.parent
    runs = pd.read_csv(root / "book/data/research_e20/runs.csv")
    assert len(runs) >= 20 and runs["config"].str.startswith("configs/").all()
    for r in runs.itertuples():
        rec = json.loads((root / r.run / "metrics.json").read_text())
        p = check_params(**{k: v for k, v in rec["parameters"].items() if k in PARAMETERS})
        assert Path(p.config).name == Path(r.config).name, r.run
        cfg = resolve_config(p)
        assert config_hash(cfg) == r.config_hash == rec["config_hash"], r.run
        assert (run_id(cfg) if p.pretrain else f"{BASELINE}-{run_id(cfg)}") == r.run_id == rec["run_id"], r.run
