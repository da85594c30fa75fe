"""AV-Deepfake1M and AV-Deepfake1M++ as their authors ship them: <subset>_metadata.json -> clip index.

Layout: <root>/<subset>/<file>, with <root>/<subset>_metadata.json a JSON list of objects (file, original,
modify_type, audio_model, fake_segments, audio_fake_segments, visual_fake_segments, ...). AV1M has the
subsets train, val and test; ++ has train, val, testA and testB, a corpus prefix in file names
(vox_celeb_2/..., lrs3/...) and a video_model field. Test labels are withheld: a test subset listed only in
<subset>_files.txt stays out of the index (one problem line gives its count); one with a metadata file is
indexed like the others. The SDK's per-file JSON folders (train_metadata/) are not read.

Per clip: label = fake_segments non-empty; video_label and audio_label from modify_type (an entry whose
modify_type contradicts fake_segments keeps the label from fake_segments, gets unknown modality labels and
is reported); category = modify_type; method = audio_model and video_model joined by "+" ("" for reals);
identity = the speaker folder, prefixed by its corpus in ++ so speakers of two corpora never merge;
group = `original` without extension (the clip itself for a real), relative to the subset folder so that
train and val clips made from one source utterance share it; meta keeps the per-modality segments and the
release ("AV1M" or "AV1M++": an entry with video_model is ++).

Both releases are read by dataset "av1m" (display name "AV1M"); "av1m_pp" reads the same layout under
the display name "AV1M++", so that results on ++ are labelled as the papers label them. Test subsets
published without labels (++'s testA and testB `_files.txt`) are never indexed, but `unlabeled` lists
them for an unlabelled pool (protocol `pool`).

The metadata of the full dataset holds over a million entries: each file is parsed once with `json` and
everything after is column-wise pandas; the media check is one walk of each subset folder.
The helpers below are shared with LAV-DF (same authors, same metadata conventions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from avbench.adapter import DatasetAdapter
from avbench.clips import INDEX_COLUMNS, UNLABELED, ClipIndex, ClipRef
from avbench.dataset_files import files_under

#: modify_type -> (video_label, audio_label); label is 1 for all but real.
CATEGORIES = {"real": (0, 0), "visual_modified": (1, 0), "audio_modified": (0, 1), "both_modified": (1, 1)}
#: Subset (file and folder name) -> split; test labels are published only where a metadata file exists.
SUBSETS = {"train": "train", "val": "val", "test": "test", "testA": "test", "testB": "test"}
FIELDS = ("file", "original", "modify_type", "audio_model", "video_model", "fake_segments",
          "audio_fake_segments", "visual_fake_segments")


class AV1MDataset(DatasetAdapter):
    name = "av1m"
    display_name = "AV1M"
    description = (
        "AV-Deepfake1M (and AV-Deepfake1M++): VoxCeleb2 (and LRS3) talking heads with LLM-edited words, "
        "re-voiced and/or lip-synced; train and val labelled, test labels withheld."
    )
    how_to_get = (
        "Accept the EULA at https://github.com/ControlNet/AV-Deepfake1M, download and unpack it: the root holds "
        "train/, val/, train_metadata.json and val_metadata.json (++: also testA/, testB/)."
    )
    #: DATASETS.md, for the whole of AV1M (test included, whose labels are withheld); none published for ++.
    published_counts = {"real": 286_721, "fake": 860_039}

    def unlabeled(self, root: Path | str | None, subsets: tuple[str, ...]) -> list[ClipRef]:
        """The clips `<subset>_files.txt` lists for test subsets published without labels (label
        UNLABELED), for an unlabelled pool; a subset whose labels are published is a split instead."""
        root = self.check_root(root)
        refs = []
        for subset in subsets:
            listing, metadata = root / f"{subset}_files.txt", root / f"{subset}_metadata.json"
            if SUBSETS.get(subset) != "test":
                raise ValueError(f"dataset '{self.name}': {subset} is not a test subset ({', '.join(SUBSETS)})")
            if metadata.is_file():
                raise ValueError(f"dataset '{self.name}': {metadata} publishes {subset}'s labels: name its split "
                                 "as the pool instead")
            if not listing.is_file():
                raise FileNotFoundError(f"dataset '{self.name}': no {listing} listing the unlabelled {subset} clips")
            with open(listing, encoding="utf-8") as fh:
                files = [line.strip() for line in fh if line.strip()]
            refs += [ClipRef(clip_id=str(Path(subset, f).with_suffix("")), dataset=self.name, path=root / subset / f,
                             label=UNLABELED, split=subset) for f in files]
        return refs

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        frames, problems = [], []
        for subset, split in SUBSETS.items():
            metadata, listing = root / f"{subset}_metadata.json", root / f"{subset}_files.txt"
            if metadata.is_file():
                frames.append(_index_subset(root, subset, split, metadata, problems, self.name))
            elif listing.is_file():
                with open(listing, encoding="utf-8") as fh:
                    count = sum(1 for line in fh if line.strip())
                problems.append(f"{listing.name}: {count} {subset} clips have no published labels "
                                f"(no {metadata.name}); left out of the index")
        if not frames:
            raise FileNotFoundError(
                f"dataset 'av1m': no {', '.join(f'{s}_metadata.json' for s in SUBSETS)} in {root}. {self.how_to_get}"
            )
        return ClipIndex(pd.concat(frames, ignore_index=True), root, problems)


def _index_subset(root: Path, subset: str, split: str, metadata: Path, problems: list[str],
                  dataset: str = "av1m") -> pd.DataFrame:
    entries = read_entries(metadata, FIELDS)
    entries["fake_segments"] = segments_json(entries["fake_segments"])
    entries = drop_invalid(entries, metadata.name, problems, [
        ("no file name", ~entries["file"].map(is_text)),
        ("unknown modify_type {modify_type!r}", ~entries["modify_type"].isin(list(CATEGORIES))),
        ("fake_segments is not a list of [start_s, end_s]", entries["fake_segments"].isna()),
    ])
    plus = bool(entries["video_model"].notna().any())
    file, original = entries["file"].astype("str"), text(entries["original"])
    real = entries["modify_type"] == "real"
    frame = pd.DataFrame({
        "file": file,
        "path": subset + "/" + file,
        "label": (entries["fake_segments"] != "[]").astype("int8"),
        "category": entries["modify_type"].astype("str"),
        "method": (text(entries["audio_model"]) + "+" + text(entries["video_model"])).str.strip("+").mask(real, ""),
        "identity": leading_parts(file, 2 if plus else 1),
        "group": strip_extension(original.mask(real | (original == ""), file)),
        "split": split,
        "fake_segments": entries["fake_segments"],
        # `file` as the metadata gives it: the name the official challenge format expects
        "meta": ('{"audio_fake_segments": ' + segments_json(entries["audio_fake_segments"]).fillna("null")
                 + ', "file": ' + file.map(json.dumps)
                 + ', "release": "' + ("AV1M++" if plus else "AV1M") + '", "visual_fake_segments": '
                 + segments_json(entries["visual_fake_segments"]).fillna("null") + "}"),
    })
    frame = drop_duplicate_files(frame, metadata.name, problems, ["label", "category", "method", "fake_segments"])
    frame = modality_labels(frame, metadata.name, problems, "modify_type {category!r} but fake_segments {fake_segments}")
    problems += missing_media(root, frame, metadata.name)
    return finish(frame, dataset)


# -- shared with LAV-DF ------------------------------------------------------------------------------
def read_entries(path: Path, fields: tuple[str, ...]) -> pd.DataFrame:
    """A JSON list of objects as one object column per field (None where an entry lacks it).

    The index is the entry's position in the list, which problems name as FILE[position]. An entry that
    is not an object becomes an empty one, so it is reported for lacking a file name.
    """
    with open(path, encoding="utf-8") as fh:
        entries = json.load(fh)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of objects, found a {type(entries).__name__}")
    entries = [e if isinstance(e, dict) else {} for e in entries]
    return pd.DataFrame({f: pd.Series([e.get(f) for e in entries], dtype=object) for f in fields})


def is_text(value) -> bool:
    return isinstance(value, str) and value != ""


def text(values: pd.Series) -> pd.Series:
    """Strings as they are, None and anything else as "", in pandas' compact string dtype."""
    return values.where(values.map(is_text), "").astype("str")


