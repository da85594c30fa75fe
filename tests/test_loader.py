"""Face tracks and crops, the content-addressed cache, the clip loader and ClipSet."""

import numpy as np
import pytest

from avbench import faces, media
from avbench.cache import MediaCache, default_cache_dir
from avbench.clips import Clip, ClipError, ClipRef
from avbench.detector import InputSpec
from avbench.loader import ClipSet, MediaLoader
from avbench.testing import Counter, sample_media, talking_face, write_media

MOUTH_COLOUR = np.array([70, 20, 25])  # what testing.talking_face paints inside the open mouth


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return sample_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def face():
    return talking_face(seconds=1.0, size=160)


def ref(path, clip_id="c", label=0, audio_path=None) -> ClipRef:
    return ClipRef(clip_id=clip_id, dataset="test", path=path, label=label, audio_path=audio_path)


def painted_mouth_centre(crop: np.ndarray) -> np.ndarray:
    """x, y centroid of the pixels that look like the painted mouth opening."""
    mask = np.abs(crop.astype(int) - MOUTH_COLOUR).max(axis=-1) < 30
    assert mask.sum() > 300
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def synthetic_landmarks(mouth_xy, jaw_width=50.0, mouth_height=6.0) -> np.ndarray:
    """68 points: jaw corners `jaw_width` apart, the mouth points around `mouth_xy`, the rest on the mouth."""
    points = np.tile(np.asarray(mouth_xy, dtype=np.float32), (68, 1))
    points[0, 0] -= jaw_width / 2
    points[16, 0] += jaw_width / 2
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    points[faces.MOUTH] += np.stack([12 * np.cos(angles), mouth_height / 2 * np.sin(angles)], axis=1)
    return points


# -- faces ---------------------------------------------------------------------------------------

def test_mouth_crop_is_centred_and_sized_by_the_jaw():
    frame = np.zeros((100, 120, 3), dtype=np.uint8)
    frame[39:42, 29:32] = 255  # a white dot at x=30, y=40
    closed = synthetic_landmarks((30, 40), mouth_height=4)
    opened = synthetic_landmarks((30, 40), mouth_height=20)
    crops = faces.crop_mouths(np.stack([frame, frame]), np.stack([closed, opened]), 30, scale=0.6)
    assert crops.shape == (2, 30, 30, 3)
    bright = np.argwhere(crops[0].max(axis=-1) > 128)
    assert np.allclose(bright.mean(axis=0), 14.5, atol=1.0)  # the dot sits in the middle
    assert np.array_equal(crops[0], crops[1])  # opening the mouth does not zoom the crop


def test_moving_average_keeps_steady_motion_and_damps_jitter():
    steady = np.stack([np.arange(9.0), 2 * np.arange(9.0)], axis=1)
    assert np.allclose(faces.moving_average(steady, 5), steady)
    jitter = np.resize([1.0, -1.0], 9)
    assert np.abs(faces.moving_average(jitter, 5)[2:-2]).max() <= 0.2


def test_crop_past_the_border_is_padded_not_shifted():
    frame = np.full((50, 50, 3), 200, dtype=np.uint8)
    landmarks = synthetic_landmarks((5, 5), jaw_width=40)
    crop = faces.crop_mouths(frame[None], landmarks[None], 24, scale=1.0)[0]
    assert crop[:6, :6].max() == 0  # outside the frame: black
    assert crop[14:, 14:].min() == 200  # inside: the frame


def test_face_crop_covers_the_landmark_box():
    frame = np.zeros((200, 200, 3), dtype=np.uint8)
    landmarks = synthetic_landmarks((100, 100), jaw_width=60)
    frame[70:131, 70:131] = 255  # exactly the landmark box: 60 x 60 around the centre
    crop = faces.crop_faces(frame[None], landmarks[None], 78, scale=1.3)[0]
    bright = np.argwhere(crop.max(axis=-1) > 128)
    assert np.allclose(bright.min(axis=0), 9, atol=1) and np.allclose(bright.max(axis=0), 69, atol=1)


