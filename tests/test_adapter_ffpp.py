"""The `ffpp` adapters on FaceForensics++'s download layout: compressions, official split files, DeepFakeDetection."""

import json

import pytest

from avbench.clips import AUDIO_ABSENT
from avbench.datasets.ffpp import FFPPc40Dataset, FFPPDataset, FFPPRawDataset
from avbench.testing_datasets import clip_bytes, put


@pytest.fixture(scope="module")
def video_bytes():
    """One small clip, copied to every path of a fixture (the adapter indexes, it does not decode)."""
    return clip_bytes()


def by_id(index):
    return {ref.clip_id: ref for ref in index.refs()}


YT, M = "original_sequences/youtube", "manipulated_sequences"
DFD_REAL = "original_sequences/actors/c23/videos/01__meeting_serious"
DFD_FAKE = f"{M}/DeepFakeDetection/c23/videos/01_02__meeting_serious__YVGY8LOK"


def layout(root, video_bytes):
    put(root, json.dumps([["000", "001"]]).encode(), "splits/train.json")
    put(root, json.dumps([["000", "001"], ["008", "009"]]).encode(), "backup/splits/train.json")  # a second copy
    put(root, json.dumps([["002", "003"], ["000", "009"]]).encode(), "splits/val.json")  # 000 is in train already
    put(root, json.dumps([["004", "005"], ["006"], "x", ["004", "007"]]).encode(), "splits/test.json")
    put(root, video_bytes, *(f"{YT}/c23/videos/{n}.mp4" for n in ("000", "001", "002", "003", "004", "005", "008")),
        f"{YT}/c23/videos/abc.mp4",  # not NNN
        f"{YT}/c23/videos/extra/000.mp4",  # too deep
        f"{YT}/c40/videos/000.mp4",  # another compression: not ffpp's, not a problem
        f"{DFD_REAL}.mp4", "original_sequences/actors/c23/videos/02__kitchen_pan.mp4",
        f"{M}/Deepfakes/c23/videos/000_001.mp4", f"{M}/Deepfakes/c23/videos/001_000.mp4",
        f"{M}/FaceShifter/c23/videos/002_003.mp4", f"{M}/FaceShifter/c23/videos/004_005.mp4",
        f"{M}/NeuralTextures/c23/videos/005_004.mp4",
        f"{M}/Face2Face/c23/videos/000_003.mp4",  # a pair no split file has
        f"{M}/FaceSwap/c40/videos/000_001.mp4", f"{M}/Deepfakes/masks/videos/000_001.mp4",
        f"{DFD_FAKE}.mp4",
        f"{M}/StyleGAN/c23/videos/000_001.mp4", "original_sequences/other/c23/videos/000.mp4",  # unknown folders
        "downloaded_videos/abc.mp4")
    put(root, b"png", f"{YT}/c23/images/000/0000.png")
    return root


