"""HOLA (seed paper 003): AVF-MAE++ encoders with iterative cross-modal interaction, local-global
fusion, a pyramid-like refiner and, as an explicit transductive option, pseudo-label self-training.

Importing this package does not import torch; the names below load their modules on first use.

- `HOLADetector` / `HOLATinyDetector`: the registered detectors `hola` and `hola_tiny` (detector.py;
  fine-tuning and PSSI on the core trainer in training.py).
- `HOLA`, `HOLAConfig`: the detector network and its ablation switches (model.py).
- `LGEncoder`, `EncoderConfig`: the AVF-MAE++ base video and audio encoders (backbone.py).
- `load_avfmae`, `encoder_state`: an AVF-MAE++ checkpoint loaded strictly, and the same layout written (checkpoint.py).
- `AVMAE`, `PretrainConfig`, `pretrain`: stage 1, masked audio-visual autoencoding (pretrain.py; CLI:
  `avbench hola pretrain`).
- `fbank128`, `mfcc32`, `frame_indices`, `video_tensor`: one clip's inputs (preprocess.py).
"""

from avbench.lazy import lazy_exports

_EXPORTS = {
    "HOLADetector": "detector", "HOLATinyDetector": "detector", "HOLA": "model", "HOLAConfig": "model",
    "LGEncoder": "backbone", "EncoderConfig": "backbone", "load_avfmae": "checkpoint", "encoder_state": "checkpoint",
    "AVMAE": "pretrain", "PretrainConfig": "pretrain", "pretrain": "pretrain",
    "fbank128": "preprocess", "mfcc32": "preprocess", "frame_indices": "preprocess", "video_tensor": "preprocess",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
