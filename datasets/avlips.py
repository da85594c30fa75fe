"""AVLips (the LipFD dataset): lip-sync fakes, labelled only by their folder.

Layout: `<root>/0_real/<n>.mp4`, `<root>/1_fake/<n>.mp4`, and the audio beside them as
`<root>/wav/{0_real,1_fake}/<n>.wav`. A clip reads its audio from that wav; a clip without one is
reported and kept, its audio then coming from the video container. Fakes are lip-sync generations
(MakeItTalk, Wav2Lip, TalkLip, SadTalker, not told apart): video_label 1, audio real. There is no
method, identity or official split (split ""): papers use AVLips as a test set only.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from avbench.adapter import DatasetAdapter
from avbench.clips import ClipIndex
from avbench.dataset_files import build_index, clip_id_of, drop_duplicate_ids, files_under, is_video, unlisted

LABEL_FOLDERS = {"0_real": 0, "1_fake": 1}


class AVLipsDataset(DatasetAdapter):
    name = "avlips"
    display_name = "AVLips"
    description = "AVLips (LipFD): real talking faces and lip-sync fakes (MakeItTalk, Wav2Lip, TalkLip, SadTalker)."
    how_to_get = ("Download AVLips from the LipFD authors and pass the folder holding 0_real/, 1_fake/ and wav/ "
                  "as it comes.")
    published_counts: dict[str, int] = {"real": 3_373, "fake": 4_184}

    def index(self, root: Path | str | None) -> ClipIndex:
        root = self.check_root(root)
        if not any((root / folder).is_dir() for folder in LABEL_FOLDERS):
            raise FileNotFoundError(f"dataset 'avlips': {root} has neither 0_real/ nor 1_fake/. {self.how_to_get}")
        files = files_under(root)
        wavs = {f for f in files if f.startswith("wav/") and f.lower().endswith(".wav")}
        rows, problems, used, outside = [], [], set(), set()
        for path in files:
            folder = path.split("/", 1)[0]
            if folder not in LABEL_FOLDERS:
                if is_video(path):
                    outside.add(path)
                continue
            if not is_video(path):
                problems.append(f"{path}: not a video file; not indexed")
                continue
            wav = f"wav/{PurePosixPath(path).with_suffix('.wav')}"
            if wav in wavs:
                used.add(wav)
            else:
                problems.append(f"{path}: no {wav}; kept, its audio is read from the video file")
            label = LABEL_FOLDERS[folder]
            rows.append({
                "clip_id": clip_id_of(path), "dataset": "avlips", "path": path,
                "audio_path": wav if wav in wavs else pd.NA, "label": label, "video_label": label,
                "audio_label": 0, "method": "", "category": "lipsync" if label else "real", "identity": "",
                "group": "", "split": "", "meta": {},
            })
        problems += [f"{wav}: no video of that name in 0_real/ or 1_fake/; not indexed" for wav in sorted(wavs - used)]
        problems += unlisted(root, outside, "outside 0_real/ and 1_fake/")
        rows, duplicated = drop_duplicate_ids(rows)
        return build_index(rows, root, problems + duplicated)