def test_c23_clips_splits_identities_and_problems(tmp_path, video_bytes):
    index = FFPPDataset().index(layout(tmp_path, video_bytes))
    refs = by_id(index)
    expected = {  # clip id: label, category, method, identity, group, split, source_identity
        f"{YT}/c23/videos/000": (0, "real", "", "000", "000", "train", None),
        f"{YT}/c23/videos/001": (0, "real", "", "001", "001", "train", None),
        f"{YT}/c23/videos/002": (0, "real", "", "002", "002", "val", None),
        f"{YT}/c23/videos/003": (0, "real", "", "003", "003", "val", None),
        f"{YT}/c23/videos/004": (0, "real", "", "004", "004", "test", None),
        f"{YT}/c23/videos/005": (0, "real", "", "005", "005", "test", None),
        f"{YT}/c23/videos/008": (0, "real", "", "008", "008", "", None),
        DFD_REAL: (0, "real", "DeepFakeDetection", "01", "01__meeting_serious", "", None),
        "original_sequences/actors/c23/videos/02__kitchen_pan":
            (0, "real", "DeepFakeDetection", "02", "02__kitchen_pan", "", None),
        f"{M}/Deepfakes/c23/videos/000_001": (1, "Deepfakes", "Deepfakes", "000", "000", "train", "001"),
        f"{M}/Deepfakes/c23/videos/001_000": (1, "Deepfakes", "Deepfakes", "001", "001", "train", "000"),
        f"{M}/FaceShifter/c23/videos/002_003": (1, "FaceShifter", "FaceShifter", "002", "002", "val", "003"),
        f"{M}/FaceShifter/c23/videos/004_005": (1, "FaceShifter", "FaceShifter", "004", "004", "test", "005"),
        f"{M}/NeuralTextures/c23/videos/005_004": (1, "NeuralTextures", "NeuralTextures", "005", "005", "test", "004"),
        f"{M}/Face2Face/c23/videos/000_003": (1, "Face2Face", "Face2Face", "000", "000", "", "003"),
        DFD_FAKE: (1, "DeepFakeDetection", "DeepFakeDetection", "01", "01__meeting_serious", "", "02"),
    }
    assert {k: (r.label, r.category, r.method, r.identity, r.group, r.split, r.meta.get("source_identity"))
            for k, r in refs.items()} == expected
    for clip_id, ref in refs.items():
        assert (ref.dataset, ref.video_label, ref.audio_label, ref.audio_path) == ("ffpp", ref.label, 0, None)
        assert ref.meta["audio"] == AUDIO_ABSENT and ref.audio_absent
        assert ref.path == tmp_path / f"{clip_id}.mp4" and ref.path.is_file()
    counts = index.frame.groupby(["split", "label"]).size().to_dict()
    assert counts == {("", 0): 3, ("", 1): 2, ("test", 0): 2, ("test", 1): 2, ("train", 0): 2, ("train", 1): 2,
                      ("val", 0): 2, ("val", 1): 1}
    assert index.problems == [
        "backup/splits/train.json: another train.json; splits/train.json is read",
        "splits/val.json: id 000 is in train and val; kept in train",
        'splits/test.json entry 1: ["006"] is not a [target, source] pair of ids; skipped',
        'splits/test.json entry 2: "x" is not a [target, source] pair of ids; skipped',
        "manipulated_sequences/StyleGAN/: unknown method folder (known: Deepfakes, Face2Face, FaceSwap, "
        "NeuralTextures, FaceShifter, DeepFakeDetection); its 1 video(s) left out",
        "original_sequences/other/: unknown sequence folder (known: youtube, actors); its 1 video(s) left out",
        f"{tmp_path}: 1 video file(s) in original_sequences/youtube/ not named NNN.mp4, not indexed: "
        f"{YT}/c23/videos/abc.mp4",
        f"{tmp_path}: 2 video file(s) outside original_sequences/<folder>/<compression>/videos/ and "
        "manipulated_sequences/<method>/<compression>/videos/, not indexed: downloaded_videos/abc.mp4, "
        f"{YT}/c23/videos/extra/000.mp4",
        f"{tmp_path}: 2 video(s) in no pair of the split files; kept with split '': "
        f"{M}/Face2Face/c23/videos/000_003.mp4, {YT}/c23/videos/008.mp4",
    ]


def test_each_compression_is_its_own_dataset(tmp_path, video_bytes):
    layout(tmp_path, video_bytes)
    c40 = FFPPc40Dataset().index(tmp_path)
    assert {k: (r.dataset, r.category, r.split) for k, r in by_id(c40).items()} == {
        f"{YT}/c40/videos/000": ("ffpp_c40", "real", "train"),
        f"{M}/FaceSwap/c40/videos/000_001": ("ffpp_c40", "FaceSwap", "train"),
    }
    assert [FFPPDataset.display_name, FFPPc40Dataset.display_name, FFPPRawDataset.display_name] == [
        "FaceForensics++", "FaceForensics++ c40", "FaceForensics++ raw"]
    with pytest.raises(FileNotFoundError, match=r"holds no raw videos \(compressions found: c23, c40, masks\)"):
        FFPPRawDataset().index(tmp_path)


def test_missing_and_malformed_split_files_leave_clips_without_split(tmp_path, video_bytes):
    put(tmp_path, video_bytes, f"{YT}/c23/videos/000.mp4", f"{M}/Deepfakes/c23/videos/000_001.mp4")
    assert FFPPDataset().index(tmp_path).problems == [
        f"{tmp_path}: no split file (train.json, val.json, test.json) under it; every clip has split ''"]
    put(tmp_path, b'{"000": "001"}', "train.json")
    put(tmp_path, b"[[\"000\", ", "test.json")
    index = FFPPDataset().index(tmp_path)
    assert set(index.frame["split"]) == {""}
    assert index.problems == [
        "train.json: a JSON dict, not a list of [target, source] id pairs; its split is not used",
        f"{tmp_path}: no val.json under it; the clips of its pairs have split ''",
        "test.json: not JSON (Expecting value: line 1 column 10 (char 9)); its split is not used",
        f"{tmp_path}: 2 video(s) in no pair of the split files; kept with split '': "
        f"{M}/Deepfakes/c23/videos/000_001.mp4, {YT}/c23/videos/000.mp4",
    ]


def test_a_root_without_the_layout_is_an_error(tmp_path):
    put(tmp_path, b"x", "videos/000.mp4")
    with pytest.raises(FileNotFoundError, match="has neither original_sequences/ nor manipulated_sequences/.*"
                                                "Request FaceForensics\\+\\+ through the authors' form"):
        FFPPDataset().index(tmp_path)
