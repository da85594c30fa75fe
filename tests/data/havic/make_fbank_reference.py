"""Writes fbank_reference.npz: torchaudio's Kaldi fbank (HAVIC's arguments) of three generated signals.

Run with a Python that has torchaudio (it cannot be installed beside avbench's torch):
    python3 -m venv /tmp/ta && /tmp/ta/bin/pip install torch==2.9.1 'torchaudio==2.9.*' numpy
    /tmp/ta/bin/python tests/data/havic/make_fbank_reference.py
"""

from pathlib import Path

import numpy as np
import torch
import torchaudio


def signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20250101)
    t = np.arange(16000) / 16000
    chirp = 0.4 * np.sin(2 * np.pi * (100 + 1500 * t) * t) + 0.01 * rng.standard_normal(len(t))
    voiced = np.arange(8000) / 16000
    envelope = np.maximum(0.0, np.sin(2 * np.pi * 4 * voiced))
    speechlike = envelope * sum(np.sin(2 * np.pi * 140 * h * voiced) / h for h in (1, 2, 3)) + 0.3
    noise = 0.05 * rng.standard_normal(7013)  # not a whole number of 10 ms hops
    return {name: x.astype(np.float32) for name, x in
            {"chirp": chirp, "speechlike": speechlike, "noise": noise}.items()}


def main() -> None:
    out = {}
    for name, x in signals().items():
        wave = torch.from_numpy(x)[None]
        fbank = torchaudio.compliance.kaldi.fbank(
            wave, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
            num_mel_bins=128, dither=0.0, frame_shift=10)
        out[f"{name}_signal"] = x
        out[f"{name}_fbank"] = fbank.numpy().astype(np.float32)
    out["torchaudio_version"] = np.array(torchaudio.__version__)
    np.savez_compressed(Path(__file__).with_name("fbank_reference.npz"), **out)


if __name__ == "__main__":
    main()
