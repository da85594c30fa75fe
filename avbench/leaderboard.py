"""The leaderboard: run records in, one row per cell out, beside the papers' published numbers.

A cell is detector x protocol x train x test_set x subset x metric. Each run record (one seed of
one detector on one protocol, written by the runner as **/record.json) gives one value per cell;
the leaderboard reports their mean and sample standard deviation over seeds. Values are fractions
everywhere except in the human formats (table, md), which show percent.

Published numbers (leaderboards/published.csv, in percent) are matched to a cell when the method
is one of the detector's `published_as` names and train, test and metric agree; names compare
case-insensitively ("fakeavceleb" = "FakeAVCeleb"), since dataset names and display names differ
only in case. Subsets: a published row with an empty subset is about the whole test set, so it
matches our "all"; every other subset, "AVG" included, matches the subset of the same name. A
published "AVG" and our "AVG" are both means over the subsets a table reports, which need not be
the same subsets: the match says the numbers are comparable in kind, not that the columns agree.
Two kinds of published subset are not subsets: a table-column note ("column A; fakes manipulated in
both modalities where known") describes the whole test set as the paper built it, and matches "all";
a training regime (REGIMES: "next-token prediction", ...) qualifies the method, so such a row is
the method "NAME [regime]" on the whole test set, a name only a detector of that regime claims.
A split note ("70/30 random", SPLIT_NOTES) says how the split was made: such a row is the whole
test set of a protocol with that split; a mean note ("mean over 11 forgery subsets") is our AVG.
A task is not a subset either: "binary" (with or without a note on the split) is the whole test
set, and "four-class" is the whole test set of a protocol's +four_class variant, whose published ACC and
AUC are our CLASS_ACC and CLASS_AUC (the class accuracy and the macro one-vs-rest AUC the papers'
code computes). A method named "..., audio removed" matches +missing_audio cells only, and a
variant's cells match only published rows of that variant.
When several published rows match, `published` is the first in file order (papers' main tables
come before supplementary ones) and `published_source` names every match; a later source whose
number differs shows it in parentheses.

A run whose unlabelled pool overlapped a scored test set (record `transductive`) is listed as
"NAME [transductive]", apart from the inductive runs of the same detector; a published row whose
note says it may be transductive (HOLA's PSSI rows) says so in published_source.

The golden check guards against regressions: a committed leaderboard (JSON rows plus a tolerance)
against which a fresh run must not move a mean by more than the tolerance or lose a cell.

`significance.mark_best` adds p_vs_best and tied_with_best to the AUC rows (shown as AUC* in the
human formats): which detectors a DeLong test cannot tell from the best of their column.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table

from avbench.io import write_json
from avbench.metrics import ALL_METRICS as METRICS
from avbench.protocol import FOUR_CLASS, MISSING_AUDIO, VARIANTS

KEY = ("detector", "protocol", "train", "test_set", "subset", "metric")
COLUMNS = (*KEY, "mean", "std", "n_seeds", "seeds", "coverage", "published", "published_source")
FORMATS = ("table", "md", "csv", "json")
PUBLISHED_COLUMNS = ("source", "table", "method", "modality", "train", "test", "subset", "metric", "value", "note")
_CELL_FIELDS = ("train", "test_set", "subset", "metric")
_FLOAT_SLACK = 1e-12  # so that |0.93 - 0.91| is not "more than 0.02" through rounding


# -- run records -----------------------------------------------------------------------------------
def record_problems(record) -> list[str]:
    """What makes `record` unusable as a schema-1 run record; empty when it is fine."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    if record.get("schema") != 1:
        return [f"schema is {record.get('schema')!r}, expected 1"]
    problems = [f"'{k}' must be a non-empty string" for k in ("detector", "protocol")
                if not (isinstance(record.get(k), str) and record[k])]
    problems += [f"'{k}' must be an integer" for k in ("seed", "protocol_version") if not _is_int(record.get(k))]
    names = record.get("published_as")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        problems.append("'published_as' must be a list of strings")
    coverage = record.get("coverage")
    if not (isinstance(coverage, dict) and _is_int(coverage.get("total")) and _is_int(coverage.get("scored"))
            and 0 <= coverage["scored"] <= coverage["total"]):
        problems.append("'coverage' must hold integers 0 <= scored <= total")
    metrics = record.get("metrics")
    if not isinstance(metrics, list):
        return problems + ["'metrics' must be a list"]
    seen = set()
    for i, entry in enumerate(metrics):
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in _CELL_FIELDS)):
            problems.append(f"metrics[{i}] needs string fields {', '.join(_CELL_FIELDS)}")
            continue
        value = entry.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            problems.append(f"metrics[{i}] value {value!r} is not a number or null")
        cell = tuple(entry[k] for k in _CELL_FIELDS)
        if cell in seen:
            problems.append(f"metrics[{i}] repeats the cell {'/'.join(cell)}")
        seen.add(cell)
    return problems


