"""The `av1m` adapter on fixtures laid out like AV-Deepfake1M and AV-Deepfake1M++, quirks included."""

import json

import pytest

from avbench.clips import UNLABELED, ClipIndex
from avbench.datasets.av1m import AV1MDataset, AV1MPlusDataset
from avbench.encode import write_media
from avbench.testing import talking_face


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The bytes of one tiny real mp4, copied to every path of a fixture."""
    face = talking_face(seconds=1.0, size=128)
    path = write_media(tmp_path_factory.mktemp("media") / "clip.mp4", face.frames, face.fps, face.audio, face.sample_rate)
    return path.read_bytes()


def entry(file, modify_type, segments=(), audio_model="", original=None, **extra):
    """One metadata entry as the authors write it; per-modality segments follow modify_type."""
    segments = [list(s) for s in segments]
    return {"file": file, "original": original, "split": "", "modify_type": modify_type, "audio_model": audio_model,
            "fake_segments": segments,
            "audio_fake_segments": segments if modify_type in ("audio_modified", "both_modified") else [],
            "visual_fake_segments": segments if modify_type in ("visual_modified", "both_modified") else [],
            "video_frames": 25, "audio_frames": 16000, **extra}


def write_dataset(root, media, subsets, listings=(), absent=()):
    """<subset>_metadata.json for each subset, its media under <subset>/ except `absent`; <subset>_files.txt."""
    for subset, entries in subsets.items():
        for item in entries:
            if isinstance(item, dict) and f"{subset}/{item['file']}" not in absent:
                (root / subset / item["file"]).parent.mkdir(parents=True, exist_ok=True)
                (root / subset / item["file"]).write_bytes(media)
        (root / f"{subset}_metadata.json").write_text(json.dumps(entries))
    for subset, files in dict(listings).items():
        (root / f"{subset}_files.txt").write_text("".join(f + "\n" for f in files) + "\n")
        for file in files:
            (root / subset / file).parent.mkdir(parents=True, exist_ok=True)
            (root / subset / file).write_bytes(media)


U1, U3 = "id00001/yt1/00001", "id00002/yt2/00003"
AV1M = {
    "train": [
        entry(f"{U1}/real.mp4", "real"),
        entry(f"{U1}/fake_video_fake_audio.mp4", "both_modified", [(0.5, 0.9)], "yourtts", f"{U1}/real.mp4"),
        entry(f"{U1}/real_video_fake_audio.mp4", "audio_modified", [(0.2, 0.4)], "vits", f"{U1}/real.mp4"),
        entry(f"{U3}/fake_video_real_audio.mp4", "visual_modified", [(0.1, 0.3), (0.6, 0.8)], "yourtts", f"{U3}/real.mp4"),
        entry(f"{U3}/real.mp4", "real"),
        entry(f"{U3}/fake_video_fake_audio.mp4", "both-modified", [(0.1, 0.2)], "vits", f"{U3}/real.mp4"),
        entry(f"{U3}/real_video_fake_audio.mp4", "real", [(0.5, 0.7)]),
        entry(f"{U1}/fake_video_fake_audio.mp4", "both_modified", [(0.5, 0.9)], "vits", f"{U1}/real.mp4"),
        entry(f"{U1}/real.mp4", "real"),
    ],
    "val": [
        entry(f"{U1}/real.mp4", "real"),
        entry("id00003/yt9/00001/fake_video_fake_audio.mp4", "both_modified", [(0.0, 0.4)], "vits",
              "id00003/yt9/00001/real.mp4"),
        entry("id00003/yt9/00002/fake_video_real_audio.mp4", "visual_modified", [], "yourtts",
              "id00003/yt9/00002/real.mp4"),
    ],
}


def test_av1m_layout_and_its_quirks(tmp_path, media):
    write_dataset(tmp_path, media, AV1M, listings={"test": ["id00009/yt0/00001/a.mp4", "id00009/yt0/00001/b.mp4"]},
                  absent={f"train/{U3}/fake_video_real_audio.mp4"})
    index = AV1MDataset().index(tmp_path)
    refs = {ref.clip_id: ref for ref in index.refs()}
    expected = {  # clip id: label, video_label, audio_label, category, method, identity, group, split, segments
        f"train/{U1}/real": (0, 0, 0, "real", "", "id00001", f"{U1}/real", "train", ()),
        f"train/{U1}/fake_video_fake_audio": (1, 1, 1, "both_modified", "yourtts", "id00001", f"{U1}/real", "train",
                                              ((0.5, 0.9),)),
        f"train/{U1}/real_video_fake_audio": (1, 0, 1, "audio_modified", "vits", "id00001", f"{U1}/real", "train",
                                              ((0.2, 0.4),)),
        f"train/{U3}/fake_video_real_audio": (1, 1, 0, "visual_modified", "yourtts", "id00002", f"{U3}/real", "train",
                                              ((0.1, 0.3), (0.6, 0.8))),
        f"train/{U3}/real": (0, 0, 0, "real", "", "id00002", f"{U3}/real", "train", ()),
        f"train/{U3}/real_video_fake_audio": (1, None, None, "real", "", "id00002", f"{U3}/real_video_fake_audio",
                                              "train", ((0.5, 0.7),)),
        f"val/{U1}/real": (0, 0, 0, "real", "", "id00001", f"{U1}/real", "val", ()),
        "val/id00003/yt9/00001/fake_video_fake_audio": (1, 1, 1, "both_modified", "vits", "id00003",
                                                        "id00003/yt9/00001/real", "val", ((0.0, 0.4),)),
        "val/id00003/yt9/00002/fake_video_real_audio": (0, None, None, "visual_modified", "yourtts", "id00003",
                                                        "id00003/yt9/00002/real", "val", ()),
    }
    assert sorted(refs) == sorted(expected)
    for clip_id, values in expected.items():
        ref = refs[clip_id]
        assert (ref.label, ref.video_label, ref.audio_label, ref.category, ref.method, ref.identity, ref.group,
                ref.split, ref.fake_segments) == values, clip_id
        assert ref.dataset == "av1m" and ref.audio_path is None
        assert ref.path == tmp_path / (clip_id + ".mp4")
    assert refs[f"train/{U3}/fake_video_real_audio"].meta == {
        "audio_fake_segments": [], "visual_fake_segments": [[0.1, 0.3], [0.6, 0.8]], "release": "AV1M",
        "file": f"{U3}/fake_video_real_audio.mp4"}
    assert index.problems == [
        f"train_metadata.json[5]: {U3}/fake_video_fake_audio.mp4: unknown modify_type 'both-modified'; left out",
        f"train_metadata.json[7]: {U1}/fake_video_fake_audio.mp4: listed again (first at [1]) with conflicting "
        "method 'vits' (kept 'yourtts'); kept the first",
        f"train_metadata.json[8]: {U1}/real.mp4: listed again (first at [0]) with same label, category, method, "
        "fake_segments; kept the first",
        f"train_metadata.json[6]: {U3}/real_video_fake_audio.mp4: modify_type 'real' but fake_segments [[0.5, 0.7]]; "
        "kept as fake, video_label and audio_label unknown",
        f"train_metadata.json[3]: train/{U3}/fake_video_real_audio.mp4: not found under {tmp_path}; "
        "kept, runs will count it as failed",
        "val_metadata.json[2]: id00003/yt9/00002/fake_video_real_audio.mp4: modify_type 'visual_modified' but "
        "fake_segments []; kept as real, video_label and audio_label unknown",
        "test_files.txt: 2 test clips have no published labels (no test_metadata.json); left out of the index",
    ]
    # train and val share a speaker and a source utterance: the audit sees it through identity and group
    assert refs[f"train/{U1}/fake_video_fake_audio"].group == refs[f"val/{U1}/real"].group
    saved = ClipIndex.load(index.save(tmp_path / "av1m.parquet"))
    assert saved.fingerprint() == index.fingerprint()


def plus_entry(file, modify_type, segments=(), audio_model="", video_model="", original=None):
    return entry(file, modify_type, segments, audio_model, original, video_model=video_model)


def test_av1m_plus_plus_corpus_prefix_video_model_and_two_test_sets(tmp_path, media):
    vox, lrs = "vox_celeb_2/id00001/yt1/00001", "lrs3/id00001/talk/00002"
    subsets = {
        "train": [
            plus_entry(f"{vox}/real.mp4", "real"),
            plus_entry(f"{vox}/fake_video_fake_audio.mp4", "both_modified", [(0.2, 0.6)], "f5tts", "latentsync",
                       f"{vox}/real.mp4"),
            "not an object",
            plus_entry(f"{lrs}/fake_video_real_audio.mp4", "visual_modified", [(0.1, 0.5)], "f5tts", "diff2lip",
                       f"{lrs}/real.mp4"),
            plus_entry(f"{lrs}/real_video_fake_audio.mp4", "audio_modified", [[0.1]], "f5tts", "", f"{lrs}/real.mp4"),
        ],
        "val": [plus_entry(f"{lrs}/real.mp4", "real"), plus_entry(f"{lrs}/real_video_fake_audio.mp4", "audio_modified",
                                                                  [(0.3, 0.4)], "xtts", "", f"{lrs}/real.mp4")],
    }
    write_dataset(tmp_path, media, subsets, listings={"testA": ["lrs3/a/b/c/real.mp4"], "testB": ["x.mp4", "y.mp4"]},
                  absent={f"val/{lrs}/real.mp4", f"val/{lrs}/real_video_fake_audio.mp4"})
    assert not (tmp_path / "val").exists()  # only train and the test listings were downloaded
    index = AV1MDataset().index(tmp_path)
    rows = {ref.clip_id: (ref.label, ref.category, ref.method, ref.identity, ref.split, ref.meta["release"])
            for ref in index.refs()}
    assert rows == {
        f"train/{vox}/real": (0, "real", "", "vox_celeb_2/id00001", "train", "AV1M++"),
        f"train/{vox}/fake_video_fake_audio": (1, "both_modified", "f5tts+latentsync", "vox_celeb_2/id00001", "train",
                                               "AV1M++"),
        f"train/{lrs}/fake_video_real_audio": (1, "visual_modified", "f5tts+diff2lip", "lrs3/id00001", "train",
                                               "AV1M++"),
        f"val/{lrs}/real": (0, "real", "", "lrs3/id00001", "val", "AV1M++"),
        f"val/{lrs}/real_video_fake_audio": (1, "audio_modified", "xtts", "lrs3/id00001", "val", "AV1M++"),
    }
    assert index.problems == [
        "train_metadata.json[2]: (no file): no file name; left out",
        f"train_metadata.json[4]: {lrs}/real_video_fake_audio.mp4: fake_segments is not a list of [start_s, end_s]; "
        "left out",
        f"val_metadata.json: folder val/ not found under {tmp_path}; its 2 clips are kept, runs will count them as failed",
        "testA_files.txt: 1 testA clips have no published labels (no testA_metadata.json); left out of the index",
        "testB_files.txt: 2 testB clips have no published labels (no testB_metadata.json); left out of the index",
    ]

    pool = AV1MPlusDataset().unlabeled(tmp_path, ("testA", "testB"))
    assert [(r.clip_id, r.label, r.dataset, r.split, r.path) for r in pool] == [
        ("testA/lrs3/a/b/c/real", UNLABELED, "av1m_pp", "testA", tmp_path / "testA/lrs3/a/b/c/real.mp4"),
        ("testB/x", UNLABELED, "av1m_pp", "testB", tmp_path / "testB/x.mp4"),
        ("testB/y", UNLABELED, "av1m_pp", "testB", tmp_path / "testB/y.mp4")]
    assert AV1MPlusDataset().index(tmp_path).datasets == ["av1m_pp"] and AV1MPlusDataset.display_name == "AV1M++"
    with pytest.raises(ValueError, match="not a test subset"):
        AV1MPlusDataset().unlabeled(tmp_path, ("train",))


def test_a_test_subset_with_metadata_is_indexed_as_test(tmp_path, media):
    write_dataset(tmp_path, media, {"test": [entry("id00005/v/00001/real.mp4", "real")]},
                  listings={"test": ["id00005/v/00001/real.mp4"]})
    index = AV1MDataset().index(tmp_path)
    assert [(ref.clip_id, ref.split) for ref in index.refs()] == [("test/id00005/v/00001/real", "test")]
    assert index.problems == []
    with pytest.raises(ValueError, match="publishes test's labels"):
        AV1MDataset().unlabeled(tmp_path, ("test",))  # labelled: a split, not an unlabelled pool
    with pytest.raises(FileNotFoundError, match="testA_files.txt"):
        AV1MDataset().unlabeled(tmp_path, ("testA",))


def test_missing_or_malformed_metadata_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "test_files.txt").write_text("a.mp4\n")
    with pytest.raises(FileNotFoundError, match="train_metadata.json"):
        AV1MDataset().index(tmp_path)
    (tmp_path / "val_metadata.json").write_text('{"file": "a.mp4"}')
    with pytest.raises(ValueError, match="val_metadata.json: expected a JSON list of objects, found a dict"):
        AV1MDataset().index(tmp_path)
