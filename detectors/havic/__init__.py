"""HAVIC (seed paper 000): holistic audio-visual intrinsic coherence for deepfake detection.

Importing this package does not import torch; the names below load their modules on first use.

- `HAVICDetector` / `HAVICTinyDetector`: the registered detectors `havic` and `havic_tiny` (detector.py).
- `load_official(path)`: the authors' fine-tuning checkpoint as a torch module whose
  forward(audio (B, 1024, 128), video (B, 3, 16, 224, 224)) returns the main logits (B, 1)
  (checkpoint.py, with `load_pretraining`, strict loading and AudioMAE / MARLIN initialisation).
- `HAVIC`, `HAVICPretrain`, `HAVICConfig`: the networks and their geometry (model.py).
- `kaldi_fbank`, `clip_windows`: the inputs (preprocess.py).
- `pretrain`, `finetune`, `pretrain_losses`, `finetune_loss`: training (training.py; CLI: `avbench havic pretrain`).
"""

from avbench.lazy import lazy_exports

_EXPORTS = {
    "HAVICDetector": "detector", "HAVICTinyDetector": "detector",
    "load_official": "checkpoint", "load_pretraining": "checkpoint", "load_strict": "checkpoint",
    "read_state_dict": "checkpoint", "init_from_audiomae": "checkpoint", "init_from_marlin": "checkpoint",
    "transfer_pretrained": "checkpoint", "CheckpointError": "checkpoint",
    "HAVIC": "model", "HAVICPretrain": "model", "HAVICConfig": "model", "HAVICLogits": "model",
    "PretrainOutput": "model",
    "kaldi_fbank": "preprocess", "clip_windows": "preprocess", "window_fbank": "preprocess",
    "pretrain": "training", "finetune": "training", "pretrain_losses": "training", "finetune_loss": "training",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
