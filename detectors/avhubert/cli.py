"""`avbench avhubert ...`: one-off handling of the authors' checkpoints (torch is imported per command)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from avbench.cli_support import fail

_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")

app = typer.Typer(help="AV-HuBERT weights: convert the authors' fairseq checkpoints to safetensors.",
                  no_args_is_help=True)


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="fairseq checkpoint (.pt), pre-training or fine-tuned seq2seq")],
    dst: Annotated[Path, typer.Argument(help="output .safetensors (encoder only, the authors' key names)")],
) -> None:
    """Convert a fairseq AV-HuBERT checkpoint to safetensors, without fairseq.

    The checkpoint is unpickled with an allow-list (fairseq, omegaconf ... objects become inert), so
    no code from it runs; still convert only files from a source you trust.
    """
    from safetensors import safe_open

    from avbench.detectors.avhubert.checkpoint import convert_fairseq_checkpoint
    from avbench.io import sha256_file

    try:
        out = convert_fairseq_checkpoint(src, dst)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    with safe_open(str(out), framework="pt") as fh:
        keys = list(fh.keys())
        params = sum(math.prod(fh.get_slice(key).get_shape()) for key in keys if not key.endswith(_BN_STATS))
        config = json.loads(fh.metadata()["config"])
    typer.echo(f"wrote {out}: {len(keys)} tensors, {params:,} parameters (BatchNorm statistics not counted)")
    typer.echo(f"config: {json.dumps(config)}")
    typer.echo(f"sha256: {sha256_file(out)}")