def load_records(runs_dir) -> list[dict]:
    """Every valid **/record.json under `runs_dir`, each with its file in '_path'. Files that are
    not valid records are skipped with a warning that names them and says why."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs directory {runs_dir} does not exist")
    records = []
    for path in sorted(runs_dir.rglob("record.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping {path}: not readable JSON ({err})", stacklevel=2)
            continue
        problems = record_problems(record)
        if problems:
            warnings.warn(f"skipping {path}: {'; '.join(problems)}", stacklevel=2)
            continue
        records.append({**record, "_path": str(path)})
    return records


# -- published numbers ------------------------------------------------------------------------------
def load_published(path=None) -> pd.DataFrame:
    """The papers' numbers (percent) as strings, except `value` (float); the packaged copy by default."""
    source = Path(path) if path is not None else files("avbench.leaderboards") / "published.csv"
    with source.open("rb") as fh:
        frame = pd.read_csv(fh, dtype=str, keep_default_na=False)
    missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}")
    values = pd.to_numeric(frame["value"], errors="coerce")
    if values.isna().any():
        bad = frame.loc[values.isna(), "value"].head(5).tolist()
        raise ValueError(f"{source}: non-numeric values {bad} in rows {(values[values.isna()].index + 2).tolist()[:5]}")
    return frame.assign(value=values.astype(float))


#: Published "subsets" that name how a method was trained (seed 001, Tables 3 and 5).
REGIMES = ("supervised", "next-token prediction", "audio-video synchronisation")
#: Published "subsets" that name the task (seed 002): binary, noting how the split was made, or four-class.
BINARY_TASK = re.compile(r"binary(, (identity-independent|official) split)?")
FOUR_CLASS_TASK = "four-class"
AUDIO_REMOVED = ", audio removed"
#: Published "subsets" that say how the split was made: the whole test set of a protocol whose
#: `split` parameter is the value (CAD's Table 1 "70/30 random" is fakeavceleb_intra_file_random).
SPLIT_NOTES = {"70/30 random": "file_random"}
#: Suffix of a transductive run's detector in the leaderboard (detector_label).
TRANSDUCTIVE = " [transductive]"
#: Published "subsets" that name the test split itself: the whole test set ("all").
WHOLE_SET_NOTES = ("validation set",)
#: Published "subsets" that are a mean over the table's subsets: our AVG.
MEAN_NOTES = ("mean over 11 forgery subsets",)
#: A four-class row's published metrics, as our cells name them.
FOUR_CLASS_METRICS = {"ACC": "CLASS_ACC", "AUC": "CLASS_AUC"}


def published_cell(method: str, subset: str, metric: str) -> tuple[str, str, str, str]:
    """The (method, subset, metric, protocol variants) a published row stands for; see the module
    docstring. Variants are "+"-joined in protocol.VARIANTS order, "" for none."""
    variants = []
    if subset == FOUR_CLASS_TASK:
        variants.append(FOUR_CLASS)
        subset, metric = "", FOUR_CLASS_METRICS.get(metric, metric)
    if method.endswith(AUDIO_REMOVED):
        variants.append(MISSING_AUDIO)
        method = method[: -len(AUDIO_REMOVED)]
    if not subset or re.match(r"column [A-Z];", subset) or BINARY_TASK.fullmatch(subset) or subset in SPLIT_NOTES or subset in WHOLE_SET_NOTES:
        subset = "all"
    elif subset in MEAN_NOTES:
        subset = "AVG"
    elif subset in REGIMES:
        method, subset = f"{method} [{subset}]", "all"
    return method, subset, metric, "+".join(v for v in VARIANTS if v in variants)


