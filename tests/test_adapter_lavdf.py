"""The `lavdf` adapter on a fixture laid out like LAV-DF, quirks included."""

import json

import pytest

from avbench.datasets.lavdf import LAVDFDataset
from avbench.encode import write_media
from avbench.testing import talking_face


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The bytes of one tiny real mp4, copied to every path of the fixture."""
    face = talking_face(seconds=1.0, size=128)
    path = write_media(tmp_path_factory.mktemp("media") / "clip.mp4", face.frames, face.fps, face.audio, face.sample_rate)
    return path.read_bytes()


def entry(file, split, modify_video=False, modify_audio=False, periods=(), original=None, **override):
    """One metadata.json entry as the authors write it."""
    return {"file": file, "n_fakes": len(periods), "fake_periods": [list(p) for p in periods], "duration": 1.0,
            "original": original, "modify_video": modify_video, "modify_audio": modify_audio, "split": split,
            "video_frames": 25, "audio_channels": 1, "audio_frames": 16000, **override}


ENTRIES = [
    entry("train/000001.mp4", "train"),
    entry("train/000002.mp4", "train", True, False, [(0.2, 0.5)], "train/000001.mp4"),
    entry("train/000003.mp4", "train", False, True, [(0.1, 0.3), (0.6, 0.9)], "train/000001.mp4"),
    entry("dev/000004.mp4", "dev"),
    entry("dev/000005.mp4", "dev", True, True, [(0.0, 0.4)], "dev/000004.mp4"),
    entry("test/000006.mp4", "test"),
    entry("test/000007.mp4", "test", True, True, [(0.3, 0.6)], "test/000006.mp4"),  # its file is missing
    entry("test/000008.mp4", "validation"),
    entry("test/000009.mp4", "test", True, "yes", [(0.3, 0.6)], "test/000006.mp4"),
    entry("test/000010.mp4", "test", False, False, [(0.1, 0.2)], "test/000006.mp4"),  # flags say real, n_fakes 1
    entry("train/000002.mp4", "train", False, True, [(0.2, 0.5)], "train/000001.mp4"),
    entry("test/000006.mp4", "test"),
    entry("test/000011.mp4", "test", n_fakes=-1),
]


def test_lavdf_layout_and_its_quirks(tmp_path, media):
    for item in ENTRIES:
        if item["file"] != "test/000007.mp4":
            (tmp_path / item["file"]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / item["file"]).write_bytes(media)
    (tmp_path / "metadata.json").write_text(json.dumps(ENTRIES))
    index = LAVDFDataset().index(tmp_path)
    refs = {ref.clip_id: ref for ref in index.refs()}
    expected = {  # clip id: label, video_label, audio_label, category, group, split, segments
        "train/000001": (0, 0, 0, "real", "train/000001", "train", ()),
        "train/000002": (1, 1, 0, "visual_modified", "train/000001", "train", ((0.2, 0.5),)),
        "train/000003": (1, 0, 1, "audio_modified", "train/000001", "train", ((0.1, 0.3), (0.6, 0.9))),
        "dev/000004": (0, 0, 0, "real", "dev/000004", "val", ()),
        "dev/000005": (1, 1, 1, "both_modified", "dev/000004", "val", ((0.0, 0.4),)),
        "test/000006": (0, 0, 0, "real", "test/000006", "test", ()),
        "test/000007": (1, 1, 1, "both_modified", "test/000006", "test", ((0.3, 0.6),)),
        "test/000010": (1, None, None, "real", "test/000006", "test", ((0.1, 0.2),)),
    }
    assert sorted(refs) == sorted(expected)
    for clip_id, values in expected.items():
        ref = refs[clip_id]
        assert (ref.label, ref.video_label, ref.audio_label, ref.category, ref.group, ref.split,
                ref.fake_segments) == values, clip_id
        assert (ref.dataset, ref.method, ref.identity, ref.meta) == ("lavdf", "", "", {})
        assert ref.path == tmp_path / (clip_id + ".mp4")
    assert index.problems == [
        "metadata.json[7]: test/000008.mp4: unknown split 'validation'; left out",
        "metadata.json[8]: test/000009.mp4: modify_video True and modify_audio 'yes' are not both true/false; left out",
        "metadata.json[12]: test/000011.mp4: n_fakes -1 is not a count; left out",
        "metadata.json[10]: train/000002.mp4: listed again (first at [1]) with conflicting category 'audio_modified' "
        "(kept 'visual_modified'); kept the first",
        "metadata.json[11]: test/000006.mp4: listed again (first at [5]) with same label, category, split, "
        "fake_segments; kept the first",
        "metadata.json[9]: test/000010.mp4: category 'real' but n_fakes 1; kept as fake, video_label and audio_label "
        "unknown",
        f"metadata.json[6]: test/000007.mp4: not found under {tmp_path}; kept, runs will count it as failed",
    ]


def test_missing_metadata_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="metadata.json not found"):
        LAVDFDataset().index(tmp_path)
