"""Frame arrays (.npy, IDForge's frames_ndarray.npy) as video: frames as stored, validated, no audio stream."""

import numpy as np
import pytest

from avbench import media
from avbench.clips import ClipError


def frames(n: int = 16, height: int = 24, width: int = 32) -> np.ndarray:
    """Frames whose red channel is their index, so the test can see which ones came back."""
    out = np.zeros((n, height, width, 3), dtype=np.uint8)
    out[..., 0] = np.arange(n)[:, None, None]
    return out


def test_frames_come_back_as_stored_whatever_fps_and_max_seconds(tmp_path):
    path = tmp_path / "frames_ndarray.npy"
    np.save(path, frames())
    for fps, max_seconds in ((25, None), (5, None), (25, 0.1)):
        decoded = media.decode_video(path, fps, max_seconds)
        assert decoded.dtype == np.uint8 and decoded.shape == (16, 24, 32, 3)
        assert decoded[:, 0, 0, 0].tolist() == list(range(16))
    resized = media.decode_video(path, 25, size=16)
    assert resized.shape == (16, 16, 16, 3) and resized[:, 8, 8, 0].tolist() == list(range(16))


def test_probe_tells_the_shape_and_no_audio(tmp_path):
    path = tmp_path / "a.NPY"  # the suffix is matched in any case
    with open(path, "wb") as fh:  # np.save(name) would append ".npy"
        np.save(fh, frames(4))
    info = media.probe(path)
    assert info == media.MediaInfo(has_video=True, has_audio=False, fps=None, n_frames=4, duration=None,
                                   width=32, height=24)


@pytest.mark.parametrize("content, expected", [
    (np.zeros((16, 8, 8), np.uint8), r"holds a uint8 array of shape \(16, 8, 8\); expected RGB frames"),
    (np.zeros((16, 8, 8, 4), np.uint8), r"shape \(16, 8, 8, 4\)"),
    (np.zeros((16, 8, 8, 3), np.float32), r"holds a float32 array"),
    (np.zeros((0, 8, 8, 3), np.uint8), r"shape \(0, 8, 8, 3\)"),
    (b"not an array at all", "not readable as a numpy frame array"),
    ("truncated", "not readable as a numpy frame array"),
    ("npz", "an .npz archive, not one numpy frame array"),
])
def test_a_bad_array_is_corrupt_media_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "frames_ndarray.npy"
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif content == "truncated":
        np.save(path, frames())
        path.write_bytes(path.read_bytes()[:300])
    elif content == "npz":
        with open(path, "wb") as fh:
            np.savez(fh, frames=frames())
    else:
        path.write_bytes(content)
    for decode in (lambda p: media.decode_video(p, 25), media.probe):
        with pytest.raises(ClipError, match=expected) as info:
            decode(path)
        assert info.value.reason == "corrupt_media" and str(path) in info.value.message


def test_missing_or_empty_array_and_no_audio_stream(tmp_path):
    path = tmp_path / "frames_ndarray.npy"
    with pytest.raises(ClipError) as info:
        media.decode_video(path, 25)
    assert info.value.reason == "missing_file"
    path.write_bytes(b"")
    with pytest.raises(ClipError) as info:
        media.decode_video(path, 25)
    assert info.value.reason == "empty_file"
    np.save(path, frames())
    with pytest.raises(ClipError, match="a frame array has no audio stream") as info:
        media.decode_audio(path)
    assert info.value.reason == "no_audio_stream" and str(path) in info.value.message


def test_a_silent_track_for_stored_frames_lasts_as_long_as_the_clips_audio_file(tmp_path):
    """16 stored frames say nothing of the shot's length (IDForge's are spread over 5-7 s): a
    missing-audio protocol's silent track takes the audio file's duration."""
    from avbench.clips import ClipRef
    from avbench.detector import InputSpec
    from avbench.encode import write_media
    from avbench.loader import MediaLoader
    from avbench.testing import talking_face

    face = talking_face(seconds=16 / 25, size=96)
    np.save(tmp_path / "frames_ndarray.npy", face.frames)
    write_media(tmp_path / "shot.wav", audio=np.zeros(3 * 16000, np.float32))
    ref = ClipRef("shot", "idforge", tmp_path / "frames_ndarray.npy", 0, audio_path=tmp_path / "shot.wav")
    clip = MediaLoader().load(ref, InputSpec(fps=25.0), remove_audio=True)
    assert len(clip.frames) == 16 and len(clip.audio) == pytest.approx(3 * 16000, abs=400)
