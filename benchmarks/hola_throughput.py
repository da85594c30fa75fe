"""HOLA fine-tuning and scoring throughput: clips/s and peak memory in fp32 and bf16, and the CPU time to make a clip's inputs.

    python benchmarks/hola_throughput.py [--device auto] [--config full|tiny] [--batch 8]
                                         [--dtype fp32|bf16|both] [--iters 3] [--seconds 8]

Random weights (throughput does not depend on them; no AVF-MAE++ checkpoint travels to a benchmark
machine) and random inputs of the model's shapes: 16 frames of 160 px and a (256, 128) filterbank at
full size. A training step is forward, cross-entropy, backward and an AdamW step with the layer-wise
groups; scoring is the forward pass under inference_mode. The preprocessing time is one clip's
16 frames cropped and normalised and its filterbank, from `--seconds` of 25 fps 224 px frames and
16 kHz audio, on the CPU. The paper reports 8 A100s and no throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch
import torch.nn.functional as F

from avbench.detectors.hola.model import HOLA, HOLAConfig
from avbench.detectors.hola.preprocess import fbank128, frame_indices, video_tensor
from avbench.detectors.hola.training import parameter_groups
from avbench.training import peak_memory_mib


def preprocess_seconds(cfg: HOLAConfig, seconds: float) -> float:
    """Best of 3: one clip's evaluation inputs from its decoded frames and audio."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (round(25 * seconds), 224, 224, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(round(16000 * seconds))).astype(np.float32)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        sample = frame_indices(len(frames), cfg.video.input_size[0])
        video_tensor(frames[sample.indices], cfg.video.input_size[1])
        fbank128(audio, len(audio), *cfg.audio.input_size)
        best = min(best, time.perf_counter() - start)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: HOLA, device: torch.device, dtype: str, batch: int, iters: int, train: bool) -> float:
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, *model.cfg.video.input_shape, generator=g).to(device)
    audio = torch.randn(batch, *model.cfg.audio.input_shape, generator=g).to(device)
    labels = torch.arange(batch, device=device) % 2
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    optimiser = torch.optim.AdamW(parameter_groups(model, 0.02, 0.75), lr=1.5e-4) if train else None

    def step():
        if train:
            optimiser.zero_grad(set_to_none=True)
            with autocast:
                loss = F.cross_entropy(model(video, audio).float(), labels)
            loss.backward()
            optimiser.step()
        else:
            with torch.inference_mode(), autocast:
                model(video, audio)

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
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cfg = HOLAConfig() if args.config == "full" else HOLAConfig.tiny()
    torch.manual_seed(0)
    model = HOLA(cfg).to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"HOLA {args.config}: {params / 1e6:.1f}M parameters, video {tuple(cfg.video.input_shape)}, audio "
          f"{tuple(cfg.audio.input_shape)}, batch {args.batch}, {device}, {torch.get_num_threads()} CPU threads")
    print(f"preprocessing one {args.seconds:g} s clip on the CPU: {preprocess_seconds(cfg, args.seconds) * 1000:.0f} ms")
    for dtype in (("fp32", "bf16") if args.dtype == "both" else (args.dtype,)):
        for train in (True, False):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate = measure(model, device, dtype, args.batch, args.iters, train)
            print(f"{dtype} {'fine-tuning' if train else 'scoring    '}: {rate:.2f} clips/s, peak "
                  f"{peak_memory_mib(device) / 1024:.2f} GiB "
                  + ("allocated (torch.cuda peak)" if device.type == "cuda" else "RSS (process peak so far)"))


if __name__ == "__main__":
    main()
