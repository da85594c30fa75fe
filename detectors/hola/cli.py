"""`avbench hola ...`: HOLA's stage-1 pre-training from the command line (torch is imported inside the command).

Fine-tuning needs no command of its own: it is the `fit` of the `hola` detector, run by `avbench run`
under a protocol, with `-o weights=OUT/encoders.safetensors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from avbench.cli_support import (EXIT_USAGE, Device, EpochDisplay, err_console, fail, real_clips, require_device,
                                 say_unusable)

app = typer.Typer(
    help="HOLA: pre-train its AVF-MAE++ encoders on real videos here, then fine-tune and score with "
         "`avbench run --detector hola -o weights=OUT/encoders.safetensors`.",
    no_args_is_help=True, rich_markup_mode="markdown", pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """HOLA: pre-train its AVF-MAE++ encoders on real videos here, then fine-tune and score with
    `avbench run --detector hola -o weights=OUT/encoders.safetensors`."""


@app.command()
def pretrain(
    data_root: Annotated[list[str], typer.Option(
        help="DATASET=DIR (the dataset's folder) or DATASET=INDEX.parquet (from `avbench datasets index`), as "
             "`avbench run` takes them; repeat for several datasets.")],
    out: Annotated[Path, typer.Option(
        help="Output folder: encoders.safetensors, pretrain.json, and last.pt to resume from.")],
    tiny: Annotated[bool, typer.Option(
        help="The tiny twin (4 frames of 32 px, a 32x16 filterbank, width 32) instead of AVF-MAE++ base.")] = False,
    split: Annotated[str, typer.Option(help="Which split's real clips to pre-train on; `all` for every real clip.")] = "train",
    protocol: Annotated[Optional[str], typer.Option(
        help="Assign splits as this protocol does (e.g. `demo`) instead of the indexes' split column.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs [default: 100 as AVF-MAE++ base; tiny: 3].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Clips per optimiser step, over all devices [default: 164, upstream's per GPU; tiny: 2].")] = None,
    lr: Annotated[Optional[float], typer.Option(
        help="Base AdamW learning rate; the run uses lr x batch / 256 [default: 1.5e-4; tiny: 0.1].")] = None,
    min_lr: Annotated[Optional[float], typer.Option(
        help="Base final learning rate of the cosine, also x batch / 256 [default: 1e-5].")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option(
        min=0, help="Linear warm-up from 0, in epochs (fractions allowed) [default: 10; tiny: 0].")] = None,
    pad_short: Annotated[bool, typer.Option(
        help="Pad clips shorter than a window (2.56 s) instead of leaving them out as too_short.")] = False,
    device: Annotated[Device, typer.Option(help="Where to train (bf16 mixed precision on cuda).")] = Device.cpu,
    seed: Annotated[int, typer.Option(help="Initialisation, clip order, windows, augmentation and masks.")] = 0,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Decoded-media cache [default: $AVBENCH_CACHE_DIR or ~/.cache/avbench].")] = None,
):
    """Pre-train HOLA's stage 1, AVF-MAE++ base (masked audio-visual autoencoding with dual masking,
    cross-modal fusion and a hierarchical audio-visual InfoNCE), on the **real** clips of a dataset split.

    Writes OUT/encoders.safetensors with the video encoder under `encoder.*` and the audio encoder
    under `encoder_audio.*` (AVF-MAE++'s layout), which the hola detectors load, for example:

        avbench run --detector hola --protocol PROTOCOL --data-root DATASET=DIR -o weights=OUT/encoders.safetensors

    (`--detector hola_tiny` for encoders made with --tiny). An interrupted pre-training goes on from
    OUT/last.pt when the same command is run again; a finished one is not redone.
    """
    import dataclasses


    from avbench.cache import MediaCache
    from avbench.loader import ClipSet, MediaLoader
    from avbench.training import LAST

    from .pretrain import RECORD, PretrainConfig, build_model
    from .pretrain import pretrain as run_pretraining

    require_device(device)
    cfg = PretrainConfig.tiny() if tiny else PretrainConfig()
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "min_lr": min_lr, "warmup_epochs": warmup_epochs}
    try:
        cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE)
    refs = real_clips(data_root, split, protocol)
    clips = ClipSet(refs, MediaLoader(MediaCache(cache_dir)), cfg.input_spec)
    peak, _ = cfg.effective_lr()
    err_console.print(f"pre-training HOLA's encoders{' (tiny)' if tiny else ''} on {len(refs)} real clips ({split}) "
                      f"for {cfg.epochs} epochs, batch {cfg.batch_size}, lr {peak:.3g}, on {device.value}; state in {out}")
    display = EpochDisplay(cfg.epochs, lambda r: f"loss {r['loss']:.4f} (video {r['video']:.4f}, audio "
                                                 f"{r['audio']:.4f}, nce {r['nce']:.4f}), lr {r['lr']:.3g}, "
                                                 f"{r['seconds']:.1f} s")
    try:
        with display.progress:
            result = run_pretraining(clips, out, cfg, seed=seed, device=device.value, pad_short=pad_short,
                                     model=build_model(cfg, seed), on_step=display.on_step, on_epoch=display.on_epoch)
    except ValueError as exc:
        raise fail(str(exc))
    if not display.trained:
        err_console.print(f"{out / LAST} holds all {cfg.epochs} epochs already: nothing to train")
    say_unusable(clips.failures, len(refs), out / RECORD)
    typer.echo(f"wrote {result.weights}; fine-tune it with: avbench run --detector {'hola_tiny' if tiny else 'hola'} "
               f"--protocol PROTOCOL --data-root DATASET=DIR -o weights={result.weights}")
