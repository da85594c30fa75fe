"""Scoring chunks of loaded clips: in this process, or on Ray actors that hold the detector.

A chunk is a list of `(ref, Clip | ClipError, load_seconds)` in the order of the test set;
`score_chunk` turns it into one row per clip (SCORE_COLUMNS): a clip the loader refused keeps its
ClipError, the others are scored in one `score_batch`, one by one if the batch raises. A detector
with `class_names` (four-class) answers ClassScores: its rows add the true class and the class
probabilities. A scorer's
`map(fold, test, chunks)` yields `(chunk, table, score_seconds)` in the order of `chunks`, so the
runner writes, watches (fail-fast) and resumes the same way whoever scored:

- `InProcess(detector)`: the runner's process scores (the local executor);
- `RayScorers(detector, loader, device)` (`--executor ray`): actors, each rebuilding the detector
  from its class, `config()` and `state_dict()` (the contract `load` rests on) and holding it for
  the fold. On CUDA there is one actor per GPU of the cluster, each reserving `num_gpus=1`; on the
  CPU one actor that reserves no CPU (it shares the cores with the loading tasks, as the runner's
  process does under the local executor). An actor that dies on a chunk (a segfault in a native
  library, the out-of-memory killer) is restarted and the chunk's clips are scored again one per
  call; a clip that kills it again is counted as failed, reason `scorer_crashed`. The tracebacks
  of `detector_error` clips are logged by the actor (Ray's worker logs), not by the runner.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from collections import deque
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from avbench import metrics
from avbench.clips import Clip, ClipError, ClipRef
from avbench.detector import ClassScores, Detector
from avbench.loader import MediaLoader
from avbench.protocol import Fold, TestSet

log = logging.getLogger("avbench.scoring")

SCORE_COLUMNS = ["fold", "test_set", "clip_id", "file", "label", "category", "method", "subset_value",
                 "score", "status", "reason", "message", "seconds", "localisation_auc", "true_class",
                 "class_probabilities", "fallbacks"]

Chunk = list[tuple[ClipRef, Clip | ClipError, float]]


class ScoringError(RuntimeError):
    """The scorers cannot work at all (an actor cannot build the detector, no GPU in the cluster)."""


def score_chunk(detector: Detector, fold: Fold, test: TestSet, chunk: Chunk) -> tuple[pd.DataFrame, float]:
    """The rows of `chunk`'s clips and the seconds spent scoring them."""
    results = {ref.clip_id: failed(err) for ref, err, _ in chunk if isinstance(err, ClipError)}
    loaded = [(ref, clip) for ref, clip, _ in chunk if ref.clip_id not in results]
    classes = len(detector.class_names)
    t0 = time.perf_counter()
    try:
        values = detector.score_batch([clip for _, clip in loaded]) if loaded else []
        for (ref, _), value in zip(loaded, values, strict=True):
            results[ref.clip_id] = checked(ref, value, classes)
    except Exception:  # one bad clip must not sink the batch: score them one by one
        for ref, clip in loaded:
            results[ref.clip_id] = _score_one(detector, ref, clip, classes)
    localisation = {ref.clip_id: localise(detector, ref, clip) for ref, clip in loaded
                    if results[ref.clip_id][1] == "scored"}
    seconds = time.perf_counter() - t0
    return table(fold, test, chunk, results, localisation, seconds / max(len(loaded), 1), classes), seconds


