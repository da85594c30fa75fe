"""FauForensics inference throughput: windows/s and peak memory in fp32 and bf16, and the CPU time to make a window.

    python benchmarks/fauforensics_throughput.py [--device auto] [--config base|tiny] [--batch 8]
                                                 [--dtype fp32|bf16|both] [--iters 3]

Random weights (throughput does not depend on them) and random inputs of the model's shapes: one
window = 25 face crops of 112 px and 100 log-Mel frames (1 s) at full size. The preprocessing time
is that of one window from 224 px face crops and 16 kHz audio (crop chain and log-Mel), on the CPU.
The paper reports no throughput.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from avbench.detectors.fauforensics.model import FauForensics, FauForensicsConfig
from avbench.detectors.fauforensics.preprocess import FACE_SIZE, face_frames, log_mel
from avbench.training import peak_memory_mib
from model_timing import arguments, samples_per_second


def preprocess_seconds(cfg: FauForensicsConfig) -> float:
    """Best of 3: one window's face frames and log-Mel from raw crops and audio."""
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (cfg.frames, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(cfg.frames * 640)).astype(np.float32)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        face_frames(faces, cfg.frames, cfg.image_size)
        log_mel(audio, cfg.n_mels, cfg.audio_frames)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    args = arguments(__doc__, configs=("base", "tiny"))
    device = args.device
    cfg = FauForensicsConfig() if args.config == "base" else FauForensicsConfig.tiny()
    model = FauForensics(cfg).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"FauForensics {args.config}: {params / 1e6:.1f}M parameters, {cfg.frames} frames of {cfg.image_size} px "
          f"a window, batch {args.batch}, {device}, {torch.get_num_threads()} CPU threads")
    print(f"preprocessing one window on the CPU: {preprocess_seconds(cfg) * 1000:.1f} ms")
    g = torch.Generator().manual_seed(0)
    video = torch.randn(args.batch, 3, cfg.frames, cfg.image_size, cfg.image_size, generator=g).to(device)
    mel = (torch.rand(args.batch, cfg.audio_frames, cfg.n_mels, generator=g) * 2 - 1).to(device)
    for dtype in (("fp32", "bf16") if args.dtype == "both" else (args.dtype,)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rate = samples_per_second(model, lambda: model(video, mel), None, device, dtype, args.batch, args.iters)
        print(f"{dtype}: {rate:.2f} windows/s ({rate * cfg.frames / 25:.2f} s of video per s), "
              f"peak {peak_memory_mib(device) / 1024:.2f} GiB "
              + ("allocated (torch.cuda peak)" if device.type == "cuda" else "RSS (process peak so far)"))


if __name__ == "__main__":
    main()
