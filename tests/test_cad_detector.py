"""CAD under the harness: the tiny twin trains on the demo corpus with falling losses and scores every
test clip, a saved model reloads to the same scores and only onto the backbone files it was trained on,
declared fallbacks (centre crops, repeated frames, silent tracks) are counted, the ablations match
their published rows, and the training pieces (augmentations, parameter groups) do what they say."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from avbench import protocol, registry
from avbench.cache import MediaCache
from avbench.clips import FRAMES_REPEATED, NO_AUDIO_TRACK, SILENT_TRACK, Clip, ClipRef
from avbench.detectors.cad.detector import CADDetector, CADTinyDetector
from avbench.detectors.cad.training import Augment, CADTraining, gaussian_blur, parameter_groups
from avbench.loader import MediaLoader
from avbench.runner import RunSettings, Runner

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_the_tiny_twin_trains_with_falling_losses_scores_every_clip_and_reloads(tiny_demo, cache_dir, tmp_path):
    settings = RunSettings(detector="cad_tiny", protocol=protocol.get("demo"), seeds=(0,), runs_dir=tmp_path / "runs",
                           data_roots={"demo": tiny_demo}, cache_dir=cache_dir, bootstrap_resamples=0)
    (outcome,) = Runner(settings).run()
    record = outcome.record
    assert record["coverage"]["failed"] == 0 and record["coverage"]["scored"] == record["coverage"]["total"] == 10
    history = record["folds"][0]["history"]
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["kl"] < history[0]["kl"]  # the alignment term is learnt, not only the classifier
    assert {"ce", "kl", "kd", "entropy_p", "entropy_q", "val_auc"} <= set(history[0])
    assert all(0 < r["entropy_p"] <= np.log(32) + 1e-6 for r in history)  # d_align 32: log(32) is uniform
    assert record["provenance"]["detector_sources"] == {"clip": "tiny(seed=0)", "whisper": "tiny(seed=0)"}
    saved = outcome.record_path.parent / "models" / "main"
    state = np.load(saved / "state.npz")
    assert not any(k.startswith(("clip.", "whisper.", "video.clip.transformer.")) for k in state.files)
    reloaded = CADTinyDetector.load(saved)
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet").head(2)
    refs = {r.clip_id: r for r in registry.datasets.get("demo")().index(tiny_demo).refs()}
    loader = MediaLoader(MediaCache(cache_dir))
    for clip_id, score in zip(scores["clip_id"], scores["score"]):
        assert reloaded.score(loader.load(refs[clip_id], reloaded.input_spec)) == pytest.approx(score, abs=1e-6)
    with pytest.raises(ValueError, match="trained on backbones"):
        CADTinyDetector.load(saved, seed=1)  # other (tiny, seeded) backbones than the state's


def _write_backbones(directory, seed: int):
    """Tiny CLIP and Whisper towers saved in the layouts of the real files (open_clip safetensors,
    openai-whisper .pt)."""
    from safetensors.torch import save_file

    from avbench.detectors.ssl.backbones import Whisper

    tiny = CADTinyDetector(seed=seed).model
    save_file({f"visual.{k}": v.contiguous() for k, v in tiny.clip.state_dict().items()},
              directory / "open_clip_model.safetensors")
    torch.save({"dims": Whisper.tiny_config,
                "model_state_dict": {f"encoder.{k}": v for k, v in tiny.whisper.state_dict().items()}},
               directory / "small.pt")
    return {"clip_weights": str(directory / "open_clip_model.safetensors"), "whisper_weights": str(directory / "small.pt")}


def test_a_saved_state_records_the_backbone_files_sha256_and_refuses_other_files(tmp_path):
    files = _write_backbones(tmp_path, seed=0)
    detector = CADTinyDetector(**files)
    sources = detector.sources()
    assert set(sources) == {"clip", "whisper"} and all(len(v) == 64 for v in sources.values())
    saved = detector.save(tmp_path / "model")
    CADTinyDetector.load(saved)  # the same files: accepted
    _write_backbones(tmp_path, seed=1)  # other weights at the same paths
    with pytest.raises(ValueError, match="trained on backbones"):
        CADTinyDetector.load(saved)


def test_missing_backbone_files_are_named_before_any_clip(tmp_path):
    with pytest.raises(FileNotFoundError, match="-o clip_weights=PATH, -o whisper_weights=PATH"):
        CADDetector()
    with pytest.raises(FileNotFoundError, match="-o whisper_weights=PATH"):
        CADDetector(clip_weights=str(tmp_path / "open_clip_model.safetensors"))
    CADDetector(clip_weights="unused", video_only=True).cfg  # video only reads no Whisper
    detector = CADDetector(clip_weights=str(tmp_path / "nowhere.safetensors"), whisper_weights="small")
    with pytest.raises(FileNotFoundError, match="vit_base_patch16_clip_224.openai"):
        detector.prepare(training=True)


def _clip(frames: int, audio_seconds: float | None, meta: dict | None = None) -> Clip:
    rng = np.random.default_rng(0)
    ref = ClipRef("c", "demo", Path("c.mp4"), 0, meta=meta or {})
    audio = None if audio_seconds is None else rng.normal(0, 0.1, int(audio_seconds * 16000)).astype(np.float32)
    return Clip(ref=ref, fps=25.0, faces=rng.integers(0, 255, (frames, 224, 224, 3), dtype=np.uint8), audio=audio)


def test_fallbacks_are_declared_on_the_clip_a_short_clip_repeats_frames_and_silence_is_named():
    detector = CADTinyDetector()
    short, whole = _clip(10, 0.4), _clip(40, 1.6)
    silent = _clip(40, 1.6)
    silent.audio_removed = True
    scores = detector.score_batch([short, whole, silent])
    assert all(0 < s < 1 for s in scores)
    assert short.fallbacks == [FRAMES_REPEATED] and whole.fallbacks == [] and silent.fallbacks == [SILENT_TRACK]
    assert scores[1] == pytest.approx(detector.score(_clip(40, 1.6)), abs=1e-6)  # batching changes nothing


def test_a_dataset_without_audio_is_scored_on_a_declared_silent_track(tiny_demo, tmp_path):
    """A clip whose index says its dataset has no audio is not decoded for audio, gets silence and both
    fallbacks, and a run counts them."""
    from avbench.clips import AUDIO_ABSENT

    ref = next(r for r in registry.datasets.get("demo")().index(tiny_demo).refs() if r.label == 0)
    ref = replace(ref, meta={"audio": AUDIO_ABSENT})
    detector = CADTinyDetector()
    clip = MediaLoader(MediaCache(tmp_path / "cache")).load(ref, detector.input_spec)
    assert clip.audio_removed and not clip.audio.any() and clip.fallbacks == [NO_AUDIO_TRACK]
    detector.score(clip)
    assert clip.fallbacks == [NO_AUDIO_TRACK, SILENT_TRACK]


def test_each_of_the_papers_ablations_claims_its_published_row():
    assert CADTinyDetector().published_as == () and CADDetector(random_init=True).published_as == ("CAD",)
    rows = {"video_only": (True, "CAD only video"), "use_align_loss": (False, "CAD w/o alignment"),
            "use_cross_attention": (False, "CAD w/o cross attention"), "freeze_align": (False, "CAD w/o frozen model"),
            "use_distill": (False, "CAD w/o distillation"), "distill_loss": ("kl", "CAD SimSiam replaced by KL")}
    for option, (value, row) in rows.items():
        assert CADDetector(random_init=True, **{option: value}).published_as == (row,)
    assert CADDetector(random_init=True, audio_only=True).published_as == ()  # not a row of the paper
    assert CADDetector(random_init=True, use_distill=False, use_align_loss=False).published_as == ()
    audio_only = CADTinyDetector(audio_only=True)
    assert audio_only.input_spec.fps is None and audio_only.input_spec.face_size is None
    assert 0 < audio_only.score(Clip(ref=_clip(1, 1.0).ref, audio=np.zeros(16000, np.float32))) < 1


def test_augmentations_apply_alike_to_every_frame_and_are_reproducible():
    faces = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    faces[1:] = faces[0]
    params = [Augment.draw(torch.Generator().manual_seed(k)) for k in range(40)]
    assert params == [Augment.draw(torch.Generator().manual_seed(k)) for k in range(40)]
    for field in ("angle", "blur", "contrast_brightness", "jpeg"):  # each applied about half the time
        assert 8 < sum(getattr(p, field) is not None for p in params) < 32, field
    assert {p.blur for p in params} - {None} <= {3, 5, 7} and all(40 <= p.jpeg <= 100 for p in params if p.jpeg)
    for p in params[:6]:
        out = p.apply(faces)
        assert out.shape == faces.shape and out.dtype == np.uint8
        assert all(np.array_equal(out[0], out[t]) for t in range(1, 4))  # one draw for the whole sample
    assert np.array_equal(Augment(True, None, None, None, None).apply(faces), faces[:, :, ::-1])
    assert np.array_equal(Augment(False, None, None, None, None).apply(faces), faces)
    flat = np.full((1, 9, 9, 3), 100, np.uint8)
    assert np.array_equal(gaussian_blur(flat, 5), flat)  # a blur keeps a constant image (weights sum to 1)


def test_weight_decay_spares_norms_biases_and_the_temporal_embedding():
    model = CADTinyDetector().model
    decay, plain = parameter_groups(model, 5e-4)
    named = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    assert "video.temporal_embedding" in {named[id(p)] for p in plain["params"]}
    assert len(decay["params"]) + len(plain["params"]) == sum(p.requires_grad for p in model.parameters())


def test_an_epoch_never_ends_on_a_batch_of_one():
    task = CADTraining.__new__(CADTraining)
    task.refs, task.windows, task.batch_size, task.augment = list(range(9)), [1] * 9, 4, False
    jobs = task.epoch_jobs(torch.Generator().manual_seed(0))
    assert [len(j) for j in jobs] == [4, 4]


def test_a_clip_over_30_s_is_scored_as_consecutive_windows_and_their_named_aggregation():
    from avbench.detectors.cad.training import clip_samples

    rng = np.random.default_rng(0)
    ref = ClipRef("long", "demo", Path("long.mp4"), 0)
    faces = rng.integers(0, 255, (50 * 25, 16, 16, 3), dtype=np.uint8)  # 50 s of small crops
    long = Clip(ref=ref, fps=25.0, faces=faces, audio=rng.normal(0, 0.1, 50 * 16000).astype(np.float32))
    detector = CADTinyDetector()
    samples = clip_samples(long, detector.cfg)
    assert samples.frames.shape == (2, 16, 3, 224, 224) and samples.valid.tolist() == [1500, 1000]
    first_window = CADTinyDetector(max_windows=1)
    assert clip_samples(long, first_window.cfg, first_window.max_windows).frames.shape[0] == 1
    worst = CADTinyDetector(aggregation="max").score(long)
    mean = detector.score(long)
    assert worst >= mean - 1e-9 and 0 < mean < 1
    with pytest.raises(ValueError, match="aggregation"):
        CADTinyDetector(aggregation="vote")