#: repr() of a list of [start_s, end_s] pairs of finite numbers, which is also its JSON text.
_NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?"
SEGMENTS = rf"\[(?:\[{_NUMBER}, {_NUMBER}\](?:, \[{_NUMBER}, {_NUMBER}\])*)?\]"


def segments_json(values: pd.Series) -> pd.Series:
    """Each list of [start_s, end_s] as JSON text; missing where the value is not such a list.

    A list's repr is checked against SEGMENTS instead of walking it in Python: ten times faster at a million rows.
    """
    texts = values.map(lambda v: repr(v) if type(v) is list else None).astype("str")
    return texts.where(texts.str.fullmatch(SEGMENTS))


def leading_parts(paths: pd.Series, n: int) -> pd.Series:
    """The first n components of each path, joined by "/" (the whole path when it has no more than n)."""
    return paths.str.replace(rf"^((?:[^/]*/){{{n - 1}}}[^/]*)/.*", r"\1", regex=True)


def strip_extension(paths: pd.Series) -> pd.Series:
    """Vectorised clip_id_of: the path without the extension of its last component."""
    return paths.str.replace(r"([^/])\.[^./]+$", r"\1", regex=True)


def drop_invalid(entries: pd.DataFrame, source: str, problems: list[str],
                 checks: list[tuple[str, pd.Series]]) -> pd.DataFrame:
    """Leave out every entry that fails a check, reported with the first reason it fails (a template
    formatted with the entry's fields), in entry order."""
    bad_any = np.zeros(len(entries), dtype=bool)
    found = []
    for reason, bad in checks:
        new = bad.to_numpy(dtype=bool) & ~bad_any
        for position, entry in entries[new].iterrows():
            found.append((position, f"{source}[{position}]: {entry['file'] if is_text(entry['file']) else '(no file)'}: "
                                    f"{reason.format(**entry)}; left out"))
        bad_any |= new
    problems += [line for _, line in sorted(found)]
    return entries[~bad_any]


