"""What dataset adapters share: walking a dataset's folder once, reading its metadata tables,
turning rows into a ClipIndex, and wording the problems they report."""

from __future__ import annotations

import csv
import io
import os
import unicodedata
from pathlib import Path, PurePosixPath

import pandas as pd

from avbench.clips import INDEX_COLUMNS, ClipIndex

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def clip_id_of(path: str) -> str:
    """A clip's id: its path relative to the dataset root, without the extension."""
    return str(PurePosixPath(path).with_suffix(""))


def read_table(path: Path, encodings: tuple[str, ...] = ("utf-8-sig",)) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header of a CSV file and its rows with their line numbers, values stripped.

    The file is decoded with the first of `encodings` that fits (some datasets ship CP949).
    A row with more fields than the header keeps the extra ones under the key None.
    """
    data, errors = path.read_bytes(), []
    for encoding in encodings:
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError as err:
            errors.append(f"{encoding}: {err}")
    else:
        raise ValueError(f"{path}: cannot decode as {' or '.join(encodings)} ({'; '.join(errors)})")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    rows = [(reader.line_num, {k: v if k is None else (v or "").strip() for k, v in row.items()}) for row in reader]
    return reader.fieldnames, rows


def build_index(rows: list[dict], root: Path, problems: list[str]) -> ClipIndex:
    """The ClipIndex of adapter rows (dicts keyed by INDEX_COLUMNS), even when no row was usable."""
    return ClipIndex(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), root, problems)


def drop_duplicate_ids(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Keep the first clip of each id (a.mp4 and a.avi share one); the others become problems."""
    first: dict[str, str] = {}
    kept, problems = [], []
    for row in rows:
        if row["clip_id"] in first:
            problems.append(f"{row['path']}: same clip id {row['clip_id']!r} as {first[row['clip_id']]}; left out")
        else:
            first[row["clip_id"]] = row["path"]
            kept.append(row)
    return kept, problems


def nfc(text: str) -> str:
    """Korean names unpacked on macOS come decomposed (NFD); compare them composed."""
    return unicodedata.normalize("NFC", text)


def files_under(root: Path) -> list[str]:
    """Every file under root as a root-relative POSIX path, from one walk; hidden ones (._x.mp4) are skipped."""
    found = []
    for folder, dirs, names in os.walk(root, followlinks=True):  # datasets assembled from symlinks
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        prefix = Path(folder).relative_to(root).as_posix() + "/"
        found.extend((prefix + n).removeprefix("./") for n in sorted(names) if not n.startswith("."))
    return found


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def unlisted(root: Path, left: set[str], why: str) -> list[str]:
    """One problem line for all videos left out for the same reason (there may be thousands)."""
    left = sorted(left)
    if not left:
        return []
    shown = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
    return [f"{root}: {len(left)} video file(s) {why}, not indexed: {shown}"]


def missing(where: str, path: str, root: Path) -> str:
    return f"{where}: {path} not found under {root}; kept, runs will count it as failed"


def require_columns(table: Path, header: list[str], columns: tuple[str, ...]) -> None:
    """A metadata file without the columns an adapter reads is not the layout it knows: fail, naming both."""
    absent = [c for c in columns if c not in header]
    if absent:
        raise ValueError(f"{table}: missing column(s) {', '.join(absent)}; found {', '.join(header) or 'none'}")


def keep_first(rows: list[tuple[str, dict]]) -> tuple[list[dict], list[str]]:
    """One row per clip id, the first listed; every repeat is a problem saying whether it conflicts."""
    first: dict[str, tuple[str, dict]] = {}
    kept, problems = [], []
    for where, row in rows:
        if row["clip_id"] not in first:
            first[row["clip_id"]] = where, row
            kept.append(row)
            continue
        where_first, kept_row = first[row["clip_id"]]
        fields = ("label", "video_label", "audio_label", "method", "category", "split")
        differ = [f"{f} {row[f]!r} vs {kept_row[f]!r}" for f in fields if row[f] != kept_row[f]]
        how = f"conflicts ({', '.join(differ)})" if differ else "same labels"
        problems.append(f"{where}: same clip id {row['clip_id']!r} as {where_first}, {how}; the first is kept")
    return kept, problems
