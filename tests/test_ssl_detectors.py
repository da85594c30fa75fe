"""Detectors on self-supervised features: planted structure they must find, and the harness end to end.

Planted backbones (registered for the test in BACKBONES) turn a clip's ref into features, so each
test knows what there is to find: a direction on the fake frames for the probes, a predictable
sequence broken on fake frames for next-token prediction, audio and visual streams that share a
latent except on fake frames for synchronisation and alignment.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from avbench import metrics, protocol, registry
from avbench.cache import MediaCache
from avbench.clips import Clip, ClipRef
from avbench.detector import InputSpec
from avbench.detectors.ssl import alignment, backbones, zoo
from avbench.detectors.ssl.alignment import AVHuBERTAlignment
from avbench.detectors.ssl.anomaly import NextFramePredictor, NextTokenPrediction, PairScorer, SyncAnomaly
from avbench.detectors.ssl.base import PAPER_COMBINATION_NAMES, PAPER_FEATURE_NAMES, RANDOM_INIT_REPORTED, paper_name
from avbench.detectors.ssl.features import Backbone
from avbench.detectors.ssl.probe import LinearProbe
from avbench.training import holdout
from avbench.loader import ClipSet, MediaLoader
from avbench.runner import RunSettings, Runner

FPS = 25
DIM = 16


# -- planted backbones ------------------------------------------------------------------------------
def _rng(clip: Clip, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(clip.ref.clip_id.removeprefix("c")), salt])


def _fake_frames(clip: Clip, n: int) -> np.ndarray:
    """Which of the n frames are fake: those of the clip's segments, or all of a fake clip without any."""
    if clip.ref.label == 0:
        return np.zeros(n, dtype=bool)
    if not clip.ref.fake_segments:
        return np.ones(n, dtype=bool)
    return metrics.frame_labels(n, FPS, clip.ref.fake_segments).astype(bool)


class Planted(Backbone):
    """Noise, plus a fixed direction on the fake frames (`shift` = 0: noise only)."""

    name, modality, input_spec = "planted", "video", InputSpec(fps=FPS, audio=False)
    shift = 1.5

    def build(self):
        return torch.nn.Identity()

    def forward(self, model, clips, device):
        out = []
        for clip in clips:
            x = _rng(clip).normal(size=(len(clip.frames), DIM))
            x[_fake_frames(clip, len(x)), 0] += self.shift * np.sqrt(DIM)
            out.append(x)
        return out


class Noise(Planted):
    name, shift = "noise", 0.0


