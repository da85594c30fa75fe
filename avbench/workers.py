"""Media loading in worker processes: every core decodes, and a clip that crashes or hangs costs only itself.

`MediaPool.load_all(refs, spec)` yields `(ref, Clip | ClipError)` in the order of `refs`, exactly what
`MediaLoader.load` gives in this process, so scores, records and resumption do not depend on the
number of workers. Loading runs ahead of the consumer by at most `ahead` clips (memory stays
bounded whatever the set's size) while the consumer scores. Each worker holds one clip at a time:

- a worker that dies on a clip (a decoder's segfault, the kernel's out-of-memory killer) gives that
  clip `ClipError("worker_crashed")`; a clip that takes more than `clip_timeout` seconds gives
  `ClipError("timeout")` and its worker is stopped. Either way a new worker takes the place and the
  next clips go on. These outcomes are not cached: the next run tries the clip again.
- `RayPool` keeps this contract on a Ray cluster (`--executor ray`): the same answers, so a run
  started on one executor resumes on the other.
- Workers are started with `spawn` (no state of the parent, no inherited threads or CUDA context)
  on first use and kept for the pool's life; they share the content-addressed cache, whose entries
  are written atomically (two workers on one file both write the same entry; one rename wins).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Iterator, Sequence

from avbench.clips import Clip, ClipError, ClipRef
from avbench.detector import InputSpec
from avbench.loader import MediaLoader

_CONTEXT = multiprocessing.get_context("spawn")
_READY = "ready"


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's or a scheduler's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _serve(loader: MediaLoader, conn: Connection) -> None:
    """A worker's life: say it is ready (models loaded: a clip's time limit does not pay for them),
    then load each (seq, ref, spec, remove_audio) it is sent and answer (seq, result)."""
    from avbench import faces

    faces.load_models()
    conn.send(_READY)
    while True:
        task = conn.recv()
        if task is None:
            return
        seq, ref, spec, remove_audio = task
        try:
            result: Clip | Exception = loader.load(ref, spec, remove_audio)
        except Exception as exc:  # ClipError is an outcome; anything else is raised again by the parent
            result = exc
        conn.send((seq, result))


class PoolError(RuntimeError):
    """The pool itself cannot work (its workers die before loading anything): the run stops."""


class _Worker:
    def __init__(self, loader: MediaLoader):
        self.conn, child = _CONTEXT.Pipe(duplex=True)
        self.process = _CONTEXT.Process(target=_serve, args=(loader, child), daemon=True, name="avbench-media")
        self.process.start()
        child.close()
        self.task: tuple[int, ClipRef] | None = None
        self.ready = False
        self.timeout: float | None = None
        self.deadline = float("inf")  # of the task; counted from when the worker is ready

    def send(self, seq: int, ref: ClipRef, spec: InputSpec, remove_audio: bool, timeout: float | None) -> None:
        self.task, self.timeout = (seq, ref), timeout
        self._start_clock()
        self.conn.send((seq, ref, spec, remove_audio))

    def became_ready(self) -> None:
        self.ready = True
        self._start_clock()

    def _start_clock(self) -> None:
        self.deadline = (time.monotonic() + self.timeout if self.ready and self.task and self.timeout
                         else float("inf"))

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class MediaPool:
    """`workers` processes loading clips with `loader`; use as a context manager (or call `close`)."""

    def __init__(self, loader: MediaLoader, workers: int, clip_timeout: float | None = None, ahead: int | None = None):
        if workers < 1:
            raise ValueError(f"a media pool needs >= 1 worker, got {workers}")
        if clip_timeout is not None and not clip_timeout > 0:
            raise ValueError(f"clip_timeout must be > 0 seconds, got {clip_timeout}")
        self.loader = loader
        self.n_workers = workers
        self.clip_timeout = clip_timeout
        #: Clips loaded or being loaded ahead of the one the consumer waits for.
        self.ahead = ahead if ahead is not None else 4 * workers
        self._workers: list[_Worker] = []
        #: Workers replaced after a crash or a timeout, over the pool's life.
        self.replaced = 0

    def __enter__(self) -> "MediaPool":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def load_all(self, refs: Sequence[ClipRef], spec: InputSpec, remove_audio: bool = False
                 ) -> Iterator[tuple[ClipRef, Clip | ClipError]]:
        """Each ref with its Clip or ClipError, in order; a non-ClipError exception of the loader
        (a wrong spec: a bug, not a clip) is raised here as it would be in this process."""
        if not self._workers:
            self._workers = [_Worker(self.loader) for _ in range(self.n_workers)]
        todo = deque(enumerate(refs))

        def submit(next_out: int) -> None:
            for worker in self._workers:
                if worker.task is None and todo and todo[0][0] < next_out + self.ahead:
                    seq, ref = todo.popleft()
                    worker.send(seq, ref, spec, remove_audio, self.clip_timeout)

        try:
            yield from _in_order(refs, submit, self._collect)
        finally:
            self._abandon()

    def _collect(self, done: dict) -> None:
        """Wait for a result, a dead worker or a deadline, and record what happened."""
        busy = [w for w in self._workers if w.task is not None]
        deadline = min(w.deadline for w in busy)
        timeout = None if deadline == float("inf") else max(0.0, deadline - time.monotonic())
        wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout)
        for i, worker in enumerate(self._workers):
            if worker.task is None:
                continue
            seq, ref = worker.task
            while worker.task is not None and worker.conn.poll():
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):  # died while answering
                    break
                if message == _READY:
                    worker.became_ready()
                else:
                    answered, result = message
                    done[answered] = result
                    worker.task = None
            if worker.task is None:
                continue
            if not worker.process.is_alive() and not worker.ready:  # not a clip's fault: every worker would
                raise PoolError(f"a media worker died while starting ({_exit_text(worker.process.exitcode)}); "
                                "a script that runs avbench with workers needs `if __name__ == \"__main__\":`, "
                                "see the worker's error above")
            if not worker.process.is_alive():
                done[seq] = ClipError("worker_crashed", f"{ref.path}: the worker loading it died "
                                                        f"({_exit_text(worker.process.exitcode)}); the run goes on")
                self._replace(i, kill=False)
            elif time.monotonic() > worker.deadline:
                done[seq] = ClipError("timeout", f"{ref.path}: loading took more than {self.clip_timeout:g} s "
                                                 "(--clip-timeout); its worker was stopped")
                self._replace(i, kill=True)

    def _replace(self, i: int, kill: bool, counted: bool = True) -> None:
        self._workers[i].stop(kill=kill)
        self._workers[i] = _Worker(self.loader)
        self.replaced += counted

    def _abandon(self) -> None:
        """A consumer that stopped early leaves clips in flight: their workers are replaced (not
        counted: no clip's fault) so that no stale answer reaches the next `load_all`."""
        for i, worker in enumerate(self._workers):
            if worker.task is not None:
                self._replace(i, kill=True, counted=False)


def _in_order(refs: Sequence[ClipRef], submit, collect) -> Iterator[tuple[ClipRef, Clip | ClipError]]:
    """Yield each ref's answer in the order of `refs`. `submit(next_out)` starts work on free workers
    (up to `ahead` positions past the one awaited) without waiting; `collect(done)` waits until
    something happens, putting answers into `done` by position. Free workers are given work again
    before each answer is handed over, so they do not wait while the consumer scores. An answer that
    is neither a Clip nor a ClipError is the loader's bug, raised here."""
    done: dict[int, Clip | ClipError | Exception] = {}
    for next_out, ref in enumerate(refs):
        submit(next_out)
        while next_out not in done:
            collect(done)
            submit(next_out)
        result = done.pop(next_out)
        if not isinstance(result, (Clip, ClipError)):
            raise result
        yield ref, result


def _load_one(loader: MediaLoader, ref: ClipRef, spec: InputSpec, remove_audio: bool) -> Clip | Exception:
    """One clip's loading as a Ray task: its outcome, never an exception (those are for the worker's death)."""
    try:
        return loader.load(ref, spec, remove_audio)
    except Exception as exc:
        return exc


class RayPool:
    """The MediaPool contract on a Ray cluster (`pip install avbench[ray]`): each clip a Ray task of one
    CPU, as many in flight as the cluster has CPUs, answers put back in order and at most `ahead` kept.

    `address`: an existing cluster ("auto", "ray://host:10001"); None starts a local one on this
    machine. The cache folder must be one every node sees (a shared file system). A task whose worker
    dies is retried `retries` times, then counted as `worker_crashed`; one running past `clip_timeout`
    seconds is cancelled (its worker killed) and counted as `timeout`. A task's clock starts when it
    is submitted, which is when a CPU is free for it; the first clip of a new Ray worker also pays
    for the worker's start (imports and dlib's models, a few seconds).
    """

    def __init__(self, loader: MediaLoader, address: str | None = None, clip_timeout: float | None = None,
                 ahead: int | None = None, retries: int = 1):
        try:
            import ray
        except ImportError as exc:
            raise ImportError("--executor ray needs Ray: pip install 'avbench[ray]'") from exc
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self._ray = ray
        self.clip_timeout = clip_timeout
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.ahead = ahead if ahead is not None else 4 * self.slots
        self._task = ray.remote(num_cpus=1, max_retries=retries)(_load_one)
        self._loader = ray.put(loader)

    def __enter__(self) -> "RayPool":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        """Leaves the cluster running (it may serve others); a local one ends with this process."""

    def load_all(self, refs: Sequence[ClipRef], spec: InputSpec, remove_audio: bool = False
                 ) -> Iterator[tuple[ClipRef, Clip | ClipError]]:
        ray = self._ray
        running: dict = {}  # ObjectRef -> (seq, deadline)
        submitted = 0

        def submit(next_out: int) -> None:
            nonlocal submitted
            while submitted < len(refs) and len(running) < self.slots and submitted < next_out + self.ahead:
                task = self._task.remote(self._loader, refs[submitted], spec, remove_audio)
                deadline = time.monotonic() + self.clip_timeout if self.clip_timeout else float("inf")
                running[task] = (submitted, deadline)
                submitted += 1

        def collect(done: dict) -> None:
            first = min(deadline for _, deadline in running.values())
            timeout = None if first == float("inf") else max(0.0, first - time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=timeout)
            for task in ready:
                seq, _ = running.pop(task)
                try:
                    done[seq] = ray.get(task)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.RayTaskError, ray.exceptions.ObjectLostError) as exc:
                    done[seq] = ClipError("worker_crashed", f"{refs[seq].path}: the Ray worker loading it died "
                                                            f"({type(exc).__name__}); the run goes on")
            now = time.monotonic()
            for task, (seq, deadline) in list(running.items()):
                if now > deadline:
                    ray.cancel(task, force=True)
                    del running[task]
                    done[seq] = ClipError("timeout", f"{refs[seq].path}: loading took more than "
                                                     f"{self.clip_timeout:g} s (--clip-timeout); its task was cancelled")

        try:
            yield from _in_order(refs, submit, collect)
        finally:
            for task in running:
                ray.cancel(task, force=True)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