# -- cache ---------------------------------------------------------------------------------------

def test_cache_round_trip_and_corrupt_entry(tmp_path):
    cache = MediaCache(tmp_path)
    arrays = {"frames": np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3), "audio": np.ones(5, np.float32)}
    assert cache.get("ab" * 32) is None
    cache.put("ab" * 32, arrays)
    got = cache.get("ab" * 32)
    assert got.keys() == arrays.keys() and all(np.array_equal(got[k], arrays[k]) for k in arrays)
    cache.path("ab" * 32).write_bytes(b"not an npz")
    assert cache.get("ab" * 32) is None
    assert not cache.path("ab" * 32).exists()


def test_cache_key_follows_content_and_hashes_once(tmp_path, monkeypatch):
    from avbench import cache as cache_module

    video = tmp_path / "v.bin"
    video.write_bytes(b"one")
    hasher = Counter(cache_module.sha256_file)
    monkeypatch.setattr(cache_module, "sha256_file", hasher)
    cache = MediaCache(tmp_path / "cache")
    key = cache.key(video, None, {"fps": 25})
    assert cache.key(video, None, {"fps": 25}) == key
    assert MediaCache(tmp_path / "cache").key(video, None, {"fps": 25}) == key  # memo survives
    assert hasher.calls == 1
    assert cache.key(video, None, {"fps": 30}) != key
    assert cache.key(video, video, {"fps": 25}) != key
    video.write_bytes(b"two")
    assert cache.key(video, None, {"fps": 25}) != key
    assert hasher.calls == 2


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AVBENCH_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path and MediaCache().root == tmp_path
    monkeypatch.delenv("AVBENCH_CACHE_DIR")
    assert MediaCache().root.parts[-2:] == (".cache", "avbench")


# -- loader --------------------------------------------------------------------------------------

SPEC = InputSpec(fps=25.0, audio=True, frame_size=64, face_size=112, mouth_size=96)


def test_load_gives_what_the_spec_asks(corpus, face):
    clip = MediaLoader().load(ref(corpus["talking"]), SPEC)
    assert clip.fps == 25.0 and clip.frames.shape == (25, 64, 64, 3)
    assert clip.faces.shape == (25, 112, 112, 3) and clip.mouths.shape == (25, 96, 96, 3)
    assert clip.landmarks.shape == (25, 68, 2) and clip.boxes.shape == (25, 4)
    assert clip.audio.dtype == np.float32 and clip.audio.shape == (16000,)
    # landmarks are in the coordinates of the resized frames
    mouth = clip.landmarks[:, faces.MOUTH].mean(axis=1)
    assert np.abs(mouth - face.mouth_centres * 64 / 160).max() < 1.0
    # the painted mouth opening is in the middle of the mouth crop
    for t in (1, 8, 14, 20):  # frames with the mouth wide open
        assert np.abs(painted_mouth_centre(clip.mouths[t]) - 47.5).max() < 3


def test_load_only_what_is_needed(corpus):
    clip = MediaLoader().load(ref(corpus["talking"]), InputSpec(fps=None, audio=True))
    assert clip.frames is None and clip.faces is None and clip.fps is None and clip.audio.shape == (16000,)
    clip = MediaLoader().load(ref(corpus["talking"]), InputSpec(fps=10.0, audio=False, max_seconds=0.5))
    assert clip.frames.shape == (5, 160, 160, 3) and clip.audio is None and clip.landmarks is None


