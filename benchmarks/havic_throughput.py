"""HAVIC inference throughput: windows/s, videos/s and peak memory, fp32 and bf16, beside the paper's figures.

    python benchmarks/havic_throughput.py [--device auto] [--config base|tiny] [--batch 18]
                                          [--dtype fp32|bf16|both] [--seconds 10] [--iters 3]

Random weights (throughput does not depend on them) and random inputs of the model's shapes. A video
of --seconds at 5 fps gives (5 * seconds - 16) // 2 + 1 windows (18 for 10 s); videos/s counts the
forward passes only, and the CPU time to cut one video into windows (fbank included) is printed apart.
The paper reports 60.8 samples/s for the fine-tuning model and 66.8 for the pre-training model (supp.
Tables 9 and 10; one sample = one 3.2 s window; GPU not stated, the authors trained on NVIDIA L20s).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time

import numpy as np
import torch

from avbench.detectors.havic.model import HAVIC, HAVICConfig
from avbench.detectors.havic.preprocess import FPS, WINDOW_STRIDE, clip_windows

PAPER_SAMPLES_PER_S = (60.8, 66.8)


def windows_per_video(cfg: HAVICConfig, seconds: float) -> int:
    frames = int(round(seconds * FPS))
    return max(0, (frames - cfg.n_frames) // WINDOW_STRIDE + 1)


def preprocess_seconds(cfg: HAVICConfig, seconds: float) -> float:
    """CPU time (best of 3) to turn one video's face crops and audio into windows: the fbank of each window's audio
    (the video windows are views of the crops, made float on the device batch by batch)."""
    rng = np.random.default_rng(0)
    frames = int(round(seconds * FPS))
    faces = rng.integers(0, 256, (frames, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        clip_windows(faces, audio, cfg)
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB allocated (torch.cuda peak)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS (process peak so far)"


def measure(model: HAVIC, cfg: HAVICConfig, device: torch.device, dtype: str, batch: int, iters: int) -> float:
    """Windows per second of the main head's forward pass."""
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, cfg.audio_frames, cfg.mel_bins, generator=g).to(device)
    video = torch.rand(batch, 3, cfg.n_frames, cfg.image_size, cfg.image_size, generator=g).to(device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), autocast:
        model(audio, video)  # warm-up: kernels, allocator, autotuning
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(iters):
            model(audio, video)
        sync()
    return batch * iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--config", choices=("base", "tiny"), default="base")
    parser.add_argument("--batch", type=int, default=18, help="windows per forward pass")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=10.0, help="video length for videos/s")
    parser.add_argument("--iters", type=int, default=3, help="timed forward passes per dtype")
    args = parser.parse_args()

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cfg = HAVICConfig.base() if args.config == "base" else HAVICConfig.tiny()
    per_video = windows_per_video(cfg, args.seconds)
    if per_video == 0:
        parser.error(f"a {args.seconds:g} s video holds no window of {cfg.n_frames} frames at {FPS:g} fps")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    torch.manual_seed(0)
    model = HAVIC(cfg).eval().to(device)
    print(f"HAVIC {args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"on {name}; torch {torch.__version__}")
    print(f"{args.seconds:g} s video -> {per_video} windows; batch {args.batch} windows; {args.iters} timed passes")
    print(f"preprocessing (windows and their fbank, CPU): {preprocess_seconds(cfg, args.seconds) * 1000:.0f} ms per video")
    for dtype in (("fp32", "bf16") if args.dtype == "both" else (args.dtype,)):
        rate = measure(model, cfg, device, dtype, args.batch, args.iters)
        print(f"{dtype}: {rate:8.2f} windows/s  {rate / per_video:7.3f} videos/s  peak {peak_memory(device)}")
    low, high = PAPER_SAMPLES_PER_S
    print(f"paper: {low}-{high} samples/s (windows/s), fine-tuning and pre-training models, GPU not stated")


if __name__ == "__main__":
    main()