def _published_lookup(published: pd.DataFrame) -> dict[tuple, list[tuple[int, str, float]]]:
    """(method, train, test, subset, metric, variants, split) -> [(file position, source, value in
    percent)]; split is the SPLIT_NOTES value a row requires, "" for any."""
    lookup: dict[tuple, list[tuple[int, str, float]]] = {}
    for position, row in enumerate(published.itertuples(index=False)):
        method, subset, metric, variants = published_cell(row.method, row.subset, row.metric)
        if metric in METRICS:
            key = _match_key(method, subset, row.train, row.test, metric, variants, SPLIT_NOTES.get(row.subset, ""))
            caveat = " [possibly transductive]" if "transductive" in str(row.note) else ""
            lookup.setdefault(key, []).append((position, f"{row.source} {row.table}{caveat}", float(row.value)))
    return lookup


def _match_key(method, subset, train, test, metric, variants, split="") -> tuple:
    return method.casefold(), train.casefold(), test.casefold(), subset.casefold(), metric, variants, split


def _published_for(cell: dict, names: set[str], lookup: dict, split: str = "") -> tuple[float, str]:
    variants = cell["protocol"].partition("+")[2]
    matches = sorted(m for name in names for required in {"", split}
                     for m in lookup.get(_match_key(name, cell["subset"], cell["train"], cell["test_set"],
                                                    cell["metric"], variants, required), []))
    if not matches:
        return math.nan, ""
    first = matches[0][2]
    return first / 100, "; ".join(src if value == first else f"{src} ({value:g})" for _, src, value in matches)


