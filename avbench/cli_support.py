"""What every avbench command shares, those a detector family mounts under `avbench <family>` included:
the exit codes, error output, the --device choice and KEY=VALUE options.

Exit codes: 0 success; 1 the work could not be done (missing data, bad checkpoint, failed run);
2 wrong usage (unknown option or value); 3 `avbench check` found a regression.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

EXIT_ERROR, EXIT_USAGE, EXIT_REGRESSION = 1, 2, 3

err_console = Console(stderr=True)


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


#: faces.Tracking's defaults, repeated so that `--help` shows them without importing numpy (tested equal).
LANDMARK_EVERY, DETECT_EVERY = 5, 100
LandmarkEveryOption = Annotated[int, typer.Option(
    min=1, help="Place 68-point landmarks on every k-th frame and interpolate between (1: every frame).")]
DetectEveryOption = Annotated[int, typer.Option(
    min=1, help="Frames between face detections while a face is tracked (it is re-detected sooner when lost).")]


def tracking(landmark_every: int, detect_every: int):
    """The faces.Tracking of --landmark-every and --detect-every."""
    from avbench.faces import Tracking

    return Tracking(landmark_every=landmark_every, detect_every=detect_every)


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print `message` as an error and return the typer.Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """KEY=VALUE options (`what` names the option in the error) as a dict."""
    found = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"{what} takes KEY=VALUE, got '{item}'", EXIT_USAGE)
        found[key.strip()] = value.strip()
    return found


def require_device(device: Device) -> None:
    """Refuse --device cuda where PyTorch sees no CUDA GPU, before any work starts."""
    from avbench.runner import RunError, check_device

    try:
        check_device(device.value)
    except RunError as exc:
        raise fail(str(exc))


class _IndexSplits:
    """Stands in for a protocol in `runner.load_indexes` when the indexes' own split column is used."""

    def __init__(self, names: list[str]):
        self.names = names

    def datasets(self) -> list[str]:
        return list(self.names)

    def assign_splits(self, index):
        return index


def real_clips(data_root: list[str], split: str, protocol: str | None) -> list:
    """The real clips (ClipRefs, label 0) of `split` ("all": every split) of the datasets --data-root
    names, for a pre-training command: splits as the indexes give them, or as `protocol` assigns
    them. Wrong names exit 2, data that cannot be read exits 1, both saying why."""
    from pathlib import Path

    from avbench import protocol as protocols
    from avbench.runner import RunError, load_indexes, message_of

    roots = {name: Path(source).expanduser() for name, source in pairs(data_root, "--data-root").items()}
    try:
        chosen = protocols.get(protocol) if protocol else _IndexSplits(sorted(roots))
        if protocol and set(chosen.datasets()) - set(roots):
            raise ValueError(f"protocol '{protocol}' uses {chosen.datasets()}: give --data-root for each")
        indexes, _ = load_indexes(chosen, roots)
    except (KeyError, ValueError) as exc:
        raise fail(message_of(exc), EXIT_USAGE)
    except (RunError, FileNotFoundError) as exc:
        raise fail(str(exc))
    refs = [ref for name in sorted(indexes) for ref in indexes[name].refs()
            if ref.label == 0 and (split == "all" or ref.split == split)]
    if not refs:
        found = {name: sorted({str(s) for s in index.frame["split"].fillna("").unique()}) for name, index in indexes.items()}
        raise fail(f"no real clips in split '{split}' (splits found: {found}); choose --split (or `all`), "
                   f"or --protocol to assign splits")
    return refs


class EpochDisplay:
    """What a training command shows while it trains: a bar over the current epoch's steps and one
    line per finished epoch, `describe(record)` after "epoch k/n: "; `on_step` and `on_epoch` go to
    the trainer, `trained` lists the epochs trained by this process (none: the run was complete)."""

    def __init__(self, epochs: int, describe):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.epochs, self.describe, self.trained = epochs, describe, []
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err_console)
        self.task = self.progress.add_task("epoch 1", total=None)

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        self.progress.update(self.task, description=f"epoch {epoch}/{self.epochs}", completed=step, total=steps)

    def on_epoch(self, record: dict) -> None:
        self.trained.append(record["epoch"])
        self.progress.console.print(f"epoch {record['epoch']}/{self.epochs}: {self.describe(record)}")


def say_unusable(failures: dict, total: int, listed_in) -> None:
    """One warning line counting the clips a command could not use (ClipErrors by clip id), by reason."""
    if failures:
        reasons: dict[str, int] = {}
        for err in failures.values():
            reasons[err.reason] = reasons.get(err.reason, 0) + 1
        err_console.print(f"[yellow]{len(failures)} of {total} clips could not be used:[/] {reasons} "
                          f"(listed in {listed_in})")


def main(app: typer.Typer, prog_name: str) -> None:
    """Run a typer app so that no command ends in a traceback: an error nobody foresaw prints one line
    and exits 1; `-v` (logging at INFO) prints its traceback too."""
    import logging
    import sys
    import traceback

    try:
        app(prog_name=prog_name)
    except Exception as exc:
        if logging.getLogger().isEnabledFor(logging.INFO):
            err_console.print(traceback.format_exc(), markup=False, highlight=False)
        err_console.print(f"[bold red]error:[/] {escape(f'{type(exc).__name__}: {exc}')} (run with -v to see where)",
                          highlight=False)
        sys.exit(EXIT_ERROR)
