"""AV-HuBERT (Shi et al., 2022) in plain PyTorch: loads the authors' fairseq weights, runs without fairseq.

Importing this package does not import torch; the names below load their modules on first use.

- `AVHubert`, `AVHubertConfig`, `reinitialise`: the model, whose `extract(audio, video, padding_mask,
  output_layer)` equals the authors' `extract_finetune` (model.py).
- `load(path, sha256=None, trusted=False, **overrides)`, `infer_config`, `convert_fairseq_checkpoint`,
  `read_fairseq_checkpoint`: weights under the authors' key names (checkpoint.py; CLI:
  `avbench avhubert convert SRC DST`).
- `audio_features`, `mouth_features`, `FEATURE_RATE`: the model inputs (preprocess.py).
"""

from avbench.lazy import lazy_exports

_EXPORTS = {
    "AVHubert": "model", "AVHubertConfig": "model", "reinitialise": "model",
    "load": "checkpoint", "infer_config": "checkpoint", "convert_fairseq_checkpoint": "checkpoint",
    "read_fairseq_checkpoint": "checkpoint",
    "audio_features": "preprocess", "mouth_features": "preprocess", "FEATURE_RATE": "preprocess",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
