"""What the model benchmarks share: timing a training step or a scoring pass and printing the rates.

Imported by the scripts beside it (`python benchmarks/NAME.py` puts this folder on sys.path).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Callable

import torch
from torch import Tensor

from avbench.training import peak_memory_mib


def arguments(doc: str, configs: tuple[str, str] = ("full", "tiny"), **extra: tuple[type, object]) -> argparse.Namespace:
    """--device, --config (`configs`, the first the default), --batch, --dtype, --iters, and `extra`
    NAME=(type, default)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", choices=configs, default=configs[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", choices=("fp32", "bf16", "both"), default="both")
    parser.add_argument("--iters", type=int, default=3)
    for name, (kind, default) in extra.items():
        parser.add_argument(f"--{name}", type=kind, default=default)
    args = parser.parse_args()
    args.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto"
                               else args.device)
    return args


def samples_per_second(model: torch.nn.Module, forward: Callable[[], Tensor], optimiser: torch.optim.Optimizer | None,
                       device: torch.device, dtype: str, batch: int, iters: int) -> float:
    """Rate of `forward` (a batch of `batch`; it returns the loss): with `optimiser` a training step
    (backward and the optimiser's step), else inference only. One warm-up step is not timed."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

    def step():
        if optimiser is not None:
            optimiser.zero_grad(set_to_none=True)
            with autocast:
                loss = forward()
            loss.backward()
            optimiser.step()
        else:
            with torch.inference_mode(), autocast:
                forward()

    model.train(optimiser is not None)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch * iters / (time.perf_counter() - start)


def report(model: torch.nn.Module, forward: Callable[[], Tensor], make_optimiser: Callable[[], torch.optim.Optimizer],
           args: argparse.Namespace, unit: str, train_label: str = "training") -> None:
    """One line per dtype x (training, scoring): the rate and the peak memory."""
    for dtype in (("fp32", "bf16") if args.dtype == "both" else (args.dtype,)):
        for train in (True, False):
            if args.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(args.device)
            rate = samples_per_second(model, forward, make_optimiser() if train else None, args.device, dtype,
                                      args.batch, args.iters)
            label = train_label if train else "scoring"
            print(f"{dtype} {label:<11}: {rate:.2f} {unit}/s, peak {peak_memory_mib(args.device) / 1024:.2f} GiB "
                  + ("allocated (torch.cuda peak)" if args.device.type == "cuda" else "RSS (process peak so far)"))
