"""The `idforge` / `idforge_v1` adapters on IDForge's shot folders, and a shot loaded through MediaLoader."""

import numpy as np
import pytest

from avbench.cache import MediaCache
from avbench.datasets.idforge import IDForgeDataset, IDForgeV1Dataset
from avbench.detector import InputSpec
from avbench.loader import MediaLoader
from avbench.testing_datasets import put, shot_bytes


@pytest.fixture(scope="module")
def shot():
    """(frames .npy bytes, mp3 bytes) of one 16-frame talking-face shot."""
    return shot_bytes(size=64)


def by_id(index):
    return {ref.clip_id: ref for ref in index.refs()}


SHOTS = {  # shot folder: its files besides the transcript
    "train/pristine/id01/id01_00/s0": ("frames_ndarray.npy", "frames_ndarray_sr.npy", "id01_00_0.mp3"),
    "train/face_tts/id01/id01_00/s1": ("frames_ndarray.npy", "id01_00_1.mp3"),
    "train/lip_audiomismatch_textmismatch/id02/id02_03/s0": ("frames_ndarray.npy", "id02_03_0.mp3"),
    "train/lip_rvc_textmismatch/id02/id02_03/s1": ("frames_ndarray.npy", "id02_03_1.mp3.mp4"),
    "val/rvc_textmismatch/id00/id00_01/s0": ("frames_ndarray.npy", "id00_01_0.mp3"),
    "test/tts_textgen/id03/id03_02/s0": ("frames_ndarray_sr.npy", "id03_02_0.mp3"),  # no plain frames
    "test/pristine/id03/id03_02/s2": ("frames_ndarray.npy",),  # no audio
    "test/face_audiomismatch_textmismatch/id03/id03_02/s3": ("frames_ndarray.npy", "b.mp3", "a.mp3"),
    # left out
    "reference/pristine/id01/id01_00/s9": ("frames_ndarray.npy", "r.mp3"),
    "train/mouth_swap/id01/id01_00/s0": ("frames_ndarray.npy", "m.mp3"),
    "train/mouth_swap/id02/id02_00/s0": ("frames_ndarray.npy", "m.mp3"),
    "train/pristine/id01": ("frames_ndarray.npy",),
    "train/pristine/id05/id05_00/lonely": ("lonely.mp3",),
}


def layout(root, shot):
    frames, audio = shot
    for folder, names in SHOTS.items():
        for name in names:
            put(root, frames if name.endswith(".npy") else audio, f"{folder}/{name}")
        put(root, b"what is said", f"{folder}/transcript.txt")
    put(root, b"\0", "train/pristine/id01/id01_00/s0/._frames_ndarray.npy")  # macOS AppleDouble: not a shot
    return root


