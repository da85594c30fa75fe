"""`avbench report`: the run records as a static web site that needs no server and no network.

The site is one index.html (its CSS and JS from report_assets/ inlined) and SVG plots beside it
in plots/: the leaderboard as a sortable table (ours, the published number, the gap), ROC and PR
curves per test set and subset, per-category bars with their bootstrap intervals, robustness
curves (AUC against level per perturbation kind), reliability diagrams for detectors whose scores
are probabilities, and each run's coverage and failure reasons. Clicking a leaderboard row opens
the runs behind that number: seed, record file, git commit, detector config, protocol hash.

Choices a reader should know:
- a curve pools the scored clips of every seed of a detector: one line per detector;
- perturbed protocols (NAME+perturb=KIND@LEVEL) appear in the table and as robustness curves
  only; curves and bars of their own would repeat every plot once per kind and level;
- a bar is the leaderboard's mean over seeds; its interval spans the seeds' bootstrap intervals
  (the lowest ci_low to the highest ci_high), none where the runs had no bootstrap;
- reliability diagrams bin the pooled clips as the records' ECE does (metrics.reliability_curve).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from avbench import leaderboard, metrics, robustness, significance
from avbench.runner import evaluation_parts

GENERATOR = "avbench report"  # marks index.html as ours: only such a folder is replaced
BAR_METRICS = ("AUC", "AP", "EER")
PLOTS = "plots"
CURVE_POINTS = 2000
_CELL = ("train", "test_set", "subset", "metric")


class ReportError(ValueError):
    """The report cannot be made as asked: no run records, or an --out that is not a report."""


def _perturbed(protocol_id: str) -> bool:
    return robustness.split_protocol(protocol_id)[1] is not None


def write_report(runs_dir, out, published: pd.DataFrame | None = None) -> Path:
    """Write the site of every record under `runs_dir` into the folder `out`, whole or not at all
    (built beside it, then renamed), and return its index.html. `out` may be absent, empty or an
    earlier report; anything else is refused rather than overwritten."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_report(out))):
        raise ReportError(f"{out} exists and is not a report written by avbench; choose another --out")
    records = leaderboard.load_records(runs_dir)
    if not records:
        raise ReportError(f"no run records under {runs_dir}: run `avbench run` or `avbench demo` first")
    board = leaderboard.build_leaderboard(records, leaderboard.load_published() if published is None else published)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp's folder is private; a report is for reading
        (staging / PLOTS).mkdir()
        page = _page(runs_dir, records, board, _Plots(staging / PLOTS))
        (staging / "index.html").write_text(page, encoding="utf-8")
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / "index.html"


def _is_report(folder: Path) -> bool:
    index = folder / "index.html"
    return index.is_file() and f'content="{GENERATOR}"' in index.read_text(encoding="utf-8", errors="replace")[:1000]


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename `staging` to `out`; an earlier report there is moved aside first, then removed."""
    if not out.exists():
        os.rename(staging, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.rename(out, aside / out.name)
    os.rename(staging, out)
    shutil.rmtree(aside)


# -- the page ----------------------------------------------------------------------------------------
def _page(runs_dir, records: list[dict], board: pd.DataFrame, plots: "_Plots") -> str:
    clips = _scored_clips([r for r in records if not _perturbed(r["protocol"])])
    per_seed = _per_seed(records)
    sections = [
        ("leaderboard-section", "Leaderboard", _leaderboard_section(board, per_seed)),
        ("curves", "ROC and PR curves", _curves_section(board, clips, plots)),
        ("categories", "Per-category results", _bars_section(board, per_seed, plots)),
        ("robustness", "Robustness", _robustness_section(board, plots)),
        ("calibration", "Calibration", _reliability_section(records, clips, plots)),
        ("coverage", "Coverage and failures", _coverage_section(records)),
    ]
    sections = [s for s in sections if s[2]]
    nav = " ".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "\n".join(f'<section id="{key}"><h2>{title}</h2>\n{content}</section>' for key, title, content in sections)
    data = {"runs": [_run_summary(r) for r in records], "cells": _cells(board, per_seed)}
    detectors, protocols = sorted({r["detector"] for r in records}), sorted({r["protocol"] for r in records})
    plain = [p for p in protocols if not _perturbed(p)]
    named = plain + ([f"{len(protocols) - len(plain)} perturbed"] if len(plain) < len(protocols) else [])
    written = datetime.now(timezone.utc).isoformat(timespec="seconds")
    assets = files("avbench") / "report_assets"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>avbench report</title>
<link rel="icon" href="data:,">
<style>
{assets.joinpath("report.css").read_text(encoding="utf-8")}</style>
</head>
<body>
<header>
<h1>avbench report</h1>
<p>{len(records)} runs of {len(detectors)} detectors ({_esc(", ".join(detectors))}) under {len(protocols)} protocols
({_esc(", ".join(named))}), read from <code>{_esc(runs_dir)}</code>; written {written}.</p>
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
<aside id="provenance" hidden tabindex="-1" aria-labelledby="provenance-title">
<button type="button" class="close" aria-label="Close">×</button>
<h2 id="provenance-title"></h2>
<div class="runs"></div>
</aside>
<script type="application/json" id="avbench-data">{_json(data)}</script>
<script>
{assets.joinpath("report.js").read_text(encoding="utf-8")}</script>
</body>
</html>
"""