def test_crops_without_frames(corpus, tmp_path):
    loader = MediaLoader(MediaCache(tmp_path))
    r, spec = ref(corpus["talking"]), InputSpec(fps=25.0, mouth_size=64, frames=False)
    clip = loader.load(r, spec)
    assert clip.frames is None and clip.mouths.shape == (25, 64, 64, 3) and clip.landmarks.shape == (25, 68, 2)
    assert set(loader.cache.get(loader.media_key(r, spec))) == {"audio", "mouths", "landmarks", "boxes"}
    assert loader.media_key(r, spec) != loader.media_key(r, InputSpec(fps=25.0, mouth_size=64))
    # a missing-audio protocol still makes a silent track as long as the video
    assert len(loader.load(r, spec, remove_audio=True).audio) == 16000
    with pytest.raises(ValueError, match="frames=False"):
        InputSpec(fps=25.0, frames=False)


def test_separate_audio_file(corpus):
    clip = MediaLoader().load(ref(corpus["video_only"], audio_path=corpus["speech_wav"]), InputSpec())
    assert clip.audio.shape == (16000,) and clip.frames.shape[0] == 25


@pytest.mark.parametrize("kind, spec, reason", [
    ("audio_only", InputSpec(fps=25.0, audio=False), "no_video_stream"),
    ("video_only", InputSpec(fps=25.0, audio=True), "no_audio_stream"),
    ("random", InputSpec(), "corrupt_media"),
    ("empty", InputSpec(), "empty_file"),
])
def test_load_errors(corpus, kind, spec, reason):
    with pytest.raises(ClipError) as info:
        MediaLoader().load(ref(corpus[kind]), spec)
    assert info.value.reason == reason and str(corpus[kind]) in info.value.message


def test_no_face_names_the_file(tmp_path):
    path = write_media(tmp_path / "blank.mp4", np.full((10, 96, 96, 3), 128, np.uint8), 25)
    with pytest.raises(ClipError) as info:
        MediaLoader().load(ref(path), InputSpec(audio=False, mouth_size=64))
    assert info.value.reason == "no_face" and str(path) in info.value.message


def test_a_detector_may_take_centre_crops_where_no_face_is_found_and_the_clip_declares_it(tmp_path):
    frames = np.zeros((10, 96, 128, 3), np.uint8)
    frames[:, :, 16:112] = 200  # the centre square is bright, the sides dark
    path = write_media(tmp_path / "blank.mp4", frames, 25)
    spec = InputSpec(audio=False, face_size=48, frames=False, no_face="centre_crop")
    loader = MediaLoader(MediaCache(tmp_path / "cache"))
    for _ in range(2):  # decoded, then from the cache: the fallback travels with the entry
        clip = loader.load(ref(path), spec)
        assert clip.fallbacks == ["no_face_centre_crop"] and clip.landmarks is None
        assert clip.faces.shape == (10, 48, 48, 3) and clip.faces.min() > 150
    assert loader.media_key(ref(path), spec) != loader.media_key(ref(path), InputSpec(audio=False, face_size=48,
                                                                                      frames=False))
    with pytest.raises(ValueError, match="no_face"):
        InputSpec(audio=False, mouth_size=48, no_face="centre_crop")


def test_a_dataset_without_audio_gives_a_clip_without_audio_and_declares_it(corpus, monkeypatch):
    from avbench.clips import AUDIO_ABSENT, NO_AUDIO_TRACK

    decode_audio = Counter(media.decode_audio)
    monkeypatch.setattr(media, "decode_audio", decode_audio)
    absent = ClipRef(clip_id="c", dataset="test", path=corpus["video_only"], label=0, meta={"audio": AUDIO_ABSENT})
    clip = MediaLoader().load(absent, InputSpec(fps=25.0, max_seconds=0.5))
    assert clip.audio_removed and clip.fallbacks == [NO_AUDIO_TRACK] and not clip.audio.any()
    assert MediaLoader().load(absent, InputSpec(audio_optional=True)).audio is None
    assert MediaLoader().load(absent, InputSpec(audio=False)).fallbacks == []  # no audio asked, none missed
    assert decode_audio.calls == 0


