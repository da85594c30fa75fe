"""HOLA's inputs: frames one per segment over the whole clip, the 224-then-160 crops, Kaldi's filterbank
written from its definition (frame count, a tone in its mel bin, the normalisation) resampled over the
whole clip, and the paper's MFCC-32 variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avbench.detectors.hola.preprocess import (
    FBANK_MEAN, FBANK_STD, IMAGENET_MEAN, Crop, fbank128, frame_indices, mfcc32, slaney_mel_banks, video_tensor)
from avbench.fbank import kaldi_fbank, mel_banks


def test_one_frame_per_segment_over_the_whole_clip():
    centre = frame_indices(160, 16)
    assert centre.repeated == 0 and centre.indices.tolist() == [5 + 10 * k for k in range(16)]
    drawn = frame_indices(160, 16, torch.Generator().manual_seed(0))
    assert all(10 * k <= i < 10 * (k + 1) for k, i in enumerate(drawn.indices))
    assert drawn.indices.tolist() == frame_indices(160, 16, torch.Generator().manual_seed(0)).indices.tolist()
    short = frame_indices(5, 16)
    assert short.repeated == 11 and short.indices.tolist() == [0, 1, 2, 3] + [4] * 12


def test_frames_are_resized_to_224_cropped_to_160_and_imagenet_normalised():
    frames = np.full((3, 100, 140, 3), 255, np.uint8)
    frames[:, :, :, 0] = 0
    x = video_tensor(frames, 160)
    assert x.shape == (3, 3, 160, 160)
    assert x[0].mean().item() == pytest.approx((0 - IMAGENET_MEAN[0]) / 0.229, abs=1e-4)
    assert x[1].mean().item() == pytest.approx((1 - 0.456) / 0.224, abs=1e-4)
    ramp = np.tile(np.arange(224, dtype=np.uint8)[None, None, :, None], (1, 224, 1, 3))
    flipped = video_tensor(ramp, 160, Crop(0, 0, 224, 224, True))
    assert flipped[0, 0, 0, 0] > flipped[0, 0, 0, -1]  # the ramp runs the other way
    crop = Crop.draw(224, torch.Generator().manual_seed(1))
    assert 0.5 * 224 * 224 <= crop.height * crop.width * 1.02 and crop.top + crop.height <= 224


def test_kaldi_fbank_frames_and_a_tone_in_its_mel_bin():
    """avbench.fbank is checked against torchaudio in test_havic_model; here: frames and a tone's band."""
    t = np.arange(16000) / 16000
    tone = torch.from_numpy(np.sin(2 * math.pi * 1000 * t)).float()
    fbank = kaldi_fbank(tone)
    assert fbank.shape == (1 + (16000 - 400) // 160, 128)  # snip_edges: whole 25 ms frames every 10 ms
    kaldi_mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    edges = np.linspace(kaldi_mel(20), kaldi_mel(8000), 130)
    expected = int(np.argmin(np.abs(edges[1:-1] - kaldi_mel(1000))))
    assert abs(int(fbank.mean(0).argmax()) - expected) <= 1
    banks = mel_banks(128, 512, 16000)
    assert banks.shape == (128, 257) and float(banks[:, -1].abs().sum()) == 0 and float(banks.max()) <= 1


def test_fbank128_covers_the_whole_clip_resampled_to_256_frames_and_normalised():
    silence = fbank128(None, 5 * 16000)
    assert silence.shape == (1, 256, 128)
    floor = math.log(torch.finfo(torch.float32).eps)
    assert torch.allclose(silence, torch.full_like(silence, (floor - FBANK_MEAN) / (2 * FBANK_STD)))
    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(4 * 16000), rng.normal(0, 0.3, 4 * 16000)]).astype(np.float32)
    x = fbank128(audio, len(audio))[0]
    assert x[:120].mean() < x[136:].mean() - 1  # the loud second half lands in the second half: not cut at 2.56 s


def test_mfcc32_is_sixteen_segments_of_32_coefficients():
    rng = np.random.default_rng(0)
    x = mfcc32(rng.normal(0, 0.1, 3 * 16000).astype(np.float32), 3 * 16000)
    assert x.shape == (16, 32) and torch.isfinite(x).all()
    assert mfcc32(None, 1000).shape == (16, 32)  # fewer frames than segments: frames repeated
    banks = slaney_mel_banks(128, 2048)
    assert banks.shape == (128, 1025) and (banks >= 0).all()
