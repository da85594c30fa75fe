"""Small copies of every supported dataset, in their authors' layouts, for end-to-end tests.

Each builder writes the metadata a real copy has and one real mp4's bytes at every listed path
(the same clip everywhere: these corpora test layouts and protocols, not detection); IDForge's shots,
frame arrays and mp3s, get one shot's bytes everywhere (`shot_bytes`). The per-adapter
tests (tests/test_adapter_*.py) cover each layout's quirks; these builders cover the common case,
with enough identities and categories for every protocol's splits and folds.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from avbench.encode import write_media
from avbench.testing import talking_face

FAKEAVCELEB_ROWS = [  # (type folder, letter, method, file suffix)
    ("RealVideo-RealAudio", "A", "real", ""),
    ("RealVideo-FakeAudio", "B", "rtvc", "_fake"),
    ("FakeVideo-RealAudio", "C", "wav2lip", "_wavtolip"),
    ("FakeVideo-RealAudio", "C", "faceswap", "_faceswap"),
    ("FakeVideo-FakeAudio", "D", "faceswap-wav2lip", "_fs_wl"),
    ("FakeVideo-FakeAudio", "D", "fsgan-wav2lip", "_gan_wl"),
    ("FakeVideo-FakeAudio", "D", "wav2lip", "_wl"),
]
HIFI_GENERATORS = ("sora2", "veo3.1", "kling2.5", "wan2.5", "pixverse_v5", "seedance1.0")
KODF_METHODS = ("dfl", "fsgan", "fo")
IDFORGE_TYPES = ("pristine", "face_tts", "lip_audiomismatch_textmismatch", "rvc_textmismatch", "tts_textgen")
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")


def clip_bytes(seconds: float = 0.4, size: int = 96) -> bytes:
    """One small real talking-face mp4, as bytes."""
    import tempfile

    face = talking_face(seconds=seconds, size=size)
    with tempfile.TemporaryDirectory() as tmp:
        return write_media(Path(tmp) / "clip.mp4", face.frames, face.fps, face.audio, face.sample_rate).read_bytes()


def shot_bytes(size: int = 96) -> tuple[bytes, bytes]:
    """One IDForge shot's files as bytes: 16 frames of a talking face as a .npy array, and its voice as mp3."""
    import av

    face = talking_face(seconds=16 / 25, size=size)
    frames = io.BytesIO()
    np.save(frames, face.frames)
    audio = io.BytesIO()
    with av.open(audio, "w", format="mp3") as container:  # write_media has no mp3 encoder: IDForge ships mp3
        stream = container.add_stream("libmp3lame", rate=face.sample_rate)
        stream.layout = "mono"
        chunk = av.AudioFrame.from_ndarray(face.audio[None, :], format="flt", layout="mono")
        chunk.sample_rate, chunk.pts = face.sample_rate, 0
        container.mux(stream.encode(chunk))
        container.mux(stream.encode())
    return frames.getvalue(), audio.getvalue()


def put(root: Path, data: bytes, *relative: str) -> None:
    """Write `data` at each root-relative path, making folders as needed."""
    for name in relative:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def fakeavceleb(root: Path, data: bytes, identities: int = 10) -> Path:
    """meta_data.csv with its shifted header (the directory sits in an unnamed 10th column)."""
    lines = ["source,target1,target2,method,category,type,race,gender,path,"]
    for i in range(identities):
        source = f"id{i:05d}"
        race, gender = ("Asian (South)", "women") if i % 2 else ("African", "men")
        for folder, letter, method, suffix in FAKEAVCELEB_ROWS:
            directory = f"FakeAVCeleb/{folder}/{race}/{gender}/{source}"
            name = f"00{i:03d}{suffix}.mp4"
            target = "-" if letter == "A" else f"id{(i + 1) % identities:05d}"
            lines.append(f"{source},{target},-,{method},{letter},{folder},{race},{gender},{name},{directory}")
            put(root, data, f"{directory.removeprefix('FakeAVCeleb/')}/{name}")
    (root / "meta_data.csv").write_text("\n".join(lines) + "\n")
    return root


def av1m(root: Path, data: bytes, speakers: int = 6) -> Path:
    """train/val metadata JSON lists; train and val share speakers, as the real ones do."""
    kinds = {"real": "real", "fake_video_fake_audio": "both_modified", "fake_video_real_audio": "visual_modified",
             "real_video_fake_audio": "audio_modified"}
    for subset in ("train", "val"):
        entries = []
        for s in range(speakers):
            original = f"id{s:05d}/yt{s}/{subset}0/real.mp4"
            for name, modify in kinds.items():
                file = f"id{s:05d}/yt{s}/{subset}0/{name}.mp4"
                fake = modify != "real"
                entries.append({"file": file, "original": None if not fake else original, "split": subset,
                                "modify_type": modify, "audio_model": "yourtts" if "audio" in modify or
                                modify == "both_modified" else "", "fake_segments": [[0.1, 0.3]] if fake else [],
                                "audio_fake_segments": [], "visual_fake_segments": [], "video_frames": 10,
                                "audio_frames": 6400})
                put(root, data, f"{subset}/{file}")
        (root / f"{subset}_metadata.json").write_text(json.dumps(entries))
    return root


