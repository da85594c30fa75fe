"""The `avbench` command line.

Exit codes: 0 success; 1 the work could not be done (missing data, bad checkpoint, failed run);
2 wrong usage (unknown option or value); 3 `avbench check` found a regression.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from avbench import __version__, registry
from avbench.cli_support import (DETECT_EVERY, EXIT_ERROR, EXIT_REGRESSION, EXIT_USAGE, LANDMARK_EVERY, Device,
                                 DetectEveryOption, LandmarkEveryOption, err_console, fail, pairs, tracking)
from avbench.cli_support import main as _main
from avbench.detectors.avhubert.cli import app as avhubert_app
from avbench.detectors.havic.cli import app as havic_app
from avbench.detectors.hola.cli import app as hola_app

console = Console()

app = typer.Typer(
    name="avbench",
    help="Benchmark audio-visual deepfake detectors on the same clips, splits, protocols and metrics.\n\n"
         "Start with `avbench demo`: it generates a small corpus, runs the built-in detectors and prints a leaderboard.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    epilog="Exit codes: 0 ok, 1 the work failed, 2 wrong usage, 3 regression found by `check`.",
)
detectors_app = typer.Typer(help="Detectors avbench knows (built-in and installed plugins).", no_args_is_help=True)
datasets_app = typer.Typer(help="Dataset adapters and clip indexes.", no_args_is_help=True)
protocols_app = typer.Typer(help="Evaluation protocols.", no_args_is_help=True)
app.add_typer(detectors_app, name="detectors")
app.add_typer(datasets_app, name="datasets")
app.add_typer(protocols_app, name="protocols")
app.add_typer(avhubert_app, name="avhubert")
app.add_typer(havic_app, name="havic")
app.add_typer(hola_app, name="hola")


def entry() -> None:
    """The `avbench` program (pyproject's entry point): the app, never ending in a traceback."""
    _main(app, "avbench")


class BoardFormat(str, Enum):
    table = "table"
    md = "md"
    csv = "csv"
    json = "json"


class ListFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    md = "md"


def _version(value: bool):
    if value:
        console.print(f"avbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the harness does, clip by clip.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)])


def message_of(exc: BaseException) -> str:
    from avbench.runner import message_of

    return message_of(exc)


def _literal(value: str):
    """A command-line value as JSON when it parses (numbers, lists, booleans), else as text."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _print_rows(rows: list[dict], fmt: ListFormat, title: str) -> None:
    import pandas as pd

    if fmt is ListFormat.json:
        typer.echo(json.dumps(rows, indent=2))
    elif fmt is ListFormat.csv:
        typer.echo(pd.DataFrame(rows).to_csv(index=False), nl=False)
    elif fmt is ListFormat.md:
        from avbench.leaderboard import markdown_table

        typer.echo(markdown_table(list(rows[0]) if rows else [], [list(r.values()) for r in rows]), nl=False)
    else:
        table = Table(title=title)
        for column in rows[0] if rows else []:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)


def _records(frame) -> list[dict]:
    """A DataFrame as JSON-native rows (numpy numbers become Python numbers)."""
    return json.loads(frame.to_json(orient="records"))


def _progress() -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False)


# -- detectors / datasets / protocols -------------------------------------------------------------------
@detectors_app.command("list")
def detectors_list(fmt: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table):
    """List detectors: name, modalities, whether they train, and where they come from."""
    rows = []
    for name in registry.detectors.names():
        entry = registry.detectors.entry(name)
        try:
            cls = entry.load()
            rows.append({"name": name, "modalities": "+".join(cls.modalities) or "none", "trains": cls.trains,
                         "source": entry.source, "summary": (cls.__doc__ or "").strip().splitlines()[0]})
        except ImportError as exc:
            rows.append({"name": name, "modalities": "?", "trains": "?", "source": entry.source,
                         "summary": f"cannot import: {exc}"})
    _print_rows(rows, fmt, "Detectors")


@datasets_app.command("list")
def datasets_list(fmt: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table):
    """List dataset adapters."""
    rows = []
    for name in registry.datasets.names():
        cls = registry.datasets.get(name)
        rows.append({"name": name, "published as": cls.display_name, "description": cls.description})
    _print_rows(rows, fmt, "Dataset adapters")


@datasets_app.command("index")
def datasets_index(
    name: Annotated[str, typer.Argument(help="Adapter name (see `avbench datasets list`).")],
    root: Annotated[Path, typer.Option(help="The dataset's folder, as it comes from its authors.")],
    out: Annotated[Optional[Path], typer.Option(help="Where to write the parquet index [default: ./NAME.parquet].")] = None,
):
    """Build a dataset's clip index (one row per clip: path, label, category, identity, split, ...)."""
    _, index = _index_of(name, root)
    path = index.save(out or Path(f"{name}.parquet"))
    frame = index.frame
    summary = frame.groupby(["split", "label"], dropna=False).size().rename("clips").reset_index()
    problems = f" ({len(index.problems)} problems reported above)" if index.problems else ""
    console.print(f"[green]{len(frame)} clips[/] indexed from {root} -> {path}{problems}")
    _print_rows(_records(summary), ListFormat.table, f"{name}: clips per split and label (1 = fake)")


def _index_of(name: str, root: Path):
    """The clip index of dataset `name` from its folder or from a parquet index."""
    from avbench.clips import ClipIndex

    try:
        adapter = registry.datasets.get(name)()
        index = ClipIndex.load(root) if root.suffix == ".parquet" else adapter.index(root)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        raise fail(message_of(exc))
    for problem in index.problems:
        err_console.print(f"[yellow]problem:[/] {problem}")
    return adapter, index


@datasets_app.command("verify")
def datasets_verify(
    name: Annotated[str, typer.Argument(help="Adapter name.")],
    root: Annotated[Path, typer.Option(help="The dataset's folder, or its parquet index.")],
    fmt: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table,
):
    """Count clips per split x category and compare with the counts the dataset's authors published.
    Exits 1 when a count differs or a row could not be used."""
    from avbench import datacheck

    adapter, index = _index_of(name, root)
    counts = datacheck.split_counts(index)
    _print_rows(_records(counts), fmt, f"{name}: clips per split, category and label")
    published = getattr(adapter, "published_counts", {})
    if not published:
        err_console.print(f"{name}: no published counts to compare with")
        return
    check = datacheck.verify(index, published)
    _print_rows(_records(check), fmt, f"{name}: ours vs published")
    if not check["ok"].all() or index.problems:
        raise typer.Exit(EXIT_ERROR)


@datasets_app.command("audit")
def datasets_audit(
    name: Annotated[str, typer.Argument(help="Adapter name.")],
    root: Annotated[Path, typer.Option(help="The dataset's folder, or its parquet index.")],
    protocol: Annotated[Optional[str], typer.Option(help="Audit the sets this protocol builds [default: the official split].")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUE overriding a protocol parameter.")] = None,
    fmt: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table,
):
    """Report identities and source clips shared between the sets of a split (leakage).
    Exits 1 when any are shared."""
    from avbench import datacheck
    from avbench import protocol as protocols

    _, index = _index_of(name, root)
    if protocol:
        try:
            proto = _configured_protocol(protocol, name, None, param)
            if proto.datasets() != [name]:
                raise ValueError(f"protocol '{proto.id}' uses {proto.datasets()}; audit one dataset at a time")
            sets = protocols.sets(proto, {name: proto.assign_splits(index)})
        except (KeyError, ValueError) as exc:
            raise fail(message_of(exc), 2)
    else:
        sets = datacheck.official_sets(index)
    report = datacheck.audit(sets)
    _print_rows(_records(report), fmt, f"{name}: values shared between sets")
    if (report["shared"] > 0).any():
        raise typer.Exit(EXIT_ERROR)


@protocols_app.command("list")
def protocols_list(fmt: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table):
    """List protocols. Any of them runs as NAME+missing_audio (audio removed from the test clips) or
    NAME+four_class (which modality is fake: RARV, RAFV, FARV, FAFV, for a four-class detector)."""
    from avbench import protocol

    rows = [{"name": p.name, "version": p.version, "kind": p.kind, "seeds": ",".join(map(str, p.seeds)),
             "params": json.dumps(p.params), "description": p.description}
            for p in protocol.available().values()]
    if fmt is ListFormat.table:  # parameters do not fit 80 columns: --format json|csv|md has them
        rows = [{k: v for k, v in row.items() if k != "params"} for row in rows]
    _print_rows(rows, fmt, "Protocols (variants: NAME+missing_audio, NAME+four_class;\n"
                           "parameters: --format json)")


@protocols_app.command("show")
def protocols_show(
    name: Annotated[str, typer.Argument(help="Protocol name, optionally with +missing_audio, +four_class or +perturb=KIND@LEVEL.")],
    data_root: Annotated[Optional[list[str]], typer.Option(help="DATASET=DIR or DATASET=INDEX.parquet; repeat.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="The protocol's dataset (training dataset for cross_dataset).")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUE overriding a protocol parameter.")] = None,
    fmt: Annotated[ListFormat, typer.Option("--format", help="csv or json to publish; table to read.")] = ListFormat.csv,
):
    """Print every clip of every set the protocol builds (fold, set, clip id, label, category, identity),
    so exactly what was trained, selected and tested on can be audited and published."""
    from avbench import protocol as protocols
    from avbench.runner import RunError, load_indexes

    try:
        proto = _configured_protocol(name, dataset, None, param)
        indexes, display = load_indexes(proto, _data_roots(data_root))
    except (KeyError, ValueError) as exc:
        raise fail(message_of(exc), 2)
    except (RunError, FileNotFoundError) as exc:
        raise fail(str(exc))
    table = protocols.sets(proto, indexes, display)
    if fmt is ListFormat.csv:
        typer.echo(table.to_csv(index=False), nl=False)
    else:
        _print_rows(_records(table), fmt, f"{proto.id}: {len(table)} clip-set rows")


def _configured_protocol(name: str, dataset: str | None, test_sets: str | None, param: list[str] | None):
    """The protocol `name` with the command line's overrides of its parameters."""
    from avbench import protocol as protocols

    proto = protocols.get(name)
    overrides = {k: _literal(v) for k, v in pairs(param, "--param").items()}
    if dataset:
        overrides["train" if proto.kind == "cross_dataset" else "dataset"] = dataset
    if test_sets:
        overrides["test"] = [t.strip() for t in test_sets.split(",") if t.strip()]
    return proto.with_params(**overrides) if overrides else proto


# -- run and preprocess ---------------------------------------------------------------------------------
DetectorOption = Annotated[str, typer.Option("--detector", "-d", help="Detector name (`avbench detectors list`).")]
ProtocolOption = Annotated[str, typer.Option(
    "--protocol", "-p", help="Protocol name (`avbench protocols list`), optionally with +missing_audio, +four_class or +perturb=KIND@LEVEL.")]
DataRootOption = Annotated[Optional[list[str]], typer.Option(
    help="DATASET=DIR (or DATASET=INDEX.parquet), the data of a dataset the protocol uses; repeat for several.")]
DatasetOption = Annotated[Optional[str], typer.Option(
    help="The protocol's dataset (training dataset for cross_dataset).")]
TestSetsOption = Annotated[Optional[str], typer.Option(help="cross_dataset: comma-separated test datasets.")]
ParamOption = Annotated[Optional[list[str]], typer.Option(
    help="KEY=VALUE overriding a protocol parameter (value read as JSON when it parses).")]
DetectorOptions = Annotated[Optional[list[str]], typer.Option(
    "--option", "-o", help="KEY=VALUE setting a detector option (a wrong key lists them); numbers, "
                           "true/false, none, JSON lists and objects are read as the option declares.")]
CheckpointOption = Annotated[Optional[Path], typer.Option(
    help="A trained detector to load instead of fitting (a folder written by the detector's save).")]
SeedsOption = Annotated[Optional[str], typer.Option(help="Comma-separated seeds [default: the protocol's].")]
RunsDirOption = Annotated[Path, typer.Option(help="Where run folders and records go.")]
DeviceOption = Annotated[Device, typer.Option(help="Where the detector computes.")]
CacheDirOption = Annotated[Optional[Path], typer.Option(
    help="Decoded-media cache, shared by runs and workers [default: $AVBENCH_CACHE_DIR or ~/.cache/avbench].")]
WorkersOption = Annotated[Optional[int], typer.Option(
    min=0, help="Processes that decode, track faces and crop [default: the usable cores]; 0 loads in this "
                "process, without isolation from a clip that crashes or hangs.")]
class Executor(str, Enum):
    local = "local"
    ray = "ray"


ExecutorOption = Annotated[Executor, typer.Option(
    help="local: worker processes on this machine; ray: Ray tasks on a cluster (pip install 'avbench[ray]').")]
RayAddressOption = Annotated[Optional[str], typer.Option(
    help="--executor ray: the cluster to join (auto, ray://HOST:10001) [default: start one on this machine].")]
ClipTimeoutOption = Annotated[float, typer.Option(
    min=0.001, help="Seconds one clip's loading may take; then it counts as failed ('timeout') and the run goes on.")]


def _settings(detector, protocol, *, dataset, test_sets, param, option, data_root, workers, clip_timeout,
              seeds=None, **rest):
    """RunSettings from the command line; a value of the wrong form exits 2 saying the form."""
    from avbench.detector import parse_options
    from avbench.runner import RunSettings
    from avbench.workers import usable_cores

    try:
        proto = _configured_protocol(protocol, dataset, test_sets, param)
        seed_list = _seeds(seeds) if seeds is not None else proto.seeds
        options = parse_options(registry.detectors.get(detector), pairs(option, "--option"))
    except (KeyError, ValueError) as exc:
        raise fail(message_of(exc), EXIT_USAGE)
    except ImportError as exc:
        raise fail(str(exc))
    workers = usable_cores() if workers is None else workers
    return RunSettings(detector=detector, protocol=proto, seeds=seed_list, data_roots=_data_roots(data_root),
                       detector_options=options, workers=workers, clip_timeout=clip_timeout if workers else None,
                       **rest)


@contextlib.contextmanager
def _runner_errors():
    """The exit codes of a Runner's errors: UsageError 2, everything else it raises 1."""
    from avbench.runner import UsageError

    try:
        yield
    except UsageError as exc:
        raise fail(str(exc), EXIT_USAGE)
    except (RuntimeError, FileNotFoundError, ImportError, ValueError, KeyError, OSError) as exc:  # RunError too
        raise fail(message_of(exc))


@app.command()
def run(
    detector: DetectorOption,
    protocol: ProtocolOption,
    seeds: SeedsOption = None,
    device: DeviceOption = Device.cpu,
    runs_dir: RunsDirOption = Path("runs"),
    data_root: DataRootOption = None,
    dataset: DatasetOption = None,
    test_sets: TestSetsOption = None,
    param: ParamOption = None,
    option: DetectorOptions = None,
    checkpoint: CheckpointOption = None,
    cache_dir: CacheDirOption = None,
    landmark_every: LandmarkEveryOption = LANDMARK_EVERY,
    detect_every: DetectEveryOption = DETECT_EVERY,
    workers: WorkersOption = None,
    clip_timeout: ClipTimeoutOption = 600.0,
    executor: ExecutorOption = Executor.local,
    ray_address: RayAddressOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a run folder that holds a run with other settings.")] = False,
    devices: Annotated[Optional[str], typer.Option(
        help="Train data-parallel, one process per device, e.g. cuda:0,cuda:1 (cpu,cpu: gloo, for tests); "
             "replaces --device. Rank 0 scores and writes. Under torchrun, --device cuda is enough.")] = None,
):
    """Run a detector under a protocol for each seed: fit (if it trains), score every test clip, write a record.

    A finished run is not redone; an interrupted one resumes where it stopped, with any number of
    workers (and of --devices). Example:

        avbench run --detector avsync --protocol test_only --dataset folder --data-root folder=~/my_videos
    """
    from avbench import distributed
    from avbench.workers import usable_cores

    device_list = [d.strip() for d in devices.split(",")] if devices else []
    if device_list:
        try:
            distributed.check_devices(device_list)
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE)
        if executor is Executor.ray:
            raise fail("--devices trains on this machine's devices; it does not combine with --executor ray", EXIT_USAGE)
        if workers is None:  # the cores shared among the ranks' media workers
            workers = max(1, usable_cores() // len(device_list))
    settings = _settings(detector, protocol, dataset=dataset, test_sets=test_sets, param=param, option=option,
                         data_root=data_root, workers=workers, clip_timeout=clip_timeout, seeds=seeds,
                         runs_dir=runs_dir, device=device.value, checkpoint=checkpoint, cache_dir=cache_dir,
                         overwrite=overwrite, tracking=tracking(landmark_every, detect_every), executor=executor.value,
                         ray_address=ray_address)
    if device_list:
        distributed.launch(functools.partial(_run_on_rank, settings), device_list)  # a failed rank: SystemExit
        return
    _run_and_report(dataclasses.replace(settings, device=distributed.join_from_env(settings.device)))


def _run_on_rank(settings, device: str) -> None:
    """One rank of `run --devices`: the run on its device, its exit code that of the command."""
    try:
        _run_and_report(dataclasses.replace(settings, device=device))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


def _run_and_report(settings) -> None:
    """Run, then (on rank 0) print each seed's outcome and the leaderboard; exit 1 if a test set had no metrics."""
    from avbench.distributed import is_main
    from avbench.runner import Runner

    main = is_main()
    with _runner_errors(), (_progress() if main else contextlib.nullcontext()) as progress:
        outcomes = Runner(settings, progress).run()
    if not main:
        return
    problems = []
    for outcome in outcomes:
        cov = outcome.record["coverage"]
        note = "already complete, nothing to do" if outcome.status == "skipped" else "done"
        console.print(f"seed {outcome.seed}: {note} · coverage {cov['scored']}/{cov['total']} scored"
                      + (f", failed: {cov['reasons']}" if cov["failed"] else "")
                      + (f", fallbacks: {cov['fallbacks']}" if cov.get("fallbacks") else "") + f" · {outcome.record_path}")
        problems += [f"seed {outcome.seed}: {p}" for p in outcome.record.get("problems", [])]
    _show_leaderboard(settings.runs_dir, ListFormat.table, detector=settings.detector, protocol=settings.protocol.id)
    if problems:
        for problem in problems:
            err_console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False)
        raise typer.Exit(EXIT_ERROR)


@app.command()
def robustness(
    detector: DetectorOption,
    protocol: ProtocolOption,
    kinds: Annotated[str, typer.Option(help="Comma-separated perturbation kinds (avbench.perturbations): "
                                            "saturation, contrast, noise, blur, jpeg, video_compression, "
                                            "audio_noise, audio_compression, resample, av_offset.")
                     ] = "saturation,contrast,noise,blur,jpeg,video_compression",
    levels: Annotated[str, typer.Option(help="Levels 0 (the original) to 5: '0-5' or '0,3,5'.")] = "0-5",
    metric: Annotated[str, typer.Option(help="The metric the curves show.")] = "AUC",
    subset: Annotated[str, typer.Option(help="The subset the curves show ('all': the whole test set).")] = "all",
    fmt: Annotated[BoardFormat, typer.Option("--format", help="table for people; md, csv, json for tools.")] = BoardFormat.table,
    seeds: SeedsOption = None,
    device: DeviceOption = Device.cpu,
    runs_dir: RunsDirOption = Path("runs"),
    data_root: DataRootOption = None,
    dataset: DatasetOption = None,
    test_sets: TestSetsOption = None,
    param: ParamOption = None,
    option: DetectorOptions = None,
    checkpoint: CheckpointOption = None,
    cache_dir: CacheDirOption = None,
    workers: WorkersOption = None,
    clip_timeout: ClipTimeoutOption = 600.0,
):
    """Run PROTOCOL with its test clips perturbed, kind by kind and level by level, then print the metric
    against level. Each point is an ordinary run (NAME+perturb=KIND@LEVEL): resumable, skipped when complete.
    A detector that trains is fitted once per seed, on level 0 (the original protocol), and reused. Example:

        avbench robustness -d avsync -p demo --kinds blur,noise,av_offset --levels 0-5 --data-root demo=demo_data
    """
    from avbench import robustness as sweeps
    from avbench.runner import Runner

    try:
        ids = sweeps.sweep(protocol, [k.strip() for k in kinds.split(",") if k.strip()], sweeps.parse_levels(levels))
    except (KeyError, ValueError) as exc:
        raise fail(message_of(exc), EXIT_USAGE)
    with _runner_errors(), _progress() as progress:
        for protocol_id in ids:
            settings = _settings(detector, protocol_id, dataset=dataset, test_sets=test_sets, param=param,
                                 option=option, data_root=data_root, workers=workers, clip_timeout=clip_timeout,
                                 seeds=seeds, runs_dir=runs_dir, device=device.value, checkpoint=checkpoint,
                                 cache_dir=cache_dir, fit_from=None if protocol_id == protocol else runs_dir / detector / protocol)
            progress.console.log(f"{protocol_id}")
            Runner(settings, progress).run()
    board = _board(runs_dir, detector=detector, metric=metric)
    table = sweeps.curves(board[board["protocol"].isin(ids)], metric)
    table = table[table["subset"] == subset].reset_index(drop=True)
    _print_curves(table, fmt, f"{detector} · {protocol} · {metric} against perturbation level")


def _print_curves(table, fmt: "BoardFormat", title: str) -> None:
    """Curves with levels as columns: percent in table/md, fractions in csv/json."""
    from avbench.leaderboard import markdown_table

    levels = [c for c in table.columns if c.startswith("L")]
    if fmt.value in ("csv", "json"):
        typer.echo(table.to_csv(index=False) if fmt.value == "csv" else table.to_json(orient="records", indent=2))
        return
    headers = ["test set", "kind", *levels]
    lines = [[row["test_set"], row["kind"], *("" if row[c] != row[c] else f"{100 * row[c]:.1f}" for c in levels)]
             for _, row in table.iterrows()]
    if fmt.value == "md":
        typer.echo(markdown_table(headers, lines), nl=False)
        return
    out = Table(title=title)
    for h in headers:
        out.add_column(h, justify="right" if h in levels else "left")
    for line in lines:
        out.add_row(*line)
    console.print(out)


@app.command()
def preprocess(
    detector: DetectorOption,
    protocol: ProtocolOption,
    data_root: DataRootOption = None,
    dataset: DatasetOption = None,
    test_sets: TestSetsOption = None,
    param: ParamOption = None,
    option: DetectorOptions = None,
    checkpoint: CheckpointOption = None,
    cache_dir: CacheDirOption = None,
    landmark_every: LandmarkEveryOption = LANDMARK_EVERY,
    detect_every: DetectEveryOption = DETECT_EVERY,
    workers: WorkersOption = None,
    clip_timeout: ClipTimeoutOption = 600.0,
    executor: ExecutorOption = Executor.local,
    ray_address: RayAddressOption = None,
):
    """Decode, track faces and crop every clip `avbench run` with the same arguments would read, into the cache.

    On every core, with no detector weights needed: a CPU machine or a cluster prepares what a GPU
    machine then scores without decoding (copy the cache folder, or share it). Exits 0 even when
    clips fail; their reasons are printed and the run will count them.
    """
    from avbench.runner import Runner

    settings = _settings(detector, protocol, dataset=dataset, test_sets=test_sets, param=param, option=option,
                         data_root=data_root, workers=workers, clip_timeout=clip_timeout, checkpoint=checkpoint,
                         cache_dir=cache_dir, tracking=tracking(landmark_every, detect_every), executor=executor.value,
                         ray_address=ray_address)
    with _runner_errors(), _progress() as progress:
        counts = Runner(settings, progress).preprocess()
    failed = ", ".join(f"{reason} {n}" for reason, n in sorted(counts["failed"].items()))
    console.print(f"{counts['loaded']}/{counts['clips']} clips loaded into {settings.cache_dir or 'the default cache'}"
                  + (f"; failed: {failed}" if failed else ""))


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got '{text}'") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds names a seed twice: '{text}'")
    return seeds


def _data_roots(values: list[str] | None) -> dict[str, Path]:
    roots = pairs(values, "--data-root")
    for name, folder in roots.items():
        if not folder:
            raise fail(f"--data-root {name}= names no folder: give --data-root {name}=DIR", EXIT_USAGE)
    return {name: Path(folder).expanduser() for name, folder in roots.items()}


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder: RUNS/<detector>/<protocol>/seed<k>.")],
    test_set: Annotated[str, typer.Option(help="Which test set's scores (a dataset name, e.g. av1m).")],
    out: Annotated[Optional[Path], typer.Option(help="Output file [default: standard output].")] = None,
    allow_missing: Annotated[bool, typer.Option(help="Write the scored clips even if some clips failed.")] = False,
):
    """Write a test set's scores in the challenge format: one `file;score` line per clip, no header
    (AV-Deepfake1M's official format). Exits 1 if a clip failed, unless --allow-missing."""
    import pandas as pd

    scores_file = run_dir / "scores.parquet"
    if not scores_file.is_file():
        raise fail(f"{scores_file} not found: export needs a finished run")
    scores = pd.read_parquet(scores_file)
    part = scores[scores["test_set"] == test_set]
    if part.empty:
        raise fail(f"{scores_file} has no test set '{test_set}'; it has {sorted(scores['test_set'].unique())}")
    failed = part[part["status"] != "scored"]
    if len(failed) and not allow_missing:
        raise fail(f"{len(failed)} of {len(part)} clips failed ({failed['reason'].value_counts().to_dict()}); "
                   "the challenge expects every file: fix them or pass --allow-missing")
    lines = "".join(f"{f};{s:.6f}\n" for f, s in zip(part.loc[part["status"] == "scored", "file"],
                                                      part.loc[part["status"] == "scored", "score"]))
    if out is None:
        typer.echo(lines, nl=False)
    else:
        from avbench.io import atomic_write

        with atomic_write(out) as fh:
            fh.write(lines)
        err_console.print(f"wrote {lines.count(chr(10))} lines to {out}")


# -- leaderboard and check -------------------------------------------------------------------------------
def _board(runs_dir: Path, detector: str | None = None, protocol: str | None = None, metric: str | None = None):
    from avbench import leaderboard

    if not runs_dir.is_dir():
        raise fail(f"no run records under {runs_dir}: it is not a folder (run `avbench run` or `avbench demo` first)")
    records = leaderboard.load_records(runs_dir)
    if detector:
        records = [r for r in records if r["detector"] == detector]
    if protocol:
        records = [r for r in records if r["protocol"] == protocol]
    board = leaderboard.build_leaderboard(records, leaderboard.load_published())
    if metric:
        board = board[board["metric"] == metric]
    return board


def _show_leaderboard(runs_dir: Path, fmt, significance: bool = False, **filters) -> None:
    from avbench import leaderboard

    board = _board(runs_dir, **filters)
    if board.empty:
        raise fail(f"no run records under {runs_dir}: run `avbench run` or `avbench demo` first")
    if significance:
        from avbench.significance import mark_best

        try:
            board = mark_best(board, runs_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc))
    rendered = leaderboard.render(board, fmt.value)
    if fmt.value == "table":
        console.print(rendered)
    else:
        typer.echo(rendered, nl=not str(rendered).endswith("\n"))


@app.command("leaderboard")
def leaderboard_cmd(
    runs_dir: Annotated[Path, typer.Option(help="Where run records are.")] = Path("runs"),
    fmt: Annotated[BoardFormat, typer.Option("--format", help="table for people; md, csv, json for tools.")] = BoardFormat.table,
    detector: Annotated[Optional[str], typer.Option(help="Only this detector.")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="Only this protocol.")] = None,
    metric: Annotated[Optional[str], typer.Option(help="Only this metric (AUC, AP, ACC, EER).")] = None,
    significance: Annotated[bool, typer.Option(
        "--significance", help="Mark (*) the AUCs not significantly below the best of their column: DeLong's test "
                               "on seed-pooled scores, Holm-corrected over the column's pairs, at 0.05. Reads "
                               "every run's scores, so it is slower; csv/json gain p_vs_best and tied_with_best.")] = False,
):
    """Mean ± std over seeds per detector × protocol × test set × subset × metric, with published numbers
    beside ours where a paper reports the same cell. Values are fractions in csv/json, percent in table/md."""
    _show_leaderboard(runs_dir, fmt, significance, detector=detector, protocol=protocol, metric=metric)


