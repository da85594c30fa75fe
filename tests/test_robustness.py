"""Perturbation protocols: each kind does what its table says, deterministically per clip; the loader
degrades test clips under their own cache keys; a sweep runs, resumes and shows AUC falling with level."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from avbench import protocol, registry, robustness
from avbench.cache import MediaCache
from avbench.cli import app
from avbench.detector import InputSpec
from avbench.loader import MediaLoader
from avbench.perturbations import KINDS, Perturbation


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 256, (4, 33, 31, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tone():
    t = np.arange(16000) / 16000
    return (0.2 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_keeps_shapes_is_seeded_per_clip_and_level_0_is_the_original(kind, frames, tone):
    p, media = Perturbation(kind, 5), frames if KINDS[kind].modality == "video" else tone
    apply = (lambda x, q, clip: q.video(x, 25.0, clip)) if p.modality == "video" else (lambda x, q, clip: q.audio(x, 16000, clip))
    out = apply(media, p, "a")
    assert out.shape == media.shape and out.dtype == media.dtype and not np.array_equal(out, media)
    assert np.array_equal(apply(media, p, "a"), out)
    assert np.array_equal(apply(media, Perturbation(kind, 0), "a"), media)


def test_visual_kinds_by_hand(frames):
    assert np.array_equal(Perturbation("contrast", 1).video(frames, 25, "x"), np.floor(frames * np.float32(0.85)).astype(np.uint8))
    grey = Perturbation("saturation", 5).video(frames, 25, "x").astype(int)  # chroma 0: R = G = B
    assert np.abs(grey - grey.mean(axis=-1, keepdims=True)).max() <= 1
    impulse = np.zeros((1, 15, 15, 3), np.uint8)
    impulse[0, 7, 7] = 255
    blurred = Perturbation("blur", 1).video(impulse, 25, "x")[0, :, :, 0].astype(float)  # kernel 7, sigma 7/6
    g = np.exp(-np.arange(-3, 4) ** 2 / (2 * (7 / 6) ** 2))
    g /= g.sum()
    assert np.abs(blurred[4:11, 4:11] - 255 * np.outer(g, g)).max() <= 0.5 and blurred[7, 0] == 0  # radius 3
    checker = (255 * (np.indices((16, 16)).sum(axis=0) % 2)).astype(np.uint8)[None, ..., None].repeat(3, -1)
    pixelated = Perturbation("jpeg", 1).video(checker, 25, "x")  # halved (2 x 2 means) and back: flat grey
    assert pixelated.min() >= 127 and pixelated.max() <= 128
    assert Perturbation("noise", 3).video(frames, 25, "a").tolist() != Perturbation("noise", 3).video(frames, 25, "b").tolist()


def test_audio_kinds_by_hand(tone):
    shifted = Perturbation("av_offset", 1).audio(tone, 16000, "x")
    assert np.array_equal(shifted[:1600], np.zeros(1600)) and np.array_equal(shifted[1600:], tone[:-1600])
    noisy = Perturbation("audio_noise", 3).audio(tone, 16000, "x")  # 10 dB
    snr = 10 * np.log10(np.mean(tone.astype(float) ** 2) / np.mean((noisy - tone).astype(float) ** 2))
    assert snr == pytest.approx(10, abs=0.2)
    low = Perturbation("resample", 5).audio(tone, 16000, "x")  # 2 kHz: the 5 kHz tone goes, 300 Hz stays
    spectrum = np.abs(np.fft.rfft(low))
    assert spectrum[5000] < 0.01 * spectrum[300]
    assert len(Perturbation("audio_compression", 5).audio(tone, 16000, "x")) == len(tone)


def test_protocol_variant_names_the_perturbation_and_level_0_is_the_protocol():
    p = protocol.get("demo+missing_audio+perturb=blur@3")
    assert p.id == "demo+missing_audio+perturb=blur@3" and p.missing_audio
    assert p.spec()["perturbation"] == {"kind": "blur", "level": 3, "param": 13, "unit": "kernel px", "modality": "video"}
    assert protocol.get("demo+perturb=blur@0") == protocol.get("demo")
    for bad in ("demo+perturb=fog@2", "demo+perturb=blur@9", "demo+perturb=blur"):
        with pytest.raises(KeyError):
            protocol.get(bad)
    assert robustness.sweep("demo", ["blur"], [0, 2]) == ["demo", "demo+perturb=blur@2"]
    assert robustness.split_protocol("demo+missing_audio+perturb=jpeg@2") == ("demo+missing_audio", Perturbation("jpeg", 2))
    assert robustness.split_protocol("demo+perturb=jpeg@1+four_class") == ("demo+four_class", Perturbation("jpeg", 1))
    assert robustness.split_protocol("demo+missing_audio") == ("demo+missing_audio", None)
    assert robustness.parse_levels("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="levels 0"):
        robustness.parse_levels("4-7")


def test_the_loader_degrades_a_clip_under_its_own_key_and_tracks_the_original_face(tiny_demo, tmp_path):
    loader = MediaLoader(MediaCache(tmp_path / "cache"))
    ref = next(iter(registry.datasets.get("demo")().index(tiny_demo).refs()))
    spec = InputSpec(fps=25.0, face_size=48)
    blurred = replace(ref, perturbation="blur@5")
    assert loader.media_key(ref, spec) != loader.media_key(blurred, spec)
    clean, degraded = loader.load(ref, spec), loader.load(blurred, spec)
    assert np.array_equal(clean.landmarks, degraded.landmarks)  # faces found on the original frames
    assert not np.array_equal(clean.faces, degraded.faces) and np.array_equal(clean.audio, degraded.audio)
    assert np.array_equal(loader.load(blurred, spec).faces, degraded.faces)  # from the cache, the same


def test_a_sweep_runs_resumes_and_auc_falls_with_level(tiny_demo, tmp_path):
    runner, runs = CliRunner(), tmp_path / "runs"
    curves = {}
    for detector, kind in (("avsync", "av_offset"), ("handcrafted", "resample")):
        args = ["robustness", "-d", detector, "-p", "demo", "--kinds", f"blur,{kind}", "--levels", "0,3,5",
                "--data-root", f"demo={tiny_demo}", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "cache"),
                "--workers", "0", "--seeds", "0", "--format", "json"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        rows = {row["kind"]: row for row in json.loads(result.stdout)}
        assert set(rows) == {"blur", kind} and rows[kind]["L5"] < rows[kind]["L0"]
        curves[detector] = rows
        again = runner.invoke(app, args)  # complete: nothing is redone
        assert again.exit_code == 0 and json.loads(again.stdout) == list(rows.values())
    record = json.loads((runs / "handcrafted" / "demo+perturb=resample@5" / "seed0" / "record.json").read_text())
    assert record["perturbation"]["param"] == 2000 and record["folds"][0]["fit"] == "reused"
