"""FauForensics (seed paper 002): facial-action-unit guided audio-visual deepfake detection.

Importing this package does not import torch; the names below load their modules on first use.

- `FauForensicsDetector` / `FauForensicsTinyDetector`: the registered detectors `fauforensics` and
  `fauforensics_tiny` (detector.py; training on the core trainer in training.py, with AdamP).

- `FauForensics`, `FauForensicsConfig`, `Logits`, `loss`: the network at the paper's size or the
  tiny CPU twin, its three heads and the 0.8/0.1/0.1 loss (model.py).
- `log_mel`, `face_frames`: one window's inputs as the authors' loader makes them (preprocess.py).
- `load_authors`, `init_fau`, `init_video`, `init_audio`: a checkpoint in the authors' layout, and each
  encoder from its public weights file (checkpoint.py).
"""

from avbench.lazy import lazy_exports

_EXPORTS = {"FauForensicsDetector": "detector", "FauForensicsTinyDetector": "detector", "FauForensics": "model", "FauForensicsConfig": "model", "Logits": "model", "loss": "model",
            "log_mel": "preprocess", "face_frames": "preprocess", "mel_filters": "preprocess",
            "power_spectrogram": "preprocess", "load_authors": "checkpoint", "init_fau": "checkpoint",
            "init_video": "checkpoint", "init_audio": "checkpoint"}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
