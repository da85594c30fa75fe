"""A user's own videos, in one of two layouts.

Folders: DIR/real/** and DIR/fake/** at any depth; the top folder gives the label and the first
sub-folder under fake/ (fake/wav2lip/x.mp4) the category and method. Only video files count there.
CSV: DIR/labels.csv, or any CSV given as the root, with columns path and label (0/1 or real/fake) and
optionally category, identity, split, audio_path and method; any other column goes into `meta`.
Paths are relative to the CSV's folder, and every row must name an existing file.
Nothing is split here: split defaults to "test", so the test_only protocol scores every clip.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from avbench.adapter import DatasetAdapter
from avbench.clips import SPLITS, ClipIndex
from avbench.dataset_files import VIDEO_EXTENSIONS, build_index, clip_id_of, drop_duplicate_ids, read_table

LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}
CSV_COLUMNS = ("path", "label", "category", "identity", "split", "audio_path", "method")


class FolderDataset(DatasetAdapter):
    name = "folder"
    display_name = "folder"
    description = "Your own videos: real/ and fake/ folders, or a labels.csv listing path,label."
    how_to_get = (
        "Put videos under DIR/real/ and DIR/fake/ (a sub-folder of fake/ names the fake's category), "
        "or list them in DIR/labels.csv with columns path,label[,category,identity,split,audio_path]."
    )

    def index(self, root: Path | str | None) -> ClipIndex:
        if root is not None and Path(root).is_file():
            return _from_csv(Path(root), Path(root).parent)
        root = self.check_root(root)
        if (root / "labels.csv").is_file():
            return _from_csv(root / "labels.csv", root)
        if (root / "real").is_dir() or (root / "fake").is_dir():
            return _from_folders(root)
        raise FileNotFoundError(
            f"dataset 'folder': {root} has neither labels.csv nor real/ and fake/ folders. {self.how_to_get}"
        )


def parse_label(text: str) -> int | None:
    """0/1 or real/fake, any case; None for anything else."""
    return LABELS.get(text.strip().lower())


def _clip(path: str, label: int, category: str, method: str = "", identity: str = "", split: str = "test",
          audio_path: str = "", meta: dict | None = None) -> dict:
    return {
        "clip_id": clip_id_of(path), "dataset": "folder", "path": path, "audio_path": audio_path or pd.NA,
        "label": label, "method": method, "category": category, "identity": identity, "group": "",
        "split": split, "meta": meta or {},
    }


def _from_folders(root: Path) -> ClipIndex:
    """Every video under real/ and fake/; hidden files (names starting with a dot) are not clips."""
    rows: list[dict] = []
    for top, label in (("real", 0), ("fake", 1)):
        base = root / top
        for file in sorted(base.rglob("*")) if base.is_dir() else ():
            inside = file.relative_to(base).parts
            if not file.is_file() or file.suffix.lower() not in VIDEO_EXTENSIONS or inside[-1].startswith("."):
                continue
            subfolder = inside[0] if top == "fake" and len(inside) > 1 else ""
            rows.append(_clip(file.relative_to(root).as_posix(), label, subfolder or top, method=subfolder))
    rows, problems = drop_duplicate_ids(rows)
    if not rows:
        problems.append(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) under real/ or fake/")
    return build_index(rows, root, problems)


def _from_csv(table: Path, root: Path) -> ClipIndex:
    """One clip per usable row; every other row is a problem that names its line."""
    header, lines = read_table(table)
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise ValueError(f"{table}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}")
    rows, problems = [], []
    for line, row in lines:
        where = f"{table.name} line {line}"
        if None in row:
            problems.append(f"{where}: more fields than the header has columns")
            continue
        path, label = row.get("path", ""), parse_label(row.get("label", ""))
        split = row.get("split") or "test"
        audio_path = row.get("audio_path", "")
        if not path:
            problems.append(f"{where}: empty path")
        elif label is None:
            problems.append(f"{where}: {path}: label {row.get('label', '')!r} is not 0, 1, real or fake")
        elif split not in SPLITS:
            problems.append(f"{where}: {path}: split {split!r} is not one of {', '.join(SPLITS)}")
        else:
            # a listed file that is missing stays in the index: runs count it as failed (missing_file)
            for name, listed in (("file", path), ("audio_path", audio_path)):
                if listed and not (root / listed).is_file():
                    problems.append(f"{where}: {path}: {name} {listed} not found under {root}; "
                                    "kept, runs will count it as failed")
            meta = {k: v for k, v in row.items() if k not in CSV_COLUMNS and v}
            rows.append(_clip(
                path, label, row.get("category") or ("fake" if label else "real"), row.get("method", ""),
                row.get("identity", ""), split, audio_path, meta,
            ))
    rows, duplicated = drop_duplicate_ids(rows)
    return build_index(rows, root, problems + duplicated)