@app.command()
def compare(
    detector_a: Annotated[str, typer.Argument(metavar="A", help="A detector with runs under --runs-dir.")],
    detector_b: Annotated[str, typer.Argument(metavar="B", help="The detector to compare it with.")],
    protocol: Annotated[str, typer.Option("--protocol", "-p", help="The protocol both ran (e.g. demo).")],
    runs_dir: Annotated[Path, typer.Option(help="Where run records are.")] = Path("runs"),
    fmt: Annotated[BoardFormat, typer.Option("--format", help="table for people; md, csv, json for tools.")] = BoardFormat.table,
    resamples: Annotated[int, typer.Option(min=1, help="Paired bootstrap resamples for AP and EER; their smallest p is 1/(resamples+1).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the paired bootstrap.")] = 0,
):
    """Is A's score really different from B's? Tested on the clips both scored, per test set and subset:
    AUC by DeLong's test, AP and EER by a paired bootstrap (the same resamples of clips for both).

    Each seed is compared with the same seed of the other detector, and `pooled` compares each clip's
    score averaged over the seeds both ran. `Holm p` corrects for the many rows of one seed (or of
    pooled); `sig` is Holm p < 0.05. Values in percent (table, md) or fractions (csv, json), and the
    coverage of each detector (scored of total) beside the clips they share.

    Example: `avbench compare handcrafted random -p demo`
    """
    from avbench.significance import compare_runs

    if not runs_dir.is_dir():
        raise fail(f"no run records under {runs_dir}: it is not a folder", EXIT_USAGE)
    try:
        rows = compare_runs(runs_dir, detector_a, detector_b, protocol, n_resamples=resamples, seed=seed)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc), EXIT_USAGE)
    if fmt in (BoardFormat.json, BoardFormat.csv):
        _print_rows(rows, ListFormat(fmt.value), "")
        return
    from avbench.significance import human_table

    headers, lines, title, notes = human_table(rows, detector_a, detector_b)
    if fmt is BoardFormat.md:
        from avbench.leaderboard import markdown_table

        typer.echo(f"{title}\n\n" + markdown_table(headers, lines, set(headers[3:8])) + "".join(f"\n{n}" for n in notes))
        return
    from rich import box

    table = Table(title=title, caption="\n".join(notes), caption_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for h in headers:
        table.add_column(h, justify="right" if h in headers[3:8] else "left", no_wrap=True)
    for line in lines:
        table.add_row(*line)
    console.print(table)


@app.command()
def check(
    golden: Annotated[Path, typer.Option(help="Committed golden table (JSON) to compare with.")],
    runs_dir: Annotated[Path, typer.Option(help="Where run records are.")] = Path("runs"),
    tolerance: Annotated[Optional[float], typer.Option(
        help="Largest allowed |ours - golden| per cell, as a fraction [default: the golden file's].")] = None,
    write: Annotated[bool, typer.Option("--write", help="Write the current leaderboard as the golden table instead.")] = False,
):
    """Regression check: exit 3, naming each cell, when a metric moved beyond the tolerance or a golden cell is missing."""
    from avbench import leaderboard

    board = _board(runs_dir)
    if write:
        leaderboard.write_golden(board, golden, tolerance if tolerance is not None else 0.02)
        console.print(f"wrote {len(board)} cells to {golden}")
        return
    if not golden.is_file():
        raise fail(f"golden table not found: {golden}")
    try:
        rows, golden_tolerance = leaderboard.read_golden(golden)
    except ValueError as exc:
        raise fail(str(exc))
    tol = tolerance if tolerance is not None else golden_tolerance
    problems = leaderboard.check_against_golden(board, rows, tol)
    if problems:
        for problem in problems:
            err_console.print(f"[red]regression:[/] {problem}")
        raise typer.Exit(EXIT_REGRESSION)
    console.print(f"[green]ok[/]: {len(rows)} golden cells within ±{tol}")


@app.command("report")
def report_cmd(
    runs_dir: Annotated[Path, typer.Option(help="Where run records are.")] = Path("runs"),
    out: Annotated[Path, typer.Option(help="Folder to write the site into; an earlier report there is replaced.")] = Path("report"),
):
    """Write the run records as a static web site (open OUT/index.html; no server, no network): the
    leaderboard as a sortable table with published numbers and the gap, ROC and PR curves per test set
    and subset, per-category bars with bootstrap intervals, robustness curves for `NAME+perturb=KIND@LEVEL`
    protocols, reliability diagrams, coverage and failure reasons per run. Click a leaderboard row to see
    the runs behind its number. Exits 2 when there are no run records or OUT is some other folder.

    Example: `avbench demo`, then `avbench report --runs-dir runs --out report` and open report/index.html."""
    from avbench.report import ReportError, write_report

    try:
        with console.status(f"writing the report of {runs_dir} ..."):
            index = write_report(runs_dir, out)
    except (ReportError, FileNotFoundError) as exc:
        raise fail(message_of(exc), EXIT_USAGE)
    except ValueError as exc:
        raise fail(str(exc))
    console.print(f"wrote {index}")


# -- demo -------------------------------------------------------------------------------------------------
DEMO_DETECTORS = ("random", "avsync", "handcrafted")


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Where the demo corpus is (generated there if absent).")] = Path("demo_data"),
    runs_dir: Annotated[Path, typer.Option(help="Where run records go.")] = Path("runs"),
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    cache_dir: Annotated[Optional[Path], typer.Option(help="Decoded-media cache.")] = None,
):
    """Generate the demo corpus (talking faces, real and fake), run the built-in detectors under protocol
    `demo` and print the leaderboard. Needs no network and no dataset; takes minutes on 2 CPU cores."""
    from avbench import protocol as protocols
    from avbench.demo import generate_corpus
    from avbench.runner import RunError, RunSettings, Runner

    try:
        seed_list = _seeds(seeds)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE)
    if not (root / "metadata.csv").is_file():
        with console.status(f"generating the demo corpus in {root} ..."):
            generate_corpus(root)
        console.print(f"demo corpus written to {root}")
    proto = protocols.get("demo")
    try:
        with _progress() as progress:
            for name in DEMO_DETECTORS:
                Runner(RunSettings(detector=name, protocol=proto, seeds=seed_list,
                                   runs_dir=runs_dir, data_roots={"demo": root}, cache_dir=cache_dir),
                       progress).run()
    except (RunError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc))
    _show_leaderboard(runs_dir, BoardFormat.table, protocol="demo")