def _esc(text) -> str:
    return html.escape(str(text))


def _json(data) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(data, allow_nan=False).replace("</", "<\\/")


def _figure(src: str, caption: str) -> str:
    return (f'<figure class="plot"><img src="{_esc(src)}" alt="{_esc(caption)}">'
            f'<figcaption>{_esc(caption)}</figcaption></figure>')


def _gallery(figures: list[str]) -> str:
    return f'<div class="plots">\n{"".join(figures)}</div>' if figures else ""


def _table(headers: list[tuple[str, bool]], rows: list[str], table_id: str) -> str:
    """A sortable table; headers are (title, numeric), rows ready-made <tr> elements."""
    kind = {True: ' data-type="number"', False: ""}
    head = "".join(f'<th{kind[numeric]}><button type="button">{_esc(title)}</button></th>' for title, numeric in headers)
    return (f'<div class="table-wrap"><table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>\n{"".join(rows)}</tbody></table></div>')


def _number(value, text: str) -> str:
    """A numeric cell: the raw value sorts it, `text` shows it."""
    raw = "" if _missing(value) else repr(float(value))
    return f'<td class="num" data-sort="{raw}">{_esc(text)}</td>'


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _percent(value, signed: bool = False) -> str:
    return "" if _missing(value) else f"{100 * value:{'+' if signed else ''}.1f}"


# -- leaderboard and provenance ----------------------------------------------------------------------
def _leaderboard_section(board: pd.DataFrame, per_seed: pd.DataFrame) -> str:
    headers = [("detector", False), ("protocol", False), ("train", False), ("test set", False), ("subset", False),
               ("metric", False), ("ours %", True), ("± std", True), ("published %", True), ("gap (pp)", True),
               ("seeds", True), ("coverage %", True), ("published source", False)]
    rows = []
    for k, row in enumerate(board.to_dict("records")):
        gap = row["mean"] - row["published"]
        rows.append(f'<tr data-cell="{k}" tabindex="0">'
                    + "".join(f"<td>{_esc(row[key])}</td>" for key in leaderboard.KEY)
                    + _number(row["mean"], _percent(row["mean"]) or "n/a") + _number(row["std"], _percent(row["std"]))
                    + _number(row["published"], _percent(row["published"])) + _number(gap, _percent(gap, signed=True))
                    + _number(row["n_seeds"], str(row["n_seeds"])) + _number(row["coverage"], _percent(row["coverage"]))
                    + f'<td class="source">{_esc(row["published_source"])}</td></tr>\n')
    return ('<p>Mean over seeds in percent; the gap is ours minus published, in percentage points (EER: lower is '
            'better). Click a header to sort, a row to see the runs behind its number.</p>\n'
            + _table(headers, rows, "leaderboard"))


