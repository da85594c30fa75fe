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

import time

import numpy as np
import torch

from avbench.detectors.cad.model import CAD, CADConfig, total_loss
from avbench.detectors.cad.preprocess import FACE_SIZE, audio_padding, clip_frames, whisper_mel
from avbench.detectors.cad.training import Augment, parameter_groups
from model_timing import arguments, report


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


def main() -> None:
    args = arguments(__doc__, frames=(int, 16))
    cfg = (CADConfig(random_init=True, frames=args.frames) if args.config == "full"
           else CADConfig.tiny(frames=args.frames))
    torch.manual_seed(0)
    model = CAD(cfg).to(args.device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    print(f"CAD {args.config}: {trainable / 1e6:.1f}M trainable + {frozen / 1e6:.1f}M frozen parameters, "
          f"{cfg.frames} frames of {FACE_SIZE} px + 30 s of audio a sample, batch {args.batch}, {args.device}, "
          f"{torch.get_num_threads()} CPU threads")
    for augment in (False, True):
        print(f"preprocessing one sample on the CPU{' with every augmentation' if augment else ''}: "
              f"{preprocess_seconds(cfg.frames, augment) * 1000:.0f} ms")
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(args.batch, cfg.frames, 3, FACE_SIZE, FACE_SIZE, generator=g).to(args.device)
    mel = torch.randn(args.batch, 80, 3000, generator=g).to(args.device)
    padding = audio_padding([500 + 100 * k for k in range(args.batch)]).to(args.device)  # clips of 10 s and more
    labels = torch.arange(args.batch, device=args.device) % 2
    report(model, lambda: total_loss(model(frames, mel, padding), labels, cfg).total,
           lambda: torch.optim.Adam(parameter_groups(model, 5e-4), lr=2e-4), args, "samples")


if __name__ == "__main__":
    main()