def table(fold: Fold, test: TestSet, chunk: Chunk, results: dict, localisation: dict, per_clip: float,
          classes: int = 0) -> pd.DataFrame:
    """The rows of `chunk` from each clip's (score, status, reason, message, class probabilities); a
    scored clip's `seconds` are its loading and its share of the chunk's scoring (`per_clip`). With
    `classes`, each row carries its true class (metrics.four_class_label; NaN when unknown).
    `fallbacks` joins the clip's declared fallbacks (Clip.fallbacks) with commas, "" for none."""
    rows = []
    for ref, clip, load_s in chunk:
        score, status, reason, message, probabilities = results[ref.clip_id]
        true_class = metrics.four_class_label(ref.label, ref.video_label, ref.audio_label) if classes else None
        rows.append({"fold": fold.name, "test_set": test.name, "clip_id": ref.clip_id,
                     "file": ref.meta.get("file") or ref.clip_id + ref.path.suffix, "label": ref.label,
                     "category": ref.category, "method": ref.method,
                     "subset_value": getattr(ref, test.subsets) if test.subsets else "",
                     "score": score, "status": status, "reason": reason, "message": message,
                     "seconds": load_s + (per_clip if status == "scored" else 0.0),
                     "localisation_auc": localisation.get(ref.clip_id, np.nan),
                     "true_class": np.nan if true_class is None else float(true_class),
                     "class_probabilities": probabilities,
                     "fallbacks": ",".join(clip.fallbacks) if isinstance(clip, Clip) else ""})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


Result = tuple[float, str, str, str, "list[float] | None"]  # score, status, reason, message, class probabilities


def _score_one(detector: Detector, ref: ClipRef, clip: Clip, classes: int) -> Result:
    try:
        return checked(ref, detector.score(clip), classes)
    except ClipError as err:
        return failed(err)
    except Exception as exc:  # recorded with its traceback; the run goes on with the next clip
        log.error("%s: detector error on %s\n%s", detector.name, ref.path, traceback.format_exc())
        return (np.nan, "failed", "detector_error", f"{ref.path}: {type(exc).__name__}: {exc}", None)


def localise(detector: Detector, ref: ClipRef, clip: Clip) -> float:
    """Frame-level localisation AUC of a scored fake clip with annotated segments, else NaN."""
    if detector.frame_rate is None or ref.label != 1 or not ref.fake_segments:
        return np.nan
    try:
        return metrics.localisation_auc(detector.frame_scores(clip), detector.frame_rate, ref.fake_segments)
    except Exception:  # an explanation that fails leaves the score standing
        log.warning("%s: no frame scores for %s\n%s", type(detector).__name__, ref.path, traceback.format_exc())
        return np.nan


def checked(ref: ClipRef, value, classes: int = 0) -> Result:
    """A detector's answer as a row's result: a float, or ClassScores over `classes` classes."""
    probabilities = None
    if classes:
        if not isinstance(value, ClassScores) or len(value.probabilities) != classes:
            raise TypeError(f"a detector with {classes} class_names returns ClassScores with {classes} "
                            f"probabilities, got {value!r}")
        probabilities = [float(p) for p in value.probabilities]
        value = value.score
        if not np.all(np.isfinite(probabilities)):
            return (np.nan, "failed", "non_finite_score", f"{ref.path}: class probabilities {probabilities}", None)
    value = float(value)
    if not np.isfinite(value):
        return (np.nan, "failed", "non_finite_score", f"{ref.path}: the detector returned {value}", None)
    return (value, "scored", "", "", probabilities)


def failed(err: ClipError) -> Result:
    return (np.nan, "failed", err.reason, err.message, None)


class InProcess:
    """Scores each chunk in this process as it comes."""

    def __init__(self, detector: Detector):
        self.detector = detector

    def __enter__(self) -> "InProcess":
        return self

    def __exit__(self, *_) -> None:
        pass

    def map(self, fold: Fold, test: TestSet, chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, pd.DataFrame, float]]:
        for chunk in chunks:
            yield chunk, *score_chunk(self.detector, fold, test, chunk)


class _ScorerActor:
    """A Ray actor holding one detector, built as `Detector.load` builds one, on its device."""

    def __init__(self, recipe: tuple[type[Detector], dict, dict], loader: MediaLoader, device: str):
        cls, config, state = recipe
        self.detector = cls(**config)
        self.detector.load_state_dict(state)
        self.detector.to(device)
        self.detector.use_loader(loader)
        self.detector.prepare(False)

    def ready(self) -> bool:
        return True

    def score(self, fold: Fold, test: TestSet, chunk: Chunk) -> tuple[pd.DataFrame, float]:
        return score_chunk(self.detector, fold, test, chunk)