def _per_seed(records: list[dict]) -> pd.DataFrame:
    """One row per run and metric entry: the numbers each leaderboard cell is the mean of."""
    rows = [{"run": i, "detector": rec["detector"], "protocol": rec["protocol"],
             **{k: entry[k] for k in _CELL}, **{k: entry.get(k) for k in ("value", "ci_low", "ci_high")}}
            for i, rec in enumerate(records) for entry in rec["metrics"]]
    frame = pd.DataFrame(rows, columns=["run", "detector", "protocol", *_CELL, "value", "ci_low", "ci_high"])
    return frame.astype({k: float for k in ("value", "ci_low", "ci_high")})


def _cells(board: pd.DataFrame, per_seed: pd.DataFrame) -> list[dict]:
    """Per leaderboard row (in table order): its title and the runs behind it, with each run's value."""
    runs = {cell: part for cell, part in per_seed.groupby(list(leaderboard.KEY), sort=False)}
    nullable = lambda v: None if _missing(v) else float(v)  # noqa: E731
    return [{"title": " · ".join(str(row[k]) for k in leaderboard.KEY),
             "runs": [{"run": int(r["run"]), **{k: nullable(r[k]) for k in ("value", "ci_low", "ci_high")}}
                      for r in runs[tuple(row[k] for k in leaderboard.KEY)].to_dict("records")]}
            for row in board.to_dict("records")]


def _run_summary(record: dict) -> dict:
    prov = record.get("provenance", {})
    return {"detector": record["detector"], "protocol": record["protocol"], "seed": record["seed"],
            "record": record["_path"], "git_commit": prov.get("git_commit"), "created": record.get("created"),
            "protocol_sha256": prov.get("protocol_sha256"), "detector_config": prov.get("detector_config")}


# -- scores ------------------------------------------------------------------------------------------
_CLIP_COLUMNS = ["detector", "protocol", "seed", "train", "test_set", "subset", "whole", "label", "score"]


def _scored_clips(records: list[dict]) -> pd.DataFrame:
    """The scored clips behind each metric row of the runs whose scores file is beside their record,
    selected as the runner selects them (runner.evaluation_parts on the record's protocol), so a
    curve is drawn on exactly the clips its row was computed on."""
    frames = []
    for rec in records:
        path = Path(rec["_path"]).parent / rec.get("scores_file", "scores.parquet")
        if not path.is_file():
            warnings.warn(f"{path} is missing: the curves leave out that run", stacklevel=2)
            continue
        scores = pd.read_parquet(path)
        folds, display = significance.record_folds(rec)
        for _, test, key, part in evaluation_parts(scores, folds, display):
            scored = part[part["status"] == "scored"]
            frames.append(scored[["label", "score"]].assign(detector=rec["detector"], protocol=rec["protocol"],
                                                            seed=rec["seed"], whole=key["subset"] == (test.as_subset or "all"),
                                                            **key))
    return pd.concat(frames, ignore_index=True)[_CLIP_COLUMNS] if frames else pd.DataFrame(columns=_CLIP_COLUMNS)


def _unperturbed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[np.array([not _perturbed(p) for p in frame["protocol"]], dtype=bool)]


# -- plots -------------------------------------------------------------------------------------------
class _Plots:
    """Saves figures as numbered SVG files in `folder` and returns their paths relative to the page."""

    def __init__(self, folder: Path):
        self.folder, self.count = folder, 0

    def save(self, fig: Figure, name: str) -> str:
        self.count += 1
        file = f"{self.count:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:80]}.svg"
        fig.savefig(self.folder / file, format="svg", bbox_inches="tight", metadata={"Date": None})
        return f"{PLOTS}/{file}"


