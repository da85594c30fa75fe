"""KoDF (Korean DeepFake Detection Dataset), as AI-Hub or the international release ships it.

AI-Hub release (layout unverified, seen only in third-party loaders): metadata CSVs
`원본영상_{training,validation}_메타데이터.csv` (reals) and `변조영상_..._메타데이터.csv` (fakes) anywhere
under the root, videos anywhere under it too (`원천데이터/train_원본/원본1/...`, `train_변조/dfl1/...`).
A CSV row is matched to the video whose file stem is its `영상ID` (with or without `.mp4`), found in one
walk of the root; when several files share that stem (the 탐지방해 copies, perhaps), the first by path is
kept and the choice reported.
CSVs are read as UTF-8, else CP949 (AI-Hub ships both). The split comes from the CSV name
(training -> train, validation -> val); a video listed in no CSV is reported, not indexed, and a
listed video that is missing stays in the index as `<영상ID>.mp4` at the root (runs count it as failed).

International release (unverified): no CSV; reals under `original_videos/`, fakes under
`synthesized_videos/<method>/`, labels and method from those folders, no split.

Clips: audio is always real (audio_label 0); a fake's category and method are its `변조모델`
(dfl, dffs, fsgan, fo, atfhp, wav2lip), a real's category is "real". identity is the `UUID` column
(reals) or `타겟UUID` (fakes: the person of the target video, so a fake sits with the reals it was made
from); without those columns it is the video id up to its first "_", ASSUMING ids start with the
subject's id as in the released data. group is the target video for fakes and the video id for reals.
Choosing the cross-dataset test subset is the protocols' job, not this adapter's.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

import pandas as pd

from avbench.adapter import DatasetAdapter
from avbench.clips import ClipIndex
from avbench.dataset_files import (build_index, clip_id_of, files_under, is_video, keep_first, missing, nfc,
                                   read_table, require_columns, unlisted)

METHODS = ("dfl", "dffs", "fsgan", "fo", "atfhp", "wav2lip")
SPLIT_OF = {"training": "train", "validation": "val"}
METADATA_NAME = re.compile(r"(원본영상|변조영상)_(training|validation)_메타데이터\.csv")
ENCODINGS = ("utf-8-sig", "cp949")
REAL_FOLDER, FAKE_FOLDER = "original_videos/", "synthesized_videos/"


class KoDFDataset(DatasetAdapter):
    name = "kodf"
    display_name = "KoDF"
    description = ("Korean DeepFake Detection Dataset: 403 subjects, face swap, reenactment and lip-sync fakes, "
                   "real audio.")
    how_to_get = (
        "Request KoDF from AI-Hub (딥페이크 변조 영상) or through the authors' international form, and pass "
        "the folder holding the metadata CSVs and videos (or original_videos/ and synthesized_videos/) as it comes."
    )
    published_counts: dict[str, int] = {"real": 62_166, "fake": 175_776}

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        files = files_under(root)
        tables = [f for f in files if f.lower().endswith(".csv") and "메타데이터" in nfc(f.rsplit("/", 1)[-1])]
        if tables:
            return _from_metadata(root, files, tables)
        if any(f.startswith((REAL_FOLDER, FAKE_FOLDER)) for f in files):
            return _from_folders(root, files)
        raise FileNotFoundError(
            f"dataset 'kodf': {root} holds neither KoDF metadata CSVs (원본영상_training_메타데이터.csv, ...) "
            f"nor {REAL_FOLDER} / {FAKE_FOLDER}. {self.how_to_get}"
        )


def _video_stem(name: str) -> str:
    """A file name or 영상ID without its video extension (string work: this runs for every file and row)."""
    return name.rsplit(".", 1)[0] if is_video(name) else name


def _clip(path: str, fake: bool, method: str, identity: str, group: str, split: str, meta: dict) -> dict:
    return {
        "clip_id": clip_id_of(path), "dataset": "kodf", "path": path, "audio_path": pd.NA,
        "label": int(fake), "video_label": int(fake), "audio_label": 0, "method": method,
        "category": method if fake else "real", "identity": identity, "group": group, "split": split, "meta": meta,
    }


def _from_metadata(root: Path, files: list[str], tables: list[str]) -> ClipIndex:
    by_stem: dict[str, list[str]] = defaultdict(list)
    for video in filter(is_video, files):
        by_stem[_video_stem(video.rsplit("/", 1)[-1])].append(video)
    named = {t: METADATA_NAME.fullmatch(nfc(t.rsplit("/", 1)[-1])) for t in tables}
    problems = [f"{t}: not a KoDF metadata file name (원본영상|변조영상_training|validation_메타데이터.csv); skipped"
                for t in tables if named[t] is None]
    listed, named_ids = [], set()
    # training CSVs first: when a video is listed twice, the training row is kept
    for table in sorted((t for t in tables if named[t]), key=lambda t: (named[t][2], named[t][1], t)):
        name, kind, split = named[table].group(0, 1, 2)
        fake, split = kind == "변조영상", SPLIT_OF[split]
        header, lines = read_table(root / table, ENCODINGS)
        require_columns(root / table, header, ("영상ID", "변조모델")[: 1 + fake])
        named_ids.update(_video_stem(row["영상ID"]) for _, row in lines)
        for line, row in lines:
            where = f"{name} line {line}"
            clip = _metadata_clip(row, fake, split, by_stem, where, root, problems)
            if clip is not None:
                listed.append((where, clip))
    rows, repeated = keep_first(listed)
    # a video whose row was reported (unknown method, ...) is not "listed in no CSV"
    unnamed = {v for stem, paths in by_stem.items() if stem not in named_ids for v in paths}
    problems += repeated + unlisted(root, unnamed, "listed in no metadata CSV")
    return build_index(rows, root, problems)


def _metadata_clip(row: dict, fake: bool, split: str, by_stem: dict[str, list[str]], where: str, root: Path,
                   problems: list[str]) -> dict | None:
    """The clip of one CSV row, or None after reporting why it cannot be used."""
    video_id = row["영상ID"]
    method = row["변조모델"].lower() if fake else ""
    if None in row:
        problems.append(f"{where}: more fields than the header has columns; left out")
        return None
    if not video_id:
        problems.append(f"{where}: empty 영상ID; left out")
        return None
    if fake and method not in METHODS:
        problems.append(f"{where}: {video_id}: unknown 변조모델 {row['변조모델']!r} (known: {', '.join(METHODS)}); left out")
        return None
    stem = _video_stem(video_id)
    candidates = by_stem.get(stem, [])
    if not candidates:
        path = stem + ".mp4"
        problems.append(missing(where, f"video {video_id}", root))
    else:
        path = candidates[0]
        if len(candidates) > 1:
            problems.append(f"{where}: {video_id} matches {len(candidates)} files ({', '.join(candidates)}); "
                            f"kept {path}")
    identity = row.get("타겟UUID" if fake else "UUID") or stem.split("_")[0]
    group = _video_stem(row.get("타겟영상", "")) if fake else stem
    meta = {k: row[c] for k, c in (("gender", "인물성별"), ("source_identity", "소스UUID")) if row.get(c)}
    return _clip(path, fake, method, identity, group, split, meta)


def _from_folders(root: Path, files: list[str]) -> ClipIndex:
    """The international layout: the folder gives label and method; no split, no pairing."""
    rows, problems, unknown = [], [], defaultdict(list)
    videos = {f for f in files if is_video(f)}
    for path in sorted(videos):
        stem = PurePosixPath(path).stem
        identity = stem.split("_")[0]
        if path.startswith(REAL_FOLDER):
            rows.append((path, _clip(path, False, "", identity, stem, "", {})))
        elif path.startswith(FAKE_FOLDER) and path.count("/") >= 2:
            folder = path.split("/")[1]
            if folder.lower() in METHODS:
                rows.append((path, _clip(path, True, folder.lower(), identity, "", "", {})))
            else:
                unknown[folder].append(path)
    for folder, paths in unknown.items():
        problems.append(f"{FAKE_FOLDER}{folder}/: unknown method folder (known: {', '.join(METHODS)}); "
                        f"its {len(paths)} video(s) left out")
    kept, repeated = keep_first(rows)
    left_out = {p for paths in unknown.values() for p in paths}
    problems += repeated + unlisted(root, videos - left_out - {r["path"] for r in kept},
                                    f"outside {REAL_FOLDER} and {FAKE_FOLDER}<method>/")
    return build_index(kept, root, problems)
