"""LAV-DF as its authors ship it: <root>/metadata.json -> clip index.

Layout: <root>/{train,dev,test}/NNNNNN.mp4 and <root>/metadata.json, a JSON list of objects whose `file`
already holds the split folder (train/000001.mp4). Per clip: label = n_fakes > 0; category from
(modify_video, modify_audio): real, visual_modified, audio_modified or both_modified (AV1M's names; an entry
whose flags contradict n_fakes keeps the label from n_fakes, gets unknown modality labels and is reported);
split from `split` with dev -> val; group = `original` without extension (the clip itself for a real);
fake_segments = fake_periods. LAV-DF publishes neither speakers nor generators: identity and method are "".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from avbench.adapter import DatasetAdapter
from avbench.clips import ClipIndex
from avbench.datasets.av1m import (
    drop_duplicate_files, drop_invalid, finish, is_text, missing_media, modality_labels, read_entries,
    segments_json, strip_extension, text,
)

SPLITS = {"train": "train", "dev": "val", "test": "test"}
FIELDS = ("file", "n_fakes", "fake_periods", "original", "modify_video", "modify_audio", "split")


class LAVDFDataset(DatasetAdapter):
    name = "lavdf"
    display_name = "LAV-DF"
    description = "LAV-DF: VoxCeleb2 talking heads with content-changing word edits in audio, video or both."
    how_to_get = (
        "Request access at https://github.com/ControlNet/LAV-DF and unpack it: the root holds train/, dev/, "
        "test/ and metadata.json."
    )
    #: DATASETS.md, all splits together.
    published_counts = {"real": 36_431, "fake": 99_873}

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        metadata = root / "metadata.json"
        if not metadata.is_file():
            raise FileNotFoundError(f"dataset 'lavdf': {metadata} not found. {self.how_to_get}")
        problems: list[str] = []
        entries = read_entries(metadata, FIELDS)
        entries["fake_periods"] = segments_json(entries["fake_periods"])
        flags = entries[["modify_video", "modify_audio"]].map(lambda v: isinstance(v, bool)).all(axis=1)
        entries = drop_invalid(entries, metadata.name, problems, [
            ("no file name", ~entries["file"].map(is_text)),
            ("unknown split {split!r}", ~entries["split"].isin(list(SPLITS))),
            ("modify_video {modify_video!r} and modify_audio {modify_audio!r} are not both true/false", ~flags),
            ("n_fakes {n_fakes!r} is not a count",
             ~entries["n_fakes"].map(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)),
            ("fake_periods is not a list of [start_s, end_s]", entries["fake_periods"].isna()),
        ])
        file, original = entries["file"].astype("str"), text(entries["original"])
        real = entries["n_fakes"] == 0
        video, audio = entries["modify_video"].astype(bool), entries["modify_audio"].astype(bool)
        frame = pd.DataFrame({
            "file": file,
            "path": file,
            "n_fakes": entries["n_fakes"],
            "label": (~real).astype("int8"),
            "category": pd.Series(np.select([video & audio, video, audio],
                                            ["both_modified", "visual_modified", "audio_modified"], "real"),
                                  index=entries.index),
            "method": "",
            "identity": "",
            "group": strip_extension(original.mask(real | (original == ""), file)),
            "split": entries["split"].map(SPLITS).astype("str"),
            "fake_segments": entries["fake_periods"],
            "meta": "{}",
        })
        frame = drop_duplicate_files(frame, metadata.name, problems, ["label", "category", "split", "fake_segments"])
        frame = modality_labels(frame, metadata.name, problems, "category {category!r} but n_fakes {n_fakes}")
        problems += missing_media(root, frame, metadata.name)
        return ClipIndex(finish(frame, "lavdf"), root, problems)