def test_missing_audio_file(corpus, tmp_path):
    with pytest.raises(ClipError) as info:
        MediaLoader().load(ref(corpus["video_only"], audio_path=tmp_path / "gone.wav"), InputSpec())
    assert info.value.reason == "missing_file" and "gone.wav" in info.value.message


def test_remove_audio(corpus, monkeypatch):
    decode_audio = Counter(media.decode_audio)
    monkeypatch.setattr(media, "decode_audio", decode_audio)
    loader = MediaLoader()
    # a silent video is fine once the protocol removes the audio anyway
    silent = loader.load(ref(corpus["video_only"]), InputSpec(fps=25.0, max_seconds=0.5), remove_audio=True)
    assert silent.audio_removed and silent.audio.dtype == np.float32
    assert silent.audio.shape == (7680,) and not silent.audio.any()  # as long as the 12 frames
    optional = loader.load(ref(corpus["talking"]), InputSpec(audio_optional=True), remove_audio=True)
    assert optional.audio_removed and optional.audio is None and optional.frames.shape[0] == 25
    audio_only = loader.load(ref(corpus["talking"]), InputSpec(fps=None), remove_audio=True)
    assert audio_only.audio.shape == (16000,) and not audio_only.audio.any()
    assert decode_audio.calls == 0
    assert not loader.load(ref(corpus["talking"]), InputSpec(fps=None)).audio_removed


