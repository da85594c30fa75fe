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

import time

import numpy as np
import torch
import torch.nn.functional as F

from avbench.detectors.hola.model import HOLA, HOLAConfig
from avbench.detectors.hola.preprocess import fbank128, frame_indices, video_tensor
from avbench.detectors.hola.training import parameter_groups
from model_timing import arguments, report


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


def main() -> None:
    args = arguments(__doc__, seconds=(float, 8.0))
    cfg = HOLAConfig() if args.config == "full" else HOLAConfig.tiny()
    torch.manual_seed(0)
    model = HOLA(cfg).to(args.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"HOLA {args.config}: {params / 1e6:.1f}M parameters, video {tuple(cfg.video.input_shape)}, audio "
          f"{tuple(cfg.audio.input_shape)}, batch {args.batch}, {args.device}, {torch.get_num_threads()} CPU threads")
    print(f"preprocessing one {args.seconds:g} s clip on the CPU: {preprocess_seconds(cfg, args.seconds) * 1000:.0f} ms")
    g = torch.Generator().manual_seed(0)
    video = torch.randn(args.batch, *cfg.video.input_shape, generator=g).to(args.device)
    audio = torch.randn(args.batch, *cfg.audio.input_shape, generator=g).to(args.device)
    labels = torch.arange(args.batch, device=args.device) % 2
    report(model, lambda: F.cross_entropy(model(video, audio).float(), labels),
           lambda: torch.optim.AdamW(parameter_groups(model, 0.02, 0.75), lr=1.5e-4), args, "clips", "fine-tuning")


if __name__ == "__main__":
    main()
