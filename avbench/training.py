"""One training loop for the neural families: resumable, seeded, bf16 on CUDA, selecting on validation only.

A family drives `Trainer.fit` with its model, optimiser, scheduler and a `TrainingTask`, which says
what one epoch draws (`epoch_jobs`), how a job becomes a batch (`make_batch`, on the CPU, prepared
in a thread one batch ahead), what a batch costs (`losses`) and how the model does on validation
data (`validate`). The trainer owns the rest, once for every family:

- random state: the run's torch generators forked and seeded (the caller's are left as they were),
  one CPU `generator` handed to the task for every draw of the data (order, windows, masks);
- steps: zero_grad, backward (accumulated over `accumulate` jobs), gradient clipping, the optimiser,
  the scheduler per step, per epoch or on the validation metric ("plateau");
- `autocast(device)`: bf16 on CUDA, nothing on the CPU (the task wraps its forward pass in it);
- selection: the epoch whose validation result is best by `Selection` is kept, never one chosen on
  test data (a task only sees the clips the runner gives `fit`: train and val); early stopping after
  `patience` epochs without a better one;
- history: one record per epoch (mean losses per example, learning rate of each parameter group,
  validation result as val_<name>, whether it is the best so far, seconds, peak memory), and a bar
  on the run's progress display (avbench.reporting) while the fit lasts;
- resumption: after each epoch `<directory>/last.pt` holds model, optimiser, scheduler, random
  states, history and best state, written atomically and read back with weights_only=True, so an
  interrupted run started again ends with the same parameters as one never interrupted; a file
  written under another `key` (the family's settings and data) is refused;
- data parallelism: in a torch.distributed process group (one process per device, e.g. under
  torchrun; gloo on the CPU, nccl on GPUs) every rank draws the same epoch and takes every
  world-th example of each batch; its losses are weighted by its share of the batch and gradients
  are all-reduced, so a step is the step of one process on the whole batch (up to rounding). The
  model starts from rank 0's parameters, only rank 0 writes last.pt, every rank validates on all
  validation clips (the models are equal, so are the results) and figures are summed over ranks.
  What a task draws per step (masks, augmentations) comes, on each rank, from a generator seeded
  by (seed, epoch, rank), as does the rank's global torch generator (dropout): with one process
  both come from the run's generators as before. A run resumes on another number of devices (the
  data generator is the same on every rank, and last.pt holds no per-rank state).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import resource
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from avbench.distributed import ranks
from avbench.io import atomic_write
from avbench.reporting import Bar

log = logging.getLogger(__name__)

#: The resumable state of a training run, inside its directory.
LAST = "last.pt"
#: Share of each label's training clips held out for validation when a protocol gives none.
HOLDOUT_FRACTION = 0.1


class TrainingTask(Protocol):
    """What a family gives the trainer; `generator` is the run's seeded CPU generator."""

    def epoch_jobs(self, generator: torch.Generator) -> list[Sequence]:
        """The epoch's batches, each a sequence of examples (its length weighs the batch's losses)."""

    def make_batch(self, job: Sequence) -> Any:
        """The tensors of one job, on the CPU; deterministic (it runs in a thread, ahead of the step)."""

    def losses(self, batch: Any, job: Sequence, generator: torch.Generator) -> dict[str, Tensor]:
        """Mean losses of the batch, "total" the one minimised; the others are reported."""

    def validate(self, record: dict) -> dict[str, float | None] | None:
        """The model on the validation clips after an epoch (record: the epoch's training figures);
        None when there is nothing to validate on (the last epoch is then kept)."""


