"""The `celebdf` adapter on Celeb-DF v2: three folders and the testing list whose labels say 1 = REAL."""

import pytest

from avbench.clips import AUDIO_ABSENT
from avbench.datasets.celebdf import CelebDFDataset
from avbench.testing_datasets import clip_bytes, put


@pytest.fixture(scope="module")
def video_bytes():
    """One small clip, copied to every path of a fixture (the adapter indexes, it does not decode)."""
    return clip_bytes()


def by_id(index):
    return {ref.clip_id: ref for ref in index.refs()}


TEST_LIST = """1 Celeb-real/id0_0000.mp4
0 Celeb-synthesis/id0_id1_0000.mp4
1 YouTube-real/00001.mp4

0 Celeb-synthesis/id3_id0_0004.mp4
1 Celeb-synthesis/id1_id0_0000.mp4
2 Celeb-real/id1_0000.mp4
1Celeb-real/id1_0000.mp4
1 Celeb-real/id0_0000.mp4
0 Other/x.mp4
"""


def layout(root, video_bytes):
    put(root, video_bytes, "Celeb-real/id0_0000.mp4", "Celeb-real/id0_0001.mp4", "Celeb-real/id1_0000.mp4",
        "Celeb-real/id2.mp4", "YouTube-real/00000.mp4", "YouTube-real/00001.mp4",
        "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0000.mp4", "Celeb-synthesis/id0_id2_0001.mp4",
        "Celeb-synthesis/more/id0_id1_0002.mp4", "notes/a.mp4")
    put(root, TEST_LIST.encode(), "List_of_testing_videos.txt")
    return root


def test_clips_splits_inverted_list_labels_and_problems(tmp_path, video_bytes):
    index = CelebDFDataset().index(layout(tmp_path, video_bytes))
    refs = by_id(index)
    expected = {  # clip id: label, category, method, identity, group, split, source_identity
        "Celeb-real/id0_0000": (0, "real", "", "id0", "id0_0000", "test", None),
        "Celeb-real/id0_0001": (0, "real", "", "id0", "id0_0001", "train", None),
        "Celeb-real/id1_0000": (0, "real", "", "id1", "id1_0000", "train", None),
        "YouTube-real/00000": (0, "real", "", "00000", "00000", "train", None),
        "YouTube-real/00001": (0, "real", "", "00001", "00001", "test", None),
        "Celeb-synthesis/id0_id1_0000": (1, "Celeb-synthesis", "Celeb-synthesis", "id0", "id0_0000", "test", "id1"),
        "Celeb-synthesis/id1_id0_0000": (1, "Celeb-synthesis", "Celeb-synthesis", "id1", "id1_0000", "test", "id0"),
        "Celeb-synthesis/id0_id2_0001": (1, "Celeb-synthesis", "Celeb-synthesis", "id0", "id0_0001", "train", "id2"),
        "Celeb-synthesis/id3_id0_0004": (1, "Celeb-synthesis", "Celeb-synthesis", "id3", "id3_0004", "test", "id0"),
    }
    assert {k: (r.label, r.category, r.method, r.identity, r.group, r.split, r.meta.get("source_identity"))
            for k, r in refs.items()} == expected
    for clip_id, ref in refs.items():
        assert (ref.dataset, ref.video_label, ref.audio_label, ref.audio_path) == ("celebdf", ref.label, 0, None)
        assert ref.meta["audio"] == AUDIO_ABSENT and ref.audio_absent
        assert ref.path == tmp_path / f"{clip_id}.mp4"
    counts = index.frame.groupby(["split", "label"]).size().to_dict()
    assert counts == {("test", 0): 2, ("test", 1): 3, ("train", 0): 3, ("train", 1): 1}
    where = "List_of_testing_videos.txt line"
    assert index.problems == [
        f"{where} 7: '2 Celeb-real/id1_0000.mp4' is not '<1 real | 0 fake> <path>'; skipped",
        f"{where} 8: '1Celeb-real/id1_0000.mp4' is not '<1 real | 0 fake> <path>'; skipped",
        f"{where} 9: Celeb-real/id0_0000.mp4 listed again (first at {where} 1); skipped",
        f"{where} 5: Celeb-synthesis/id3_id0_0004.mp4 not found under {tmp_path}; kept, runs will count it as failed",
        f"{where} 6: Celeb-synthesis/id1_id0_0000.mp4 listed as real (list label 1) but its folder says fake; "
        "the folder's label is kept",
        f"{where} 10: Other/x.mp4 names no video of the layout (Celeb-real/idX_NNNN.mp4, YouTube-real/NNNNN.mp4, "
        "Celeb-synthesis/idX_idY_NNNN.mp4); skipped",
        f"{tmp_path}: 1 video file(s) in Celeb-real/ not named idX_NNNN.mp4, not indexed: Celeb-real/id2.mp4",
        f"{tmp_path}: 2 video file(s) outside Celeb-real/, YouTube-real/, Celeb-synthesis/, not indexed: "
        "Celeb-synthesis/more/id0_id1_0002.mp4, notes/a.mp4",
    ]


def test_without_the_testing_list_there_is_no_split(tmp_path, video_bytes):
    put(tmp_path, video_bytes, "Celeb-real/id0_0000.mp4", "Celeb-synthesis/id0_id1_0000.mp4")
    index = CelebDFDataset().index(tmp_path)
    assert index.frame[["label", "split"]].values.tolist() == [[0, ""], [1, ""]]
    assert index.problems == [f"{tmp_path}: no List_of_testing_videos.txt; every clip has split ''"]


def test_a_root_without_the_folders_is_an_error(tmp_path):
    put(tmp_path, b"x", "videos/a.mp4")
    with pytest.raises(FileNotFoundError, match="has none of Celeb-real/, YouTube-real/, Celeb-synthesis/.*"
                                                "Request Celeb-DF v2 through the authors' form"):
        CelebDFDataset().index(tmp_path)
