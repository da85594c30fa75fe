"""FauForensics' inputs against references computed from their definitions: the HTK mel filters in
closed form, the spectrogram by an explicit DFT, the max-referenced dB scale, and the crop chain on
pictures whose crops are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avbench.detectors.fauforensics.preprocess import (IMAGENET_MEAN, IMAGENET_STD, face_frames, log_mel, mel_filters,
                                                      power_spectrogram)


def test_one_mel_band_over_0_8000_hz_is_the_triangle_worked_out_by_hand():
    (band,) = mel_filters(n_mels=1).T  # edges at 0, the middle of the mel scale, 8000 Hz
    top = 2595 * math.log10(1 + 8000 / 700)  # 2840.02 mel
    centre = 700 * (10 ** (top / 2 / 2595) - 1)  # 1767.8 Hz
    assert centre == pytest.approx(1767.8, abs=0.1)
    assert float(band[32]) == pytest.approx(1000 / centre, rel=1e-6)  # bin 32 = 1000 Hz, rising side
    assert float(band[160]) == pytest.approx((8000 - 5000) / (8000 - centre), rel=1e-6)  # 5000 Hz, falling side
    assert float(band[0]) == 0 and float(band[256]) == pytest.approx(0, abs=1e-12)  # the edges


def explicit_power(wave: np.ndarray, frame: int) -> np.ndarray:
    """|DFT|^2 of frame `frame`, written out: reflect-pad 256 each side, 512 samples from frame * 160,
    the periodic Hann window of 320 in their middle (96 zeros each side)."""
    padded = np.pad(wave, 256, mode="reflect")
    n = np.arange(320)
    window = np.zeros(512)
    window[96:416] = 0.5 - 0.5 * np.cos(2 * np.pi * n / 320)
    segment = padded[frame * 160: frame * 160 + 512] * window
    k = np.arange(257)[:, None]
    dft = (segment[None, :] * np.exp(-2j * np.pi * k * np.arange(512)[None, :] / 512)).sum(axis=1)
    return np.abs(dft) ** 2


def test_the_spectrogram_and_the_db_scale_follow_their_definitions():
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    power = power_spectrogram(torch.from_numpy(wave)).double().numpy()
    assert power.shape == (257, 101)
    for frame in (0, 37, 100):  # the edges (reflect padding) and the middle
        np.testing.assert_allclose(power[:, frame], explicit_power(wave.astype(np.float64), frame), rtol=1e-3,
                                   atol=1e-6)
    mel = mel_filters().double().numpy().T @ power[:, :100]  # (80, 100)
    db = 10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(mel.max())
    expected = ((np.maximum(db, -80) + 40) / 40).T
    got = log_mel(wave).numpy()
    assert got.shape == (100, 80) and got.max() == pytest.approx(1.0) and got.min() >= -1.0
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_short_window_is_zero_padded_to_one_second():
    rng = np.random.default_rng(1)
    wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    short = wave[:8000]
    padded = np.concatenate([short, np.zeros(8000, dtype=np.float32)])
    np.testing.assert_allclose(log_mel(short).numpy(), log_mel(padded).numpy())
    np.testing.assert_allclose(log_mel(np.concatenate([wave, wave])).numpy(), log_mel(wave).numpy())  # cut at 1 s


def normalised(rgb) -> np.ndarray:
    return (np.asarray(rgb) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)


def test_evaluation_crops_the_centre_140_of_224_then_normalises():
    faces = np.full((3, 224, 224, 3), 255, dtype=np.uint8)  # a white frame around ...
    faces[:, 42:182, 42:182] = (10, 200, 90)  # ... the centre 140 x 140, one colour
    x = face_frames(faces, frames=5)
    assert x.shape == (3, 5, 112, 112)
    np.testing.assert_allclose(x[:, :3].permute(1, 2, 3, 0).reshape(-1, 3).numpy(),
                               np.broadcast_to(normalised((10, 200, 90)), (3 * 112 * 112, 3)), rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(x[:, 3:]) == 0  # missing frames: zeros after normalisation


def test_training_crops_inside_the_centre_160_one_draw_for_the_whole_clip():
    faces = np.zeros((4, 224, 224, 3), dtype=np.uint8)
    faces[:, 32:172, 32:172] = 255  # the 140 px square at offset (0, 0) of the centre 160 (which starts at 32)
    x = face_frames(faces, frames=4, crop=(0, 0, False))
    white = torch.from_numpy(normalised((255, 255, 255))).float()[:, None, None, None]
    torch.testing.assert_close(x, white.expand_as(x).contiguous(), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(x[:, 0], x[:, k]) for k in range(1, 4))
    half = faces.copy()
    half[:, :, :112] = 0  # left half dark: flipping puts it on the right
    flipped = face_frames(half, frames=1, crop=(10, 10, True))
    assert flipped[0, 0, :, :40].mean() > flipped[0, 0, :, -40:].mean()
    with pytest.raises(ValueError, match="within 20 px"):
        face_frames(faces, frames=1, crop=(21, 0, False))
