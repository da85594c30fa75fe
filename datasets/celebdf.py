"""Celeb-DF v2 (Li et al.) as its authors ship it: three video folders and the list of testing videos.

Layout (verified by the authors' release and many loaders): `Celeb-real/idX_NNNN.mp4` (590 celebrity
videos), `YouTube-real/NNNNN.mp4` (300 more reals), `Celeb-synthesis/idX_idY_NNNN.mp4` (5639 fakes) and
`List_of_testing_videos.txt` at the root: 518 lines `<label> <path relative to the root>` where, in THAT
file, 1 = real and 0 = fake, the inverse of ours (fake = 1): the adapter converts. Clips on the list are
"test", all others "train" (there is no val); without the list every clip has split "" (reported).

A fake idX_idY_NNNN is ASSUMED to put idY's face into idX's video idX_NNNN (the name leads with the
target, as in Celeb-DF v1's target/donor summary; every real idX_NNNN has fakes idX_id*_NNNN).
identity: idX for Celeb-real and for fakes (the target, so a fake sits with the reals it was made from;
meta `source_identity` keeps idY); a YouTube-real video's own stem (each shows another person). group:
the target video idX_NNNN (a YouTube real's stem). category "real" / "Celeb-synthesis", method "" /
"Celeb-synthesis". Celeb-DF's videos carry no usable audio: every clip has meta {"audio": AUDIO_ABSENT},
audio_label 0, video_label = label.

Reported: list lines that are not `<0|1> <path>` or that repeat a path (skipped), lines whose label
contradicts the folder (the folder's label kept), listed files that are missing (kept: runs count them
as failed), listed paths outside the three folders (skipped), file names unlike the folder's pattern
and videos elsewhere (left out).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

from avbench.adapter import DatasetAdapter
from avbench.clips import AUDIO_ABSENT, ClipIndex
from avbench.dataset_files import build_index, clip_id_of, files_under, is_video, missing, unlisted

TEST_LIST = "List_of_testing_videos.txt"
FAKE_FOLDER = "Celeb-synthesis"
#: Folder -> (label, the pattern of its videos' file stems, how a message shows it).
FOLDERS = {
    "Celeb-real": (0, re.compile(r"(?P<target>id\d+)_(?P<video>\d+)"), "idX_NNNN"),
    "YouTube-real": (0, re.compile(r"(?P<target>\d+)"), "NNNNN"),
    FAKE_FOLDER: (1, re.compile(r"(?P<target>id\d+)_(?P<source>id\d+)_(?P<video>\d+)"), "idX_idY_NNNN"),
}
#: The testing list's labels -> ours.
LIST_LABELS = {"1": 0, "0": 1}


class CelebDFDataset(DatasetAdapter):
    name = "celebdf"
    display_name = "Celeb-DF"
    description = ("Celeb-DF v2: 590 celebrity and 300 YouTube videos with 5639 improved DeepFake face swaps; "
                   "the authors' 518 testing videos; no audio.")
    how_to_get = ("Request Celeb-DF v2 through the authors' form (https://github.com/yuezunli/celeb-deepfakeforensics) "
                  f"and pass the folder holding Celeb-real/, YouTube-real/, {FAKE_FOLDER}/ and {TEST_LIST} "
                  "as it comes.")
    published_counts: dict[str, int] = {"real": 890, "fake": 5_639}

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        if not any((root / folder).is_dir() for folder in FOLDERS):
            raise FileNotFoundError(f"dataset 'celebdf': {root} has none of {', '.join(f + '/' for f in FOLDERS)}. "
                                    f"{self.how_to_get}")
        files = files_under(root)
        problems: list[str] = []
        listed = _read_test_list(root, problems)
        rows, misnamed, outside = {}, defaultdict(set), set()
        for path in filter(is_video, files):
            folder, _, name = path.partition("/")
            if folder not in FOLDERS or "/" in name:
                outside.add(path)
                continue
            row = _clip(path)
            if row is None:
                misnamed[folder].add(path)
            else:
                rows[path] = row
        for path, (where, label) in (listed or {}).items():
            row = rows.get(path)
            if row is None:
                row = _clip(path) if path.count("/") == 1 and path.split("/")[0] in FOLDERS else None
                if row is None:
                    layout = ", ".join(f"{folder}/{shown}.mp4" for folder, (_, _, shown) in FOLDERS.items())
                    problems.append(f"{where}: {path} names no video of the layout ({layout}); skipped")
                    continue
                problems.append(missing(where, path, root))
                rows[path] = row
            if label != row["label"]:
                problems.append(f"{where}: {path} listed as {'fake' if label else 'real'} (list label "
                                f"{1 - label}) but its folder says {'fake' if row['label'] else 'real'}; the folder's "
                                "label is kept")
            row["split"] = "test"
        if listed is not None:
            for row in rows.values():
                row["split"] = row["split"] or "train"
        for folder, paths in sorted(misnamed.items()):
            problems += unlisted(root, paths, f"in {folder}/ not named {FOLDERS[folder][2]}.mp4")
        problems += unlisted(root, outside, f"outside {', '.join(f + '/' for f in FOLDERS)}")
        return build_index(sorted(rows.values(), key=lambda r: r["path"]), root, problems)


def _clip(path: str) -> dict | None:
    """The clip of a video in one of the three folders; None when its name does not fit the folder's."""
    folder, name = path.split("/")
    label, pattern, _ = FOLDERS[folder]
    named = pattern.fullmatch(PurePosixPath(name).stem)
    if named is None:
        return None
    target = named["target"]
    meta = {"audio": AUDIO_ABSENT}
    if label:
        meta["source_identity"] = named["source"]
    return {
        "clip_id": clip_id_of(path), "dataset": "celebdf", "path": path, "audio_path": None, "label": label,
        "video_label": label, "audio_label": 0, "method": FAKE_FOLDER if label else "",
        "category": FAKE_FOLDER if label else "real", "identity": target,
        "group": f"{target}_{named['video']}" if "video" in named.groupdict() else target, "split": "", "meta": meta,
    }


def _read_test_list(root: Path, problems: list[str]) -> dict[str, tuple[str, int]] | None:
    """{path: (where, our label)} of the testing list, None without one."""
    path = root / TEST_LIST
    if not path.is_file():
        problems.append(f"{root}: no {TEST_LIST}; every clip has split ''")
        return None
    listed: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{TEST_LIST} line {number}"
        fields = line.split()
        if len(fields) != 2 or fields[0] not in LIST_LABELS:
            problems.append(f"{where}: {line.strip()!r} is not '<1 real | 0 fake> <path>'; skipped")
        elif fields[1] in listed:
            problems.append(f"{where}: {fields[1]} listed again (first at {listed[fields[1]][0]}); skipped")
        else:
            listed[fields[1]] = where, LIST_LABELS[fields[0]]
    return listed