@dataclass(frozen=True)
class Selection:
    """Which epoch is best: `metric` of the validation result, higher (mode "max") or lower ("min")
    better; where it is equal or missing on either side, the strictly better `tie_break` (a metric
    and a mode) decides; an epoch no better than the best so far is not taken."""

    metric: str
    mode: str = "max"
    tie_break: tuple[str, str] | None = None

    def __post_init__(self):
        for mode in (self.mode, *(self.tie_break[1:] if self.tie_break else ())):
            if mode not in ("max", "min"):
                raise ValueError(f"a selection mode is 'max' or 'min', got {mode!r}")

    def better(self, result: dict, best: dict | None) -> bool:
        if best is None:
            return True
        for metric, mode in ((self.metric, self.mode), *((self.tie_break,) if self.tie_break else ())):
            new, old = result.get(metric), best.get(metric)
            if new is not None and old is not None and new != old:
                return new > old if mode == "max" else new < old
        return False


@dataclass
class Trainer:
    epochs: int
    grad_clip: float | None = None
    #: Jobs whose gradients are summed (each loss divided by it) before one optimiser step.
    accumulate: int = 1
    #: When the scheduler steps: "step", "epoch" or "plateau" (each epoch, on the selection metric).
    schedule_every: str = "epoch"
    select: Selection | None = None
    #: Stop after this many epochs without a better validation result (None: run every epoch).
    patience: int | None = None

    def __post_init__(self):
        if self.schedule_every not in ("step", "epoch", "plateau"):
            raise ValueError(f"schedule_every is 'step', 'epoch' or 'plateau', got {self.schedule_every!r}")
        if self.schedule_every == "plateau" and self.select is None:
            raise ValueError("a plateau schedule steps on the selection metric: give select")
        if self.accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {self.accumulate}")
        if self.patience is not None and self.select is None:
            raise ValueError("patience counts epochs without a better validation result: give select")

    def fit(self, model: torch.nn.Module, optimiser: torch.optim.Optimizer, scheduler, task: TrainingTask, *,
            seed: int, device: str | torch.device = "cpu", directory: Path | str | None = None,
            key: dict | None = None, name: str = "training", on_step: Callable[[int, int, int], None] | None = None,
            on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
        """Train `model` in place for the epochs not yet in `directory`'s last.pt, leave it with the
        weights of the best epoch (the last one without `select`), in eval mode; returns the history.
        `scheduler` may be None (a constant learning rate). on_step(epoch, step, steps) and
        on_epoch(record) report progress."""
        dev = torch.device(device)
        params = [p for p in model.parameters() if p.requires_grad]  # in the model's order: the clipping norm's sum
        rank, world = ranks()
        run = Resumable(directory, {"trainer": 1, **(key or {})})
        history: list[dict] = []
        best: dict | None = None
        with seeded(seed, dev):
            generator = torch.Generator().manual_seed(seed)
            saved = run.resume(model, optimiser, scheduler, generator, dev)
            if saved is not None:
                history, best = list(saved["history"]), saved["best"]
            if world > 1:
                for tensor in model.state_dict().values():
                    dist.broadcast(tensor.data, src=0)
            bar = Bar(f"{name} · epoch {len(history) + 1}/{self.epochs}")
            try:
                for epoch in range(len(history), self.epochs):
                    if self._patience_spent(history):
                        break
                    step_generator = generator
                    if world > 1:
                        step_generator = torch.Generator().manual_seed(rank_seed(seed, epoch, rank))
                        torch.manual_seed(rank_seed(seed, epoch, rank))
                    record = self._epoch(model, optimiser, scheduler, task, generator, step_generator, params, dev,
                                         epoch, bar, on_step)
                    result = task.validate(record)
                    improved = result is not None and self.select is not None and self.select.better(result, best)
                    if improved:
                        best = {"epoch": epoch + 1, **result, "state": cpu_state(model)}
                    if scheduler is not None and self.schedule_every != "step":
                        plateau = self.schedule_every == "plateau"
                        scheduler.step(*((result[self.select.metric] if result else record["loss"],) if plateau else ()))
                    record.update({f"val_{k}": v for k, v in (result or {}).items()})
                    record.update(best=improved, seconds=round(time.perf_counter() - record.pop("_started"), 3),
                                  peak_memory_mib=peak_memory_mib(dev))
                    history.append(record)
                    if rank == 0:
                        run.save(model, optimiser, scheduler, generator, dev, history=history, best=best)
                    said = "".join(f", val {k} {_num(v)}" for k, v in (result or {}).items())
                    log.info("%s epoch %d/%d: loss %.4f%s%s", name, epoch + 1, self.epochs, record["loss"], said,
                             " (best so far)" if improved else "")
                    bar.describe(f"{name} · epoch {epoch + 1}/{self.epochs} · loss {record['loss']:.4f}{said}")
                    if on_epoch is not None:
                        on_epoch(record)
            finally:
                bar.close()
        if best is not None:
            model.load_state_dict(best["state"])
            log.info("%s keeps epoch %d (%s)", name, best["epoch"],
                     ", ".join(f"{k} {_num(v)}" for k, v in best.items() if k not in ("epoch", "state")))
        model.eval()
        return history

    def _patience_spent(self, history: list[dict]) -> bool:
        if self.patience is None or not history:
            return False
        since = next((k for k, r in enumerate(reversed(history)) if r["best"]), len(history))
        return since >= self.patience

    def _epoch(self, model, optimiser, scheduler, task: TrainingTask, generator: torch.Generator,
               step_generator: torch.Generator, params, dev: torch.device, epoch: int, bar: Bar, on_step) -> dict:
        started = time.perf_counter()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        model.train()
        rank, world = ranks()
        jobs = task.epoch_jobs(generator)
        if bar.total is None:  # the epochs left, in steps, once one epoch's batches are drawn
            bar.set_total((self.epochs - epoch) * len(jobs))
        shards = [job[rank::world] for job in jobs] if world > 1 else jobs
        sums: Counter = Counter()
        lr_names = [_lr_name(i, group) for i, group in enumerate(optimiser.param_groups)]
        batches = prefetched(lambda shard: task.make_batch(shard) if len(shard) else None, shards)
        for step, (batch, shard, job) in enumerate(zip(batches, shards, jobs)):
            n = len(shard)
            first, last = step % self.accumulate == 0, (step + 1) % self.accumulate == 0 or step + 1 == len(jobs)
            if first:
                optimiser.zero_grad(set_to_none=True)
            if n:
                losses = task.losses(batch, shard, step_generator)
                share = n * world / len(job) / self.accumulate  # of the whole batch's mean loss, per rank
                (losses["total"] * share if share != 1 else losses["total"]).backward()
                for name, value in losses.items():
                    sums[name] += value.item() * n
            for lr_name, group in zip(lr_names, optimiser.param_groups):
                sums[lr_name] += group["lr"] * n
            sums["_examples"] += n
            if last:
                if world > 1:
                    _average_gradients(params, world)
                if self.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                optimiser.step()
                if scheduler is not None and self.schedule_every == "step":
                    scheduler.step()
            bar.advance()
            if on_step is not None:
                on_step(epoch + 1, step + 1, len(jobs))
        if world > 1:  # the figures of the whole batch: every rank's sums added
            gathered: list[dict] = [{} for _ in range(world)]
            dist.all_gather_object(gathered, dict(sums))
            sums = Counter()
            for part in gathered:  # not Counter's `+`, which drops the keys whose sum is not positive
                for key, value in part.items():
                    sums[key] += value
        count = max(sums.pop("_examples"), 1)
        record = {"epoch": epoch + 1, "loss": sums.pop("total") / count}
        record.update({k: v / count for k, v in sums.items()})
        record.update(clips=count, _started=started)
        return record


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


#: Gradient elements all-reduced in one call (a flat buffer per bucket: few calls, bounded extra memory).
BUCKET_ELEMENTS = 2**25


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Sum every rank's gradients (a rank with no example this step adds zeros) and divide by `world`,
    in buckets of about BUCKET_ELEMENTS elements of one dtype."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[Tensor] = []
    for k, p in enumerate(params):
        bucket.append(p.grad)
        full = sum(g.numel() for g in bucket) >= BUCKET_ELEMENTS
        if full or k + 1 == len(params) or params[k + 1].grad.dtype != p.grad.dtype:
            flat = torch.cat([g.flatten() for g in bucket])
            dist.all_reduce(flat)
            flat.div_(world)
            for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
                g.copy_(part.view_as(g))
            bucket = []


def _lr_name(i: int, group: dict) -> str:
    """History key of a parameter group's learning rate: "lr" for the first, else <name>_lr."""
    return "lr" if i == 0 else f"{group.get('name', f'group{i}')}_lr"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


# -- devices, precision, random state ------------------------------------------------------------------

def autocast(device: torch.device):
    """bf16 autocast on CUDA, plain fp32 elsewhere (the CPU gains nothing from it and loses precision)."""
    return torch.autocast("cuda", torch.bfloat16) if torch.device(device).type == "cuda" else nullcontext()


class seeded:
    """The global torch generators (dropout, drop-path) forked for the run and seeded, so training is
    reproducible and the caller's random state is left as it was."""

    def __init__(self, seed: int, device: torch.device):
        self.seed = seed
        cuda = torch.device(device).type == "cuda"
        self.fork = torch.random.fork_rng(devices=[torch.device(device).index or torch.cuda.current_device()]
                                          if cuda else [])

    def __enter__(self):
        self.fork.__enter__()
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        return self.fork.__exit__(*exc)


def use_grad_checkpointing(model: torch.nn.Module) -> int:
    """Recompute activations in the backward pass instead of keeping them, in every submodule that
    supports it (the timm convention: a `grad_checkpointing` attribute its forward reads); returns
    how many. A model with none refuses, naming itself."""
    found = [m for m in model.modules() if hasattr(m, "grad_checkpointing")]
    if not found:
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
    for module in found:
        module.grad_checkpointing = True
    return len(found)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of the epoch on CUDA (allocated by torch), else of the process so far (resident)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# -- resumable state -----------------------------------------------------------------------------------

class Resumable:
    """`<directory>/last.pt`: written atomically after each epoch, read back with weights_only=True.
    A file written by a run with other settings (`key`) is refused rather than mixed with this one."""

    def __init__(self, directory: Path | str | None, key: dict):
        self.path = None if directory is None else Path(directory) / LAST
        self.key = json.loads(json.dumps(key))  # as it reads back: lists, not tuples

    def load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("key") != self.key:
            changed = sorted(k for k in set(self.key) | set(state.get("key", {}))
                             if self.key.get(k) != state.get("key", {}).get(k))
            raise ValueError(f"{self.path} belongs to a training run with other settings (differs in "
                             f"{', '.join(changed)}): remove it, or train in another directory")
        return state

    def resume(self, model: torch.nn.Module, optimiser, scheduler, generator: torch.Generator,
               device: torch.device) -> dict | None:
        """Restore model, optimiser, scheduler and random states from last.pt; the saved dict (history,
        best ...) or None when there is nothing to resume."""
        saved = self.load()
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimiser.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
            generator.set_state(saved["rng"]["data"])
            torch.set_rng_state(saved["rng"]["torch"])
            if device.type == "cuda":
                torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
            log.info("training resumes after epoch %d (%s)", len(saved["history"]), self.path)
        return saved

    def save(self, model: torch.nn.Module, optimiser, scheduler, generator: torch.Generator, device: torch.device,
             **extra) -> None:
        """Everything `resume` needs after an epoch, plus `extra` (history, best ...)."""
        if self.path is None:
            return
        rng = {"data": generator.get_state(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.zeros(0, dtype=torch.uint8)}
        with atomic_write(self.path, "wb") as fh:
            torch.save({"key": self.key, "model": cpu_state(model), "optimizer": optimiser.state_dict(),
                        "scheduler": None if scheduler is None else scheduler.state_dict(), "rng": rng, **extra}, fh)


# -- data ------------------------------------------------------------------------------------------------

def prefetched(make: Callable, jobs: Sequence) -> Iterator:
    """make(job) for each job in order, the next one prepared in a worker thread while this one is used.
    Nothing random may happen in `make`, so the result does not depend on timing."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(make, jobs[0]) if jobs else None
        for k in range(len(jobs)):
            result = future.result()
            if k + 1 < len(jobs):
                future = pool.submit(make, jobs[k + 1])
            yield result


def erasing_rectangle(size: int, generator: torch.Generator, max_area: float) -> tuple[int, int, int, int] | None:
    """RandomErasing's rectangle on a size x size frame, (top, left, height, width): area 0.02 to
    `max_area` of the frame, aspect 0.3-3.3 on a log scale, ten tries, else None (torchvision's
    rule; its max_area is 0.33, timm's 1/3)."""
    for _ in range(10):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        area = size * size * (0.02 + u[0] * (max_area - 0.02))
        aspect = math.exp(math.log(0.3) + u[1] * (math.log(3.3) - math.log(0.3)))
        h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < h < size and 0 < w < size:
            return int(u[2] * (size - h + 1)), int(u[3] * (size - w + 1)), h, w
    return None


def balanced_draw(groups: Sequence, generator: torch.Generator) -> list[int]:
    """len(groups) indices drawn with replacement, each weighted by N / the size of its group, so
    every group (a label, or a combination of labels) is drawn as often on average."""
    counts = Counter(groups)
    weights = torch.tensor([len(groups) / counts[g] for g in groups], dtype=torch.float64)
    return torch.multinomial(weights, len(groups), replacement=True, generator=generator).tolist()


def clips_digest(refs: Iterable) -> str:
    """sha256 of the clip ids in order: what a resumable fit's key holds of its training clips."""
    return hashlib.sha256(json.dumps([r.clip_id for r in refs]).encode()).hexdigest()


def labels_of(refs: Sequence) -> np.ndarray:
    return np.array([r.label for r in refs], dtype=np.int64)


def holdout(labels: np.ndarray, seed: int, fraction: float = HOLDOUT_FRACTION,
            identities: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of the seeded hold-out that stands in for validation where a protocol gives
    none (never test data). Without identities: `fraction` of each label's clips, at least one where a
    label has two or more. With `identities` (one per clip; "" unknown, each such clip its own) where
    two or more are known: whole identities, drawn in a seeded order and taken while a label still
    lacks its share, so that no person is both trained on and validated on (their clips would make
    validation optimistic); at most half of the identities are held out."""
    labels = np.asarray(labels)
    if identities is not None and len({i for i in identities if i}) >= 2:
        return _holdout_identities(labels, seed, fraction, identities)
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) >= 2:
            val.extend(rng.choice(members, max(1, round(fraction * len(members))), replace=False))
    val = np.sort(np.array(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), val), val


def _holdout_identities(labels: np.ndarray, seed: int, fraction: float, identities: Sequence[str]):
    keys = np.array([identity or f"\0clip {k}" for k, identity in enumerate(identities)], dtype=object)
    people = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(people))
    want = {int(label): max(1, round(fraction * n)) for label, n in Counter(labels.tolist()).items() if n >= 2}
    held: list[str] = []
    got: Counter = Counter()
    for k in order:
        if len(held) >= len(people) // 2 or all(got[label] >= n for label, n in want.items()):
            break
        members = labels[keys == people[k]].tolist()
        if any(got[label] < want.get(label, 0) for label in members):
            held.append(people[k])
            got.update(members)
    val = np.flatnonzero(np.isin(keys, held))
    return np.setdiff1d(np.arange(len(labels)), val), val


def chunks(items: Sequence, size: int) -> list:
    return [items[k:k + size] for k in range(0, len(items), size)]

