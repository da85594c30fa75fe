"""FaceForensics++ (Rössler et al.) as its download script lays it out, one compression per dataset.

Layout (verified: the authors' download script and README): `original_sequences/youtube/<c>/videos/NNN.mp4`
(1000 reals), `original_sequences/actors/<c>/videos/AA__<scene>.mp4` (DeepFakeDetection's 363 reals),
`manipulated_sequences/<Method>/<c>/videos/TTT_SSS.mp4` for Deepfakes, Face2Face, FaceSwap,
NeuralTextures and FaceShifter, and `manipulated_sequences/DeepFakeDetection/<c>/videos/
AA_BB__<scene>__<8-character id>.mp4`, with `<c>` one of raw, c23, c40: `compression` says which one a
dataset reads (ffpp: c23, the field's default). Videos of another compression, masks, models and
images are not this dataset's and are passed over without a word.

Names (the authors' README): a fake TTT_SSS puts source video SSS into target video TTT; DeepFakeDetection
names the target actor AA, then the source actor BB. identity and group are the target's, as for the
other datasets (a fake sits with the reals it was made from): identity TTT (a real's own NNN; the actor
AA for DeepFakeDetection), group the target video (TTT; AA__<scene> for DeepFakeDetection); meta
`source_identity` keeps SSS / BB. category is the method folder (FaceShifter, ...) or "real"; method
the folder ("" for youtube reals, DeepFakeDetection for actor reals). FF++ videos carry no audio track:
every clip has meta {"audio": AUDIO_ABSENT}, audio_label 0, video_label = label.

Split: the official `train.json`, `val.json`, `test.json`, found anywhere under the root (often
`splits/`), each a list of [target, source] id pairs: a real NNN is in the split of the pair holding
it, a fake TTT_SSS in that of (TTT, SSS) or (SSS, TTT). DeepFakeDetection has no official split: its
clips get split "" (not a problem: that is how it is published). Reported: a missing split file (its
clips then have split ""), a file that is not a list of id pairs (its malformed entries skipped),
an id in two splits (the first of train, val, test kept), clips in no pair (split ""), a second copy of
a split file (the first by path is read), unknown method or sequence folders, file names unlike the
above and other videos (left out).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import ClassVar

from avbench.adapter import DatasetAdapter
from avbench.clips import AUDIO_ABSENT, SPLITS, ClipIndex
from avbench.dataset_files import build_index, clip_id_of, files_under, is_video, unlisted

REALS, FAKES = "original_sequences", "manipulated_sequences"
DFD = "DeepFakeDetection"
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter", DFD)
#: Sequence folder or method -> the pattern of its videos' file stems, and how a message shows it.
NAMES = {
    "youtube": (re.compile(r"(?P<target>\d{3})"), "NNN"),
    "actors": (re.compile(r"(?P<target>\d+)__(?P<scene>.+)"), "AA__<scene>"),
    DFD: (re.compile(r"(?P<target>\d+)_(?P<source>\d+)__(?P<scene>.+)__[A-Za-z0-9]+"), "AA_BB__<scene>__<id>"),
    **{method: (re.compile(r"(?P<target>\d{3})_(?P<source>\d{3})"), "TTT_SSS") for method in METHODS if method != DFD},
}
SPLIT_FILES = {f"{split}.json": split for split in SPLITS}


class FFPPDataset(DatasetAdapter):
    name = "ffpp"
    display_name = "FaceForensics++"
    description = ("FaceForensics++ (c23): 1000 YouTube videos with Deepfakes, Face2Face, FaceSwap, NeuralTextures "
                   "and FaceShifter fakes, plus DeepFakeDetection's actors; no audio track.")
    how_to_get = ("Request FaceForensics++ through the authors' form (https://github.com/ondyari/FaceForensics), "
                  "download it with their script (-d all -c <compression> -t videos) and pass the folder holding "
                  "original_sequences/ and manipulated_sequences/, with the split files train.json, val.json and "
                  "test.json anywhere under it.")
    #: The authors' counts, the same for every compression.
    published_counts: dict[str, int] = {"real": 1_363, **{m: 1_000 for m in METHODS if m != DFD}, DFD: 3_068}
    #: The compression folder this dataset reads: raw, c23 or c40.
    compression: ClassVar[str] = "c23"

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        if not any((root / folder).is_dir() for folder in (REALS, FAKES)):
            raise FileNotFoundError(f"dataset '{self.name}': {root} has neither {REALS}/ nor {FAKES}/. "
                                    f"{self.how_to_get}")
        files = files_under(root)
        problems: list[str] = []
        splits = _read_splits(root, files, problems)
        rows, unsplit, misnamed, outside, compressions = [], [], defaultdict(set), set(), set()
        unknown: dict[str, int] = defaultdict(int)
        for path in filter(is_video, files):
            parts = path.split("/")
            if parts[0] not in (REALS, FAKES) or len(parts) < 3:
                outside.add(path)
                continue
            folder = "/".join(parts[:2])
            fake = parts[0] == FAKES
            compressions.add(parts[2])
            if parts[1] not in (METHODS if fake else ("youtube", "actors")):
                unknown[folder] += 1
                continue
            if parts[2] != self.compression:
                continue
            if len(parts) != 5 or parts[3] != "videos":
                outside.add(path)
                continue
            named = NAMES[parts[1]][0].fullmatch(PurePosixPath(path).stem)
            if named is None:
                misnamed[folder].add(path)
                continue
            row = self._clip(path, fake, parts[1], named)
            if splits is not None and parts[1] not in (DFD, "actors"):
                row["split"] = _split_of(named, splits)
                if not row["split"]:
                    unsplit.append(path)
            rows.append(row)
        if self.compression not in compressions:
            raise FileNotFoundError(f"dataset '{self.name}': {root} holds no {self.compression} videos (compressions "
                                    f"found: {', '.join(sorted(compressions)) or 'none'}). {self.how_to_get}")
        kinds = {REALS: "sequence folder (known: youtube, actors)",
                 FAKES: f"method folder (known: {', '.join(METHODS)})"}
        problems += [f"{folder}/: unknown {kinds[folder.split('/')[0]]}; its {n} video(s) left out"
                     for folder, n in sorted(unknown.items())]
        for folder, paths in sorted(misnamed.items()):
            problems += unlisted(root, paths, f"in {folder}/ not named {NAMES[folder.split('/')[1]][1]}.mp4")
        problems += unlisted(root, outside, f"outside {REALS}/<folder>/<compression>/videos/ and "
                                            f"{FAKES}/<method>/<compression>/videos/")
        if unsplit:
            problems.append(f"{root}: {len(unsplit)} video(s) in no pair of the split files; kept with split '': "
                            f"{', '.join(unsplit[:5])}{', ...' if len(unsplit) > 5 else ''}")
        return build_index(rows, root, problems)

    def _clip(self, path: str, fake: bool, folder: str, named: re.Match) -> dict:
        target = named["target"]
        group = f"{target}__{named['scene']}" if folder in (DFD, "actors") else target
        meta = {"audio": AUDIO_ABSENT}
        if fake:
            meta["source_identity"] = named["source"]
        return {
            "clip_id": clip_id_of(path), "dataset": self.name, "path": path, "audio_path": None,
            "label": int(fake), "video_label": int(fake), "audio_label": 0,
            "method": DFD if folder in (DFD, "actors") else folder if fake else "",
            "category": folder if fake else "real", "identity": target, "group": group, "split": "", "meta": meta,
        }


class FFPPc40Dataset(FFPPDataset):
    name = "ffpp_c40"
    display_name = "FaceForensics++ c40"
    description = FFPPDataset.description.replace("(c23)", "(c40, strongly compressed)")
    compression = "c40"


class FFPPRawDataset(FFPPDataset):
    name = "ffpp_raw"
    display_name = "FaceForensics++ raw"
    description = FFPPDataset.description.replace("(c23)", "(raw, lossless)")
    compression = "raw"


def _read_splits(root: Path, files: list[str], problems: list[str]) -> dict | None:
    """{"ids": {id: split}, "pairs": {frozenset pair: split}} from the split files, or None without any."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in files:
        name = path.rsplit("/", 1)[-1]
        if name in SPLIT_FILES:
            found[name].append(path)
    if not found:
        problems.append(f"{root}: no split file ({', '.join(SPLIT_FILES)}) under it; every clip has split ''")
        return None
    ids: dict[str, str] = {}
    pairs: dict[frozenset, str] = {}
    for name, split in SPLIT_FILES.items():  # train first: an id in two splits keeps the first
        if name not in found:
            problems.append(f"{root}: no {name} under it; the clips of its pairs have split ''")
            continue
        path, *others = sorted(found[name], key=lambda p: (p.count("/"), p))
        problems += [f"{other}: another {name}; {path} is read" for other in others]
        for pair in _pairs(root, path, problems):
            for video in pair:
                if ids.setdefault(video, split) != split:
                    problems.append(f"{path}: id {video} is in {ids[video]} and {split}; kept in {ids[video]}")
            pairs.setdefault(frozenset(pair), split)
    return {"ids": ids, "pairs": pairs}


def _pairs(root: Path, path: str, problems: list[str]) -> list[tuple[str, str]]:
    """The id pairs of one split file; whatever is not a pair of id strings is reported."""
    try:
        entries = json.loads((root / path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: not JSON ({exc}); its split is not used")
        return []
    if not isinstance(entries, list):
        problems.append(f"{path}: a JSON {type(entries).__name__}, not a list of [target, source] id pairs; "
                        "its split is not used")
        return []
    pairs = []
    for k, entry in enumerate(entries):
        if isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) and v.isdigit() for v in entry):
            pairs.append(tuple(entry))
        else:
            problems.append(f"{path} entry {k}: {json.dumps(entry)} is not a [target, source] pair of ids; skipped")
    return pairs


def _split_of(named: re.Match, splits: dict) -> str:
    """The split of a youtube real (its id's) or of a fake (its pair's, either order); "" in none."""
    if "source" in named.groupdict():
        return splits["pairs"].get(frozenset((named["target"], named["source"])), "")
    return splits["ids"].get(named["target"], "")