def drop_duplicate_files(frame: pd.DataFrame, source: str, problems: list[str], compare: list[str]) -> pd.DataFrame:
    """Keep each file's first entry; a later one is reported with what differs from the kept one."""
    again = frame["file"].duplicated()
    first = frame[~again].reset_index().set_index("file")
    for position, entry in frame[again].iterrows():
        kept = first.loc[entry["file"]]
        diffs = [f"{c} {entry[c]!r} (kept {kept[c]!r})" for c in compare if entry[c] != kept[c]]
        conflict = f"conflicting {', '.join(diffs)}" if diffs else "same " + ", ".join(compare)
        problems.append(f"{source}[{position}]: {entry['file']}: listed again (first at [{kept['index']}]) "
                        f"with {conflict}; kept the first")
    return frame[~again]


def modality_labels(frame: pd.DataFrame, source: str, problems: list[str], contradiction: str) -> pd.DataFrame:
    """video_label and audio_label from the category; unknown (NA) where the category contradicts the label,
    which is reported with `contradiction` (a template formatted with the entry's fields)."""
    frame = frame.assign(**{
        f"{modality}_label": frame["category"].map({c: labels[i] for c, labels in CATEGORIES.items()}).astype("Int8")
        for i, modality in enumerate(("video", "audio"))
    })
    wrong = (frame["category"] != "real").astype("int8") != frame["label"]
    for position, entry in frame[wrong].iterrows():
        problems.append(f"{source}[{position}]: {entry['file']}: {contradiction.format(**entry)}; kept as "
                        f"{'fake' if entry['label'] else 'real'}, video_label and audio_label unknown")
    frame.loc[wrong, ["video_label", "audio_label"]] = pd.NA
    return frame


def missing_media(root: Path, frame: pd.DataFrame, source: str) -> list[str]:
    """One line per listed file not on disk (kept: runs count it as failed); a whole missing top folder,
    as when only val was downloaded, is one line. One directory walk per top folder, no stat per file."""
    problems = []
    tops = frame["path"].str.replace(r"/.*", "", regex=True)
    for top in tops.unique():
        listed = frame[tops == top]
        if not (root / top).is_dir():
            problems.append(f"{source}: folder {top}/ not found under {root}; its {len(listed)} clips are kept, "
                            "runs will count them as failed")
            continue
        on_disk = {f"{top}/{name}" for name in files_under(root / top)}
        for position, path in listed.loc[~listed["path"].isin(on_disk), "path"].items():
            problems.append(f"{source}[{position}]: {path}: not found under {root}; kept, runs will count it as failed")
    return problems


def finish(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The index columns of adapter rows (file, path, labels, ...): clip id, dataset, no separate audio."""
    return frame.assign(clip_id=strip_extension(frame["path"]), dataset=dataset, audio_path=pd.NA)[list(INDEX_COLUMNS)]


class AV1MPlusDataset(AV1MDataset):
    """AV-Deepfake1M++ under its own name, so leaderboards say "AV1M++" (the same reader as av1m)."""

    name = "av1m_pp"
    display_name = "AV1M++"
    description = ("AV-Deepfake1M++ (2025 challenge): VoxCeleb2 and LRS3 talking heads, more generators; train and "
                   "val labelled, testA and testB unlabelled.")
    published_counts: dict[str, int] = {}
