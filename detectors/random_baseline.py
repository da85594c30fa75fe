"""The chance baseline: a uniform score per clip that depends only on (seed, clip_id).

Any protocol should put it at AUC ~0.5; a metric or split that does not is broken.
"""

from __future__ import annotations

import hashlib

from avbench.clips import Clip
from avbench.detector import Detector, InputSpec


class RandomDetector(Detector):
    """Score = a uniform number in [0, 1) drawn from sha256(seed, clip_id).

    The hash is the random generator: the score of a clip is the same whatever the order, resume
    or process (Python's hash() is salted per process, so it is not used). The runner builds it
    with `seed` = the run's seed. It decodes no media.
    """

    name = "random"
    modalities = ()
    trains = False
    version = "1"
    scores_are_probabilities = True
    input_spec = InputSpec(fps=None, audio=False)

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, clip: Clip) -> float:
        digest = hashlib.sha256(f"{self.seed}\0{clip.clip_id}".encode()).digest()
        return (int.from_bytes(digest[:8], "big") >> 11) / 2.0**53
