"""`avbench havic ...`: HAVIC's pre-training from the command line (torch is imported inside the command).

Fine-tuning needs no command of its own: it is the `fit` of the `havic` detector, run by `avbench run`
under a protocol (model selection on the protocol's validation clips, scores on its test clips).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from avbench.cli_support import (DETECT_EVERY, LANDMARK_EVERY, Device, DetectEveryOption, EpochDisplay,
                                 LandmarkEveryOption, err_console, fail, real_clips, require_device, say_unusable,
                                 tracking)

#: The paper's pre-training length (supplement B); the tiny model's default is its detector's.
PAPER_PRETRAIN_EPOCHS = 200

app = typer.Typer(
    help="HAVIC: pre-train on real videos here, then fine-tune and score with `avbench run --detector havic "
         "-o pretrained=OUT/pretrain.safetensors`.",
    no_args_is_help=True, rich_markup_mode="markdown", pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """HAVIC: pre-train on real videos here, then fine-tune and score with `avbench run --detector havic
    -o pretrained=OUT/pretrain.safetensors`."""


@app.command()
def pretrain(
    data_root: Annotated[list[str], typer.Option(
        help="DATASET=DIR (the dataset's folder) or DATASET=INDEX.parquet (from `avbench datasets index`), as "
             "`avbench run` takes them; repeat for several datasets.")],
    out: Annotated[Path, typer.Option(
        help="Output folder: pretrain.safetensors, history.json, and last.pt to resume from.")],
    tiny: Annotated[bool, typer.Option(help="The tiny configuration (32 px faces, 8-frame windows) instead of ViT-B.")] = False,
    split: Annotated[str, typer.Option(help="Which split's real clips to pre-train on; `all` for every real clip.")] = "train",
    protocol: Annotated[Optional[str], typer.Option(
        help="Assign splits as this protocol does (e.g. `demo`) instead of the indexes' split column.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs [default: 200 as the paper; tiny: 1].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Clips per step [default: 112; tiny: 8].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak AdamW learning rate [default: 1.5e-4; tiny: 1e-3].")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option(
        min=0, help="Linear warm-up, in epochs (fractions allowed) [default: 20; tiny: 0].")] = None,
    init_audiomae: Annotated[Optional[Path], typer.Option(help="AudioMAE checkpoint for the audio encoder.")] = None,
    init_marlin: Annotated[Optional[Path], typer.Option(help="MARLIN checkpoint for the visual encoder and decoder.")] = None,
    device: Annotated[Device, typer.Option(help="Where to train (bf16 mixed precision on cuda).")] = Device.cpu,
    seed: Annotated[int, typer.Option(help="Initialisation, clip order, windows and masks.")] = 0,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Decoded-media cache [default: $AVBENCH_CACHE_DIR or ~/.cache/avbench].")] = None,
    landmark_every: LandmarkEveryOption = LANDMARK_EVERY,
    detect_every: DetectEveryOption = DETECT_EVERY,
):
    """Pre-train HAVIC (hierarchical reconstruction, fine-grained contrastive and cross-modal semantic
    losses) on the **real** clips of a dataset split, as the paper does on LRS2.

    Writes OUT/pretrain.safetensors in the authors' parameter names, so it loads wherever their
    pre-training checkpoint does. Fine-tune and test it with the harness, for example:

        avbench run --detector havic --protocol fakeavceleb_intra --data-root fakeavceleb=DIR -o pretrained=OUT/pretrain.safetensors

    (`--detector havic_tiny` for a checkpoint made with --tiny). An interrupted pre-training goes on
    from OUT/last.pt when the same command is run again; a finished one is not redone.
    """
    import torch

    from avbench.cache import MediaCache
    from avbench.io import atomic_write, write_json
    from avbench.loader import ClipSet, MediaLoader
    from avbench.training import LAST
    from avbench.weights import safetensors_bytes

    from . import training
    from .checkpoint import CheckpointError, init_from_audiomae, init_from_marlin
    from .detector import HAVICDetector, HAVICTinyDetector
    from .model import HAVICPretrain

    require_device(device)
    detector = HAVICTinyDetector if tiny else HAVICDetector
    defaults = detector.training_defaults
    epochs = epochs or (defaults["pretrain_epochs"] if tiny else PAPER_PRETRAIN_EPOCHS)
    cfg = detector.model_config()
    refs = real_clips(data_root, split, protocol)
    clips = ClipSet(refs, MediaLoader(MediaCache(cache_dir), tracking(landmark_every, detect_every)), detector.input_spec)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = HAVICPretrain(cfg)
        if init_audiomae is not None:
            init_from_audiomae(model, init_audiomae)
        if init_marlin is not None:
            init_from_marlin(model, init_marlin)
    except (FileNotFoundError, CheckpointError) as exc:
        raise fail(str(exc))
    err_console.print(f"pre-training HAVIC{' tiny' if tiny else ''} on {len(refs)} real clips ({split}) for {epochs} "
                  f"epochs on {device.value}; state in {out}")
    display = EpochDisplay(epochs, lambda r: f"loss {r['loss']:.4f} (rec {r['rec']:.4f}, cl {r['cl']:.4f}, "
                                             f"cross {r['cross']:.4f}), lr {r['lr']:.3g}, {r['seconds']:.1f} s")
    try:
        with display.progress:
            history = training.pretrain(
                model, clips, seed=seed, device=device.value, epochs=epochs,
                batch_size=batch_size or defaults["pretrain_batch_size"], lr=lr or defaults["pretrain_lr"],
                warmup_epochs=defaults["warmup_epochs"] if warmup_epochs is None else warmup_epochs,
                directory=out, on_step=display.on_step, on_epoch=display.on_epoch)
    except ValueError as exc:
        raise fail(str(exc))
    if not display.trained:
        err_console.print(f"{out / LAST} holds all {epochs} epochs already: nothing to train")
    say_unusable(clips.failures, len(refs), out / "history.json")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = out / "pretrain.safetensors"
    with atomic_write(weights, "wb") as fh:
        fh.write(safetensors_bytes(state, metadata={"model": "HAVICPretrain", "tiny": str(tiny).lower(),
                                                    "epochs": str(epochs), "seed": str(seed)}))
    write_json(out / "history.json", {"config": cfg.as_dict(), "epochs": epochs, "clips": len(refs), "history": history,
                                      "failed": {cid: f"{e.reason}: {e.message}" for cid, e in clips.failures.items()}})
    typer.echo(f"wrote {weights}; fine-tune it with: avbench run --detector {detector.name} --protocol PROTOCOL "
               f"--data-root DATASET=DIR -o pretrained={weights}")
