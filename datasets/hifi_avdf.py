"""HiFi-AVDF (HAVIC paper): 1,905 AVSpeech reals, each paired with one fake from one of six generators.

The layout is not documented; two are accepted (both unverified):
- CSVs, one per generator, anywhere under the root, with columns video_path, audio_label,
  visual_label, overall_label (0/1), reals and their `*_generated.mp4` fakes alternating. The
  generator comes from the CSV's file name (`sora2.csv`, `HiFi_Veo-3.1.csv`: one generator's key
  word, any case or punctuation). video_path is read relative to the CSV's folder, else to the root,
  else (an absolute path from the authors' machine) matched by file name when one video has it; a
  video found none of these ways stays in the index under its CSV-relative path and is reported.
  Labels must be 0/1 with overall_label = visual_label or audio_label; other rows are reported and
  left out. A video listed twice keeps its first row (CSVs read in path order) and the repeat is reported.
- Folders `<root>/<generator>/{real,fake}/...`, the generator named as for CSVs. The folder gives
  the labels; a fake's audio_label is unknown there (some generators make their own audio).

A fake `x_generated.mp4` (or a fake named like its real) is paired with the real `x.mp4` of the same
generator: group is the real's clip id for both, and the real's category is its fake's generator, so
each per-generator subset carries its own reals (the protocols score a subset against those reals).
A fake without its real, or a real without its fake, is kept and reported. No split (test-only),
no identity.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

import pandas as pd

from avbench.adapter import DatasetAdapter
from avbench.clips import ClipIndex
from avbench.dataset_files import (build_index, clip_id_of, files_under, is_video, keep_first, missing, read_table,
                                   require_columns, unlisted)

#: Key word in a file or folder name -> the generator as leaderboards/published.csv names the subset.
GENERATORS = {"sora": "Sora 2", "veo": "Veo 3.1", "kling": "Kling 2.5", "wan": "WAN 2.5", "pixverse": "PixVerse V5",
              "seedance": "Seedance 1.0"}
LABEL_COLUMNS = ("overall_label", "visual_label", "audio_label")  # -> label, video_label, audio_label


class HiFiAVDFDataset(DatasetAdapter):
    name = "hifi_avdf"
    display_name = "HiFi-AVDF"
    description = ("HiFi-AVDF: AVSpeech reals paired with fakes from Sora 2, Veo 3.1, Kling 2.5, WAN 2.5, "
                   "PixVerse V5 and Seedance 1.0; scored per generator.")
    how_to_get = ("Get HiFi-AVDF from the HAVIC authors and pass its folder as it comes "
                  "(per-generator CSVs, or <generator>/real/ and <generator>/fake/ folders).")
    published_counts: dict[str, int] = {"real": 1_905, "fake": 1_905}

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        files = files_under(root)
        if any(f.lower().endswith(".csv") for f in files):
            return _from_csvs(root, files)
        if any(generator_of(f.split("/", 1)[0]) for f in files if "/" in f):
            return _from_folders(root, files)
        raise FileNotFoundError(
            f"dataset 'hifi_avdf': {root} has no CSV and no generator folder "
            f"({', '.join(GENERATORS.values())}). {self.how_to_get}"
        )


def generator_of(name: str) -> str | None:
    """The generator whose key word the name holds, or None when it holds none or several."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    found = {generator for word, generator in GENERATORS.items() if word in key}
    return found.pop() if len(found) == 1 else None


def _clip(path: str, labels: tuple[int, int | None, int | None], generator: str) -> dict:
    """One clip, its own pair until `_pair` finds its partner."""
    label, video_label, audio_label = labels
    return {
        "clip_id": clip_id_of(path), "dataset": "hifi_avdf", "path": path, "audio_path": pd.NA,
        "label": label, "video_label": video_label, "audio_label": audio_label, "method": generator if label else "",
        "category": generator, "identity": "", "group": clip_id_of(path), "split": "", "meta": {},
    }


def _pair(clips: list[tuple[str, dict]]) -> list[str]:
    """Give each fake of one generator its real's group; report fakes and reals left alone.

    `clips` holds (where, clip): where names the CSV line or the file, for the problems.
    """
    reals = {PurePosixPath(clip["path"]).stem: clip for _, clip in clips if clip["label"] == 0}
    paired, problems = set(), []
    for where, clip in clips:
        if clip["label"] == 1:
            real = reals.get(PurePosixPath(clip["path"]).stem.removesuffix("_generated"))
            if real is None:
                problems.append(f"{where}: fake without its paired real; kept as a group of its own")
            else:
                clip["group"] = real["clip_id"]
                paired.add(real["clip_id"])
    problems += [f"{where}: real without its generated fake; kept"
                 for where, clip in clips if clip["label"] == 0 and clip["clip_id"] not in paired]
    return problems


