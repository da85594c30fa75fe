"""The named detectors of seed paper 001: one table of presets, each made into a registered class.

Each name is a subclass of a method class whose defaults are the preset's options, so
`avbench run --detector probe_clip` runs the paper's configuration and every option can still be
changed with --option. The paper's random-initialisation controls have names of their own
(`<name>_random`), so their runs and leaderboard rows never mix with the trained backbones'. Each
name has a twin `<name>_tiny` on small randomly initialised backbones that runs offline (tests,
demo); it reports no published numbers. The paper's row a detector reproduces (`published_as`)
follows from its options: e.g. random_init=True names the paper's random-initialisation row, and
any other pooling than the paper's names none.

probe_fusion averages the probes on AV-HuBERT's audio and visual features: the paper's Table 3
reports this late fusion ("AV-HuBERT (A+V)") under all three training regimes and with its random
control, it needs one checkpoint only, and the two streams are complementary (each catches the
manipulations of its own modality).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from avbench.detectors.ssl.alignment import AVHuBERTAlignment
from avbench.detectors.ssl.anomaly import NextTokenPrediction, SyncAnomaly
from avbench.detectors.ssl.base import FeatureDetector
from avbench.detectors.ssl.probe import LinearProbe


class Variant(NamedTuple):
    method: type[FeatureDetector]
    options: dict
    modalities: tuple[str, ...]
    description: str


AUDIO, VIDEO, BOTH = ("audio",), ("video",), ("audio", "video")
AV_PAIR = ("avhubert_a", "avhubert_v")

VARIANTS: dict[str, Variant] = {
    "probe_avhubert_a": Variant(LinearProbe, {"features": ("avhubert_a",)}, AUDIO,
                                "Linear probe on AV-HuBERT audio features (visual stream masked)."),
    "probe_avhubert_v": Variant(LinearProbe, {"features": ("avhubert_v",)}, VIDEO,
                                "Linear probe on AV-HuBERT visual (lip) features (audio stream masked)."),
    "probe_avhubert_av": Variant(LinearProbe, {"features": ("avhubert_av",)}, BOTH,
                                 "Linear probe on AV-HuBERT audio-visual features."),
    "probe_wav2vec2": Variant(LinearProbe, {"features": ("wav2vec2",)}, AUDIO,
                              "Linear probe on Wav2Vec2 XLS-R 2B features (two 50 Hz frames per 25 Hz frame)."),
    "probe_whisper": Variant(LinearProbe, {"features": ("whisper",)}, AUDIO,
                             "Linear probe on Whisper encoder features (not in the paper's tables)."),
    "probe_clip": Variant(LinearProbe, {"features": ("clip",)}, VIDEO,
                          "Linear probe on CLIP ViT-L/14 image features of each frame."),
    "probe_videomae": Variant(LinearProbe, {"features": ("videomae",)}, VIDEO,
                              "Linear probe on VideoMAE-large features of 16-frame windows."),
    "probe_fusion": Variant(LinearProbe, {"features": AV_PAIR}, BOTH,
                            "Late fusion of the AV-HuBERT audio and visual linear probes (mean probability)."),
    "ntp": Variant(NextTokenPrediction, {"features": ("avhubert_a",)}, AUDIO,
                   "Next-token prediction anomaly detector on AV-HuBERT audio features, trained on real clips."),
    "sync_anomaly": Variant(SyncAnomaly, {"features": AV_PAIR}, BOTH,
                            "Audio-video synchronisation anomaly detector on AV-HuBERT features, trained on real clips."),
    "avhubert_align": Variant(AVHuBERTAlignment, {"features": AV_PAIR, "pooling": "mean", "max_shift": 15}, BOTH,
                              "Training-free cosine alignment of AV-HuBERT audio and visual features (SpeechForensics)."),
}
# the random-initialisation controls the paper reports (Table 2 rows 1-2, Table 3)
VARIANTS.update({
    f"{name}_random": Variant(v.method, {**v.options, "random_init": True}, v.modalities,
                              f"{v.description[:-1]}, on a randomly initialised backbone (the paper's control).")
    for name, v in VARIANTS.items() if name in ("probe_avhubert_a", "probe_avhubert_v", "probe_fusion", "sync_anomaly")
})


def make_variant(name: str, variant: Variant) -> type[FeatureDetector]:
    """A subclass of variant.method named `name`, whose __init__ defaults are the preset's options."""
    return type(name, (variant.method,), {
        "__init__": functools.partialmethod(variant.method.__init__, **variant.options),
        "__doc__": variant.description + "\n\n" + (variant.method.__doc__ or ""),
        "__module__": __name__,
        "name": name,
        "modalities": variant.modalities,
    })


#: Every registered name -> its class: each variant and its `_tiny` twin.
DETECTORS: dict[str, type[FeatureDetector]] = {}
for _name, _variant in VARIANTS.items():
    DETECTORS[_name] = make_variant(_name, _variant)
    DETECTORS[f"{_name}_tiny"] = make_variant(f"{_name}_tiny", _variant._replace(
        options={**_variant.options, "tiny": True}, description=_variant.description[:-1] + ", tiny random backbones (offline)."))
globals().update(DETECTORS)
__all__ = ["VARIANTS", "DETECTORS", "make_variant", *DETECTORS]