# -- building ---------------------------------------------------------------------------------------
def build_leaderboard(records: list[dict], published: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell, columns COLUMNS, sorted by detector, protocol, train, test set, subset
    ("all" first, "AVG" last) and metric (METRICS order). A value that is NaN for any seed makes
    the cell's mean NaN: an undefined metric is reported, not averaged away."""
    _check_records(records)
    rows = []
    for rec in records:
        scored, total = rec["coverage"]["scored"], rec["coverage"]["total"]
        for entry in rec["metrics"]:
            value = math.nan if entry["value"] is None else float(entry["value"])
            rows.append({"detector": detector_label(rec), "protocol": rec["protocol"],
                         **{k: entry[k] for k in _CELL_FIELDS},
                         "value": value, "seed": rec["seed"], "scored": scored, "total": total})
    if not rows:
        return pd.DataFrame(columns=list(COLUMNS))
    cells = (pd.DataFrame(rows).groupby(list(KEY), sort=False)
             .agg(mean=("value", lambda v: float(np.mean(v.to_numpy()))),
                  std=("value", lambda v: float(np.std(v.to_numpy(), ddof=1)) if len(v) > 1 else math.nan),
                  n_seeds=("seed", "size"),
                  seeds=("seed", lambda v: ",".join(map(str, sorted(v)))),
                  scored=("scored", "sum"), total=("total", "sum"))
             .reset_index())
    cells["coverage"] = cells["scored"] / cells["total"].where(cells["total"] > 0)
    names: dict[str, set[str]] = {}
    splits: dict[str, str] = {}  # protocol id -> its split parameter, for published SPLIT_NOTES
    for rec in records:
        names.setdefault(detector_label(rec), set()).update(rec["published_as"])
        spec = (rec.get("provenance") or {}).get("protocol_spec") or {}
        splits[rec["protocol"]] = str((spec.get("params") or {}).get("split", ""))
    lookup = _published_lookup(published) if published is not None else {}
    matched = [_published_for(cell, names[cell["detector"]], lookup, splits.get(cell["protocol"], ""))
               for cell in cells.to_dict("records")]
    cells["published"] = [value for value, _ in matched]
    cells["published_source"] = [source for _, source in matched]
    return cells.sort_values(list(KEY), key=_sort_key, ignore_index=True)[list(COLUMNS)]


def detector_label(record: dict) -> str:
    """The detector as the leaderboard names it: a transductive run (its pool overlapped a scored
    test set) is its own row, "NAME [transductive]", never averaged with inductive seeds."""
    return record["detector"] + (TRANSDUCTIVE if record.get("transductive") else "")


def _sort_key(column: pd.Series) -> pd.Series:
    """Subsets as a paper prints them ("all", the named ones, "AVG"); metrics in METRICS order."""
    if column.name == "subset":
        return column.map(lambda s: f"{0 if s == 'all' else 2 if s.startswith('AVG') else 1}{s}")
    if column.name == "metric":
        return column.map(lambda m: f"{METRICS.index(m) if m in METRICS else len(METRICS)}{m}")
    return column


def _check_records(records: list[dict]) -> None:
    """Valid records only, and one per seed: two runs of one seed are one seed twice, not two seeds,
    and two protocol versions are two protocols."""
    seen: dict[tuple, str] = {}
    versions: dict[tuple, tuple[int, str]] = {}
    for i, rec in enumerate(records):
        path = rec.get("_path", f"<record {i}>") if isinstance(rec, dict) else f"<record {i}>"
        problems = record_problems(rec)
        if problems:
            raise ValueError(f"{path}: {'; '.join(problems)}")
        run = (detector_label(rec), rec["protocol"], rec["seed"])
        if run in seen:
            raise ValueError(f"two records of detector '{run[0]}', protocol '{run[1]}', seed {run[2]}: "
                             f"{seen[run]} and {path}; keep one")
        seen[run] = path
        version, first = versions.setdefault(run[:2], (rec["protocol_version"], path))
        if version != rec["protocol_version"]:
            raise ValueError(f"detector '{run[0]}', protocol '{run[1]}' mixes protocol versions {version} ({first}) "
                             f"and {rec['protocol_version']} ({path}); keep the runs of one version")


# -- rendering --------------------------------------------------------------------------------------
def leaderboard_rows(df: pd.DataFrame) -> list[dict]:
    """The rows as plain JSON-ready dicts, NaN as None."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v.item() if isinstance(v, np.generic) else v)
             for k, v in row.items()} for row in df.to_dict("records")]


def render(df: pd.DataFrame, fmt: str):
    """table: a rich Table; md: GitHub markdown; csv and json: machine-readable fractions.

    The human formats put one cell group per line (detector x protocol x train x test set x
    subset) with a column per metric, "mean ± std" in percent and the published number after it
    in brackets; the sources of the published numbers follow the table as notes.
    """
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return json.dumps(leaderboard_rows(df), indent=2, allow_nan=False)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    headers, lines, sources = _human_lines(df)
    numeric = set(headers[len(_GROUP):])
    marked = "tied_with_best" in df.columns
    if fmt == "md":
        notes = "".join(f"\n[{i}] {source}" for i, source in enumerate(sources, 1))
        return (markdown_table(headers, lines, numeric) + (f"\n{SIGNIFICANCE_NOTE}\n" if marked else "")
                + ("\nPublished numbers in brackets, from:" + notes + "\n" if sources else ""))
    # a terminal is narrow: a key column with one value for every row moves into the title
    constant = [j for j in range(len(_GROUP)) if len({line[j] for line in lines}) == 1 and len(lines) > 1]
    shared = " · ".join(f"{headers[j]} {lines[0][j]}" for j in constant)
    keep = [j for j in range(len(headers)) if j not in constant]
    table = Table(title="avbench leaderboard (percent; published in brackets)" + (f"\n{escape(shared)}" if shared else "")
                  + (f"\n{SIGNIFICANCE_NOTE}" if marked else ""),
                  caption="\n".join(f"[{i}] {s}" for i, s in enumerate(sources, 1)) or None, caption_justify="left")
    for j in keep:
        h = headers[j]
        widest = max([len(h)] + [len(line[j]) for line in lines])
        table.add_column(h, justify="right" if h in numeric else "left", no_wrap=h in numeric,
                         min_width=None if h in numeric else min(widest, 16))
    for line in lines:
        table.add_row(*(escape(line[j]) for j in keep))  # "NAME [transductive]" is text, not rich markup
    return table


_GROUP = ("detector", "protocol", "train", "test_set", "subset")
SIGNIFICANCE_NOTE = "AUC*: the best of its column or not significantly below it (DeLong, Holm, 0.05)"


def _human_lines(df: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    metrics = [m for m in METRICS if m in set(df["metric"])] + sorted(set(df["metric"]) - set(METRICS))
    headers = ["detector", "protocol", "train", "test set", "subset", *metrics, "seeds", "coverage"]
    sources: list[str] = []
    lines = []
    for group, part in df.groupby(list(_GROUP), sort=False):
        by_metric = {row["metric"]: row for row in part.to_dict("records")}
        cells = []
        for metric in metrics:
            row = by_metric.get(metric)
            if row is None:
                cells.append("")
                continue
            cell = _mean_std(row["mean"], row["std"]) + ("*" if row.get("tied_with_best") is True else "")
            if not pd.isna(row["published"]):
                if row["published_source"] not in sources:
                    sources.append(row["published_source"])
                cell += f" [{_percent(row['published'])}]{sources.index(row['published_source']) + 1}"
            cells.append(cell)
        first = part.iloc[0]
        lines.append([*(str(v) for v in group), *cells, str(first["n_seeds"]), _percent(first["coverage"], "%")])
    return headers, lines, sources


def markdown_table(headers: list[str], lines: list[list[str]], numeric=frozenset()) -> str:
    """A GitHub markdown table; columns named in `numeric` are right-aligned."""
    escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if h in numeric else "---" for h in headers) + "|"]
    out += ["| " + " | ".join(escape(cell) for cell in line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def _percent(value, suffix: str = "") -> str:
    return "" if pd.isna(value) else f"{100 * value:.1f}{suffix}"


def _mean_std(mean, std) -> str:
    if pd.isna(mean):
        return "n/a"
    return _percent(mean) if pd.isna(std) else f"{_percent(mean)} ± {_percent(std)}"


# -- golden regression check ------------------------------------------------------------------------
def check_against_golden(current: pd.DataFrame, golden_rows: list[dict], tolerance: float) -> list[str]:
    """One message per golden cell that is missing now or whose mean moved by more than `tolerance`
    (absolute, a fraction: 0.02 is two points of AUC). A NaN mean matches only a NaN (null) one."""
    now = {_cell(row): row["mean"] for row in leaderboard_rows(current)}
    problems = []
    for i, row in enumerate(golden_rows):
        missing = [k for k in (*KEY, "mean") if k not in row]
        if missing:
            problems.append(f"golden row {i} lacks {', '.join(missing)}")
            continue
        cell, expected = _cell(row), row["mean"]
        name = "/".join(map(str, cell))
        if cell not in now:
            problems.append(f"{name}: missing from the current leaderboard (golden mean {_fraction(expected)})")
            continue
        actual = now[cell]
        if (actual is None) != (expected is None) or (
                actual is not None and abs(actual - expected) > tolerance + _FLOAT_SLACK):
            problems.append(f"{name}: mean {_fraction(actual)} vs golden {_fraction(expected)} "
                            f"(tolerance {tolerance})")
    return problems


def new_cells(current: pd.DataFrame, golden_rows: list[dict]) -> list[str]:
    """Cells of the current leaderboard that the golden table lacks (not failures)."""
    golden = {_cell(row) for row in golden_rows if all(k in row for k in KEY)}
    return ["/".join(map(str, cell)) for cell in map(_cell, leaderboard_rows(current)) if cell not in golden]


def write_golden(df: pd.DataFrame, path, tolerance: float) -> Path:
    return write_json(path, {"tolerance": tolerance, "rows": leaderboard_rows(df)})


def read_golden(path) -> tuple[list[dict], float]:
    """(rows, tolerance) of a golden file written by `write_golden`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from exc
    if not (isinstance(data, dict) and isinstance(data.get("rows"), list)
            and isinstance(data.get("tolerance"), (int, float)) and not isinstance(data["tolerance"], bool)):
        raise ValueError(f"{path}: a golden file is a JSON object with 'rows' (a list) and 'tolerance' (a number)")
    return data["rows"], float(data["tolerance"])


def _cell(row: dict) -> tuple:
    return tuple(row[k] for k in KEY)


def _fraction(value) -> str:
    return "null" if value is None else f"{value:.4f}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