class Waves(Planted):
    """Sine-cosine pairs with per-clip phases: each frame determines the next. Fake frames are noise."""

    name = "waves"

    def forward(self, model, clips, device):
        out = []
        for clip in clips:
            rng = _rng(clip)
            angle = (2 * np.pi * np.arange(len(clip.frames))[:, None] * np.linspace(0.01, 0.04, DIM // 2)
                     + rng.uniform(0, 2 * np.pi, DIM // 2))
            x = np.concatenate([np.sin(angle), np.cos(angle)], axis=1)
            fake = _fake_frames(clip, len(x))
            x[fake] = rng.normal(size=(fake.sum(), DIM))
            out.append(x)
        return out


class Latent(Planted):
    """One stream of a shared per-frame latent: a fixed projection of it, plus a little noise. The
    visual stream of a fake clip follows another latent on its fake frames."""

    name, modality, visual, projection = "latent_a", "audio", False, 1

    def forward(self, model, clips, device):
        projection = np.random.default_rng(self.projection).normal(size=(4, DIM))
        out = []
        for clip in clips:
            z = _rng(clip).normal(size=(len(clip.frames), 4))
            if self.visual:
                fake = _fake_frames(clip, len(z))
                z[fake] = _rng(clip, salt=1).normal(size=(fake.sum(), 4))
            out.append(z @ projection + 0.05 * _rng(clip, salt=2 + self.visual).normal(size=(len(z), DIM)))
        return out


class LatentV(Latent):
    """Visual stream in another space than the audio one: synchronisation must learn to compare them."""

    name, modality, visual, projection = "latent_v", "video", True, 2


class SameSpaceV(LatentV):
    """Visual stream in the audio stream's space, as AV-HuBERT's are: cosine compares them directly."""

    name, projection = "latent_v_same", 1


@pytest.fixture(autouse=True)
def planted(monkeypatch):
    for cls in (Planted, Noise, Waves, Latent, LatentV, SameSpaceV):
        monkeypatch.setitem(backbones.BACKBONES, cls.name, cls)


class ArrayLoader(MediaLoader):
    """Clips made of blank frames, as many as the ref's meta says: the planted backbones read the ref."""

    def load(self, ref, spec, remove_audio=False):
        return Clip(ref=ref, fps=FPS, frames=np.zeros((ref.meta["frames"], 2, 2, 3), np.uint8))


def refs(n: int, start: int = 0, frames: int = 20, segments=(), path: Path | None = None) -> list[ClipRef]:
    """n clips, alternately real and fake; fakes carry `segments`."""
    return [ClipRef(clip_id=f"c{i}", dataset="planted", path=path or Path(f"c{i}.mp4"), label=i % 2,
                    fake_segments=tuple(segments) if i % 2 else (), meta={"frames": frames})
            for i in range(start, start + n)]


def clip_set(rs, loader=None) -> ClipSet:
    return ClipSet(rs, loader or ArrayLoader(), InputSpec(fps=FPS, audio=False))


def clips_of(rs) -> list[Clip]:
    return list(clip_set(rs))


def auc(detector, rs) -> float:
    return roc_auc_score([r.label for r in rs], detector.score_batch(clips_of(rs)))


# -- linear probe -----------------------------------------------------------------------------------
def test_probe_finds_a_planted_direction_and_is_chance_on_noise():
    train, test = refs(40), refs(60, start=100)
    probe = LinearProbe(features=["planted"], tiny=True).fit(clip_set(train), clip_set([]), seed=0)
    assert auc(probe, test) > 0.95
    scores = probe.score_batch(clips_of(test))
    assert all(0 <= s <= 1 for s in scores) and probe.scores_are_probabilities
    blind = LinearProbe(features=["noise"], tiny=True).fit(clip_set(train), clip_set([]), seed=0)
    assert abs(auc(blind, refs(200, start=1000)) - 0.5) < 0.2


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_probe_pooling_options_learn_too(pooling):
    probe = LinearProbe(features=["planted"], pooling=pooling, lr=1e-2, max_epochs=30, tiny=True)
    probe.fit(clip_set(refs(40)), clip_set(refs(10, start=40)), seed=0)
    assert auc(probe, refs(40, start=100)) > 0.9


def test_probe_frame_scores_localise_the_fake_segment():
    segments = [(0.4, 0.8)]  # frames 10..19 of 30
    train = refs(40, frames=30, segments=segments)
    probe = LinearProbe(features=["planted"], lr=1e-2, tiny=True).fit(clip_set(train), clip_set([]), seed=0)
    fakes = [c for c in clips_of(refs(20, start=100, frames=30, segments=segments)) if c.ref.label == 1]
    scores = [probe.frame_scores(c) for c in fakes]
    assert all(len(s) == 30 for s in scores) and probe.frame_rate == 25.0
    assert np.mean([metrics.localisation_auc(s, probe.frame_rate, segments) for s in scores]) > 0.9


def test_probe_holds_out_a_stratified_tenth_when_there_is_no_validation_set():
    labels = np.array([0] * 30 + [1] * 10)
    keep, val = holdout(labels, seed=3)
    assert sorted(labels[val].tolist()) == [0, 0, 0, 1] and len(keep) + len(val) == 40
    assert not set(keep) & set(val)
    assert np.array_equal(holdout(labels, seed=3)[1], val) and not np.array_equal(holdout(labels, seed=4)[1], val)


def test_late_fusion_averages_the_probabilities_of_one_probe_per_backbone():
    fusion = LinearProbe(features=["planted", "noise"], tiny=True, max_epochs=20)
    fusion.fit(clip_set(refs(40)), clip_set([]), seed=0)
    test = clips_of(refs(20, start=100))
    alone = {}
    for backbone in ("planted", "noise"):
        member = LinearProbe(features=[backbone], tiny=True)
        member.load_state_dict({k: v for k, v in fusion.state_dict().items() if k.startswith(backbone + ".")})
        alone[backbone] = np.array(member.score_batch(test))
    np.testing.assert_allclose(fusion.score_batch(test), (alone["planted"] + alone["noise"]) / 2, rtol=1e-6)
    assert set(fusion.history) == {"planted", "noise"}


# -- anomaly detectors --------------------------------------------------------------------------------
def test_next_token_prediction_learns_real_sequences_and_flags_broken_ones():
    ntp = NextTokenPrediction(features=["waves"], d_model=32, layers=2, heads=2, ffn=64, dropout=0.0, lr=3e-3,
                              batch_size=4, max_epochs=30, tiny=True)
    ntp.fit(clip_set(refs(40, frames=25, segments=[(0.4, 0.6)])), clip_set([]), seed=0)
    losses = [h["loss"] for h in ntp.history]
    assert losses[-1] < 0.5 * losses[0]
    test = refs(30, start=100, frames=25, segments=[(0.4, 0.6)])
    assert auc(ntp, test) > 0.9
    (fake,) = [c for c in clips_of(test[:2]) if c.ref.label == 1]
    errors = ntp.frame_scores(fake)
    assert len(errors) == 25 and errors[0] == 0 and ntp.score(fake) == pytest.approx(errors.max(), rel=1e-5)


def test_sync_learns_which_frames_belong_together_and_flags_mismatched_ones():
    sync = SyncAnomaly(features=["latent_a", "latent_v"], neighbourhood=5, hidden=(64, 32, 16), lr=1e-3,
                       max_epochs=30, tiny=True)
    sync.fit(clip_set(refs(40, frames=25)), clip_set([]), seed=0)
    losses = [h["loss"] for h in sync.history]
    assert losses[-1] < 0.5 * losses[0]
    assert auc(sync, refs(30, start=100, frames=25, segments=[(0.2, 0.6)])) > 0.9


def test_next_frame_predictor_sees_only_the_past():
    model = NextFramePredictor(8, 16, 2, 2, 32, dropout=0.0).eval()
    x = torch.randn(2, 12, 8)
    changed = x.clone()
    changed[:, 7:] = torch.randn(2, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :7], model(changed)[:, :7])
        assert not torch.allclose(model(x)[:, 7:], model(changed)[:, 7:])


def test_pair_scorer_scores_each_neighbour_as_the_mlp_on_the_concatenation():
    scorer = PairScorer(3, 5, (8, 4, 4)).eval()
    a, v = torch.randn(1, 6, 3), torch.randn(1, 6, 5)
    with torch.no_grad():
        around = scorer.around(a, v, width=2)
        for i, d in [(0, 0), (2, -2), (3, 2), (5, -1)]:
            direct = scorer.rest(scorer.first(torch.cat([a[0, i], v[0, i + d]])))
            torch.testing.assert_close(around[0, i, 2 + d], direct[0])
        torch.testing.assert_close(scorer(a, v), around[..., 2])


def test_anomaly_detectors_train_on_real_clips_only(monkeypatch):
    seen = []
    original = NextTokenPrediction.collect

    def spy(self, clips):
        features, refs = original(self, clips)
        seen.extend(r.label for r in refs)
        return features, refs

    monkeypatch.setattr(NextTokenPrediction, "collect", spy)
    NextTokenPrediction(features=["waves"], d_model=16, layers=1, heads=2, ffn=16, max_epochs=2, tiny=True).fit(
        clip_set(refs(10)), clip_set(refs(4, start=10)), seed=0)
    assert seen and set(seen) == {0}


# -- training-free alignment ----------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", sorted(alignment.POOLINGS))
def test_alignment_prefers_matching_streams_and_recovers_the_shift(pooling):
    rng = np.random.default_rng(0)
    audio, other = rng.normal(size=(2, 60, 64))
    detector = AVHuBERTAlignment(features=["latent_a", "latent_v_same"], pooling=pooling, max_shift=6, tiny=True)
    perfect = alignment.pool(np.full(60, -1.0), pooling)  # -1, or a little more for the smooth maximum
    matched, delta, _ = detector.best_shift(audio, audio)
    assert matched == pytest.approx(perfect, abs=1e-5) and delta == 0
    swapped, _, _ = detector.best_shift(audio, other)  # another clip's visual stream
    assert swapped > matched + 0.3
    visual = np.roll(audio, 4, axis=0)  # v_{t+4} = a_t
    score, delta, values = detector.best_shift(audio, visual)
    assert delta == 4 and len(values) == 56 and score == pytest.approx(alignment.pool(np.full(56, -1.0), pooling), abs=1e-5)


def test_alignment_poolings_are_what_they_say():
    x = np.linspace(-1, 1, 101)
    assert alignment.pool(x, "mean") == pytest.approx(0) and alignment.pool(x, "min") == -1
    assert alignment.pool(x, "p97") == pytest.approx(np.percentile(x, 97))
    assert alignment.pool(x, "p3") == pytest.approx(np.percentile(x, 3))
    # a smooth maximum, above the max: log(sum exp(T x)) / T with T = 101 frames
    assert alignment.pool(x, "lse") == pytest.approx(logsumexp(101 * x) / 101) and alignment.pool(x, "lse") > 1.0


def test_alignment_scores_clips_and_explains_them_at_the_best_shift():
    detector = AVHuBERTAlignment(features=["latent_a", "latent_v_same"], max_shift=3, tiny=True)
    assert not detector.trains
    test = refs(30, frames=25, segments=[(0.2, 0.8)])
    assert auc(detector, test) > 0.9
    fake = clips_of(test[1:2])[0]
    frames = detector.frame_scores(fake)
    assert len(frames) == 25 and metrics.localisation_auc(frames, 25.0, fake.ref.fake_segments) > 0.9


# -- state, caching, names ---------------------------------------------------------------------------
def _fitted(kind):
    train = clip_set(refs(20, frames=15))
    if kind == "probe":
        return LinearProbe(features=["planted", "noise"], tiny=True, max_epochs=3).fit(train, clip_set([]), seed=1)
    if kind == "ntp":
        return NextTokenPrediction(features=["waves", "planted"], d_model=16, layers=1, heads=2, ffn=16, max_epochs=3,
                                   tiny=True).fit(train, clip_set([]), seed=1)
    return SyncAnomaly(features=["latent_a", "latent_v"], hidden=(8, 8, 8), lr=1e-3, max_epochs=3,
                       tiny=True).fit(train, clip_set([]), seed=1)


@pytest.mark.parametrize("kind", ["probe", "ntp", "sync"])
def test_save_and_load_give_identical_scores(kind, tmp_path):
    detector = _fitted(kind)
    test = clips_of(refs(6, start=50, frames=15))
    reloaded = type(detector).load(detector.save(tmp_path / kind))
    assert json.dumps(reloaded.config()) == json.dumps(detector.config())
    assert reloaded.score_batch(test) == detector.score_batch(test)
    np.testing.assert_array_equal(reloaded.frame_scores(test[1]), detector.frame_scores(test[1]))
    assert detector.score(test[0]) == pytest.approx(detector.score_batch(test)[0], rel=1e-6)


@pytest.mark.parametrize("kind", ["probe", "ntp", "sync"])
def test_fit_is_deterministic_on_cpu(kind):
    test = clips_of(refs(6, start=50, frames=15))
    assert _fitted(kind).score_batch(test) == _fitted(kind).score_batch(test)


def test_a_batch_of_clips_takes_one_pass_of_each_backbone(monkeypatch):
    detector = _fitted("probe")
    calls = []
    forward = Planted.forward
    monkeypatch.setattr(Planted, "forward", lambda self, model, clips, device: calls.append(len(clips)) or
                        forward(self, model, clips, device))
    detector.score_batch(clips_of(refs(5, start=50, frames=15)))
    assert calls == [5, 5]  # planted and noise, each once for the five clips


def test_cached_features_need_no_media(tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"not decoded: the planted backbone reads the ref")
    loader = ArrayLoader(cache=MediaCache(tmp_path / "cache"))
    detector = LinearProbe(features=["planted", "noise"], tiny=True)
    detector.use_loader(loader)
    (ref,) = refs(1, path=media)
    assert detector.needs_media(ref, False)
    first = detector.clip_features([loader.load(ref, detector.input_spec)])
    assert not detector.needs_media(ref, False)
    (bare,) = ClipSet([ref], loader, detector.input_spec, needs_media=detector.needs_media)
    assert bare.frames is None
    again = detector.clip_features([bare])
    for a, b in zip(first[0], again[0]):
        np.testing.assert_array_equal(a, b)


def test_features_of_several_backbones_are_trimmed_to_a_common_length(monkeypatch):
    class Short(Planted):
        name = "short"

        def forward(self, model, clips, device):
            return [x[:-3] for x in super().forward(model, clips, device)]

    monkeypatch.setitem(backbones.BACKBONES, "short", Short)
    clip = clips_of(refs(1))[0]
    (aligned,) = AVHuBERTAlignment(features=["planted", "short"], tiny=True).clip_features([clip])
    (separate,) = LinearProbe(features=["planted", "short"], tiny=True).clip_features([clip])
    assert [len(a) for a in aligned] == [17, 17] and [len(a) for a in separate] == [20, 17]


def test_published_names_follow_the_options(monkeypatch):
    assert paper_name(["avhubert_v"], False) == "AV-HuBERT (V)"
    assert paper_name(["avhubert_v", "avhubert_a"], True) == "AV-HuBERT (A+V) (random init.)"
    assert paper_name(["clip"], True) is None and paper_name(["whisper"], False) is None
    for name in ("avhubert_a", "avhubert_v", "clip"):  # stand-ins: constructing a backbone loads nothing
        monkeypatch.setitem(backbones.BACKBONES, name, Planted)
    w = {"weights": "unused.pt"}
    assert zoo.probe_avhubert_v_tiny().published_as == ()
    assert zoo.probe_avhubert_v(**w).published_as == ("AV-HuBERT (V)",)
    assert zoo.probe_avhubert_v(random_init=True, **w).published_as == ("AV-HuBERT (V) (random init.)",)
    assert zoo.probe_avhubert_a_random(**w).published_as == ("AV-HuBERT (A) (random init.)",)
    assert zoo.probe_clip(random_init=True, **w).published_as == ()
    assert zoo.probe_clip(pooling="mean", **w).published_as == ()
    assert zoo.probe_clip(batch_size=8, seed=3, **w).published_as == ("CLIP ViT-L/14",)
    assert zoo.probe_fusion(**w).published_as == ("AV-HuBERT (A+V)",)
    assert zoo.ntp(**w).published_as == ("AV-HuBERT (A) [next-token prediction]",)  # Table 3's regime, not Table 2's probe
    assert zoo.sync_anomaly(**w).published_as == ("AV-HuBERT (A+V) [audio-video synchronisation]",)
    assert zoo.sync_anomaly(lr=1e-3, **w).published_as == ()
    assert zoo.avhubert_align(**w).published_as == ("AV-HuBERT alignment (average pooling, shift 15)", "SpeechForensics")
    assert zoo.avhubert_align(pooling="p97", max_shift=0, **w).published_as == (
        "AV-HuBERT alignment (percentile-97 pooling, shift 0)",)
    assert zoo.avhubert_align(max_shift=7, **w).published_as == ()


def test_published_names_exist_in_the_published_table():
    from avbench.leaderboard import load_published

    published = load_published()
    table = set(published.loc[published["source"] == "001_3a57a32d1cdf812c.txt", "method"])
    names = {*PAPER_FEATURE_NAMES.values(), *PAPER_COMBINATION_NAMES.values(), "SpeechForensics",
             *(f"{n} (random init.)" for n in RANDOM_INIT_REPORTED),
             *(f"AV-HuBERT alignment ({word} pooling, shift {shift})" for word in alignment.POOLINGS.values()
               for shift in alignment.PUBLISHED_SHIFTS)}
    assert names <= table


def test_every_variant_is_registered_with_its_tiny_twin():
    ssl = {n for n in registry.detectors.names() if registry.detectors.entry(n).target.startswith("avbench.detectors.ssl")}
    assert ssl == set(zoo.DETECTORS) == set(zoo.VARIANTS) | {f"{n}_tiny" for n in zoo.VARIANTS}
    for name in ssl:
        cls = registry.detectors.get(name)
        assert cls.name == name and cls.__doc__.splitlines()[0]
        pair = issubclass(cls, (SyncAnomaly, AVHuBERTAlignment))
        assert cls(features=["planted"] * (2 if pair else 1), tiny=True).published_as == ()  # tiny: no paper row
        assert name.endswith("_tiny") == (inspect.signature(cls.__init__).parameters["tiny"].default is True)


# -- the harness, end to end ----------------------------------------------------------------------------
E2E = [n for n in zoo.VARIANTS if not n.endswith("_random")]



@pytest.mark.slow
@pytest.mark.parametrize("name", E2E)
def test_tiny_detector_runs_under_the_harness(name, tiny_demo, tmp_path, cache_dir):
    settings = RunSettings(detector=f"{name}_tiny", protocol=protocol.get("demo"), seeds=(0,), runs_dir=tmp_path,
                           data_roots={"demo": tiny_demo}, cache_dir=cache_dir,
                           detector_options={"max_epochs": 3} if zoo.VARIANTS[name].method.trains else {})
    (outcome,) = Runner(settings).run()
    record = outcome.record
    assert record["coverage"]["failed"] == 0 and record["coverage"]["scored"] == record["coverage"]["total"] > 0
    assert record["published_as"] == [] and {"AUC", "AP"} <= {m["metric"] for m in record["metrics"]}
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet")
    assert scores["localisation_auc"].isna().all()  # the demo's fakes have no segments


@pytest.mark.slow
def test_probe_localises_where_segments_exist(tmp_path, cache_dir):
    from avbench.testing_datasets import av1m, clip_bytes

    root = av1m(tmp_path / "av1m", clip_bytes(seconds=0.4, size=128), speakers=3)
    settings = RunSettings(detector="probe_avhubert_a_tiny", protocol=protocol.get("av1m_intra"), seeds=(0,),
                           runs_dir=tmp_path / "runs", data_roots={"av1m": root}, cache_dir=cache_dir,
                           detector_options={"max_epochs": 2})
    (outcome,) = Runner(settings).run()
    scores = pd.read_parquet(outcome.record_path.parent / "scores.parquet")
    located = scores["localisation_auc"].notna()
    assert located.any() and (scores.loc[located, "label"] == 1).all()
    assert "LOC_AUC" in {m["metric"] for m in outcome.record["metrics"]}
