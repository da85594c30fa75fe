"""The clip index: one row per clip of a dataset, and the decoded media of one clip.

A dataset adapter turns a dataset root into a `ClipIndex`. Paths in the index are relative to the
dataset root so an index survives a moved dataset; `ClipIndex.with_root` re-anchors it.
Label convention everywhere: 1 = fake, 0 = real.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from avbench.io import atomic_write

#: Columns of the clip index, in order, with their pandas dtypes.
INDEX_COLUMNS: dict[str, str] = {
    "clip_id": "string",
    "dataset": "string",
    "path": "string",
    "audio_path": "string",
    "label": "int8",
    "video_label": "Int8",
    "audio_label": "Int8",
    "method": "string",
    "category": "string",
    "identity": "string",
    "group": "string",
    "split": "string",
    "fake_segments": "string",
    "meta": "string",
}

SPLITS = ("train", "val", "test")
#: `meta["audio"]` of a clip whose dataset ships no audio track (FaceForensics++, Celeb-DF): the loader
#: does not look for one, hands the clip over as a clip without audio (None, or silence where the
#: detector needs a track) and declares NO_AUDIO_TRACK among the clip's fallbacks, which runs count.
AUDIO_ABSENT = "absent"
NO_AUDIO_TRACK = "no_audio_track"
#: The label of a clip whose dataset publishes none (an unlabelled pool's test subsets): never indexed.
UNLABELED = -1
#: Fallbacks a detector declares while it scores: a clip shorter than the frames a sample takes
#: (its last frame repeated), and audio read as silence (removed by the protocol, or absent).
FRAMES_REPEATED = "frames_repeated"
SILENT_TRACK = "silent_track"
#: Declared on a clip whose leading silence a +trim_silence protocol cut.
LEADING_SILENCE_TRIMMED = "leading_silence_trimmed"
#: The fallback of a clip without a face whose detector takes centre crops instead (InputSpec.no_face).
NO_FACE_CENTRE_CROP = "no_face_centre_crop"


class ClipError(Exception):
    """A clip that cannot be used. `reason` is a short code counted in coverage."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self):  # crosses process boundaries (media workers) with both fields
        return type(self), (self.reason, self.message)


@dataclass(frozen=True)
class ClipRef:
    """One clip of the index, with paths resolved against the dataset root."""

    clip_id: str
    dataset: str
    path: Path
    label: int
    audio_path: Path | None = None
    video_label: int | None = None
    audio_label: int | None = None
    method: str = ""
    category: str = ""
    identity: str = ""
    group: str = ""
    split: str = ""
    fake_segments: tuple[tuple[float, float], ...] = ()
    #: "KIND@LEVEL": the clip as a perturbation protocol degrades it (avbench.perturbations); the
    #: loader applies it and keys the cache on it, and so does every cache keyed on the loader's keys.
    perturbation: str = ""
    #: Cut the clip's leading silence (audio and video alike; a +trim_silence protocol sets it on every
    #: clip it reads); the loader keys the cache on it.
    trim_silence: bool = False
    meta: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def audio_absent(self) -> bool:
        """The dataset has no audio for this clip (AUDIO_ABSENT): not a failure, a declared input."""
        return self.meta.get("audio") == AUDIO_ABSENT


@dataclass
class Clip:
    """Decoded inputs of one clip, exactly those the detector's `InputSpec` asked for.

    frames: (T, H, W, 3) uint8 RGB at `fps`; audio: (N,) float32 mono at `sample_rate`;
    faces / mouths: (T, S, S, 3) uint8 crops aligned with frames; landmarks: (T, 68, 2) float32
    in frame pixels; boxes: (T, 4) float32 as x0, y0, x1, y1.
    `audio_removed`: the clip has no audio (then None, or silence where the detector needs a track):
    a missing-audio protocol removed it, or its dataset has none (NO_AUDIO_TRACK in `fallbacks`).
    `fallbacks`: declared departures from the inputs a detector normally reads (a dataset without
    audio, a frame repeated to fill a short clip, a centre crop where no face was found), added by
    the loader and by the detector while it scores; runs count them per reason beside coverage.
    """

    ref: ClipRef
    fps: float | None = None
    frames: np.ndarray | None = None
    sample_rate: int = 16000
    audio: np.ndarray | None = None
    faces: np.ndarray | None = None
    mouths: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    boxes: np.ndarray | None = None
    audio_removed: bool = False
    fallbacks: list[str] = field(default_factory=list)

    @property
    def clip_id(self) -> str:
        return self.ref.clip_id

    def declare(self, *fallbacks: str) -> None:
        """Add fallbacks to `fallbacks`, each once however often a clip's windows or views need it."""
        self.fallbacks.extend(f for f in dict.fromkeys(fallbacks) if f not in self.fallbacks)

    @property
    def duration(self) -> float:
        if self.frames is not None and self.fps:
            return len(self.frames) / self.fps
        if self.audio is not None:
            return len(self.audio) / self.sample_rate
        return 0.0


