"""Detectors on frozen self-supervised features (seed paper 001: Boldisor, Smeu et al.).

- features.py: the Backbone contract and the per-clip feature cache; backbones.py: the backbones.
- base.py: FeatureDetector (backbones from options, cached features, the paper's row names) and
  the training loop the trained detectors share.
- probe.py: LinearProbe, a linear probe per frame pooled over time; several features: late fusion.
- anomaly.py: NextTokenPrediction and SyncAnomaly, trained on real clips only.
- alignment.py: AVHuBERTAlignment, training-free cosine alignment at the best shift.
- zoo.py: the registered names (probe_clip, ntp, avhubert_align, ... and their `_tiny` twins).

The names below load on first use, so importing the package (or features.py) does not import torch.
"""

from avbench.lazy import lazy_exports

_EXPORTS = {
    "FeatureDetector": "base", "LinearProbe": "probe", "NextTokenPrediction": "anomaly", "SyncAnomaly": "anomaly",
    "AVHuBERTAlignment": "alignment", "VARIANTS": "zoo", "DETECTORS": "zoo",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
