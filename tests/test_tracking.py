"""Face tracking: the detector runs sparingly, landmarks follow the face, and the crops stay as good
as those of the every-frame reference (detector and predictor on every frame)."""

import numpy as np
import pytest

from avbench import faces, media
from avbench.clips import ClipError
from avbench.testing import Counter, talking_face


@pytest.fixture(scope="module")
def face():
    return talking_face(seconds=1.0, size=160)


@pytest.fixture
def counted(monkeypatch):
    detect, predict = Counter(faces.largest_face), Counter(faces.landmarks_in_box)
    monkeypatch.setattr(faces, "largest_face", detect)
    monkeypatch.setattr(faces, "landmarks_in_box", predict)
    return detect, predict


def mouth_error(landmarks, face) -> float:
    return float(np.abs(landmarks[:, faces.MOUTH].mean(axis=1) - face.mouth_centres).max())


def test_track_follows_the_moving_mouth(face):
    for tracking in (faces.Tracking(), faces.EVERY_FRAME):
        boxes, landmarks = faces.track_faces(face.frames, tracking)
        assert boxes.shape == (25, 4) and landmarks.shape == (25, 68, 2)
        assert mouth_error(landmarks, face) < 2.0, tracking
        # the face drifts 8 px sideways and back: the track must move with it
        assert np.ptp(landmarks[:, faces.MOUTH, 0].mean(axis=1)) > 6


def test_detector_runs_once_and_landmarks_on_keyframes(face, counted):
    detect, predict = counted
    faces.track_faces(face.frames, faces.Tracking(landmark_every=5, detect_every=50))
    keyframes = 6  # 0, 5, 10, 15, 20 and the last, 24
    assert detect.calls == 1 and predict.calls == keyframes  # the detection places frame 0's landmarks itself


def test_detect_every_and_the_reference(face, counted):
    detect, predict = counted
    faces.track_faces(face.frames, faces.Tracking(landmark_every=5, detect_every=10))
    assert detect.calls == 3  # frames 0, 10 and 20
    detect.calls = predict.calls = 0
    faces.track_faces(face.frames, faces.EVERY_FRAME)
    assert detect.calls == 25 and predict.calls == 25


def test_a_face_that_jumps_is_found_again(face, counted):
    """Halfway through, the picture moves 70 px: the landmarks in the old box no longer match it, so
    the detector runs again there and the track goes on with the face."""
    detect, _ = counted
    frames = face.frames.copy()
    shift = 70
    padded = np.zeros((25, 160, 160 + shift, 3), dtype=np.uint8)
    padded[:12, :, :160], padded[12:, :, shift:] = frames[:12], frames[12:]
    mouths = face.mouth_centres.copy()
    mouths[12:, 0] += shift
    _, landmarks = faces.track_faces(padded, faces.Tracking(landmark_every=1, detect_every=50))
    assert detect.calls == 2
    assert np.abs(landmarks[:, faces.MOUTH].mean(axis=1) - mouths).max() < 2.0


def test_keyframe_without_face_takes_the_nearest(face):
    frames = face.frames.copy()
    frames[3] = 128  # a blank frame in the middle
    boxes, landmarks = faces.track_faces(frames, faces.EVERY_FRAME)
    assert np.array_equal(landmarks[3], landmarks[2]) and np.array_equal(boxes[3], boxes[2])


def test_no_face_anywhere():
    with pytest.raises(ClipError) as info:
        faces.track_faces(np.full((4, 96, 96, 3), 128, dtype=np.uint8))
    assert info.value.reason == "no_face"


def test_large_frames_are_searched_downscaled(face, monkeypatch):
    """A 4x frame is searched at detect_size; the box and landmarks come back in full-resolution pixels."""
    big = np.repeat(np.repeat(face.frames[0], 4, axis=0), 4, axis=1)  # 640 x 640
    sizes = []
    detector, predictor = faces.load_models()
    monkeypatch.setattr(faces, "load_models", lambda: (lambda img, up: sizes.append(img.shape) or detector(img, up),
                                                        predictor))
    found = faces.largest_face(big, detect_size=320)
    assert sizes == [(320, 320, 3)]
    small = faces.largest_face(face.frames[0])
    np.testing.assert_allclose(found.landmarks[faces.MOUTH].mean(axis=0) / 4,
                               small.landmarks[faces.MOUTH].mean(axis=0), atol=1.5)


def test_tracking_settings_are_checked():
    for bad in ({"landmark_every": 0}, {"detect_every": 0}, {"detect_size": 40}, {"min_likeness": 1.0}):
        with pytest.raises(ValueError):
            faces.Tracking(**bad)


def test_cli_defaults_are_the_trackers():
    from avbench import cli_support

    assert (cli_support.LANDMARK_EVERY, cli_support.DETECT_EVERY) == (faces.Tracking().landmark_every,
                                                                     faces.Tracking().detect_every)


@pytest.mark.slow
def test_tracked_crops_are_as_good_as_every_frame_detection(tiny_demo):
    """On the demo corpus (25 clips, 128 px), the default tracking against the every-frame reference.

    Measured when written: landmarks 0.73 px apart on average (2.1% of the inter-ocular distance,
    worst clip 2.9%; dlib's own error on 300-W is about 6%); mouth and face crops differ by 3.7 and
    3.9 grey levels (mean absolute difference), less than moving the reference's crop windows by one
    pixel diagonally does (6.6 and 6.2)."""
    distance, relative, tracked_mad, shifted_mad = [], [], [], []
    for path in sorted(tiny_demo.glob("*/*/*.mp4")):
        frames = media.decode_video(path, 25)
        _, reference = faces.track_faces(frames, faces.EVERY_FRAME)
        _, tracked = faces.track_faces(frames)
        apart = np.linalg.norm(tracked - reference, axis=2)
        inter_ocular = np.linalg.norm(reference[:, faces.LEFT_EYE].mean(1) - reference[:, faces.RIGHT_EYE].mean(1), axis=1)
        distance.append(apart.mean())
        relative.append((apart.mean(axis=1) / inter_ocular).mean())
        for crop, size in ((faces.crop_mouths, 64), (faces.crop_faces, 96)):
            expected = crop(frames, reference, size).astype(float)
            tracked_mad.append(np.abs(crop(frames, tracked, size) - expected).mean())
            shifted_mad.append(np.abs(crop(frames, reference + np.float32(1.0), size) - expected).mean())
    assert len(distance) == 25
    assert np.mean(distance) < 1.2 and np.mean(relative) < 0.03 and np.max(relative) < 0.05
    assert np.mean(tracked_mad) < np.mean(shifted_mad)