def _curves_section(board: pd.DataFrame, clips: pd.DataFrame, plots: _Plots) -> str:
    """ROC and PR curves per protocol, train, test set and subset (the subsets the leaderboard has)."""
    figures = []
    rows = _unperturbed(board[(board["metric"] == "AUC") & (board["subset"] != "AVG")])
    groups = rows[["protocol", "train", "test_set", "subset"]].drop_duplicates()
    for protocol, train, test_set, subset in groups.itertuples(index=False):
        part = clips[(clips["protocol"] == protocol) & (clips["train"] == train) & (clips["test_set"] == test_set)
                     & (clips["subset"] == subset)]
        fig = Figure(figsize=(9, 3.8), layout="constrained")
        roc, pr = fig.subplots(1, 2)
        drawn = 0
        for detector, own in part.groupby("detector", sort=True):
            labels, scores = own["label"].to_numpy(dtype=int), own["score"].to_numpy(dtype=float)
            if len(set(labels)) < 2:
                continue
            fpr, tpr, _ = roc_curve(labels, scores)
            precision, recall, _ = precision_recall_curve(labels, scores)
            roc.plot(*_thin(fpr, tpr), label=f"{detector} (AUC {auc(fpr, tpr):.3f})")
            pr.step(*_thin(recall, precision), where="post",
                    label=f"{detector} (AP {average_precision_score(labels, scores):.3f})")
            drawn += 1
        if not drawn:
            continue
        roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
        pr.set(xlabel="recall", ylabel="precision", title="PR", xlim=(0, 1), ylim=(0, 1.02))
        roc.legend(fontsize=8, loc="lower right")
        pr.legend(fontsize=8, loc="lower left")
        what = f"{protocol} · train {train} · test {test_set} · subset {subset}"
        fig.suptitle(what, fontsize=10)
        figures.append(_figure(plots.save(fig, f"curves-{protocol}-{test_set}-{subset}"),
                               f"ROC and PR, {what}; each detector's clips pooled over its seeds"))
    return _gallery(figures)


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most CURVE_POINTS points of a curve, evenly spaced, ends kept: a curve over a million clips
    would otherwise make an SVG of a million points and no visible difference."""
    if len(x) <= CURVE_POINTS:
        return x, y
    keep = np.linspace(0, len(x) - 1, CURVE_POINTS).round().astype(int)
    return x[keep], y[keep]


def _bars_section(board: pd.DataFrame, per_seed: pd.DataFrame, plots: _Plots) -> str:
    """Per protocol, train and test set: a panel per metric, a bar per subset and detector."""
    rows = _unperturbed(board[board["metric"].isin(BAR_METRICS) & (board["subset"] != "AVG")])
    if rows.empty:
        return ""
    spans = (per_seed.groupby(list(leaderboard.KEY), sort=False)
             .agg(ci_low=("ci_low", "min"), ci_high=("ci_high", "max")).reset_index())
    rows = rows.merge(spans, on=list(leaderboard.KEY), how="left")
    figures = []
    for (protocol, train, test_set), group in rows.groupby(["protocol", "train", "test_set"], sort=False):
        metrics = [m for m in BAR_METRICS if m in set(group["metric"])]
        subsets = list(dict.fromkeys(group["subset"]))
        detectors = sorted(set(group["detector"]))
        fig = Figure(figsize=(1.2 + len(metrics) * max(3.0, 0.8 + 0.25 * len(subsets) * len(detectors)), 3.6),
                     layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(metrics)))
        width = 0.8 / len(detectors)
        for ax, metric in zip(axes, metrics):
            for i, detector in enumerate(detectors):
                cells = (group[(group["metric"] == metric) & (group["detector"] == detector)]
                         .set_index("subset").reindex(subsets))
                means = cells["mean"].to_numpy(dtype=float)
                errors = np.abs(np.vstack([means - cells["ci_low"].to_numpy(dtype=float),
                                           cells["ci_high"].to_numpy(dtype=float) - means]))
                ax.bar(np.arange(len(subsets)) + (i - (len(detectors) - 1) / 2) * width, means, width,
                       yerr=np.nan_to_num(errors), capsize=2, label=detector)
            ax.set_xticks(np.arange(len(subsets)), subsets, rotation=30, ha="right", fontsize=8)
            ax.set(title=metric, ylim=(0, 1.05))
        axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
        what = f"{protocol} · train {train} · test {test_set}"
        fig.suptitle(what, fontsize=10)
        figures.append(_figure(plots.save(fig, f"bars-{protocol}-{test_set}"),
                               f"Per subset, {what}: mean over seeds; whiskers span the seeds' bootstrap intervals"))
    return _gallery(figures)


def _robustness_section(board: pd.DataFrame, plots: _Plots) -> str:
    """AUC (whole test set) against level, a panel per perturbation kind and a line per detector;
    level 0 is the unperturbed base protocol. Empty when no run is of a perturbed protocol."""
    table = robustness.curves(board)
    table = table[table["subset"] == "all"]
    levels = [c for c in table.columns if c.startswith("L")]
    figures = []
    for (base, test_set), group in table.groupby(["protocol", "test_set"], sort=False):
        names = sorted(set(group["kind"]))
        columns = min(3, len(names))
        lines = math.ceil(len(names) / columns)
        fig = Figure(figsize=(3.6 * columns, 3.2 * lines), layout="constrained")
        axes = fig.subplots(lines, columns, squeeze=False).ravel()
        for ax, kind in zip(axes, names):
            for row in group[group["kind"] == kind].to_dict("records"):
                known = [(int(c[1:]), row[c]) for c in levels if not _missing(row[c])]
                ax.plot([x for x, _ in known], [y for _, y in known], marker="o", label=row["detector"])
            ax.set(title=kind, xlabel="level", ylabel="AUC", ylim=(0, 1.02))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=8)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        what = f"{base} · test {test_set}"
        fig.suptitle(what, fontsize=10)
        figures.append(_figure(plots.save(fig, f"robustness-{base}-{test_set}"),
                               f"AUC against perturbation level, {what}; level 0 is the unperturbed protocol"))
    return _gallery(figures)


def _reliability_section(records: list[dict], clips: pd.DataFrame, plots: _Plots) -> str:
    """Fraction of fakes against mean score per (non-empty) bin, for runs whose scores are probabilities."""
    probabilistic = {(r["detector"], r["protocol"]) for r in records if r.get("scores_are_probabilities")}
    clips = clips[np.array([key in probabilistic for key in zip(clips["detector"], clips["protocol"])], dtype=bool)
                  & clips["whole"].to_numpy(dtype=bool)]
    figures = []
    for (protocol, train, test_set), part in clips.groupby(["protocol", "train", "test_set"], sort=False):
        fig = Figure(figsize=(4.6, 4.2), layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="calibrated")
        for detector, own in part.groupby("detector", sort=True):
            bins = metrics.reliability_curve(own["label"].to_numpy(dtype=int), own["score"].to_numpy(dtype=float))
            filled = bins["count"] > 0
            ax.plot(bins["mean_score"][filled], bins["fraction_fake"][filled], marker="o", label=detector)
        ax.set(xlabel="mean score in bin", ylabel="fraction of fakes", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=8)
        what = f"{protocol} · train {train} · test {test_set}"
        ax.set_title(what, fontsize=10)
        figures.append(_figure(plots.save(fig, f"reliability-{protocol}-{test_set}"),
                               f"Reliability, {what}: {metrics.ECE_BINS} equal-width bins, clips pooled over seeds"))
    return _gallery(figures)


# -- coverage ----------------------------------------------------------------------------------------
def _coverage_section(records: list[dict]) -> str:
    headers = [("detector", False), ("protocol", False), ("seed", True), ("clips", True), ("scored", True),
               ("failed", True), ("coverage %", True), ("failure reasons", False), ("fallbacks", False), ("problems", False)]
    rows = []
    for rec in records:
        cov = rec["coverage"]
        failed = cov.get("failed", cov["total"] - cov["scored"])
        share = cov["scored"] / cov["total"] if cov["total"] else math.nan
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(cov.get("reasons", {}).items()))
        fallbacks = ", ".join(f"{name}: {n}" for name, n in cov.get("fallbacks", {}).items())
        rows.append(f"<tr><td>{_esc(rec['detector'])}</td><td>{_esc(rec['protocol'])}</td>"
                    + _number(rec["seed"], str(rec["seed"])) + _number(cov["total"], str(cov["total"]))
                    + _number(cov["scored"], str(cov["scored"]))
                    + _number(failed, str(failed))
                    + _number(share, _percent(share)) + f"<td>{_esc(reasons)}</td><td>{_esc(fallbacks)}</td>"
                    + f"<td>{_esc('; '.join(rec.get('problems', [])))}</td></tr>\n")
    return _table(headers, rows, "coverage-table")
