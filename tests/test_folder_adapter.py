"""The `folder` adapter: a user's real/ and fake/ folders, or a labels.csv; bad rows are reported, never dropped."""

import pytest

from avbench.datasets.folder import FolderDataset, parse_label


def touch(root, *paths):
    """Placeholder files: the adapter indexes, it does not decode."""
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"media")


def by_id(index):
    return {ref.clip_id: ref for ref in index.refs()}


def test_real_and_fake_folders_at_any_depth(tmp_path):
    touch(tmp_path, "real/a.mp4", "real/studio/day2/b.MOV", "fake/c.webm", "fake/wav2lip/d.mkv",
          "fake/wav2lip/deep/e.avi", "real/notes.txt", "fake/.f.mp4", "other/g.mp4", "h.mp4")
    index = FolderDataset().index(tmp_path)
    refs = by_id(index)
    assert sorted(refs) == ["fake/c", "fake/wav2lip/d", "fake/wav2lip/deep/e", "real/a", "real/studio/day2/b"]
    assert index.problems == []
    expected = {  # label, category, method
        "real/a": (0, "real", ""), "real/studio/day2/b": (0, "real", ""), "fake/c": (1, "fake", ""),
        "fake/wav2lip/d": (1, "wav2lip", "wav2lip"), "fake/wav2lip/deep/e": (1, "wav2lip", "wav2lip"),
    }
    for clip_id, (label, category, method) in expected.items():
        ref = refs[clip_id]
        assert (ref.label, ref.category, ref.method) == (label, category, method), clip_id
        assert ref.dataset == "folder" and ref.split == "test" and ref.identity == ""
        assert ref.video_label is None and ref.audio_label is None and ref.audio_path is None
    assert refs["real/studio/day2/b"].path == tmp_path / "real/studio/day2/b.MOV"


def test_two_videos_with_one_clip_id_are_reported(tmp_path):
    touch(tmp_path, "real/a.avi", "real/a.mp4", "fake/b.mp4")
    index = FolderDataset().index(tmp_path)
    assert sorted(by_id(index)) == ["fake/b", "real/a"]
    assert index.problems == ["real/a.mp4: same clip id 'real/a' as real/a.avi; left out"]


def test_folders_without_videos_are_a_problem_not_an_error(tmp_path):
    touch(tmp_path, "real/readme.txt")
    (tmp_path / "fake").mkdir()
    index = FolderDataset().index(tmp_path)
    assert len(index) == 0 and "no video files" in index.problems[0]


LABELS_CSV = """path,label,category,identity,split,audio_path,source
clips/a.mp4,0,,p1,,,camera
clips/b.mp4,FAKE,wav2lip,p2,train,,
clips/c.bin, Real ,,p3,val,audio/c.wav,
clips/d.mp4,maybe,,,,,
clips/missing.mp4,1,,,,,
,1,,,,,
clips/e.mp4,1,,,holdout,,
clips/f.mp4,1,,,,audio/none.wav,
clips/g.mp4,0,,,,,,extra
clips/a.mp4,1,,,,,
"""


def test_labels_csv_rows_and_their_problems(tmp_path):
    touch(tmp_path, "clips/a.mp4", "clips/b.mp4", "clips/c.bin", "audio/c.wav", "clips/d.mp4", "clips/e.mp4",
          "clips/f.mp4", "clips/g.mp4", "clips/unlisted.mp4", "real/ignored.mp4")
    (tmp_path / "labels.csv").write_text(LABELS_CSV)
    index = FolderDataset().index(tmp_path)
    refs = by_id(index)
    # labels.csv wins over real/ and fake/; listed files that are missing stay, to be counted as failed
    assert sorted(refs) == ["clips/a", "clips/b", "clips/c", "clips/f", "clips/missing"]
    a, b, c = refs["clips/a"], refs["clips/b"], refs["clips/c"]
    assert (a.label, a.category, a.identity, a.split, a.meta) == (0, "real", "p1", "test", {"source": "camera"})
    assert (b.label, b.category, b.method, b.split, b.meta) == (1, "wav2lip", "", "train", {})
    assert (c.label, c.split, c.path, c.audio_path) == (0, "val", tmp_path / "clips/c.bin", tmp_path / "audio/c.wav")
    expected = [
        "labels.csv line 5: clips/d.mp4: label 'maybe' is not 0, 1, real or fake",
        f"labels.csv line 6: clips/missing.mp4: file clips/missing.mp4 not found under {tmp_path}; "
        "kept, runs will count it as failed",
        "labels.csv line 7: empty path",
        "labels.csv line 8: clips/e.mp4: split 'holdout' is not one of train, val, test",
        f"labels.csv line 9: clips/f.mp4: audio_path audio/none.wav not found under {tmp_path}; "
        "kept, runs will count it as failed",
        "labels.csv line 10: more fields than the header has columns",
        "clips/a.mp4: same clip id 'clips/a' as clips/a.mp4; left out",
    ]
    assert index.problems == expected


def test_a_csv_path_as_root_resolves_against_its_folder(tmp_path):
    touch(tmp_path, "set/x.mp4", "set/y.mp4")
    (tmp_path / "set" / "mine.csv").write_text("path , label\nx.mp4,real\ny.mp4,fake\n")  # spaces in the header
    index = FolderDataset().index(tmp_path / "set" / "mine.csv")
    assert index.root == tmp_path / "set" and index.problems == []
    assert {ref.clip_id: (ref.label, ref.category) for ref in index.refs()} == {"x": (0, "real"), "y": (1, "fake")}


def test_a_csv_without_labels_or_a_root_without_layout_is_an_error(tmp_path):
    (tmp_path / "labels.csv").write_text("path,kind\nx.mp4,real\n")
    with pytest.raises(ValueError, match="labels.csv: missing column\\(s\\) label"):
        FolderDataset().index(tmp_path)
    (tmp_path / "labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="neither labels.csv nor real/ and fake/"):
        FolderDataset().index(tmp_path)
    with pytest.raises(FileNotFoundError, match="--data-root folder=DIR"):
        FolderDataset().index(None)


@pytest.mark.parametrize("text,label", [("0", 0), ("1", 1), ("real", 0), ("FAKE", 1), (" Fake ", 1),
                                        ("2", None), ("", None), ("true", None), ("0.0", None)])
def test_parse_label(text, label):
    assert parse_label(text) == label
