"""Time and peak memory of indexing AV-Deepfake1M's metadata at full size.

    python benchmarks/index_av1m.py [--entries 1146760]

Writes a train_metadata.json of N generated entries (the whole dataset has 1,146,760 clips) into a temporary
root whose train/ folder is empty, so every entry also goes through the media check and is reported missing:
the worst case for the problem list. Prints seconds for indexing and for saving the parquet index, and the
process's peak resident memory before and after (the generator streams, so the peak is the indexer's).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from avbench.datasets.av1m import AV1MDataset

KINDS = (("real", "real", [], ""), ("fake_video_fake_audio", "both_modified", [[1.2, 1.68]], "yourtts"),
         ("fake_video_real_audio", "visual_modified", [[0.48, 0.96], [2.0, 2.4]], "vits"),
         ("real_video_fake_audio", "audio_modified", [[3.04, 3.6]], "yourtts"))


def write_metadata(path: Path, n: int) -> None:
    """n entries shaped like the real ones (four clips per source utterance), one at a time."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[")
        for i in range(n):
            name, modify_type, segments, model = KINDS[i % 4]
            utterance = f"id{i // 400:05d}/yt{i // 40:07d}/{i // 4 % 10:05d}"
            fh.write(("," if i else "") + json.dumps({
                "file": f"{utterance}/{name}.mp4", "original": None if name == "real" else f"{utterance}/real.mp4",
                "split": "train", "modify_type": modify_type, "audio_model": model, "fake_segments": segments,
                "audio_fake_segments": segments if "audio" in modify_type or "both" in modify_type else [],
                "visual_fake_segments": segments if "visual" in modify_type or "both" in modify_type else [],
                "video_frames": 200, "audio_frames": 128000,
            }))
        fh.write("]")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_146_760)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train").mkdir()
        start = time.perf_counter()
        write_metadata(root / "train_metadata.json", args.entries)
        size = (root / "train_metadata.json").stat().st_size / 2**20
        print(f"generated {args.entries} entries ({size:.0f} MiB) in {time.perf_counter() - start:.1f} s")
        before = peak_mib()
        start = time.perf_counter()
        index = AV1MDataset().index(root)
        print(f"indexed {len(index)} clips ({len(index.problems)} problems) in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        index.save(root / "av1m.parquet")
        print(f"saved the parquet index in {time.perf_counter() - start:.1f} s")
        print(f"peak resident memory: {before:.0f} MiB before indexing, {peak_mib():.0f} MiB after")


if __name__ == "__main__":
    main()
