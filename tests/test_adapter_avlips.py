"""The `avlips` adapter: label folders 0_real/ and 1_fake/, audio in wav/ beside them."""

import pytest

from avbench.datasets.avlips import AVLipsDataset
from avbench.encode import write_media
from avbench.testing import talking_face


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The bytes of one real 1 s clip and of its audio as wav, copied to every path of a fixture."""
    face = talking_face(seconds=1.0, size=128)
    folder = tmp_path_factory.mktemp("media")
    video = write_media(folder / "clip.mp4", face.frames, face.fps, face.audio)
    wav = write_media(folder / "clip.wav", audio=face.audio)
    return video.read_bytes(), wav.read_bytes()


def put(root, data, *paths):
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)


def test_label_folders_and_wav_files(tmp_path, media):
    video, wav = media
    put(tmp_path, video, "0_real/0.mp4", "0_real/1.mp4", "1_fake/0.mp4", "1_fake/1.mp4", "1_fake/2.mp4",
        "1_fake/._2.mp4")
    put(tmp_path, wav, "wav/0_real/0.wav", "wav/0_real/1.wav", "wav/1_fake/0.wav", "wav/1_fake/2.wav",
        "wav/1_fake/7.wav")
    put(tmp_path, b"thumbs", "0_real/Thumbs.db")
    put(tmp_path, video, "samples/demo.mp4")
    index = AVLipsDataset().index(tmp_path)
    refs = {ref.clip_id: ref for ref in index.refs()}
    assert {k: (r.label, r.video_label, r.audio_label, r.category) for k, r in refs.items()} == {
        "0_real/0": (0, 0, 0, "real"), "0_real/1": (0, 0, 0, "real"),
        "1_fake/0": (1, 1, 0, "lipsync"), "1_fake/1": (1, 1, 0, "lipsync"), "1_fake/2": (1, 1, 0, "lipsync"),
    }
    for ref in refs.values():
        assert (ref.dataset, ref.method, ref.identity, ref.group, ref.split) == ("avlips", "", "", "", "")
        assert ref.path == tmp_path / f"{ref.clip_id}.mp4" and ref.path.is_file()
    assert refs["1_fake/2"].audio_path == tmp_path / "wav/1_fake/2.wav"
    assert refs["0_real/1"].audio_path == tmp_path / "wav/0_real/1.wav"
    assert refs["1_fake/1"].audio_path is None  # its wav is missing: audio comes from the mp4
    assert index.problems == [
        "0_real/Thumbs.db: not a video file; not indexed",
        "1_fake/1.mp4: no wav/1_fake/1.wav; kept, its audio is read from the video file",
        "wav/1_fake/7.wav: no video of that name in 0_real/ or 1_fake/; not indexed",
        f"{tmp_path}: 1 video file(s) outside 0_real/ and 1_fake/, not indexed: samples/demo.mp4",
    ]


def test_two_videos_with_one_name_keep_the_first(tmp_path, media):
    put(tmp_path, media[0], "0_real/3.avi", "0_real/3.mp4")
    put(tmp_path, media[1], "wav/0_real/3.wav")
    index = AVLipsDataset().index(tmp_path)
    assert [ref.path for ref in index.refs()] == [tmp_path / "0_real/3.avi"]
    assert index.problems == ["0_real/3.mp4: same clip id '0_real/3' as 0_real/3.avi; left out"]


def test_a_root_without_label_folders_is_an_error(tmp_path):
    put(tmp_path, b"x", "real/0.mp4")
    with pytest.raises(FileNotFoundError, match="neither 0_real/ nor 1_fake/"):
        AVLipsDataset().index(tmp_path)
