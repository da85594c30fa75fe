"""One process per device for data-parallel training: launched here (`--devices`) or by torchrun.

Every rank runs the same run: the same checks, plans and folds, fitting in lockstep (avbench.training
shards each batch over the ranks); rank 0 alone writes run folders, checkpoints and records, and
scores the test sets while the others go on to the next fit and wait for it there. The group's
timeout (`TIMEOUT`) bounds that wait, so it is long: scoring a large test set takes hours.
Backend: nccl when the devices are CUDA GPUs, gloo on the CPU (the tests' two-process group).
"""

from __future__ import annotations

import os
import socket
import sys
from datetime import timedelta
from typing import Callable, Sequence

#: How long a rank waits in a collective (for rank 0 scoring a test set, before the next fit).
TIMEOUT = timedelta(hours=24)


def ranks() -> tuple[int, int]:
    """(rank, world size) of this process in torch.distributed's group; (0, 1) outside one."""
    if "torch" not in sys.modules:  # no group without torch: runs of detectors without it do not import it
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return ranks()[0] == 0


def barrier() -> None:
    """Wait for every rank (nothing outside a group)."""
    if ranks()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def backend(devices: Sequence[str]) -> str:
    kinds = {d.partition(":")[0] for d in devices}
    if kinds == {"cuda"}:
        return "nccl"
    if kinds == {"cpu"}:
        return "gloo"
    raise ValueError(f"--devices {','.join(devices)}: all CUDA GPUs or all CPU, not a mix")


def check_devices(devices: Sequence[str]) -> None:
    """Refuse a list that cannot make a group, naming what is wrong, before anything starts."""
    if len(devices) < 2:
        raise ValueError(f"--devices takes two or more devices (cuda:0,cuda:1), got {','.join(devices) or 'none'}")
    backend(devices)
    gpus = [d for d in devices if d.startswith("cuda")]
    if len(set(gpus)) < len(gpus):
        raise ValueError(f"--devices {','.join(devices)} names a GPU twice: one process per GPU")


def launch(target: Callable[[str], None], devices: Sequence[str]) -> None:
    """Run target(device) in one new process per device, joined in a group (rank k on devices[k]).
    A rank that fails stops the others; its exit code is raised as SystemExit here."""
    import torch.multiprocessing as mp

    check_devices(devices)
    with socket.socket() as s:  # a free port on this machine for the group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        mp.spawn(_rank_main, args=(target, list(devices), port), nprocs=len(devices), join=True)
    except mp.ProcessExitedException as exc:
        raise SystemExit(exc.exit_code) from None


def _rank_main(rank: int, target: Callable[[str], None], devices: list[str], port: int) -> None:
    import torch
    import torch.distributed as dist

    device = devices[rank]
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend(devices), init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=len(devices), timeout=TIMEOUT)
    try:
        target(device)
        dist.barrier()  # a rank that is done waits for the others: gloo can abort when a peer leaves early
    finally:
        dist.destroy_process_group()


def join_from_env(device: str) -> str:
    """Under torchrun (WORLD_SIZE > 1 in the environment): join its group and return this rank's
    device (cuda:LOCAL_RANK when `device` is cuda); elsewhere `device` unchanged."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or ranks()[1] > 1:
        return device
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=TIMEOUT)
    return device