class RayScorers:
    """Actors scoring chunks on a Ray cluster (already joined: `ray.init`), `in_flight` chunks per
    actor submitted ahead so that an actor never waits for the runner. Use as a context manager:
    the actors end with it."""

    def __init__(self, detector: Detector, loader: MediaLoader, device: str, in_flight: int = 2):
        import ray

        self._ray = ray
        self.detector = detector  # the runner's copy: what to load for it (input_spec, needs_media)
        on_gpu = device.startswith("cuda")
        n_actors = int(ray.cluster_resources().get("GPU", 0)) if on_gpu else 1
        if n_actors == 0:
            raise ScoringError(f"--device {device} with --executor ray: the Ray cluster has no GPU "
                               "(ray.cluster_resources() lists none); start its nodes with GPUs or use --device cpu")
        actor = ray.remote(num_cpus=0, num_gpus=1 if on_gpu else 0, max_restarts=-1)(_ScorerActor)
        # held for the actors' life: a restarted actor is built from it again
        self._recipe = ray.put((type(detector), detector.config(), detector.state_dict()))
        # Ray shows each actor only its own GPU, as cuda:0
        self.actors = [actor.remote(self._recipe, loader, "cuda" if on_gpu else device) for _ in range(n_actors)]
        self.in_flight = in_flight
        self._turns = itertools.cycle(self.actors)
        try:
            ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            self.close()
            raise ScoringError(f"the Ray scoring actors could not build detector '{detector.name}': {exc}") from exc

    def __enter__(self) -> "RayScorers":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor, no_restart=True)
        self.actors = []

    def map(self, fold: Fold, test: TestSet, chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, pd.DataFrame, float]]:
        chunks = iter(chunks)
        flight: deque = deque()

        def submit() -> None:
            chunk = next(chunks, None)
            if chunk is not None:
                flight.append((chunk, self._send(fold, test, chunk)))

        for _ in range(self.in_flight * len(self.actors)):
            submit()
        while flight:
            chunk, answer = flight.popleft()
            yield chunk, *self._answer(fold, test, chunk, answer)
            submit()

    def _send(self, fold: Fold, test: TestSet, chunk: Chunk):
        return next(self._turns).score.remote(fold, test, chunk)

    def _answer(self, fold: Fold, test: TestSet, chunk: Chunk, answer) -> tuple[pd.DataFrame, float]:
        """The actor's answer; if the actor died, each clip of the chunk scored alone by an actor known
        to be alive just before, so that a clip counted as `scorer_crashed` is the one that killed it."""
        ray = self._ray
        try:
            return ray.get(answer)
        except ray.exceptions.RayActorError:
            log.warning("a Ray scoring actor died on a chunk of %d clips; scoring them one by one", len(chunk))
        parts = []
        for item in chunk:
            actor = next(self._turns)
            self._wait_alive(actor)
            try:
                parts.append(ray.get(actor.score.remote(fold, test, [item])))
            except ray.exceptions.RayActorError:
                ref = item[0]
                results = {ref.clip_id: (np.nan, "failed", "scorer_crashed",
                                         f"{ref.path}: the Ray actor scoring it died, also when it was scored "
                                         "alone; the run goes on", None)}
                parts.append((table(fold, test, [item], results, {}, 0.0, len(self.detector.class_names)), 0.0))
        return pd.concat([rows for rows, _ in parts], ignore_index=True), sum(seconds for _, seconds in parts)

    def _wait_alive(self, actor, seconds: float = 300.0) -> None:
        """Return once `actor` answers (Ray restarts a dead one: its detector is built again)."""
        ray, give_up = self._ray, time.monotonic() + seconds
        while True:
            try:
                ray.get(actor.ready.remote())
                return
            except ray.exceptions.RayActorError:
                if time.monotonic() > give_up:
                    raise ScoringError(f"a Ray scoring actor did not come back within {seconds:g} s of dying") from None
                time.sleep(0.1)