def test_second_load_comes_from_cache(corpus, tmp_path, monkeypatch):
    decode_video, decode_audio = Counter(media.decode_video), Counter(media.decode_audio)
    monkeypatch.setattr(media, "decode_video", decode_video)
    monkeypatch.setattr(media, "decode_audio", decode_audio)
    first = MediaLoader(MediaCache(tmp_path)).load(ref(corpus["talking"]), SPEC)
    again = MediaLoader(MediaCache(tmp_path)).load(ref(corpus["talking"]), SPEC)
    assert (decode_video.calls, decode_audio.calls) == (1, 1)
    for name in ("frames", "audio", "faces", "mouths", "landmarks", "boxes"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    MediaLoader(MediaCache(tmp_path)).load(ref(corpus["talking"]), InputSpec(fps=25.0, mouth_size=96))
    assert decode_video.calls == 2  # another spec is another entry


def test_failures_are_cached(tmp_path, monkeypatch):
    path = write_media(tmp_path / "blank.mp4", np.full((10, 96, 96, 3), 128, np.uint8), 25)
    detect = Counter(faces.largest_face)
    monkeypatch.setattr(faces, "largest_face", detect)
    loader = MediaLoader(MediaCache(tmp_path / "cache"))
    spec = InputSpec(audio=False, mouth_size=64)
    for _ in range(2):
        with pytest.raises(ClipError) as info:
            loader.load(ref(path), spec)
        assert info.value.reason == "no_face" and str(path) in info.value.message
    assert detect.calls == 3  # keyframes 0, 5 and 9, searched once


def test_clipset_skips_and_records_failures(corpus):
    refs = [ref(corpus["talking"], "good", 0), ref(corpus["random"], "broken", 1),
            ref(corpus["talking_mkv"], "also_good", 1), ref(corpus["video_only"], "silent", 0)]
    clips = ClipSet(refs, MediaLoader(), InputSpec(fps=25.0, max_seconds=0.2))
    assert len(clips) == 4 and clips.labels.dtype == np.int64 and clips.labels.tolist() == [0, 1, 1, 0]
    assert [c.clip_id for c in clips] == ["good", "also_good"]
    assert {k: e.reason for k, e in clips.failures.items()} == {"broken": "corrupt_media", "silent": "no_audio_stream"}
    results = list(clips.results())
    assert [r.clip_id for r, _ in results] == ["good", "broken", "also_good", "silent"]
    assert [type(x) for _, x in results] == [Clip, ClipError, Clip, ClipError]


def test_frame_crop_keeps_the_centre_square_and_moves_the_landmarks(corpus, face):
    squeezed = MediaLoader().load(ref(corpus["talking"]), InputSpec(fps=25.0, audio=False, frame_size=64, face_size=32))
    frames = np.zeros((2, 100, 160, 3), np.uint8)
    frames[:, :, 30:130] = 200  # the centre square is bright, the sides dark
    assert (media.resize_frames(frames, 50, crop=True) == 200).all()
    assert media.resize_frames(frames, 50).mean() < 200
    # the talking face is square, so cropping changes nothing but the cache key
    cropped = MediaLoader().load(ref(corpus["talking"]), InputSpec(fps=25.0, audio=False, frame_size=64, face_size=32,
                                                                  frame_crop=True))
    np.testing.assert_allclose(cropped.landmarks, squeezed.landmarks, atol=1e-4)


def test_media_key_follows_spec_and_audio_removal(corpus, tmp_path):
    loader = MediaLoader(MediaCache(tmp_path))
    r, spec = ref(corpus["talking"]), InputSpec(fps=25.0, frame_size=64)
    key = loader.media_key(r, spec)
    assert key == loader.media_key(r, spec)
    assert key != loader.media_key(r, spec, remove_audio=True)
    assert key != loader.media_key(r, InputSpec(fps=25.0, frame_size=64, frame_crop=True))
    assert MediaLoader().media_key(r, spec) is None
    loader.load(r, spec)
    assert loader.cache.get(key) is not None  # the key is the one the decoded media is stored under


def test_clipset_hands_over_media_less_clips_when_the_detector_says_so(corpus, monkeypatch):
    refs = [ref(corpus["talking"], "cached"), ref(corpus["talking_mkv"], "decoded")]
    loader = MediaLoader()
    decode = Counter(loader.load)
    monkeypatch.setattr(loader, "load", decode)
    clips = ClipSet(refs, loader, InputSpec(fps=25.0, max_seconds=0.2), remove_audio=True,
                    needs_media=lambda r, audio_removed: r.clip_id != "cached")
    cached, decoded = list(clips)
    assert decode.calls == 1
    assert cached.frames is None and cached.audio is None and cached.audio_removed and cached.fps == 25.0
    assert decoded.frames is not None


def test_trimming_leading_silence_cuts_audio_and_video_alike_and_declares_it(tmp_path):
    from avbench.clips import LEADING_SILENCE_TRIMMED
    from avbench.loader import leading_silence

    talk = talking_face(seconds=2.0, size=96)
    audio = talk.audio.copy()
    audio[:8000] = 0  # half a second of silence, then speech
    path = write_media(tmp_path / "late.mp4", talk.frames, 25, audio=audio)
    assert leading_silence(audio, 16000) == pytest.approx(0.5, abs=0.02)
    assert leading_silence(np.zeros(16000, np.float32), 16000) == 0.0
    loader = MediaLoader(MediaCache(tmp_path / "cache"))
    plain = loader.load(ref(path), InputSpec(fps=25.0))
    for _ in range(2):  # decoded, then from the cache
        trimmed = loader.load(ClipRef("c", "test", path, 0, trim_silence=True), InputSpec(fps=25.0))
        cut = len(plain.frames) - len(trimmed.frames)
        assert 11 <= cut <= 13 and trimmed.fallbacks == [LEADING_SILENCE_TRIMMED]
        assert abs((len(plain.audio) - len(trimmed.audio)) - cut * 640) <= 640  # the same seconds from both
        assert np.array_equal(trimmed.frames, plain.frames[cut:])
    assert loader.media_key(ClipRef("c", "test", path, 0, trim_silence=True), InputSpec()) != loader.media_key(
        ref(path), InputSpec())
    speech_at_once = loader.load(ClipRef("c", "test", write_media(tmp_path / "t.mp4", talk.frames, 25, audio=talk.audio),
                                         0, trim_silence=True), InputSpec(fps=25.0))
    assert speech_at_once.fallbacks == [] and len(speech_at_once.frames) == len(plain.frames)