def test_shots_labels_identities_and_problems(tmp_path, shot):
    index = IDForgeDataset().index(layout(tmp_path, shot))
    refs = by_id(index)
    expected = {  # shot: label, video_label, audio_label, category, identity, group, split, audio file, sr_copy
        "train/pristine/id01/id01_00/s0": (0, 0, 0, "real", "id01", "id01_00", "train", "id01_00_0.mp3", True),
        "train/face_tts/id01/id01_00/s1": (1, 1, 1, "face_tts", "id01", "id01_00", "train", "id01_00_1.mp3", False),
        "train/lip_audiomismatch_textmismatch/id02/id02_03/s0":
            (1, 1, 0, "lip_audiomismatch_textmismatch", "id02", "id02_03", "train", "id02_03_0.mp3", False),
        "train/lip_rvc_textmismatch/id02/id02_03/s1":
            (1, 1, 1, "lip_rvc_textmismatch", "id02", "id02_03", "train", "id02_03_1.mp3.mp4", False),
        "val/rvc_textmismatch/id00/id00_01/s0": (1, 0, 1, "rvc_textmismatch", "id00", "id00_01", "val", "id00_01_0.mp3",
                                                 False),
        "test/tts_textgen/id03/id03_02/s0": (1, 0, 1, "tts_textgen", "id03", "id03_02", "test", "id03_02_0.mp3", True),
        "test/pristine/id03/id03_02/s2": (0, 0, 0, "real", "id03", "id03_02", "test", "s2.mp3", False),
        "test/face_audiomismatch_textmismatch/id03/id03_02/s3":
            (1, 1, 0, "face_audiomismatch_textmismatch", "id03", "id03_02", "test", "a.mp3", False),
    }
    assert {k: (r.label, r.video_label, r.audio_label, r.category, r.identity, r.group, r.split, r.audio_path.name,
                r.meta["sr_copy"]) for k, r in refs.items()} == expected
    for clip_id, ref in refs.items():
        assert ref.dataset == "idforge" and ref.path == tmp_path / clip_id / "frames_ndarray.npy"
        assert ref.audio_path.parent == tmp_path / clip_id
        assert ref.method == ("" if ref.label == 0 else ref.category)
        assert not ref.audio_absent
    counts = index.frame.groupby(["split", "label"]).size().to_dict()
    assert counts == {("test", 0): 1, ("test", 1): 2, ("train", 0): 1, ("train", 1): 3, ("val", 1): 1}
    assert index.problems == [
        "test/face_audiomismatch_textmismatch/id03/id03_02/s3: 2 audio files "
        "(test/face_audiomismatch_textmismatch/id03/id03_02/s3/a.mp3, "
        "test/face_audiomismatch_textmismatch/id03/id03_02/s3/b.mp3); "
        "reads test/face_audiomismatch_textmismatch/id03/id03_02/s3/a.mp3",
        f"test/pristine/id03/id03_02/s2: audio file (*.mp3 or *.mp3.mp4) not found under {tmp_path}; kept, "
        "runs will count it as failed",
        f"test/tts_textgen/id03/id03_02/s0: frames_ndarray.npy not found under {tmp_path}; kept, "
        "runs will count it as failed",
        "reference/: unknown top folder (known: train, val, test); its 1 shot(s) left out",
        "train/mouth_swap/: unknown type folder (known: pristine, face_*, lip_*, rvc_*, tts_*); its 2 shot(s) left out",
        f"{tmp_path}: 1 folder(s) with a frames file not at <split>/<type>/idXX/idXX_YY/<scene>/, not indexed: "
        "train/pristine/id01",
        f"{tmp_path}: 1 audio file(s) in no shot folder (no frames_ndarray.npy beside them), not indexed: "
        "train/pristine/id05/id05_00/lonely/lonely.mp3",
    ]


def test_v1_reads_the_same_layout_under_its_own_name(tmp_path, shot):
    layout(tmp_path, shot)
    v1, v2 = IDForgeV1Dataset().index(tmp_path), IDForgeDataset().index(tmp_path)
    assert (IDForgeDataset.display_name, IDForgeV1Dataset.display_name) == ("IDForge-v2", "IDForge-v1")
    assert set(v1.frame["dataset"]) == {"idforge_v1"}
    assert v1.frame.drop(columns="dataset").equals(v2.frame.drop(columns="dataset"))
    assert v1.problems == v2.problems


def test_a_root_without_shots_is_an_error(tmp_path):
    put(tmp_path, b"x", "videos/a.mp4", "reference/pristine/id01/id01_00/s0/frames_ndarray.npy")
    with pytest.raises(FileNotFoundError, match=r"holds no frames_ndarray\.npy under \{train,val,test\}/<type>/"
                                                r"idXX/idXX_YY/<scene>/ .*Request IDForge from its authors"):
        IDForgeDataset().index(tmp_path)


def test_media_loader_reads_a_shots_16_frames_and_its_mp3(tmp_path, shot):
    shot_folder = "test/lip_tts_textgen/id07/id07_01/s0"
    put(tmp_path / "idforge", shot[0], f"{shot_folder}/frames_ndarray.npy")
    put(tmp_path / "idforge", shot[1], f"{shot_folder}/id07_01_0.mp3")
    (ref,) = IDForgeDataset().index(tmp_path / "idforge").refs()
    loader = MediaLoader(MediaCache(tmp_path / "cache"))
    for _ in range(2):  # decoded, then from the cache
        clip = loader.load(ref, InputSpec(fps=25.0, audio=True, frame_size=32))
        assert clip.frames.shape == (16, 32, 32, 3) and clip.frames.dtype == np.uint8
        assert clip.audio.dtype == np.float32 and abs(len(clip.audio) - 16 / 25 * 16000) <= 160
        assert np.abs(clip.audio).max() > 0.05  # the voice, not silence
