"""Decoding: reason codes for bad files, timestamp-based frame sampling, decoders agreeing, audio."""

import math
from fractions import Fraction

import numpy as np
import pytest

from avbench import media
from avbench.clips import ClipError
from avbench.testing import sample_media, talking_face, vfr_times, write_media


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return sample_media(tmp_path_factory.mktemp("media"))


def numbered_frames(n: int, size: int = 64) -> np.ndarray:
    """Flat frames whose colour encodes their index (red: 8 x (index % 32), green: 64 x (index // 32)),
    so the picture says which source frame a decoded frame shows; up to 128 frames."""
    index = np.arange(n)
    colours = np.stack([index % 32 * 8, index // 32 * 64, np.zeros(n, dtype=int)], axis=1).astype(np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).copy()


def shown_index(frames: np.ndarray) -> np.ndarray:
    red, green = frames[..., :2].mean(axis=(1, 2)).T
    return np.round(red / 8).astype(int) + 32 * np.round(green / 64).astype(int)


DECODERS = {
    "probe": media.probe,
    "video": lambda p: media.decode_video(p, 25),
    "video_pyav": lambda p: media.decode_video(p, 25, backend="pyav"),
    "audio": media.decode_audio,
}


@pytest.mark.parametrize("kind, decoders, reason", [
    ("missing", ["probe", "video", "audio"], "missing_file"),
    ("empty", ["probe", "video", "audio"], "empty_file"),
    ("random", ["probe", "video", "audio"], "corrupt_media"),
    ("truncated", ["probe", "video", "video_pyav", "audio"], "corrupt_media"),
    ("no_frames", ["video", "video_pyav", "audio"], "no_frames"),
    ("audio_only", ["video", "video_pyav"], "no_video_stream"),
    ("speech_wav", ["video"], "no_video_stream"),
    ("video_only", ["audio"], "no_audio_stream"),
])
def test_bad_input_gives_reason_and_names_file(corpus, tmp_path, kind, decoders, reason):
    path = tmp_path / "missing.mp4" if kind == "missing" else corpus[kind]
    for name in decoders:
        with pytest.raises(ClipError) as info:
            DECODERS[name](path)
        assert info.value.reason == reason, name
        assert str(path) in info.value.message, name


def test_probe_reports_streams(corpus):
    info = media.probe(corpus["talking"])
    assert (info.has_video, info.has_audio, info.fps, info.n_frames) == (True, True, 25.0, 25)
    assert (info.width, info.height) == (160, 160)
    assert info.duration == pytest.approx(1.0, abs=0.01)
    audio = media.probe(corpus["speech_wav"])
    assert (audio.has_video, audio.has_audio, audio.fps, audio.width) == (False, True, None, None)


def test_truncated_file_decodes_its_prefix(corpus):
    full = media.decode_video(corpus["faststart"], 25)
    for backend in ("auto", "pyav"):
        prefix = media.decode_video(corpus["truncated_prefix"], 25, backend=backend)
        assert 0 < len(prefix) < len(full)
        assert np.array_equal(prefix[:5], full[:5])
    assert 0 < len(media.decode_audio(corpus["truncated_prefix"])) < len(media.decode_audio(corpus["faststart"]))


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(25, 2), Fraction(50)])
def test_odd_source_rates_resample_by_timestamp(tmp_path, rate):
    n = math.ceil(2 * rate)  # two seconds
    path = write_media(tmp_path / "rate.mp4", numbered_frames(n), fps=rate)
    frames = media.decode_video(path, 25)
    assert len(frames) == 50
    expected = np.floor(np.arange(50) / 25 * float(rate) + 1e-6).astype(int)
    assert np.array_equal(shown_index(frames), expected)


def test_variable_frame_rate_takes_frame_on_screen(tmp_path):
    times = vfr_times(2.0)
    path = write_media(tmp_path / "vfr.mp4", numbered_frames(len(times)), times=times)
    for backend in ("auto", "pyav"):
        frames = media.decode_video(path, 25, backend=backend)
        assert len(frames) == 50
        expected = np.searchsorted(times, np.arange(50) / 25 + 1e-6, side="right") - 1
        assert np.array_equal(shown_index(frames), expected)


@pytest.mark.parametrize("kind", ["talking", "vfr"])
def test_decord_and_pyav_agree(corpus, kind):
    pytest.importorskip("decord")
    for max_seconds, size in [(None, None), (0.5, 64)]:
        by_decord = media.decode_video(corpus[kind], 25, max_seconds, size, backend="decord")
        by_pyav = media.decode_video(corpus[kind], 25, max_seconds, size, backend="pyav")
        assert by_decord.shape == by_pyav.shape
        assert np.array_equal(by_decord, by_pyav)


def test_max_seconds_and_size(corpus):
    frames = media.decode_video(corpus["talking"], 25, max_seconds=0.5, size=48)
    assert frames.shape == (12, 48, 48, 3) and frames.dtype == np.uint8
    assert len(media.decode_audio(corpus["talking"], max_seconds=0.5)) == 8000


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi", ".mov", ".webm"])
def test_containers_round_trip(tmp_path, suffix):
    face = talking_face(seconds=1.0, size=128)
    path = write_media(tmp_path / f"clip{suffix}", face.frames, face.fps, face.audio, face.sample_rate)
    frames = media.decode_video(path, 25)
    assert frames.shape == face.frames.shape
    assert np.abs(frames.astype(int) - face.frames).mean() < 8  # lossy codecs, same pictures
    audio = media.decode_audio(path)
    assert audio.dtype == np.float32 and abs(len(audio) - len(face.audio)) <= 1024
    n = min(len(audio), len(face.audio))
    assert np.corrcoef(audio[:n], face.audio[:n])[0, 1] > 0.98


def test_audio_from_wav_and_container_match(corpus):
    from_wav = media.decode_audio(corpus["speech_wav"])
    from_mp4 = media.decode_audio(corpus["talking"])
    assert len(from_wav) == len(from_mp4) == 16000
    assert np.corrcoef(from_wav, from_mp4)[0, 1] > 0.99


def test_audio_is_resampled_and_channels_averaged(tmp_path):
    import wave

    rate = 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    stereo = np.stack([tone, np.zeros_like(tone)], axis=1)  # left: tone, right: silence
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(2)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes((stereo * 32767).astype("<i2").tobytes())
    audio = media.decode_audio(path, sample_rate=16000)
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(len(audio) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16000 / len(audio) == pytest.approx(440, abs=2)
    assert np.abs(audio).max() == pytest.approx(0.25, abs=0.01)  # mean of the channels


def test_the_same_frames_encode_to_the_same_bytes(tmp_path):
    """The demo corpus and its golden table depend on it: x264's macroblock tree broke it (mbtree=0)."""
    face = talking_face(seconds=2.0)
    noisy = np.clip(face.frames + np.random.default_rng(0).integers(-3, 4, face.frames.shape), 0, 255).astype(np.uint8)
    files = [write_media(tmp_path / f"take{k}.mp4", noisy, face.fps, face.audio, face.sample_rate) for k in range(4)]
    assert len({path.read_bytes() for path in files}) == 1