def lavdf(root: Path, data: bytes, per_split: int = 8) -> Path:
    entries = []
    for split in ("train", "dev", "test"):
        for k in range(per_split):
            file = f"{split}/{split[0]}{k:05d}.mp4"
            video, audio = bool(k % 4 in (1, 3)), bool(k % 4 in (2, 3))
            entries.append({"file": file, "n_fakes": int(video or audio), "fake_periods": [[0.1, 0.2]] if video or audio
                            else [], "duration": 0.4, "original": None, "modify_video": video, "modify_audio": audio,
                            "split": split, "video_frames": 10, "audio_channels": 1, "audio_frames": 6400})
            put(root, data, file)
    (root / "metadata.json").write_text(json.dumps(entries))
    return root


def kodf(root: Path, data: bytes, per_method: int = 4) -> Path:
    """The international layout: original_videos/ and synthesized_videos/<method>/."""
    for k in range(per_method * len(KODF_METHODS)):
        put(root, data, f"original_videos/{k:03d}/{k:03d}_real.mp4")
    for method in KODF_METHODS:
        for k in range(per_method):
            put(root, data, f"synthesized_videos/{method}/{k:03d}_{method}.mp4")
    return root


def avlips(root: Path, data: bytes, per_label: int = 5) -> Path:
    """0_real/ and 1_fake/ videos, each with its separate wav under wav/."""
    face = talking_face(seconds=0.4, size=96)
    wav = write_media(root / "wav" / "0_real" / "0.wav", audio=face.audio, sample_rate=face.sample_rate).read_bytes()
    for label in ("0_real", "1_fake"):
        for k in range(per_label):
            put(root, data, f"{label}/{k}.mp4")
            put(root, wav, f"wav/{label}/{k}.wav")
    return root


def hifi_avdf(root: Path, data: bytes, pairs: int = 2) -> Path:
    """One CSV per generator: reals and their *_generated fakes alternating."""
    root.mkdir(parents=True, exist_ok=True)
    for generator in HIFI_GENERATORS:
        with open(root / f"{generator}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["video_path", "audio_label", "visual_label", "overall_label"])
            for k in range(pairs):
                real, fake = f"{generator}/{k}.mp4", f"{generator}/{k}_generated.mp4"
                writer.writerow([real, 0, 0, 0])
                writer.writerow([fake, 1, 1, 1])
                put(root, data, real)
                put(root, data, fake)
    return root


def idforge(root: Path, data: bytes, identities: int = 2) -> Path:
    """One shot per split x type x identity, each a frames_ndarray.npy, an mp3 and a transcript
    (`data`, an mp4, is not IDForge's kind of file: the shots get `shot_bytes`)."""
    frames, audio = shot_bytes()
    for split in ("train", "val", "test"):
        for kind in IDFORGE_TYPES:
            for i in range(identities):
                shot = f"{split}/{kind}/id{i:02d}/id{i:02d}_00/{split}_{kind}_{i}"
                put(root, frames, f"{shot}/frames_ndarray.npy")
                put(root, audio, f"{shot}/id{i:02d}_00.mp3")
                put(root, b"a transcript", f"{shot}/id{i:02d}_00.txt")
    return root


def ffpp(root: Path, data: bytes, pairs: int = 3) -> Path:
    """c23 videos and splits/{train,val,test}.json, one pair of youtube ids per split (more pairs go to train);
    both fakes of each pair (TTT_SSS and SSS_TTT) for every method."""
    splits: dict[str, list[list[str]]] = {"train": [], "val": [], "test": []}
    for k in range(pairs):
        a, b = f"{2 * k:03d}", f"{2 * k + 1:03d}"
        splits[{1: "val", 2: "test"}.get(k, "train")].append([a, b])
        put(root, data, *(f"original_sequences/youtube/c23/videos/{n}.mp4" for n in (a, b)))
        for method in FFPP_METHODS:
            put(root, data, f"manipulated_sequences/{method}/c23/videos/{a}_{b}.mp4",
                f"manipulated_sequences/{method}/c23/videos/{b}_{a}.mp4")
    for split, listed in splits.items():
        put(root, json.dumps(listed).encode(), f"splits/{split}.json")
    return root


def celebdf(root: Path, data: bytes, identities: int = 3) -> Path:
    """Celeb-real, YouTube-real and Celeb-synthesis videos; the first identity's clips are on the testing list."""
    for i in range(identities):
        put(root, data, f"Celeb-real/id{i}_0000.mp4", f"YouTube-real/{i:05d}.mp4",
            f"Celeb-synthesis/id{i}_id{(i + 1) % identities}_0000.mp4")
    # the list's own convention: 1 = real, 0 = fake
    listed = ["1 Celeb-real/id0_0000.mp4", "1 YouTube-real/00000.mp4",
              f"0 Celeb-synthesis/id0_id{1 % identities}_0000.mp4"]
    (root / "List_of_testing_videos.txt").write_text("\n".join(listed) + "\n")
    return root


def folder(root: Path, data: bytes, per_label: int = 3) -> Path:
    for label in ("real", "fake"):
        for k in range(per_label):
            put(root, data, f"{label}/{k}.mp4")
    return root


BUILDERS = {"fakeavceleb": fakeavceleb, "av1m": av1m, "av1m_pp": av1m, "lavdf": lavdf, "kodf": kodf, "avlips": avlips,
            "hifi_avdf": hifi_avdf, "idforge": idforge, "ffpp": ffpp, "celebdf": celebdf, "folder": folder}


def build_all(root: Path, data: bytes | None = None) -> dict[str, Path]:
    """Every dataset under root/<name>; returns {name: its root}."""
    data = data if data is not None else clip_bytes()
    return {name: build(root / name, data) for name, build in BUILDERS.items()}