class ClipIndex:
    """A validated table of clips (pandas DataFrame with INDEX_COLUMNS) and its dataset root."""

    def __init__(self, frame: pd.DataFrame, root: Path | str, problems: list[str] | None = None):
        self.frame = normalise_index_frame(frame)
        self.root = Path(root)
        #: What the adapter could not use, one line each naming the file and the reason.
        self.problems = list(problems or [])

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def datasets(self) -> list[str]:
        return sorted(self.frame["dataset"].unique())

    def with_root(self, root: Path | str) -> "ClipIndex":
        return ClipIndex(self.frame, root)

    def subset(self, mask) -> "ClipIndex":
        return ClipIndex(self.frame[mask].reset_index(drop=True), self.root)

    def refs(self) -> Iterator[ClipRef]:
        for row in self.frame.itertuples(index=False):
            yield self._ref(row)

    def _ref(self, row) -> ClipRef:
        def opt_int(v):
            return None if pd.isna(v) else int(v)

        audio_path = None if pd.isna(row.audio_path) or not row.audio_path else self.root / row.audio_path
        return ClipRef(
            clip_id=row.clip_id,
            dataset=row.dataset,
            path=self.root / row.path,
            label=int(row.label),
            audio_path=audio_path,
            video_label=opt_int(row.video_label),
            audio_label=opt_int(row.audio_label),
            method=_text(row.method),
            category=_text(row.category),
            identity=_text(row.identity),
            group=_text(row.group),
            split=_text(row.split),
            fake_segments=tuple(tuple(s) for s in json.loads(_text(row.fake_segments) or "[]")),
            meta=json.loads(_text(row.meta) or "{}"),
        )

    def fingerprint(self) -> str:
        """sha256 of the index content (not of the root), stable under row order."""
        ordered = self.frame.sort_values("clip_id").reset_index(drop=True)
        payload = ordered.astype(str).to_csv(index=False).encode()
        return hashlib.sha256(payload).hexdigest()

    def save(self, path: Path | str) -> Path:
        """Write the index as parquet, atomically; the root travels in the file's metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"avbench.root"] = str(self.root.resolve()).encode()
        table = table.replace_schema_metadata(meta)
        with atomic_write(path, "wb") as fh:
            pq.write_table(table, fh)
        return path

    @classmethod
    def load(cls, path: Path | str, root: Path | str | None = None) -> "ClipIndex":
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"clip index not found: {path}")
        table = pq.read_table(path)
        stored_root = (table.schema.metadata or {}).get(b"avbench.root", b"").decode()
        return cls(table.to_pandas(), root if root is not None else stored_root)


def _text(v) -> str:
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def normalise_index_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the required columns, fill optional ones, fix dtypes and reject bad rows."""
    frame = frame.copy()
    missing = [c for c in ("clip_id", "dataset", "path", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"clip index lacks required columns: {', '.join(missing)}")
    for column, dtype in INDEX_COLUMNS.items():
        if column not in frame.columns:
            frame[column] = pd.NA
        if column in ("fake_segments", "meta"):
            frame[column] = frame[column].map(_as_json)
    bad = frame.loc[~frame["label"].isin([0, 1]), "clip_id"].tolist()
    if bad:
        raise ValueError(f"labels must be 0 (real) or 1 (fake); bad rows: {bad[:5]}")
    duplicated = frame.loc[frame["clip_id"].duplicated(), "clip_id"].tolist()
    if duplicated:
        raise ValueError(f"clip_id must be unique; duplicated: {duplicated[:5]}")
    frame = frame[list(INDEX_COLUMNS)].astype(INDEX_COLUMNS)
    return frame.reset_index(drop=True)


def _as_json(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, sort_keys=True)
    return "" if pd.isna(v) else json.dumps(v)
