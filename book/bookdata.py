"""Read the compendium's committed result tables and render them for the book: tables, figures and provenance.

The book never trains. Every number on a page comes from a CSV under `book/data/` (written by the sweep's collect
step, or transcribed from the paper for the `published_*.csv` files) and every image from `book/figures/`; the pages
call the functions below from hidden-input cells, so a reader can open the code that made each table and figure.

Result tables, one per ablation (`book/data/<ablation>.csv`), have one row per run:

* provenance columns `ablation, setting, seed, run_id, config_hash, git_commit, manifest_hash` (all required);
* metric columns, fractions in [0, 1], named `probe_<m>`, `knn_<m>`, `retrieval_<...>` or `esc10[_<...>]`
  (`<m>` is `v`, `a` or `av`); the book shows them in percent;
* any other numeric columns (e.g. `pretrain_seconds`, `final_loss`) are shown as they are, in the table of runs;
* the `random_init` baseline: rows whose `setting` is `random_init`, with their own run ids and seeds.

Per-epoch tables (`book/data/<ablation>_epochs.csv`) have the same provenance columns plus `epoch`, one row per
run and evaluated epoch. A figure `book/figures/<name>.png` may carry `<name>.json` beside it:
`{"caption": str, "run_ids": [str, ...], "command": str}`.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crisscross.demo import DEMO_SIZES
from crisscross.sampler import MODES

BOOK = Path(__file__).resolve().parent
DATA = BOOK / "data"
FIGURES = BOOK / "figures"

PROVENANCE = ("ablation", "setting", "seed", "run_id", "config_hash", "git_commit", "manifest_hash")
BASELINE = "random_init"
METRIC_PATTERN = re.compile(r"^(probe_|knn_|retrieval_|esc10)")
HEADLINE_METRICS = ("probe_v", "probe_a", "probe_av")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")
METRIC_LABELS = {
    "probe_v": "linear probe, video", "probe_a": "linear probe, audio", "probe_av": "linear probe, audio+video",
    "knn_v": "kNN, video", "knn_a": "kNN, audio", "knn_av": "kNN, audio+video",
}


@dataclass(frozen=True)
class Ablation:
    "One ablation of the poster: where its table lives, how its settings are ordered and named."
    name: str
    title: str
    poster: str
    parameter: str
    order: tuple = ()
    labels: dict = field(default_factory=dict)

    def label(self, setting) -> str:
        if setting == BASELINE: return "random init"
        return self.labels.get(str(setting), str(setting))


ABLATIONS = {
    "relaxation": Ablation("relaxation", "temporal relaxation mode", "Fig. 2", "relaxation", MODES),
    "async_loss": Ablation("async_loss", "with and without L_async", "Tab. 1, Fig. 3, Fig. 4", "async_loss",
                           ("off", "on"), {"off": "w/o L_async", "on": "w/ L_async"}),
    "data_size": Ablation("data_size", "pre-training data size", "Tab. 2", "dataset_size", tuple(DEMO_SIZES),
                          {k: f"{k} ({n} clips)" for k, n in DEMO_SIZES.items()}),
}


def _ablation(name) -> Ablation:
    if name not in ABLATIONS:
        raise ValueError(f"ablation={name!r} is not one of {', '.join(ABLATIONS)}")
    return ABLATIONS[name]


def repo_path(path: Path) -> str:
    "`path` relative to the repository root when it is inside it, for messages a reader can act on."
    try: return str(Path(path).resolve().relative_to(BOOK.parent))
    except ValueError: return str(path)


# ---------------------------------------------------------------------------------------------------- reading
def metric_columns(df: pd.DataFrame) -> list:
    "The metric columns of a result table, headline metrics first."
    found = [c for c in df.columns if METRIC_PATTERN.match(str(c))]
    return [m for m in HEADLINE_METRICS if m in found] + [c for c in found if c not in HEADLINE_METRICS]


def extra_columns(df: pd.DataFrame) -> list:
    "Numeric columns that are neither provenance nor metrics (shown as they are)."
    skip = set(PROVENANCE) | set(metric_columns(df)) | {"epoch"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]


def validate_results(df: pd.DataFrame, source, ablation: str | None = None, per_epoch: bool = False) -> pd.DataFrame:
    "`df` if it follows the result-table schema; a `ValueError` naming `source`, the column and the problem if not."
    need = list(PROVENANCE) + (["epoch"] if per_epoch else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)}; a result table needs {', '.join(need)} "
                         f"and metric columns (probe_*, knn_*, retrieval_*, esc10*)")
    metrics = metric_columns(df)
    if not metrics:
        raise ValueError(f"{source}: no metric column; expected at least one of probe_v, probe_a, probe_av, knn_*, "
                         f"retrieval_*, esc10* (got columns {', '.join(map(str, df.columns))})")
    if df.empty: raise ValueError(f"{source}: the table has no rows")
    for c in ("setting", "run_id"):
        if df[c].isna().any() or (df[c].astype(str).str.strip() == "").any():
            raise ValueError(f"{source}: empty {c} in row(s) {list(np.flatnonzero(df[c].isna() | (df[c].astype(str).str.strip() == '')))}")
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    if seeds.isna().any() or (seeds < 0).any() or (seeds != seeds.round()).any():
        raise ValueError(f"{source}: seed must be a non-negative integer in every row; got {df['seed'].tolist()}")
    if ablation is not None and not (df["ablation"].astype(str) == ablation).all():
        raise ValueError(f"{source}: column ablation must be {ablation!r} in every row; got {sorted(set(df['ablation'].astype(str)))}")
    key = ["run_id", "epoch"] if per_epoch else ["run_id"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise ValueError(f"{source}: duplicate {'/'.join(key)} {sorted(set(df.loc[dup, 'run_id'].astype(str)))}; "
                         f"each run appears once{' per epoch' if per_epoch else ''}")
    for m in metrics:
        v = pd.to_numeric(df[m], errors="coerce")
        bad = v.notna() & ((v < 0) | (v > 1)) | (v.isna() & df[m].notna())
        if bad.any():
            raise ValueError(f"{source}: metric {m} must be a fraction in [0, 1] (or empty); got {df.loc[bad, m].tolist()}")
    out = df.copy()
    out["seed"] = seeds.astype(int)
    for c in ("setting", "run_id", "ablation", "config_hash", "git_commit", "manifest_hash"):
        out[c] = out[c].astype(str)
    for m in metrics: out[m] = pd.to_numeric(out[m], errors="coerce")
    return out


def read_results(ablation: str, data_dir=None, per_epoch: bool = False) -> pd.DataFrame | None:
    "The validated table of `ablation` (`<ablation>.csv`, or `<ablation>_epochs.csv`), or None if not written yet."
    path = Path(data_dir or DATA) / (f"{ablation}_epochs.csv" if per_epoch else f"{ablation}.csv")
    if not path.exists(): return None
    return validate_results(pd.read_csv(path), repo_path(path), ablation, per_epoch)


def read_published(name: str, data_dir=None) -> pd.DataFrame:
    "A table of the paper's numbers, `published_<name>.csv` (its `#` lines are the source note)."
    path = Path(data_dir or DATA) / f"published_{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{repo_path(path)} not found; the published tables are book/data/published_*.csv")
    df = pd.read_csv(path, comment="#")
    if "source" not in df.columns or df["source"].isna().any():
        raise ValueError(f"{repo_path(path)}: every row needs a source (column 'source')")
    return df


def published_note(name: str, data_dir=None) -> str:
    "The `#` comment lines at the top of `published_<name>.csv`."
    path = Path(data_dir or DATA) / f"published_{name}.csv"
    lines = [l[1:].strip() for l in path.read_text(encoding="utf-8").splitlines() if l.startswith("#")]
    return " ".join(lines)


# ---------------------------------------------------------------------------------------------------- summarising
def ordered_settings(df: pd.DataFrame, ablation: Ablation) -> list:
    "The settings present, baseline first, then in the ablation's order, then any others sorted."
    present = list(dict.fromkeys(df["setting"]))
    known = [s for s in ablation.order if s in present]
    return ([BASELINE] if BASELINE in present else []) + known + sorted(s for s in present if s not in known and s != BASELINE)


def summarise(df: pd.DataFrame, ablation: Ablation, metrics=None) -> pd.DataFrame:
    "Per setting and metric: mean, sample standard deviation, number of seeds; plus the seeds and run ids."
    metrics = metrics or metric_columns(df)
    rows = []
    for s in ordered_settings(df, ablation):
        g = df[df["setting"] == s]
        row = {("setting", ""): s, ("seeds", ""): sorted(g["seed"].tolist()),
               ("run_ids", ""): g.sort_values("seed")["run_id"].tolist()}
        for m in metrics:
            v = g[m].dropna().to_numpy(float)
            row[(m, "mean")] = v.mean() if len(v) else np.nan
            row[(m, "std")] = v.std(ddof=1) if len(v) > 1 else np.nan
            row[(m, "n")] = len(v)
        rows.append(row)
    out = pd.DataFrame(rows)  # columns: (metric, mean|std|n), ("seeds", ""), ("run_ids", "")
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    out.index = out.pop(("setting", "")).tolist()
    return out


def fmt_pct(mean, std=np.nan, n=None) -> str:
    "`mean +/- std` in percent, one decimal; the spread is omitted for a single seed."
    if mean is None or not np.isfinite(mean): return "n/a"
    s = f"{100 * mean:.1f}"
    if std is not None and np.isfinite(std): s += f" ± {100 * std:.1f}"
    if n is not None: s += f" (n={n})"
    return s


def html_table(df: pd.DataFrame, caption: str = "", cls: str = "crisscross-table") -> str:
    "`df` as an HTML table (escaped, no index) under an italic caption."
    body = df.to_html(index=False, escape=True, classes=[cls, "table"], border=0, na_rep="n/a")
    return (f"<p class='crisscross-caption'><em>{html.escape(caption)}</em></p>" if caption else "") + body


def summary_html(df: pd.DataFrame, ablation: Ablation, metrics=None, source: str = "") -> str:
    "Mean +/- std over seeds per setting (percent), with the seeds that went into it."
    metrics = metrics or metric_columns(df)
    summ = summarise(df, ablation, metrics)
    out = pd.DataFrame({
        "setting": [ablation.label(s) if s != BASELINE else "random init (baseline)" for s in summ.index],
        **{METRIC_LABELS.get(m, m): [fmt_pct(r[(m, "mean")], r[(m, "std")]) for _, r in summ.iterrows()] for m in metrics},
        "seeds": [", ".join(map(str, s)) for s in summ[("seeds", "")]],
    })
    return html_table(out, "Mean ± sample standard deviation over seeds, in %." + (f" Source: {source}." if source else ""))


def runs_html(df: pd.DataFrame, ablation: Ablation) -> str:
    "Every run: its setting, seed, run id, every metric (percent) and its provenance."
    metrics, extras = metric_columns(df), extra_columns(df)
    order = {s: i for i, s in enumerate(ordered_settings(df, ablation))}
    d = df.assign(_o=df["setting"].map(order)).sort_values(["_o", "seed"])
    out = pd.DataFrame({
        "setting": [ablation.label(s) for s in d["setting"]], "seed": d["seed"], "run_id": d["run_id"],
        **{m: [fmt_pct(v) for v in d[m]] for m in metrics},
        **{c: d[c].round(4) for c in extras},
        "config_hash": d["config_hash"].str[:12], "git_commit": d["git_commit"].str[:12],
        "manifest_hash": d["manifest_hash"].str[:12],
    })
    return html_table(out, "Every run (metrics in %); hashes shortened to 12 characters.")


def reading_md(df: pd.DataFrame, ablation: Ablation, metrics=None) -> str:
    """What the numbers say, computed: each setting against the random-init baseline and the best setting.
    'Every seed above' means the lowest seed of the setting beats the highest seed of the baseline."""
    metrics = [m for m in (metrics or HEADLINE_METRICS) if m in df.columns] or metric_columns(df)[:3]
    summ = summarise(df, ablation, metrics)
    lines = []
    for m in metrics:
        settings = [s for s in summ.index if s != BASELINE and summ.loc[s, (m, "n")] > 0]
        if not settings: continue
        best = max(settings, key=lambda s: summ.loc[s, (m, "mean")])
        parts = [f"**{METRIC_LABELS.get(m, m)}**: best {ablation.label(best)} "
                 f"{fmt_pct(summ.loc[best, (m, 'mean')], summ.loc[best, (m, 'std')], summ.loc[best, (m, 'n')])}"]
        if BASELINE in summ.index and summ.loc[BASELINE, (m, "n")] > 0:
            base = df.loc[df["setting"] == BASELINE, m].dropna()
            parts.append(f"random init {fmt_pct(summ.loc[BASELINE, (m, 'mean')], summ.loc[BASELINE, (m, 'std')], len(base))}")
            above = [ablation.label(s) for s in settings if df.loc[df["setting"] == s, m].dropna().min() > base.max()]
            below = [ablation.label(s) for s in settings if df.loc[df["setting"] == s, m].dropna().max() < base.min()]
            parts.append("every seed above every baseline seed: " + (", ".join(above) or "no setting"))
            parts.append("every seed below: " + (", ".join(below) or "no setting"))
        spread = np.nanmax([summ.loc[s, (m, "std")] for s in settings]) if any(np.isfinite(summ.loc[s, (m, 'std')]) for s in settings) else np.nan
        gap = summ.loc[settings, (m, "mean")].max() - summ.loc[settings, (m, "mean")].min()
        if np.isfinite(spread):
            parts.append(f"range of setting means {100 * gap:.1f} points against a largest seed std of {100 * spread:.1f}")
        lines.append("- " + "; ".join(parts) + ".")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- figures
def ablation_figure(df: pd.DataFrame, ablation: Ablation, metrics=None):
    "One panel per metric: a bar per setting at the mean, a bar for the std, a dot per seed; the baseline as a band."
    import matplotlib.pyplot as plt
    metrics = [m for m in (metrics or HEADLINE_METRICS) if m in df.columns] or metric_columns(df)[:3]
    settings = [s for s in ordered_settings(df, ablation) if s != BASELINE]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 0.6, 3.4), squeeze=False)
    rng = np.random.default_rng(0)  # jitter of the seed dots only
    for ax, m in zip(axes[0], metrics):
        summ = summarise(df, ablation, [m])
        x = np.arange(len(settings))
        means = [100 * summ.loc[s, (m, "mean")] for s in settings]
        stds = [100 * np.nan_to_num(summ.loc[s, (m, "std")]) for s in settings]
        ax.bar(x, means, yerr=stds, color="#9ecae1", edgecolor="#3182bd", capsize=4, label="mean ± std")
        for i, s in enumerate(settings):
            v = 100 * df.loc[df["setting"] == s, m].dropna().to_numpy(float)
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=14, color="black", zorder=3, label="seed" if i == 0 else None)
        if BASELINE in summ.index and summ.loc[BASELINE, (m, "n")] > 0:
            bm, bs = 100 * summ.loc[BASELINE, (m, "mean")], 100 * np.nan_to_num(summ.loc[BASELINE, (m, "std")])
            ax.axhline(bm, color="#d62728", ls="--", lw=1, label="random init")
            ax.axhspan(bm - bs, bm + bs, color="#d62728", alpha=0.12, lw=0)
        ax.set_xticks(x, [ablation.label(s) for s in settings], rotation=30 if len(settings) > 3 else 0, ha="right" if len(settings) > 3 else "center")
        ax.set_title(METRIC_LABELS.get(m, m), fontsize=10)
        ax.set_ylabel("top-1 accuracy (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def epoch_figure(df: pd.DataFrame, ablation: Ablation, metrics=None):
    "Accuracy against pre-training epoch: the mean over seeds per setting, each seed as a thin line."
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    metrics = [m for m in (metrics or HEADLINE_METRICS) if m in df.columns] or metric_columns(df)[:3]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics) + 0.6, 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for k, s in enumerate(ordered_settings(df, ablation)):
            g = df[df["setting"] == s]
            colour = "#d62728" if s == BASELINE else f"C{k}"
            for _, r in g.groupby("run_id"):
                r = r.sort_values("epoch")
                ax.plot(r["epoch"], 100 * r[m], color=colour, lw=0.6, alpha=0.4)
            mean = g.groupby("epoch")[m].mean()
            ax.plot(mean.index, 100 * mean.to_numpy(), color=colour, lw=2,
                    label="random init" if s == BASELINE else ablation.label(s))
        ax.set_title(METRIC_LABELS.get(m, m), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("pre-training epoch")
        ax.set_ylabel("top-1 accuracy (%)")
    axes[0, -1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------- display
def _display(*objs):
    from IPython.display import display
    display(*objs)


def _md(text: str):
    from IPython.display import Markdown
    return Markdown(text)


def _html(text: str):
    from IPython.display import HTML
    return HTML(text)


def not_yet_run(what: str, path: Path, how: str) -> str:
    "The notice a page shows in place of a table that has not been written yet."
    return f":::{{note}}\n**Not yet run.** {what}: `{repo_path(path)}` does not exist yet. {how}\n:::\n"


def show_ablation(name: str, data_dir=None):
    "The whole result section of one ablation page: reading, summary, figure, every run; or 'not yet run'."
    import matplotlib.pyplot as plt
    ab = _ablation(name)
    df = read_results(name, data_dir)
    path = Path(data_dir or DATA) / f"{name}.csv"
    if df is None:
        _display(_md(not_yet_run(f"The {ab.title} ablation", path,
                                 f"`make ablations` runs it (papermill `nbs/ablation.ipynb -p {ab.parameter} ...`, "
                                 f"3 seeds per setting) and its collect step writes this table.")))
        return None
    n_runs, seeds = len(df), sorted(set(df["seed"]))
    missing = [s for s in ab.order if s not in set(df["setting"])]
    head = (f"{n_runs} runs from `{repo_path(path)}`: settings {', '.join(ab.label(s) for s in ordered_settings(df, ab))}; "
            f"seeds {', '.join(map(str, seeds))}.")
    if missing: head += f" Settings not run yet: {', '.join(ab.label(s) for s in missing)}."
    if BASELINE not in set(df["setting"]): head += " The random-init baseline is missing from this table."
    _display(_md(head + "\n\n" + reading_md(df, ab)))
    _display(_html(summary_html(df, ab, source=repo_path(path))))
    fig = ablation_figure(df, ab)
    plt.show()
    plt.close(fig)
    _display(_html(runs_html(df, ab)))
    return df


def show_epochs(name: str, data_dir=None):
    "Accuracy against pre-training epoch from `<name>_epochs.csv`, or 'not yet run'."
    import matplotlib.pyplot as plt
    ab = _ablation(name)
    df = read_results(name, data_dir, per_epoch=True)
    if df is None:
        _display(_md(not_yet_run("Accuracy against pre-training epoch", Path(data_dir or DATA) / f"{name}_epochs.csv",
                                 "The collect step writes it from the per-epoch evaluations of the runs.")))
        return None
    fig = epoch_figure(df, ab)
    plt.show()
    plt.close(fig)
    runs = df.groupby(["setting", "seed", "run_id"]).size().reset_index(name="epochs evaluated")
    _display(_html(html_table(runs, f"Runs behind the curves ({repo_path(Path(data_dir or DATA) / f'{name}_epochs.csv')}).")))
    return df


def figure_files(pattern: str, figures_dir=None) -> list:
    "Image files in `figures_dir` whose name matches the glob `pattern` (suffix excluded), sorted."
    d = Path(figures_dir or FIGURES)
    return sorted(p for p in d.glob(pattern + ".*") if p.suffix.lower() in IMAGE_SUFFIXES)


def figure_provenance(path: Path) -> dict:
    "The sidecar `<figure>.json` of a figure, or {} when it has none."
    side = Path(path).with_suffix(".json")
    if not side.exists(): return {}
    meta = json.loads(side.read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        raise ValueError(f"{repo_path(side)}: expected a JSON object with caption, run_ids, command")
    return meta


def show_figures(pattern: str, what: str, how: str, figures_dir=None) -> list:
    "Every figure matching `pattern` with its caption, run ids and the command that made it; or 'not yet produced'."
    from IPython.display import Image, SVG
    files = figure_files(pattern, figures_dir)
    if not files:
        _display(_md(f":::{{note}}\n**Not yet produced.** {what}: no `{repo_path(Path(figures_dir or FIGURES))}/{pattern}.png` yet. {how}\n:::\n"))
        return []
    for f in files:
        meta = figure_provenance(f)
        _display(SVG(filename=str(f)) if f.suffix.lower() == ".svg" else Image(filename=str(f)))
        cap = meta.get("caption", f.stem)
        runs = ", ".join(f"`{r}`" for r in meta.get("run_ids", [])) or "**no provenance sidecar: run ids unknown**"
        cmd = f" Made by `{meta['command']}`." if meta.get("command") else ""
        _display(_md(f"*{cap}* (`{repo_path(f)}`). Runs: {runs}.{cmd}"))
    return files


def show_published(name: str, data_dir=None):
    "A table of the paper's numbers, labelled as such, with its source note."
    df = read_published(name, data_dir)
    note = published_note(name, data_dir)
    _display(_html(html_table(df, note, cls="crisscross-published")))
    return df


def side_by_side_async(data_dir=None):
    "Paper Tab. 1 (Kinetics-Sound linear eval a / v / a+v, w/o and w/ L_async) beside ours (demo probes, mean over seeds)."
    pub = read_published("tab1_async", data_dir)
    ks = pub[pub["downstream"].str.startswith("Kinetics-Sound")]
    ours = read_results("async_loss", data_dir)
    ab = ABLATIONS["async_loss"]
    summ = summarise(ours, ab, [m for m in HEADLINE_METRICS if m in ours.columns]) if ours is not None else None
    rows = []
    for _, r in ks.iterrows():
        target = r["downstream"].split("(")[-1].rstrip(")")  # a, v or a+v
        m = {"a": "probe_a", "v": "probe_v", "a+v": "probe_av"}[target]
        row = {"probe": target,
               "paper w/o L_async": f"{r['without_async']:.1f}", "paper w/ L_async": f"{r['with_async']:.1f}",
               "paper change": f"{r['with_async'] - r['without_async']:+.1f}"}
        if summ is not None and m in summ.columns.get_level_values(0) and {"off", "on"} <= set(summ.index):
            off, on = summ.loc["off"], summ.loc["on"]
            row["ours w/o L_async"] = fmt_pct(off[(m, "mean")], off[(m, "std")], off[(m, "n")])
            row["ours w/ L_async"] = fmt_pct(on[(m, "mean")], on[(m, "std")], on[(m, "n")])
            row["ours change"] = f"{100 * (on[(m, 'mean')] - off[(m, 'mean')]):+.1f}"
        else:
            row["ours"] = "not yet run"
        rows.append(row)
    _display(_html(html_table(pd.DataFrame(rows),
                          "Paper: Kinetics-400 pre-training, Kinetics-Sound linear evaluation (poster Tab. 1). Ours: the "
                          "demo world, probes on its test split, mean ± std over seeds (runs listed above). Different "
                          "data and scale: compare the direction of the change, not the accuracies.")))


def _ablation_or_generic(name: str) -> Ablation:
    return ABLATIONS.get(name) or Ablation(name, name.replace("_", " "), "", name)


def show_metric_family(prefix: str, what: str, how: str, extra_tables=(), data_dir=None) -> list:
    """Every metric column starting with `prefix` across the ablation tables (and `extra_tables`, same schema):
    mean +/- std per setting, with the run ids; or 'not yet run'."""
    shown = []
    for name in list(ABLATIONS) + list(extra_tables):
        path = Path(data_dir or DATA) / f"{name}.csv"
        if not path.exists(): continue
        df = validate_results(pd.read_csv(path), repo_path(path))
        cols = [c for c in metric_columns(df) if c.startswith(prefix)]
        if not cols: continue
        ab = _ablation_or_generic(name)
        _display(_html(summary_html(df, ab, cols, source=repo_path(path))))
        runs = df.assign(**{c: [fmt_pct(v) for v in df[c]] for c in cols})[["setting", "seed", "run_id", *cols]]
        _display(_html(html_table(runs, f"Every run behind the table above ({repo_path(path)}), in %.")))
        shown.append(name)
    if not shown:
        paths = ", ".join(f"`{repo_path(Path(data_dir or DATA) / f'{n}.csv')}`" for n in list(ABLATIONS) + list(extra_tables))
        _display(_md(f":::{{note}}\n**Not yet run.** {what}: no `{prefix}*` column in any of {paths}. {how}\n:::\n"))
    return shown


# ---------------------------------------------------------------------------------------------------- issue 6: does the demo learn?
RECIPE_CONTROLS = ("xm_own", "xm_other", "xm_margin", "xm_r1", "xm_sync_gap", "train_sync", "train_async", "train_sync_gap", "train_xm_margin",
                   "train_std_v", "train_std_a")


def recipe_check(data_dir=None, setting: str = "on", ablation: str = "async_loss",
                 label: str = "pre-trained (demo recipe)") -> dict | None:
    """The demo recipe (full loss, default relaxation; or `setting` of another collected `<ablation>.csv`, e.g. a
    research recipe) against the random-init baseline, seed by seed, from the committed `<ablation>.csv`:
    `{'table': per-seed DataFrame, 'summary': DataFrame, 'checks': [(criterion, value, holds)]}`, or None when the
    table or either setting is not there yet. Every criterion is computed from the table, so a new sweep changes it."""
    df = read_results(ablation, data_dir)
    if df is None or not {setting, BASELINE} <= set(df["setting"]): return None
    d = df[df["setting"].isin([setting, BASELINE])].copy()
    d["setting"] = d["setting"].map({setting: label, BASELINE: "random init"})
    cols = ["setting", "seed", "run_id"] + [m for m in HEADLINE_METRICS if m in d] + [c for c in RECIPE_CONTROLS if c in d]
    table = d[cols].sort_values(["setting", "seed"]).reset_index(drop=True)
    rows, checks = [], []
    for m in [m for m in HEADLINE_METRICS if m in d]:
        on = df.loc[df["setting"] == setting, m].dropna().to_numpy(float)
        rnd = df.loc[df["setting"] == BASELINE, m].dropna().to_numpy(float)
        sd = lambda v: v.std(ddof=1) if len(v) > 1 else np.nan
        margin, spread = on.mean() - rnd.mean(), np.nanmax([sd(on), sd(rnd)])
        rows.append({"probe": METRIC_LABELS.get(m, m), "pre-trained": fmt_pct(on.mean(), sd(on), len(on)),
                     "random init": fmt_pct(rnd.mean(), sd(rnd), len(rnd)), "margin (points)": round(100 * margin, 1),
                     "largest seed std (points)": round(100 * spread, 1) if np.isfinite(spread) else np.nan,
                     "margin > spread": bool(np.isfinite(spread) and margin > spread and len(on) >= 3 and len(rnd) >= 3),
                     "every seed above": bool(len(on) and len(rnd) and on.min() > rnd.max())})
        checks.append((f"{METRIC_LABELS.get(m, m)}: margin over random init larger than the seed spread (>= 3 seeds each)",
                       f"{100 * margin:+.1f} vs {100 * spread:.1f} points" if np.isfinite(spread) else f"{100 * margin:+.1f} points",
                       rows[-1]["margin > spread"]))
    on = df[df["setting"] == setting]
    if "xm_margin" in on and on["xm_margin"].notna().any():
        checks.append(("other-clip control at evaluation: own clip closer than other clips (xm_margin > 0, every seed)",
                       ", ".join(f"{v:+.3f}" for v in on["xm_margin"].dropna()), bool((on["xm_margin"].dropna() > 0).all())))
    if "train_xm_margin" in on and on["train_xm_margin"].notna().any():
        checks.append(("other-clip control in training, last 10% of steps (train_xm_margin > 0, every seed)",
                       ", ".join(f"{v:+.3f}" for v in on["train_xm_margin"].dropna()), bool((on["train_xm_margin"].dropna() > 0).all())))
    for k in ("train_std_v", "train_std_a"):
        if k in on and on[k].notna().any():
            checks.append((f"no collapse: {k} away from 0 (healthy ~ 1/sqrt(dim) = {1 / np.sqrt(128):.3f})",
                           ", ".join(f"{v:.3f}" for v in on[k].dropna()), bool((on[k].dropna() > 0.02).all())))
    if {"train_sync_gap", "train_sync_gap_se"} <= set(on.columns) and on["train_sync_gap"].notna().any():
        g = on[["train_sync_gap", "train_sync_gap_se"]].dropna()
        checks.append(("synchronous and asynchronous cross-modal terms differ in training (L_async - L_sync of the same "
                       "batches, last 10% of steps, beyond 2 standard errors, every seed)",
                       ", ".join(f"{v:+.4f} ± {e:.4f}" for v, e in g.to_numpy()),
                       bool(len(g) and (g["train_sync_gap"].abs() > 2 * g["train_sync_gap_se"]).all())))
    elif {"train_sync", "train_async"} <= set(on.columns) and on["train_sync"].notna().any():
        diff = (on["train_async"] - on["train_sync"]).dropna()
        checks.append(("synchronous and asynchronous cross-modal terms differ in training (L_async - L_sync, every seed)",
                       ", ".join(f"{v:+.3f}" for v in diff), bool(len(diff) and (diff.abs() > 0.005).all())))
    if {"xm_sync_gap", "xm_sync_gap_se"} <= set(on.columns) and on["xm_sync_gap"].notna().any():
        g = on[["xm_sync_gap", "xm_sync_gap_se"]].dropna()
        checks.append(("synchronous audio closer than the same video's audio at other times, at evaluation (xm_sync_gap "
                       "beyond 2 standard errors over test videos, every seed)",
                       ", ".join(f"{v:+.4f} ± {e:.4f}" for v, e in g.to_numpy()),
                       bool(len(g) and (g["xm_sync_gap"] > 2 * g["xm_sync_gap_se"]).all())))
    rnd = df[df["setting"] == BASELINE]
    for m in [m for m in ("probe_v", "probe_a") if m in rnd]:
        checks.append((f"random init not at the ceiling for {METRIC_LABELS.get(m, m)} (ceiling 0.75 for one modality)",
                       fmt_pct(rnd[m].mean()), bool(rnd[m].max() < 0.7)))
    if all(m in on for m in HEADLINE_METRICS):
        v, a, av = (on[m].mean() for m in HEADLINE_METRICS)   # HEADLINE_METRICS: probe_v, probe_a, probe_av
        checks.append(("the classes need both modalities: a+v above both a and v (pre-trained, mean)",
                       f"a {100 * a:.1f}, v {100 * v:.1f}, a+v {100 * av:.1f}", bool(av > max(a, v))))
    return {"table": table, "summary": pd.DataFrame(rows),
            "checks": pd.DataFrame(checks, columns=["criterion (issue 6)", "measured", "holds"])}


def temporal_table(data_dir=None, ablation: str = "relaxation") -> pd.DataFrame | None:
    """Per run of `<ablation>.csv`: does the model use *when*? The evaluation's synchronous vs asynchronous agreement
    within each test video (`xm_sync`, `xm_async`, `xm_sync_gap` ± its standard error over test videos, `xm_t_r1` against
    its chance 1/K), the trainer's `train_sync_gap` ± its standard error over the last 10% of logged batches, and the
    other-clip margin for comparison. None when the table or its temporal columns are not there. The training gap is
    over window means (every step of the tail) when the runs logged them: `train steps` is how many steps it covers."""
    df = read_results(ablation, data_dir)
    if df is None or "xm_sync_gap" not in df.columns or df["xm_sync_gap"].isna().all(): return None
    d = df[df["xm_sync_gap"].notna()]
    pm = lambda v, e: f"{v:+.4f} ± {e:.4f}" if np.isfinite(v) and np.isfinite(e) else "–"
    rows = [{"setting": r["setting"], "seed": int(r["seed"]), "run_id": r["run_id"],
             "probe, video (%)": round(100 * r["probe_v"], 1) if "probe_v" in r else np.nan,
             "other-clip margin": round(r["xm_margin"], 3) if "xm_margin" in r else np.nan,
             "xm_sync": round(r["xm_sync"], 4), "xm_async": round(r["xm_async"], 4),
             "xm_sync_gap ± se": pm(r["xm_sync_gap"], r.get("xm_sync_gap_se", np.nan)),
             "gap / se": round(r["xm_sync_gap"] / r["xm_sync_gap_se"], 1) if r.get("xm_sync_gap_se", 0) > 0 else np.nan,
             "xm_t_r1": round(r["xm_t_r1"], 3),
             "train_sync_gap ± se": pm(r.get("train_sync_gap", np.nan), r.get("train_sync_gap_se", np.nan)),
             "train steps": int(r["train_tail_steps"]) if np.isfinite(r.get("train_tail_steps", np.nan)) else np.nan}
            for _, r in d.iterrows()]
    return pd.DataFrame(rows)


def paired_runs(a_dir, b_dir, ablation: str = "relaxation", metrics=HEADLINE_METRICS + ("xm_margin",)) -> pd.DataFrame | None:
    """The runs of the same (setting, seed) in two collected tables `<a_dir>/<ablation>.csv` and `<b_dir>/<ablation>.csv`
    (e.g. the same settings before and after a code change), side by side with their differences (b - a) and run ids;
    None when either table is missing or they share no run setting."""
    a, b = read_results(ablation, a_dir), read_results(ablation, b_dir)
    if a is None or b is None: return None
    keep = ["setting", "seed", "run_id"] + [m for m in metrics if m in a.columns and m in b.columns]
    m = a[keep].merge(b[keep], on=["setting", "seed"], suffixes=(" (a)", " (b)"))
    if m.empty: return None
    for k in keep[3:]: m[f"{k} b - a"] = m[f"{k} (b)"] - m[f"{k} (a)"]
    return m


def sweep_records(*out_dirs) -> pd.DataFrame | None:
    """One row per sweep recorded in `<out_dir>/sweeps.jsonl` (paths relative to the repository): when it finished,
    the code, how many runs at once (`jobs`; 1 before the option existed), how many runs it ran and skipped, its wall
    time, and the wall time per run it ran (the figure to compare between `jobs` settings). None when there is none."""
    rows = []
    for d in out_dirs:
        path = Path(d) if Path(d).is_absolute() else BOOK.parent / d
        path = path / "sweeps.jsonl"
        if not path.exists(): continue
        for line in path.read_text().splitlines():
            if not line.strip(): continue
            e = json.loads(line)
            runs = e.get("runs", [])
            ran = [r for r in runs if r.get("status") in ("done", "failed")]
            git = e.get("git") or {}
            rows.append({"record": repo_path(path), "finished": e.get("finished", ""),
                         "code": str(git.get("commit", "?"))[:10] + (" (dirty)" if git.get("dirty") else ""),
                         "jobs": int(e.get("jobs") or 1), "runs ran": len(ran),
                         "failed": sum(r.get("status") == "failed" for r in runs),
                         "skipped": sum(r.get("status") == "skipped" for r in runs),
                         "wall (min)": round(float(e["seconds"]) / 60, 1),
                         "wall per run ran (s)": round(float(e["seconds"]) / len(ran), 1) if ran else float("nan"),
                         "mean run time (s)": round(float(np.mean([r["seconds"] for r in ran])), 1) if ran else float("nan")})
    return pd.DataFrame(rows) if rows else None


def show_recipe_check(data_dir=None, setting: str = "on", ablation: str = "async_loss",
                      label: str = "pre-trained (demo recipe)", how: str = "`crisscross sweep --ablations async_loss` runs it."):
    "Display `recipe_check` (or a 'not yet run' note)."
    path = Path(data_dir or DATA) / f"{ablation}.csv"
    r = recipe_check(data_dir, setting, ablation, label)
    if r is None:
        _display(_md(not_yet_run(f"{label} against random init over seeds", path, how)))
        return None
    _display(_html(html_table(r["checks"], f"Each criterion computed from {repo_path(path)} (setting {setting!r} vs random_init).")))
    _display(_html(html_table(r["summary"], "Linear probes on the demo test split, mean ± std over seeds, in %.")))
    _display(_html(html_table(r["table"].round(4), "Every seed: probes (fractions), the other-clip control at evaluation "
                              "(xm_*) and the trainer's last-10% means (train_*); run ids trace each row to its run.")))
    return r


def perturbation_summary(runs_csv, baseline_dir=None) -> pd.DataFrame | None:
    """Research e19: the runs of `runs_csv` (one row per run: experiment, change, condition, seed, probes, xm_margin, ...)
    grouped by (change, condition), against the committed random-init baseline (`async_loss.csv` of `baseline_dir`):
    per probe the mean ± std over seeds and the margin over random init in points, the smallest other-clip margin, and
    whether every run's video probe clears the best random-init seed. None when either table is missing."""
    runs_csv = Path(runs_csv)
    base = read_results("async_loss", baseline_dir)
    if not runs_csv.is_file() or base is None: return None
    r = pd.read_csv(runs_csv)
    missing = {"experiment", "change", "condition", "seed", "xm_margin", *HEADLINE_METRICS} - set(r.columns)
    if missing: raise ValueError(f"{repo_path(runs_csv)}: missing column(s) {sorted(missing)}")
    rnd = base[base["setting"] == BASELINE]
    rows = []
    for (change, cond), g in r.groupby(["change", "condition"], sort=False):
        row = {"change from the recipe": change, "condition": cond, "seeds": ", ".join(str(s) for s in sorted(g["seed"]))}
        for m in HEADLINE_METRICS:
            v = g[m].to_numpy(float)
            row[METRIC_LABELS.get(m, m)] = fmt_pct(v.mean(), v.std(ddof=1) if len(v) > 1 else np.nan, len(v))
            row[f"{m} margin (points)"] = round(100 * (v.mean() - rnd[m].mean()), 1)
        row["smallest xm_margin"] = round(float(g["xm_margin"].min()), 3)
        row["every video probe > best random seed"] = bool((g["probe_v"] > rnd["probe_v"].max()).all())
        rows.append(row)
    return pd.DataFrame(rows)
