"""Run one detector under one protocol for several seeds, resumably.

For each seed the run folder `RUNS/<detector>/<protocol>/seed<k>/` receives:
  run_key.json      what the run is (detector config, checkpoint, protocol, data, seed): a folder
                    holding another run is never mixed with this one;
  models/<fold>/    the fitted detector of each fold (so a restart does not fit again);
  partial/          per-clip results, written atomically every few clips while scoring;
  scores.parquet    every test clip: its score, or `failed` with a reason;
  record.json       metrics, coverage, timings and provenance; written last, so its presence
                    means the run is complete and the same command does no new work.
A run killed at any point and started again skips what is on disk and ends with the same record
(timings aside). Checkpoints are never selected on test data: `fit` sees train and val only.

Failing fast: everything that does not depend on a clip (device, data roots and their indexes,
protocol parameters, every selection non-empty, detector options, checkpoint and weights files) is
checked by `Runner.preflight` and the detector's `prepare` before the first clip is decoded, and
run_key.json is written only then, so a run that could not start blocks no rerun. When the first
FAIL_FAST_CLIPS clips a detector sees in a test set all fail with one detector error, the run stops
with that error. A test set where no clip (or clips of one class only) could be scored still ends
with a record, its metrics None and `problems` saying why.

Several devices (avbench.distributed): every rank runs the same run and fits in lockstep; rank 0
alone prepares run folders, saves fitted models, scores and writes records.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
import weakref
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

import avbench
from avbench import metrics, registry, significance
from avbench.cache import MediaCache
from avbench.clips import ClipError, ClipIndex, ClipRef
from avbench.detector import Detector
from avbench.distributed import barrier, is_main
from avbench.faces import Tracking
from avbench.io import atomic_write, sha256_file, sha256_json, write_json
from avbench.loader import ClipSet, MediaLoader, UnlabeledPool
from avbench.protocol import Fold, Protocol, Selection, TestSet, select
from avbench.reporting import reporting_to
from avbench.scoring import SCORE_COLUMNS, InProcess, RayScorers, ScoringError
from avbench.workers import MediaPool, RayPool

log = logging.getLogger("avbench.runner")

RECORD_SCHEMA = 1


class RunError(RuntimeError):
    """A run that cannot start or go on; the message says what to do (exit 1)."""


class UsageError(RunError):
    """Settings that are wrong whatever the data: options, protocol parameters, names (exit 2)."""


#: The run stops when the first this-many clips a detector sees in a test set all fail with one
#: detector error (same exception type and message, the clip's path aside): a systematic failure
#: (bad weights, a bug), not a property of the clips. Data problems (ClipError) never count.
FAIL_FAST_CLIPS = 3


@dataclass
class RunSettings:
    detector: str
    protocol: Protocol
    seeds: tuple[int, ...]
    runs_dir: Path = Path("runs")
    device: str = "cpu"
    data_roots: dict[str, Path] = field(default_factory=dict)
    checkpoint: Path | None = None
    detector_options: dict = field(default_factory=dict)
    cache_dir: Path | None = None
    overwrite: bool = False
    chunk_size: int = 8
    #: How faces are followed through a clip: landmarks on every k-th frame, the detector sparingly.
    tracking: Tracking = Tracking()
    bootstrap_resamples: int = 1000
    #: Processes that decode, track faces and crop (avbench.workers); 0: this process does, with no
    #: isolation from a crashing or hanging clip. The CLI's default is every usable core.
    workers: int = 0
    #: Seconds one clip's loading may take before it counts as failed ("timeout"); needs workers.
    clip_timeout: float | None = None
    #: "local" (worker processes on this machine) or "ray" (loading as Ray tasks, scoring on Ray actors
    #: holding the detector, avbench.scoring; `workers` unused).
    executor: str = "local"
    #: The Ray cluster to join ("auto", "ray://host:10001"); None starts a local one.
    ray_address: str | None = None
    #: A run folder of the same detector on the protocol this one perturbs (runs/D/P): each seed's
    #: models fitted there are reused, since a perturbation changes only the test clips.
    fit_from: Path | None = None


@dataclass
class SeedOutcome:
    seed: int
    status: str  # "done" (ran now), "skipped" (already complete) or "fitted" (a rank > 0: fitted, wrote nothing)
    record_path: Path
    record: dict


@dataclass
class SeedPlan:
    """What `Runner.plan` decided for one seed before any work."""

    seed: int
    run_dir: Path
    detector: Detector
    key: dict
    replace: bool = False  # the folder holds nothing computed under this key: remove it first
    outcome: SeedOutcome | None = None  # set when the folder already holds the complete run


# -- data -------------------------------------------------------------------------------------------
def load_indexes(protocol: Protocol, data_roots: dict[str, Path]) -> tuple[dict[str, ClipIndex], dict[str, str]]:
    """Clip index of every dataset the protocol uses (splits as it defines them), and their
    published display names. A data root is a dataset folder, or a parquet index built by
    `avbench datasets index` (indexing a large dataset once instead of at every run)."""
    indexes, display = {}, {}
    for name in protocol.datasets():
        adapter = registry.datasets.get(name)()
        source = data_roots.get(name)
        if source is not None and Path(source).is_file():
            index = _read_index(name, Path(source))
        else:
            index = adapter.index(source)  # adapters check the root and say what is missing
        for problem in index.problems:
            log.warning("%s: %s", name, problem)
        if len(index) == 0:
            raise RunError(f"dataset '{name}' at {index.root} has no usable clip")
        indexes[name] = protocol.assign_splits(index)
        display[name] = adapter.display_name or name
    return indexes, display


def _read_index(name: str, source: Path) -> ClipIndex:
    """A parquet clip index given as the data root of dataset `name`, checked to be one of `name`."""
    hint = f"(--data-root {name}=DIR takes the dataset's folder, or a .parquet index from `avbench datasets index {name}`)"
    if source.suffix != ".parquet":
        raise RunError(f"data root of '{name}' is the file {source}, not a folder or a .parquet index {hint}")
    try:
        index = ClipIndex.load(source)
    except Exception as exc:  # pyarrow's errors on a truncated or foreign file have no common base
        raise RunError(f"{source}: not a readable clip index ({type(exc).__name__}: {exc}) {hint}") from exc
    if index.datasets != [name]:
        raise RunError(f"{source} indexes dataset {', '.join(map(repr, index.datasets)) or 'none'}, not '{name}' {hint}")
    return index


# -- detectors --------------------------------------------------------------------------------------
def build_detector(name: str, options: dict, seed: int, checkpoint: Path | None) -> Detector:
    """The detector of a run: restored from `checkpoint`, else built from `options` with the run's
    seed. Wrong options raise UsageError; a checkpoint that cannot be read raises RunError naming it."""
    cls = registry.detectors.get(name)
    if "seed" in options:
        raise UsageError("-o seed: a run's seeds come from --seeds (each seed builds its own detector)")
    if checkpoint is not None:  # saved options, replaced by those given (a batch size, trusting a pickle)
        if not checkpoint.exists():
            raise RunError(f"checkpoint not found: {checkpoint}")
        try:
            return cls.load(checkpoint, **options)
        except TypeError as exc:
            raise UsageError(f"detector '{name}' options {options}: {message_of(exc)}") from exc
        except (FileNotFoundError, ValueError, OSError) as exc:
            message = message_of(exc)
            raise RunError(message if str(checkpoint) in message else f"checkpoint {checkpoint}: {message}") from exc
    takes_seed = "seed" in inspect.signature(cls.__init__).parameters
    kwargs = {**options, **({"seed": seed} if takes_seed else {})}
    try:
        return cls(**kwargs)
    except FileNotFoundError as exc:  # a weights file an option names is not there
        raise RunError(message_of(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise UsageError(f"detector '{name}' options {options}: {message_of(exc)}") from exc


def check_task(protocol: Protocol, detector: Detector) -> None:
    """A four-class protocol needs a detector of metrics.FOUR_CLASSES; a binary one, a binary detector."""
    names = tuple(detector.class_names)
    if protocol.four_class and names != metrics.FOUR_CLASSES:
        raise UsageError(f"protocol '{protocol.id}' is the four-class task ({', '.join(metrics.FOUR_CLASSES)}); "
                         f"detector '{detector.name}' " + (f"has classes {', '.join(names)}" if names else "is binary")
                         + " (a detector that can, e.g. fauforensics, takes -o classes=4)")
    if names and not protocol.four_class:
        raise UsageError(f"detector '{detector.name}' scores the classes {', '.join(names)}: run it on a "
                         f"four-class protocol, '{protocol.id}+four_class'")


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, naming it, before any work starts."""
    if device in ("cpu", "auto"):
        return
    if not device.startswith("cuda"):
        raise UsageError(f"unknown device '{device}'; use cpu or cuda")
    try:
        import torch
    except ImportError as exc:
        raise RunError(f"--device {device} needs PyTorch with CUDA; install torch, or use --device cpu") from exc
    if not torch.cuda.is_available():
        raise RunError(f"--device {device}: no CUDA GPU is visible to PyTorch on this machine; use --device cpu")
    _, _, number = device.partition(":")
    if number and (not number.isdigit() or int(number) >= torch.cuda.device_count()):
        raise RunError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def checkpoint_sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise RunError(f"checkpoint not found: {path}")
    return sha256_json({p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()})