def _from_csvs(root: Path, files: list[str]) -> ClipIndex:
    videos = {f for f in files if is_video(f)}
    by_name = defaultdict(list)
    for video in videos:
        by_name[video.rsplit("/", 1)[-1]].append(video)
    listed, problems = [], []
    for table in (f for f in files if f.lower().endswith(".csv")):
        generator = generator_of(PurePosixPath(table).stem)
        if generator is None:
            problems.append(f"{table}: its name holds no one generator ({', '.join(GENERATORS)}); its rows left out")
            continue
        header, lines = read_table(root / table)
        require_columns(root / table, header, ("video_path", *LABEL_COLUMNS))
        clips = []
        for line, row in lines:
            where = f"{table} line {line}"
            clip = _csv_clip(row, generator, posixpath.dirname(table), videos, by_name, where, root, problems)
            if clip is not None:
                clips.append((f"{where}: {clip['path']}", clip))
        problems += _pair(clips)
        listed += clips
    rows, repeated = keep_first(listed)
    problems += repeated + unlisted(root, videos - {r["path"] for r in rows},
                                    "named by no usable row of a generator CSV")
    return build_index(rows, root, problems)


def _csv_clip(row: dict, generator: str, folder: str, videos: set[str], by_name: dict[str, list[str]], where: str,
              root: Path, problems: list[str]) -> dict | None:
    """The clip of one CSV row, or None after reporting why it cannot be used."""
    listed = row["video_path"].replace("\\", "/")
    if None in row:
        problems.append(f"{where}: more fields than the header has columns; left out")
        return None
    if not listed:
        problems.append(f"{where}: empty video_path; left out")
        return None
    bad = [f"{c} {row[c]!r}" for c in LABEL_COLUMNS if row[c] not in ("0", "1")]
    if bad:
        problems.append(f"{where}: {listed}: {', '.join(bad)} not 0 or 1; left out")
        return None
    label, video_label, audio_label = (int(row[c]) for c in LABEL_COLUMNS)
    if label != max(video_label, audio_label):
        problems.append(f"{where}: {listed}: overall_label {label} does not fit visual_label {video_label} and "
                        f"audio_label {audio_label} (fake if either is 1); left out")
        return None
    path = _resolve(listed, folder, videos, by_name)
    if path is None:
        path = posixpath.normpath(posixpath.join(folder, listed))
        problems.append(missing(where, path, root))
    return _clip(path, (label, video_label, audio_label), generator)


def _resolve(listed: str, folder: str, videos: set[str], by_name: dict[str, list[str]]) -> str | None:
    """The video a CSV names: relative to the CSV, to the root, or the only video of that file name."""
    for candidate in (posixpath.join(folder, listed), listed):
        if posixpath.normpath(candidate) in videos:
            return posixpath.normpath(candidate)
    named = by_name.get(listed.rsplit("/", 1)[-1], [])
    return named[0] if len(named) == 1 else None


def _from_folders(root: Path, files: list[str]) -> ClipIndex:
    """<generator>/real/** and <generator>/fake/**; labels from the folders."""
    by_generator, problems, unknown = defaultdict(list), [], defaultdict(int)
    videos = {f for f in files if is_video(f)}
    for path in sorted(videos):
        parts = path.split("/")
        generator = generator_of(parts[0]) if len(parts) > 1 else None
        if generator is None and len(parts) > 1:
            unknown[parts[0]] += 1
        elif generator is not None and len(parts) > 2 and parts[1] in ("real", "fake"):
            labels = (1, 1, None) if parts[1] == "fake" else (0, 0, 0)
            by_generator[generator].append((path, _clip(path, labels, generator)))
    problems += [f"{folder}/: no one generator in its name ({', '.join(GENERATORS)}); its {n} video(s) left out"
                 for folder, n in unknown.items()]
    listed = []
    for clips in by_generator.values():
        problems += _pair(clips)
        listed += clips
    rows, repeated = keep_first(listed)
    left_out = {p for p in videos if p.split("/", 1)[0] in unknown}
    problems += repeated + unlisted(root, videos - left_out - {r["path"] for r in rows},
                                    "outside <generator>/real/ and <generator>/fake/")
    return build_index(rows, root, problems)
