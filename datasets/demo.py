"""The corpus avbench generates itself (avbench.demo): metadata.csv -> clip index."""

from __future__ import annotations

from pathlib import Path

from avbench.adapter import DatasetAdapter
from avbench.clips import ClipIndex
from avbench.dataset_files import build_index, clip_id_of, drop_duplicate_ids, read_table
from avbench.demo import CATEGORIES, COLUMNS


class DemoDataset(DatasetAdapter):
    name = "demo"
    display_name = "demo"
    description = (
        "Synthetic talking heads (LFW faces, synthesised speech) with FakeAVCeleb-style fakes "
        "(cloned voice, lip-sync, both) and audio-visual desync; shows the harness working, ranks nothing."
    )
    how_to_get = "Run `avbench demo` to generate it."
    default_root = "demo_data"  # where `avbench demo` puts it
    #: The corpus `avbench demo` generates with its defaults (24 identities, 3 real clips each).
    published_counts = {"real": 72, "fake": 96, "fake_audio": 24, "lipsync": 24, "both": 24, "desync": 24}

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        metadata = root / "metadata.csv"
        if not metadata.is_file():
            raise FileNotFoundError(f"dataset 'demo': {metadata} not found. {self.how_to_get}")
        header, lines = read_table(metadata)
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{metadata}: missing column(s) {', '.join(missing)}")
        rows, problems = [], []
        for line, row in lines:
            try:
                rows.append(_clip(row, root))
            except ValueError as err:
                problems.append(f"metadata.csv line {line}: {row.get('path') or '(no path)'}: {err}")
                continue
            if not (root / rows[-1]["path"]).is_file():  # kept: runs count it as failed (missing_file)
                problems.append(f"metadata.csv line {line}: {rows[-1]['path']}: media file not found under {root}; "
                                "kept, runs will count it as failed")
        rows, duplicated = drop_duplicate_ids(rows)
        return build_index(rows, root, problems + duplicated)


def _clip(row: dict, root: Path) -> dict:
    """One index row; ValueError says what is wrong with the metadata row."""
    if None in row:
        raise ValueError("more fields than the header has columns")
    path, category = row["path"], row["category"]
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}")
    labels = tuple(row[c] for c in ("label", "video_label", "audio_label"))
    kind = CATEGORIES[category]
    if labels != tuple(str(v) for v in (kind.label, kind.video_label, kind.audio_label)):
        raise ValueError(f"label, video_label, audio_label {','.join(labels)} do not fit category {category}")
    if not path:
        raise ValueError("empty path")
    try:
        meta = {"source_face": int(row["source_face"]), "voice_identity": row["voice_identity"],
                "audio_offset_s": float(row["audio_offset_s"])}
    except ValueError:
        raise ValueError(
            f"source_face {row['source_face']!r} or audio_offset_s {row['audio_offset_s']!r} is not a number"
        ) from None
    return {
        "clip_id": clip_id_of(path), "dataset": "demo", "path": path, "audio_path": None,
        "label": kind.label, "video_label": kind.video_label, "audio_label": kind.audio_label,
        "method": row["method"], "category": category, "identity": row["identity"], "group": row["group"],
        "split": row["split"], "meta": meta,
    }
