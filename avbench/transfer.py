"""Batches onto the device one step ahead, so that on CUDA the copy of the next batch overlaps the
compute of this one.

`ahead_on_device` takes host batches (tuples of CPU tensors, None allowed) and yields them on the
device. On CUDA each batch is pinned and copied on a side stream while the caller computes on the
previous one; the compute stream waits for that batch's copy only, and the allocator is told which
stream uses the memory. Elsewhere it is a plain `.to(device)`, so results are the same everywhere.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

Batch = tuple["torch.Tensor | None", ...]


def ahead_on_device(batches: Iterable[Batch], device: torch.device | str) -> Iterator[Batch]:
    device = torch.device(device)
    if device.type != "cuda":
        for batch in batches:
            yield tuple(None if t is None else t.to(device) for t in batch)
        return
    side = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)
    in_flight: tuple[Batch, torch.cuda.Event] | None = None
    for batch in batches:
        with torch.cuda.stream(side):
            moved = tuple(None if t is None else t.pin_memory().to(device, non_blocking=True) for t in batch)
            copied = torch.cuda.Event()
            copied.record(side)
        if in_flight is not None:
            yield _handed_over(*in_flight, compute)
        in_flight = (moved, copied)
    if in_flight is not None:
        yield _handed_over(*in_flight, compute)


def _handed_over(batch: Batch, copied: "torch.cuda.Event", compute: "torch.cuda.Stream") -> Batch:
    compute.wait_event(copied)
    for t in batch:
        if t is not None:
            t.record_stream(compute)
    return batch
