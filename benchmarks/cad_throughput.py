"""CAD training and scoring throughput: samples/s and peak memory in fp32 and bf16, and the CPU time to make a sample.

    python benchmarks/cad_throughput.py [--device auto] [--config full|tiny] [--batch 8]
                                        [--dtype fp32|bf16|both] [--iters 3] [--frames 16]

Random backbones (`random_init`: throughput does not depend on the weights, and no weight file
travels to a benchmark machine) and random inputs of the model's shapes: a sample is 16 face crops
of 224 px and Whisper's 30 s log-Mel. A training step is forward, CE + KL + KD, backward and an
Adam step on the trainable tensors; scoring is the forward pass alone under inference_mode. The
preprocessing time is one sample's CLIP-normalised crops and log-Mel from uint8 crops and 16 kHz
audio, with and without the training augmentations, on the CPU. The paper reports 8 H100s for 4 h
of training and no throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from avbench.detectors.cad.model import CAD, CADConfig, total_loss
from avbench.detectors.cad.preprocess import FACE_SIZE, audio_padding, clip_frames, whisper_mel
from avbench.detectors.cad.training import Augment, parameter_groups
from avbench.training import peak_memory_mib


def preprocess_seconds(frames: int, augment: bool) -> float:
    """Best of 3: one sample's crops and log-Mel (a 10 s clip's audio)."""
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (frames, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(10 * 16000)).astype(np.float32)
    every = Augment(True, 5.0, 5, (1.05, 0.05), 70)  # every augmentation on: the worst case
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        clip_frames(every.apply(faces) if augment else faces, range(frames))
        whisper_mel(audio)
        best = min(best, time.perf_counter() - start)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: CAD, device: torch.device, dtype: str, batch: int, iters: int, train: bool) -> float:
    g = torch.Generator().manual_seed(0)
    cfg = model.cfg
    frames = torch.randn(batch, cfg.frames, 3, FACE_SIZE, FACE_SIZE, generator=g).to(device)
    mel = torch.randn(batch, 80, 3000, generator=g).to(device)
    padding = audio_padding([500 + 100 * k for k in range(batch)]).to(device)  # clips of 10 s and more
    labels = torch.arange(batch, device=device) % 2
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    optimiser = torch.optim.Adam(parameter_groups(model, 5e-4), lr=2e-4) if train else None

    def step():
        if train:
            optimiser.zero_grad(set_to_none=True)
            with autocast:
                loss = total_loss(model(frames, mel, padding), labels, cfg).total
            loss.backward()
            optimiser.step()
        else:
            with torch.inference_mode(), autocast:
                model(frames, mel, padding)

    model.train(train)
    step()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return batch * iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", choices=("full", "tiny"), default="full")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", choices=("fp32", "bf16", "both"), default="both")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cfg = (CADConfig(random_init=True, frames=args.frames) if args.config == "full"
           else CADConfig.tiny(frames=args.frames))
    torch.manual_seed(0)
    model = CAD(cfg).to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    print(f"CAD {args.config}: {trainable / 1e6:.1f}M trainable + {frozen / 1e6:.1f}M frozen parameters, "
          f"{cfg.frames} frames of {FACE_SIZE} px + 30 s of audio a sample, batch {args.batch}, {device}, "
          f"{torch.get_num_threads()} CPU threads")
    for augment in (False, True):
        print(f"preprocessing one sample on the CPU{' with every augmentation' if augment else ''}: "
              f"{preprocess_seconds(cfg.frames, augment) * 1000:.0f} ms")
    for dtype in (("fp32", "bf16") if args.dtype == "both" else (args.dtype,)):
        for train in (True, False):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate = measure(model, device, dtype, args.batch, args.iters, train)
            print(f"{dtype} {'training' if train else 'scoring '}: {rate:.2f} samples/s, peak "
                  f"{peak_memory_mib(device) / 1024:.2f} GiB "
                  + ("allocated (torch.cuda peak)" if device.type == "cuda" else "RSS (process peak so far)"))


if __name__ == "__main__":
    main()