# -- provenance -------------------------------------------------------------------------------------
def git_commit() -> str | None:
    source = Path(avbench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    found = {}
    for name in ("numpy", "scipy", "pandas", "scikit-learn", "av", "decord", "dlib-bin", "torch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


# -- the run ----------------------------------------------------------------------------------------
class Runner:
    def __init__(self, settings: RunSettings, progress=None):
        self.s = settings
        self.progress = progress  # a rich.progress.Progress, or None
        self.loader = MediaLoader(cache=MediaCache(settings.cache_dir), tracking=settings.tracking)
        self._prepared: weakref.WeakSet[Detector] = weakref.WeakSet()
        self.pool: MediaPool | None = None  # set while `media_pool` lasts

    @cached_property
    def _data(self) -> tuple[dict[str, ClipIndex], dict[str, str]]:
        return load_indexes(self.s.protocol, self.s.data_roots)

    @property
    def indexes(self) -> dict[str, ClipIndex]:
        return self._data[0]

    @property
    def display(self) -> dict[str, str]:
        return self._data[1]

    def run_dir(self, seed: int) -> Path:
        return self.s.runs_dir / self.s.detector / self.s.protocol.id / f"seed{seed}"

    def run(self) -> list[SeedOutcome]:
        """Check everything that does not depend on a clip, then run each seed not yet complete."""
        detectors = [build_detector(self.s.detector, self.s.detector_options, seed, self.s.checkpoint)
                     for seed in self.s.seeds]  # wrong options are usage errors, said before data problems
        if not self.s.protocol.trains and detectors[0].trains and self.s.checkpoint is None:
            raise RunError(f"detector '{self.s.detector}' learns from data: protocol '{self.s.protocol.id}' "
                           "trains nothing, so pass --checkpoint DIR with a trained one")
        check_task(self.s.protocol, detectors[0])
        self.preflight()
        plans = [self.plan(seed, detector) for seed, detector in zip(self.s.seeds, detectors)]
        barrier()  # every rank has read the folders before rank 0 changes them
        pending = [p for p in plans if p.outcome is None]
        if pending:  # the files every seed reads, opened once before the first clip is decoded
            self.ready(pending[0].detector)
        with self.media_pool():
            return [plan.outcome or self.run_seed(plan) for plan in plans]

    def preprocess(self) -> dict:
        """Load every clip the run would read (train and val where the detector fits, every test
        set) into the cache, in the worker processes, so that the run itself decodes nothing.
        Nothing is fitted or scored and no run folder is written. Returns clip counts."""
        detector = build_detector(self.s.detector, self.s.detector_options, self.s.seeds[0], self.s.checkpoint)
        detector.use_loader(self.loader)
        self.preflight()
        fits = detector.trains and self.s.checkpoint is None
        wanted: dict[bool, dict[tuple[str, str], ClipRef]] = {False: {}, True: {}}  # by remove_audio, deduplicated
        for fold in self.s.protocol.folds(self.indexes, self.display):
            for selection in (fold.train, fold.val) if fits else ():
                if selection is not None:
                    wanted[False].update(((r.clip_id, ""), r) for r in self.refs(selection))
            for test in fold.tests:
                wanted[self.s.protocol.missing_audio].update(((r.clip_id, r.perturbation), r) for r in self.test_refs(test))
        counts = {"clips": sum(map(len, wanted.values())), "loaded": 0, "failed": {}}
        task = self.progress.add_task(f"preprocess · {self.s.detector}", total=counts["clips"]) if self.progress else None
        with self.media_pool():
            for remove_audio, refs in wanted.items():
                for _, result in self._clip_set(refs.values(), detector, remove_audio).results():
                    if isinstance(result, ClipError):
                        counts["failed"][result.reason] = counts["failed"].get(result.reason, 0) + 1
                    else:
                        counts["loaded"] += 1
                    if task is not None:
                        self.progress.advance(task)
        return counts

    @contextlib.contextmanager
    def media_pool(self):
        """What loads clips while this context lasts: worker processes, a Ray cluster, or (workers=0)
        this process."""
        if self.s.executor == "ray":
            pool = RayPool(self.loader, self.s.ray_address, self.s.clip_timeout)
        elif self.s.workers == 0:
            yield None
            return
        else:
            pool = MediaPool(self.loader, self.s.workers, self.s.clip_timeout)
        with pool as self.pool:
            try:
                yield self.pool
            finally:
                self.pool = None

    # -- before the first clip ----------------------------------------------------------------------
    def preflight(self) -> None:
        """Device, folders, data roots, indexes, protocol and selections: a run that cannot succeed
        stops here, with one message, before any media is decoded and before anything is written."""
        s, cls = self.s, registry.detectors.get(self.s.detector)
        check_device(s.device)
        if s.workers < 0:
            raise UsageError(f"--workers takes 0 (load in this process) or more, got {s.workers}")
        if s.executor not in ("local", "ray"):
            raise UsageError(f"--executor takes local or ray, got '{s.executor}'")
        if s.executor == "local" and s.clip_timeout is not None and (s.workers == 0 or not s.clip_timeout > 0):
            raise UsageError(f"--clip-timeout takes seconds > 0 and needs --workers >= 1 (a clip is stopped by "
                             f"stopping its worker), got {s.clip_timeout} with {s.workers} workers")
        for what, folder in (("--runs-dir", s.runs_dir), ("--cache-dir", s.cache_dir)):
            if folder is not None and folder.exists() and not folder.is_dir():
                raise RunError(f"{what} {folder} is a file, not a folder")
        used = s.protocol.datasets()
        for name in used:
            if name not in registry.datasets.names():
                raise UsageError(f"protocol '{s.protocol.id}' uses dataset '{name}', which avbench does not know; "
                                 f"datasets: {', '.join(registry.datasets.names())}")
        for name in sorted(set(s.data_roots) - set(used)):
            if name not in registry.datasets.names():
                raise UsageError(f"--data-root names '{name}', which is no dataset; "
                                 f"protocol '{s.protocol.id}' uses {', '.join(used)}")
            log.warning("--data-root %s is not used: protocol '%s' uses %s", name, s.protocol.id, ", ".join(used))
        try:
            indexes = self.indexes
            folds = s.protocol.folds(indexes, self.display)
        except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
            raise RunError(message_of(exc)) from exc
        fits = cls.trains and s.checkpoint is None
        for fold in folds:
            needed = [("training set", fold.train)] if fits and fold.train is not None else []
            needed += [(f"test set '{t.name}'", t.selection) for t in fold.tests]
            for what, selection in needed:
                if len(select(indexes[selection.dataset], selection)) == 0:
                    where = f"fold '{fold.name}': " if len(folds) > 1 else ""
                    raise RunError(f"{where}{what} is empty: "
                                   + describe_empty(indexes[selection.dataset], selection, s.protocol))

    def plan(self, seed: int, detector: Detector) -> "SeedPlan":
        """The seed's run key for its `detector` (built, not yet prepared); `outcome` is set when its
        folder already holds the complete run. A folder holding another run is refused only if work
        was done in it; one where nothing was computed is replaced."""
        run_dir = self.run_dir(seed)
        key = json.loads(json.dumps(self.run_key(seed, detector), sort_keys=True, default=str))
        plan = SeedPlan(seed, run_dir, detector, key)
        key_path, record_path = run_dir / "run_key.json", run_dir / "record.json"
        if not key_path.exists():
            if _holds_work(run_dir) and not self.s.overwrite:
                raise RunError(f"{run_dir} holds files but no run_key.json: not a run avbench can resume; "
                               "pass --overwrite to replace it or choose another --runs-dir")
            plan.replace = run_dir.exists()
            return plan
        stored = _read_json(key_path)
        if stored == key:
            if record_path.exists():
                plan.outcome = SeedOutcome(seed, "skipped", record_path, _read_json(record_path))
            return plan
        if _holds_work(run_dir) and not self.s.overwrite:
            raise RunError(f"{run_dir} holds a run with other settings ({_diff_keys(stored, key)}); "
                           "pass --overwrite to replace it or choose another --runs-dir")
        plan.replace = True
        return plan

    def ready(self, detector: Detector, training: bool | None = None) -> Detector:
        """The detector on the run's device, given the loader, its files opened and verified (`prepare`)."""
        if detector in self._prepared:
            return detector
        if training is None:
            training = detector.trains and self.s.checkpoint is None and self.s.protocol.trains
        if detector.uses_pool and training and self.s.protocol.pool is None:
            raise UsageError(f"{detector.name} learns from an unlabelled pool after fitting, and protocol "
                             f"'{self.s.protocol.id}' names none: give one with --param "
                             "'pool={\"dataset\": NAME, \"split\": SPLIT}', or turn the option off")
        detector.to(self.s.device)
        detector.use_loader(self.loader)
        try:
            detector.prepare(training)
        except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
            raise RunError(message_of(exc)) from exc
        self._prepared.add(detector)
        return detector

    def run_key(self, seed: int, detector: Detector) -> dict:
        return {
            "detector": self.s.detector,
            "detector_version": detector.version,
            "detector_config": detector.config(),
            "detector_sources": detector.sources(),
            "checkpoint_sha256": checkpoint_sha256(self.s.checkpoint),
            "protocol": self.s.protocol.spec(),
            "index_fingerprints": {name: idx.fingerprint() for name, idx in self.indexes.items()},
            "media": {"tracking": asdict(self.s.tracking)},
            "seed": seed,
        } | ({"fit_from": str(self.s.fit_from)} if self.s.fit_from is not None else {})

    # -- one seed -----------------------------------------------------------------------------------
    def run_seed(self, plan: "SeedPlan") -> SeedOutcome:
        seed, run_dir, key = plan.seed, plan.run_dir, plan.key
        first = self.ready(plan.detector)
        if is_main():
            if plan.replace:
                shutil.rmtree(run_dir, ignore_errors=True)
            write_json(run_dir / "run_key.json", key)
        barrier()

        started = time.perf_counter()
        timings = {"fit_seconds": 0.0, "load_seconds": 0.0, "score_seconds": 0.0}
        folds = self.s.protocol.folds(self.indexes, self.display)
        fold_info, tables = [], []
        for i, fold in enumerate(folds):
            fresh = first if i == 0 else self.ready(build_detector(
                self.s.detector, self.s.detector_options, seed, self.s.checkpoint))
            fitted, info = self.fitted_detector(fresh, fold, seed, run_dir, timings)
            fold_info.append(info)
            if not is_main():  # rank 0 scores; this rank goes on to the next fit
                continue
            with self.scorer(fitted) as scorer:
                for test in fold.tests:
                    tables.append(self.score_test_set(scorer, fold, test, run_dir, timings))
        if not is_main():
            return SeedOutcome(seed, "fitted", run_dir / "record.json", {})
        scores = pd.concat(tables, ignore_index=True)
        with atomic_write(run_dir / "scores.parquet", "wb") as fh:
            scores.to_parquet(fh, index=False)
        timings["total_seconds"] = time.perf_counter() - started
        scored = int((scores["status"] == "scored").sum())
        timings["clips_per_second"] = scored / timings["score_seconds"] if timings["score_seconds"] else None
        record = self.make_record(seed, first, key, folds, fold_info, scores, timings)
        write_json(run_dir / "record.json", record)
        shutil.rmtree(run_dir / "partial", ignore_errors=True)
        return SeedOutcome(seed, "done", run_dir / "record.json", record)

    # -- fitting ------------------------------------------------------------------------------------
    def fitted_detector(self, detector: Detector, fold: Fold, seed: int, run_dir: Path,
                        timings: dict) -> tuple[Detector, dict]:
        """`detector` (built and ready) fitted on the fold's train and val sets, or restored from the
        model this run saved before it was interrupted."""
        info = {"fold": fold.name, "train_label": fold.train_label, "fit": "none"}
        if self.s.checkpoint is not None:
            info["fit"] = "checkpoint"
            return detector, info
        if not detector.trains or fold.train is None:
            return detector, info
        model_dir = run_dir / "models" / _safe(fold.name)
        if model_dir.is_dir():  # fitted before this run was interrupted
            return self.ready(type(detector).load(model_dir), training=False), _read_json(model_dir / "fit.json")
        if self.s.fit_from is not None and (fitted := self.s.fit_from / f"seed{seed}" / "models" / _safe(fold.name)).is_dir():
            info = {**_read_json(fitted / "fit.json"), "fit": "reused", "fitted_in": str(fitted),
                    "state_sha256": sha256_file(fitted / "state.npz")}
            return self.ready(type(detector).load(fitted), training=False), info
        train = self._clip_set(self.refs(fold.train), detector)
        val = self._clip_set(self.refs(fold.val) if fold.val else [], detector)
        t0 = time.perf_counter()
        self._say(f"fitting {self.s.detector} on {len(train)} clips ({fold.train_label}, seed {seed})")
        training_dir = model_dir.with_name(model_dir.name + ".training")
        training_dir.mkdir(parents=True, exist_ok=True)
        detector.use_training_dir(training_dir)
        with reporting_to(self.progress):  # a training loop's bars join the run's display
            detector.fit(train, val, seed=seed, device=self.s.device)
        timings["fit_seconds"] += time.perf_counter() - t0
        info.update(fit="fitted", train_clips=len(train), val_clips=len(val),
                    train_failed=_reasons(train.failures), val_failed=_reasons(val.failures))
        if detector.uses_pool:
            t0 = time.perf_counter()
            info["pool"] = self.adapt(detector, fold, train, val, seed)
            timings["fit_seconds"] += time.perf_counter() - t0
        if detector.history:
            info["history"] = detector.history
        if not is_main():
            return detector, info
        staging = model_dir.with_name(model_dir.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        detector.save(staging)
        write_json(staging / "fit.json", info)
        staging.rename(model_dir)
        shutil.rmtree(training_dir, ignore_errors=True)
        return detector, info

    def adapt(self, detector: Detector, fold: Fold, train: ClipSet, val: ClipSet, seed: int) -> dict:
        """`detector.adapt` on the protocol's pool, label-stripped; what the record keeps of it: the
        pool's fingerprint, its overlap with the fold's test sets (any overlap makes the run
        transductive) and, per round, the pseudo-labels' counts per class and their accuracy on
        the labels withheld from the detector."""
        pool = self.s.protocol.pool
        refs = self.pool_refs()
        tokens = UnlabeledPool.tokens_for(refs, seed)
        view = UnlabeledPool(list(tokens), lambda token: self.loader.load(tokens[token], detector.input_spec))
        self._say(f"adapting {self.s.detector} on a pool of {len(refs)} unlabelled clips ({pool.dataset})")
        with reporting_to(self.progress):
            rounds = detector.adapt(train, val, view, seed=seed, device=self.s.device)
        tested = {(r.dataset, r.clip_id) for test in fold.tests for r in self.test_refs(test)}
        overlap = sum((r.dataset, r.clip_id) in tested for r in refs)
        return {"dataset": pool.dataset,
                "selection": asdict(pool.selection) if pool.selection else {"unlabeled": list(pool.unlabeled)},
                "clips": len(refs), "fingerprint": sha256_json(sorted(f"{r.dataset}/{r.clip_id}" for r in refs)),
                "overlap_with_test": overlap, "transductive": overlap > 0, "failed": _reasons(view.failures),
                "rounds": [pseudo_label_stats(k + 1, labels, tokens) for k, labels in enumerate(rounds)]}

    def pool_refs(self) -> list[ClipRef]:
        """The clips of the protocol's pool: a selection of an index, or a dataset's unlabelled subsets."""
        pool = self.s.protocol.pool
        if pool.selection is not None:
            return self.refs(pool.selection)
        try:
            refs = registry.datasets.get(pool.dataset)().unlabeled(self.s.data_roots.get(pool.dataset), pool.unlabeled)
        except (FileNotFoundError, ValueError) as exc:
            raise RunError(message_of(exc)) from exc
        return [replace(r, trim_silence=True) for r in refs] if self.s.protocol.trim_silence else refs

    def _clip_set(self, refs, detector: Detector, remove_audio: bool = False) -> ClipSet:
        return ClipSet(list(refs), self.loader, detector.input_spec, remove_audio=remove_audio,
                       needs_media=detector.needs_media, pool=self.pool)

    # -- scoring ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def scorer(self, detector: Detector):
        """What scores `detector`'s chunks while this context lasts: this process, or Ray actors."""
        if self.s.executor != "ray":
            yield InProcess(detector)
            return
        try:
            with RayScorers(detector, self.loader, self.s.device) as scorers:
                yield scorers
        except ScoringError as exc:  # the actors cannot be built, or one does not come back
            raise RunError(str(exc)) from exc

    def score_test_set(self, scorer: InProcess | RayScorers, fold: Fold, test: TestSet, run_dir: Path,
                       timings: dict) -> pd.DataFrame:
        refs = self.test_refs(test)
        partial_dir = run_dir / "partial" / _safe(fold.name) / _safe(test.name)
        done = set(_read_chunks(partial_dir)["clip_id"])
        todo = [r for r in refs if r.clip_id not in done]
        task = None
        if self.progress is not None:
            task = self.progress.add_task(f"{self.s.detector} · {test.name} · {fold.name}", total=len(refs),
                                          completed=len(refs) - len(todo))
        clips = self._clip_set(todo, scorer.detector, remove_audio=self.s.protocol.missing_audio)
        chunk_id = len(list(partial_dir.glob("chunk-*.parquet"))) if partial_dir.is_dir() else 0
        watch = FailFast(f"{self.s.detector} on test set '{test.name}'")
        for chunk, table, seconds in scorer.map(fold, test, self._chunks(clips)):
            timings["load_seconds"] += sum(load_s for _, _, load_s in chunk)
            timings["score_seconds"] += seconds
            watch.observe([ref for ref, _, _ in chunk], table)
            watch.written.append(self._write_chunk(partial_dir, chunk_id, table))
            chunk_id += 1
            if task is not None:
                self.progress.advance(task, len(chunk))
        table = _read_chunks(partial_dir)
        order = {r.clip_id: i for i, r in enumerate(refs)}
        return table.sort_values("clip_id", key=lambda c: c.map(order)).reset_index(drop=True)

    def refs(self, selection: Selection) -> list[ClipRef]:
        """The clips of a selection as the protocol reads them (+trim_silence: their leading silence cut)."""
        refs = select(self.indexes[selection.dataset], selection).refs()
        return [replace(r, trim_silence=True) for r in refs] if self.s.protocol.trim_silence else list(refs)

    def test_refs(self, test: TestSet) -> list[ClipRef]:
        """The test set's clips, each carrying the protocol's perturbation (test clips only)."""
        return [replace(r, perturbation=self.s.protocol.perturbation) for r in self.refs(test.selection)]

    def _chunks(self, clips: ClipSet):
        """The set's results in chunks of `chunk_size`, each clip with the seconds its loading took
        (the wait for it, counted from when the previous clip was handed over)."""
        chunk, t_load = [], time.perf_counter()
        for ref, clip in clips.results():
            chunk.append((ref, clip, time.perf_counter() - t_load))
            if len(chunk) == self.s.chunk_size:
                yield chunk
                chunk = []
            t_load = time.perf_counter()
        if chunk:
            yield chunk

    @staticmethod
    def _write_chunk(partial_dir: Path, chunk_id: int, table: pd.DataFrame) -> Path:
        path = partial_dir / f"chunk-{chunk_id:06d}.parquet"
        with atomic_write(path, "wb") as fh:
            table.to_parquet(fh, index=False)
        return path

    # -- the record ---------------------------------------------------------------------------------
    def make_record(self, seed, detector, key, folds, fold_info, scores, timings) -> dict:
        cls = type(detector)
        rows = metric_rows(scores, folds, self.display, self.s.protocol.reports_average,
                           probabilities=cls.scores_are_probabilities, seed=seed,
                           n_resamples=self.s.bootstrap_resamples, four_class=self.s.protocol.four_class,
                           named_averages=self.s.protocol.named_averages, extra=self.s.protocol.extra_metrics)
        failed = scores[scores["status"] != "scored"]
        return {
            "schema": RECORD_SCHEMA,
            "detector": self.s.detector,
            "protocol": self.s.protocol.id,
            "protocol_version": self.s.protocol.version,
            "seed": seed,
            "device": self.s.device,
            "published_as": list(detector.published_as),
            "scores_are_probabilities": cls.scores_are_probabilities,
            "aggregation": detector.aggregation,
            "class_names": list(detector.class_names),
            "perturbation": self.s.protocol.spec().get("perturbation"),
            "metrics": rows,
            "problems": run_problems(scores, folds, self.display),
            "transductive": any((info.get("pool") or {}).get("transductive", False) for info in fold_info),
            "coverage": {"total": len(scores), "scored": int(len(scores) - len(failed)), "failed": int(len(failed)),
                         "reasons": {k: int(v) for k, v in failed["reason"].value_counts().items()},
                         "fallbacks": fallback_counts(scores)},
            "folds": fold_info,
            "timings": timings,
            "scores_file": "scores.parquet",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "provenance": {
                "avbench_version": avbench.__version__,
                "git_commit": git_commit(),
                "detector_version": detector.version,
                "detector_config": detector.config(),
                "detector_sources": key["detector_sources"],
                "checkpoint": str(self.s.checkpoint) if self.s.checkpoint else None,
                "checkpoint_sha256": key["checkpoint_sha256"],
                "protocol_spec": key["protocol"],
                "protocol_sha256": self.s.protocol.spec_sha256(),
                "index_fingerprints": key["index_fingerprints"],
                "media": key["media"],
                "input_spec": detector.input_spec.as_dict(),
                "seed": seed,
                "device": self.s.device,
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "packages": package_versions(),
            },
        }

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.log(message)
        else:
            log.info(message)


class FailFast:
    """Stops a test set whose first FAIL_FAST_CLIPS clips that reach the detector all fail with one
    detector error. Clips the loader refused and ClipErrors (data problems) are not counted; a scored
    clip ends the watch. On stopping, the chunks written meanwhile are removed (they hold nothing but
    that error), so the folder holds no work and a rerun starts clean."""

    DETECTOR_FAILURES = ("detector_error", "non_finite_score", "scorer_crashed")

    def __init__(self, what: str):
        self.what = what
        self.armed = True
        self.signatures: list[str] = []
        self.first_message = ""
        self.written: list[Path] = []

    def observe(self, refs: list[ClipRef], table: pd.DataFrame) -> None:
        for ref, status, reason, message in zip(refs, table["status"], table["reason"], table["message"]):
            if not self.armed:
                return
            if status == "scored":
                self.armed = False
            elif reason in self.DETECTOR_FAILURES:
                self.first_message = self.first_message or message
                self.signatures.append(message.replace(str(ref.path), "<clip>").replace(ref.clip_id, "<clip>"))
                if len(self.signatures) == FAIL_FAST_CLIPS:
                    self.armed = False
                    if len(set(self.signatures)) == 1:
                        self.stop()

    def stop(self):
        for chunk in self.written:
            chunk.unlink(missing_ok=True)
        raise RunError(f"{self.what}: the first {FAIL_FAST_CLIPS} clips all failed with the same error, so the run "
                       f"stops instead of recording it for every clip (see the log with -v for the traceback): "
                       f"{self.first_message}")


def metric_rows(scores: pd.DataFrame, folds: list[Fold], display: dict[str, str], average: bool, *,
                probabilities: bool, seed: int, n_resamples: int, four_class: bool = False,
                named_averages: dict[str, tuple[str, ...]] | None = None, extra: tuple[str, ...] = ()) -> list[dict]:
    """Metric rows of a run: per test set ("all"), per subset, and their AVG where reported, then
    each of `named_averages` (a name -> the subsets it averages); with `four_class`, CLASS_METRICS
    of each whole test set too; `extra` metrics (metrics.THRESHOLD_METRICS) beside the usual ones."""
    rows = []
    for _, test, key, part in evaluation_parts(scores, folds, display):
        rows += _rows_for(part, key, probabilities, seed, n_resamples, extra)
        if four_class and key["subset"] == (test.as_subset or "all"):
            rows += _class_rows(part, key)
    subset_rows = rows
    if average:
        rows = rows + _average_rows(subset_rows)
    for name, subsets in (named_averages or {}).items():
        rows = rows + _average_rows(subset_rows, name, subsets)
    return rows


def evaluation_parts(scores: pd.DataFrame, folds: list[Fold], display: dict[str, str]):
    """(fold, test set, row key {train, test_set, subset}, its clips) of every test set and then
    each of its subsets: a subset is its fakes and all reals, or with subset_reals "own" the clips
    whose subset value it is. Metric rows and significance tests read the same parts."""
    for fold in folds:
        for test in fold.tests:
            part = scores[(scores["fold"] == fold.name) & (scores["test_set"] == test.name)]
            base = {"train": fold.train_label, "test_set": display.get(test.name, test.name)}
            yield fold, test, {**base, "subset": test.as_subset or "all"}, part
            if test.subsets and not test.as_subset:
                reals = part[part["label"] == 0]
                fakes = part[part["label"] == 1]
                for value in sorted(v for v in fakes["subset_value"].unique() if v):
                    subset = (part[part["subset_value"] == value] if test.subset_reals == "own"
                              else pd.concat([reals, fakes[fakes["subset_value"] == value]]))
                    yield fold, test, {**base, "subset": value}, subset


def run_problems(scores: pd.DataFrame, folds: list[Fold], display: dict[str, str]) -> list[str]:
    """One line per test set whose metrics could not be computed, saying why."""
    problems = []
    for fold in folds:
        for test in fold.tests:
            part = scores[(scores["fold"] == fold.name) & (scores["test_set"] == test.name)]
            name = f"'{display.get(test.name, test.name)}'" + (f" (fold {fold.name})" if len(folds) > 1 else "")
            if why := not_computable(part, name):
                problems.append(why)
    return problems


def not_computable(part: pd.DataFrame, name: str = "") -> str:
    """Why AUC, AP and EER cannot be computed on the clips of `part` (test set `name`), or ""."""
    ok = part[part["status"] == "scored"]
    reasons = part.get("reason", pd.Series("unknown", index=part.index))[part["status"] != "scored"]
    failed = ", ".join(f"{reason} {n}" for reason, n in reasons.value_counts().items())
    of = f" of test set {name}" if name else ""
    if ok.empty:
        return f"no clip{of} could be scored: " + (failed or "it has no clips")
    classes = set(ok["label"])
    if len(classes) == 1:
        kind = "real" if classes == {0} else "fake"
        return (f"only {kind} clips{of} were scored ({len(ok)} of {len(part)}"
                + (f"; failed: {failed}" if failed else "") + "): AUC, AP and EER need both classes")
    return ""


def _rows_for(part: pd.DataFrame, base: dict, probabilities: bool, seed: int, n_resamples: int,
              extra: tuple[str, ...] = ()) -> list[dict]:
    ok = part[part["status"] == "scored"]
    labels, values = ok["label"].to_numpy(), ok["score"].to_numpy(dtype=float)
    counts = {"n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum()),
              "n_failed": int(len(part) - len(ok))}
    calibration = metrics.CALIBRATION_METRICS if probabilities else ()
    extra = extra if probabilities else ()  # thresholded at 0.5: probabilities only, as ACC
    if why := not_computable(part):
        names = [m for m in metrics.METRICS + extra + calibration if probabilities or m != "ACC"]
        return [{**base, "metric": name, "value": None, "ci_low": None, "ci_high": None, **counts,
                 "not_computable": why} for name in names]
    computed = metrics.compute_metrics(labels, values, probabilities=probabilities)
    if extra:
        computed |= {k: v for k, v in metrics.threshold_metrics(labels, values).items() if k in extra}
    if probabilities:
        computed |= metrics.calibration_metrics(labels, values)
    rows = []
    for name, value in computed.items():
        low = high = method = None
        if n_resamples and counts["n_real"] > 1 and counts["n_fake"] > 1 and name not in ("ECE", *extra):
            low, high, method = significance.interval(labels, values, name, n_resamples=n_resamples, seed=seed,
                                                      probabilities=probabilities)
        row = {**base, "metric": name, "value": _num(value), "ci_low": _num(low), "ci_high": _num(high),
               "ci_method": method, **counts}
        if name == "ECE":
            row["binning"] = f"{metrics.ECE_BINS} equal-width bins on [0, 1]"
        rows.append(row)
    localised = ok.get("localisation_auc", pd.Series(dtype=float)).dropna()
    if len(localised):
        rows.append({**base, "metric": metrics.LOCALISATION_METRIC, "value": _num(localised.mean()), "ci_low": None, "ci_high": None,
                     **counts, "n_localised": int(len(localised))})
    return rows


def _class_rows(part: pd.DataFrame, base: dict) -> list[dict]:
    """CLASS_ACC and CLASS_AUC of the scored clips whose true class is known (metrics.four_class_label)."""
    ok = part[(part["status"] == "scored") & part["true_class"].notna()]
    counts = {"n_classified": int(len(ok)), "n_class_unknown": int((part["status"] == "scored").sum() - len(ok)),
              "n_failed": int((part["status"] != "scored").sum())}
    if ok.empty:
        return [{**base, "metric": name, "value": None, "ci_low": None, "ci_high": None, **counts,
                 "not_computable": "no scored clip has a known class"} for name in metrics.CLASS_METRICS]
    truth = ok["true_class"].to_numpy(dtype=int)
    computed = metrics.class_metrics(truth, np.stack([np.asarray(p, dtype=float) for p in ok["class_probabilities"]]))
    rows = []
    for name, value in computed.items():
        row = {**base, "metric": name, "value": _num(value), "ci_low": None, "ci_high": None, **counts}
        if not np.isfinite(value):
            missing = sorted(set(range(len(metrics.FOUR_CLASSES))) - set(truth.tolist()))
            row["not_computable"] = ("no scored clip of class " + ", ".join(metrics.FOUR_CLASSES[c] for c in missing)
                                     + ": a one-vs-rest AUC needs every class")
        rows.append(row)
    return rows


def _average_rows(rows: list[dict], name: str = "AVG", only: tuple[str, ...] = ()) -> list[dict]:
    """Per train, test set and metric, the unweighted mean of the subsets' values (`only` those
    subsets, each of which must be there), reported under the subset `name`."""
    table = pd.DataFrame(rows)
    subsets = table[table["subset"] != "all"]
    if only:
        subsets = subsets[subsets["subset"].isin(only)]
    out = []
    for (train, test_set, metric), group in subsets.groupby(["train", "test_set", "metric"], sort=False):
        values = group["value"].astype(float)
        absent = sorted(set(only) - set(group["subset"]))
        row = {"train": train, "test_set": test_set, "subset": name, "metric": metric,
               "value": _num(values.mean()) if values.notna().all() and not absent else None,
               "ci_low": None, "ci_high": None, "n_subsets": int(len(group))}
        if absent:
            row["not_computable"] = f"no {metric} of subsets {', '.join(absent)}, which {name} averages"
        elif values.isna().any():
            row["not_computable"] = f"{int(values.isna().sum())} of {len(group)} subsets have no {metric}"
        out.append(row)
    return out


# -- small helpers ------------------------------------------------------------------------------------
def message_of(exc: BaseException) -> str:
    """An exception's message as a user reads it (str of a KeyError quotes it)."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _holds_work(run_dir: Path) -> bool:
    """True if a run folder holds anything computed: a fitted model, training state, scores."""
    return run_dir.is_dir() and any(p.is_file() and p.name != "run_key.json" for p in run_dir.rglob("*"))


def describe_empty(index: ClipIndex, selection: Selection, protocol: Protocol) -> str:
    """Why a selection has no clips, in the user's words: what was asked, what the index has, what to try."""
    asked = [f"dataset '{selection.dataset}'", f"split '{selection.split}'"]
    if selection.only_categories:
        asked.append(f"fakes only of {', '.join(selection.only_categories)}")
    if selection.without_categories:
        asked.append(f"fakes not of {', '.join(selection.without_categories)}")
    if selection.fakes != "all":
        asked.append(f"fakes: {selection.fakes}")
    splits = index.frame["split"].fillna("").value_counts().sort_index()
    named = {split: n for split, n in splits.items() if split}
    has = ", ".join(f"{split} ({n} clips)" for split, n in named.items())
    if len(named) < len(splits):
        has += (", and " if has else "") + f"{splits.get('', 0)} clips with no split"
    message = f"no clip of {', '.join(asked)}; the index of '{selection.dataset}' has {has}"
    if selection.split not in named:
        message += (". Score every clip with --param test_split=all, or split by identity with --param split=identity"
                    if protocol.kind == "test_only" else ". Choose another protocol (`avbench protocols list`) "
                    "or a split the index has")
    return message


def _num(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def pseudo_label_stats(round_number: int, labels: dict[str, int], tokens: dict[str, ClipRef]) -> dict:
    """One adaptation round's pseudo-labels against the withheld labels (those the dataset has)."""
    unknown = sorted(set(labels) - set(tokens))
    if unknown:
        raise RunError(f"the detector's round {round_number} pseudo-labels clips that are not in the pool: {unknown[:5]}")
    if any(value not in (0, 1) for value in labels.values()):
        raise RunError(f"round {round_number}: pseudo-labels are 0 (real) or 1 (fake)")
    names = {0: "real", 1: "fake"}
    known = [(int(v), tokens[t].label) for t, v in labels.items() if tokens[t].label in names]  # (given, withheld)
    precision = {}
    for label, name in names.items():
        given = [truth for pseudo, truth in known if pseudo == label]
        if given:  # of the clips pseudo-labelled `name`, the share whose withheld label agrees
            precision[name] = sum(truth == label for truth in given) / len(given)
    return {"round": round_number, "pseudo_labels": len(labels),
            "per_class": {name: sum(v == label for v in labels.values()) for label, name in names.items()},
            "with_withheld_label": len(known),
            "accuracy": sum(pseudo == truth for pseudo, truth in known) / len(known) if known else None,
            "precision_per_class": precision}


def fallback_counts(scores: pd.DataFrame) -> dict[str, int]:
    """Scored clips per declared fallback (Clip.fallbacks; a clip may declare several). Scores
    written before fallbacks were recorded have no such column and count none."""
    scored = scores.loc[scores["status"] == "scored", "fallbacks"] if "fallbacks" in scores else pd.Series(dtype=str)
    counts: Counter = Counter(name for joined in scored.dropna() for name in joined.split(",") if name)
    return dict(sorted(counts.items()))


def _reasons(failures: dict[str, ClipError]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for err in failures.values():
        counts[err.reason] = counts.get(err.reason, 0) + 1
    return counts


def _read_chunks(partial_dir: Path) -> pd.DataFrame:
    files = sorted(partial_dir.glob("chunk-*.parquet")) if partial_dir.is_dir() else []
    if not files:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).reindex(columns=SCORE_COLUMNS)


def _read_json(path: Path):
    return json.loads(path.read_text())


def _diff_keys(stored: dict, key: dict) -> str:
    changed = [k for k in sorted(set(stored) | set(key)) if stored.get(k) != key.get(k)]
    return "differs in " + ", ".join(changed)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"

