"""FakeAVCeleb (v1.2) as its authors ship it: <root>/meta_data.csv and four category folders -> clip index.

Layout: `<root>/{RealVideo-RealAudio,RealVideo-FakeAudio,FakeVideo-RealAudio,FakeVideo-FakeAudio}/<race>/
<men|women>/<source>/<file>.mp4` (race folders such as `Asian (South)`), the root being the folder that holds
meta_data.csv, whatever it is named (FakeAVCeleb_v1.2, ...). The metadata's header
`source,target1,target2,method,category,type,race,gender,path,` is shifted, so rows are read by position:
the 9th field (`path`) is the file name and the unnamed 10th the directory, `FakeAVCeleb/<type folder>/...`,
whose first component names the authors' folder, not ours, and is dropped.

Per clip: the `category` letter gives the labels (A real; B fake audio; C fake video; D both) and, with the
method, the standard cross-manipulation category: real, RVFA (B rtvc), FVRA-WL / FVRA-FS / FVRA-GAN
(C wav2lip / faceswap / fsgan), FVFA-WL / FVFA-FS / FVFA-GAN (D wav2lip / faceswap-wav2lip / fsgan-wav2lip).
method is the metadata's; identity the `source` id (the person of the source video, whose folder holds the
clip); group the source video, `<source>/<leading number of the file name>` (00109.mp4, 00109_fake.mp4 and
00109_2_id00166_wavtolip.mp4 of id00076 all give id00076/00109), so a real and every fake made from it share
one; meta keeps race, gender, target1, target2 as written and the category letter as `type`.
No official split: split "". About 22 files are listed twice with different methods; the first row is kept
and the repeat reported. Rows with an unknown letter or method, or that do not parse, are reported and left
out; listed files missing on disk are kept and reported; videos listed nowhere are reported in one line.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from avbench.adapter import DatasetAdapter
from avbench.clips import ClipIndex
from avbench.dataset_files import build_index, clip_id_of, files_under, is_video, keep_first, missing, unlisted

METADATA = "meta_data.csv"
#: The named columns, in order; a row has one more field (the directory) after them.
COLUMNS = ("source", "target1", "target2", "method", "category", "type", "race", "gender", "path")
#: Category letter -> (type folder, video_label, audio_label, {method: standard category}).
LETTERS = {
    "A": ("RealVideo-RealAudio", 0, 0, {"real": "real"}),
    "B": ("RealVideo-FakeAudio", 0, 1, {"rtvc": "RVFA"}),
    "C": ("FakeVideo-RealAudio", 1, 0, {"wav2lip": "FVRA-WL", "faceswap": "FVRA-FS", "fsgan": "FVRA-GAN"}),
    "D": ("FakeVideo-FakeAudio", 1, 1,
          {"wav2lip": "FVFA-WL", "faceswap-wav2lip": "FVFA-FS", "fsgan-wav2lip": "FVFA-GAN"}),
}


class FakeAVCelebDataset(DatasetAdapter):
    name = "fakeavceleb"
    display_name = "FakeAVCeleb"
    description = ("FakeAVCeleb: 500 VoxCeleb2 speakers across five races, with cloned voices (RTVC), lip-sync "
                   "(Wav2Lip) and face swaps (FaceSwap, FSGAN), alone or together.")
    how_to_get = ("Request FakeAVCeleb through the authors' form (https://github.com/DASH-Lab/FakeAVCeleb) and pass "
                  "the folder holding meta_data.csv and RealVideo-RealAudio/, ... as it comes.")
    #: DATASETS.md: 500 real (A), 500 RealVideo-FakeAudio (B), 9,709 C + 10,835 D; 21,544 unique files.
    published_counts: dict[str, int] = {"real": 500, "fake": 21_044, "RVFA": 500}

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        metadata = root / METADATA
        if not metadata.is_file():
            raise FileNotFoundError(f"dataset 'fakeavceleb': {metadata} not found. {self.how_to_get}")
        with open(metadata, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [name.strip() for name in next(reader, [])]
            if tuple(header[: len(COLUMNS)]) != COLUMNS:
                raise ValueError(f"{metadata}: header {','.join(header)!r} is not FakeAVCeleb's "
                                 f"({','.join(COLUMNS)},)")
            listed, problems, line_of, named = [], [], {}, set()
            for fields in reader:
                if not any(field.strip() for field in fields):
                    continue  # a blank line, not a row
                where = f"{METADATA} line {reader.line_num}"
                clip = _clip([field.strip() for field in fields], where, problems, named)
                if clip is not None:
                    listed.append((where, clip))
                    line_of.setdefault(clip["clip_id"], where)
        rows, repeated = keep_first(listed)
        files = files_under(root)
        on_disk = set(files)
        problems += repeated
        problems += [missing(line_of[row["clip_id"]], row["path"], root) for row in rows if row["path"] not in on_disk]
        problems += unlisted(root, {f for f in files if is_video(f)} - named, f"listed in no row of {METADATA}")
        return build_index(rows, root, problems)


def _clip(fields: list[str], where: str, problems: list[str], named: set[str]) -> dict | None:
    """The clip of one metadata row, or None after reporting why it cannot be used. Every path a row names,
    usable or not, goes into `named` so that its video is not also reported as listed nowhere."""
    if len(fields) != len(COLUMNS) + 1:
        problems.append(f"{where}: {len(fields)} fields, expected {len(COLUMNS) + 1} "
                        f"({','.join(COLUMNS)},directory); left out")
        return None
    row = dict(zip(COLUMNS, fields))
    name, directory = row["path"], fields[-1]
    # the first component is the authors' folder name (FakeAVCeleb/), not the root's
    path = "/".join(directory.split("/")[1:] + [name])
    named.add(path)
    letter, method = row["category"], row["method"]
    if not (name and row["source"] and "/" in directory):
        problems.append(f"{where}: source {row['source']!r}, file {name!r}, directory {directory!r}: incomplete; "
                        "left out")
        return None
    if letter not in LETTERS:
        problems.append(f"{where}: {path}: unknown category {letter!r} (known: {', '.join(LETTERS)}); left out")
        return None
    folder, video_label, audio_label, methods = LETTERS[letter]
    if not path.startswith(folder + "/"):
        problems.append(f"{where}: {path}: category {letter} belongs in {folder}/, not in {directory!r}; left out")
        return None
    if method not in methods:
        problems.append(f"{where}: {path}: unknown method {method!r} for category {letter} "
                        f"(known: {', '.join(methods)}); left out")
        return None
    return {
        "clip_id": clip_id_of(path), "dataset": "fakeavceleb", "path": path, "audio_path": None,
        "label": int(letter != "A"), "video_label": video_label, "audio_label": audio_label, "method": method,
        "category": methods[method], "identity": row["source"],
        "group": f"{row['source']}/{PurePosixPath(name).stem.split('_')[0]}", "split": "",
        "meta": {"race": row["race"], "gender": row["gender"], "target1": row["target1"],
                 "target2": row["target2"], "type": letter},
    }
