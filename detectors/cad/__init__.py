"""CAD (seed paper 004): cross-modal alignment and distillation on CLIP and Whisper.

Importing this package does not import torch; the names below load their modules on first use.

- `CADDetector` / `CADTinyDetector`: the registered detectors `cad` and `cad_tiny` (detector.py;
  samples and training on the core trainer in training.py).

- `CAD`, `CADConfig`, `CADOutput`, `Encoded`: the two-path network at the paper's size or the tiny
  CPU twin, with the ablation switches of Tables 4-5 (model.py).
- `alignment_loss`, `distillation_loss`, `total_loss`, `Losses`: KL alignment (Eq. 7), SimSiam
  distillation (Eq. 8) and CE + KL + KD (model.py).
- `frame_indices`, `clip_frames`, `whisper_mel`, `audio_padding`, `clip_windows`: one sample's inputs and
  the 30 s windows of a longer clip (preprocess.py).
"""

from avbench.lazy import lazy_exports

_EXPORTS = {"CADDetector": "detector", "CADTinyDetector": "detector", "CAD": "model", "CADConfig": "model", "CADOutput": "model", "Encoded": "model", "Losses": "model",
            "alignment_loss": "model", "distillation_loss": "model", "total_loss": "model",
            "frame_indices": "preprocess", "clip_frames": "preprocess", "whisper_mel": "preprocess",
            "audio_padding": "preprocess", "clip_windows": "preprocess", "Window": "preprocess",
            "FrameSample": "preprocess"}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
