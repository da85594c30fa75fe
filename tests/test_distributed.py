"""Runs on several devices (two gloo processes on the CPU): the detector fitted in lockstep scores as the
one fitted by one process, rank 0 alone writes, and `avbench run --devices` launches the ranks."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from avbench import distributed, protocol
from avbench.cli import app
from avbench.runner import RunSettings, Runner


def settings(tmp_path, root, runs: str) -> RunSettings:
    return RunSettings(detector="probe_avhubert_av_tiny", protocol=protocol.get("demo"), seeds=(0,),
                       runs_dir=tmp_path / runs, data_roots={"demo": root}, cache_dir=tmp_path / "cache",
                       bootstrap_resamples=0)


def _run(settings: RunSettings, device: str) -> None:
    import torch

    torch.set_num_threads(1)
    (outcome,) = Runner(dataclasses.replace(settings, device=device)).run()
    expected = "done" if distributed.is_main() else "fitted"
    assert outcome.status == expected and (outcome.record != {}) == distributed.is_main()


def test_two_ranks_fit_as_one_process_and_only_rank_0_writes(tiny_demo, tmp_path, torch_one_thread):
    (alone,) = Runner(settings(tmp_path, tiny_demo, "alone")).run()
    distributed.launch(functools.partial(_run, settings(tmp_path, tiny_demo, "ranks")), ["cpu", "cpu"])
    run_dir = tmp_path / "ranks" / "probe_avhubert_av_tiny" / "demo" / "seed0"
    record = json.loads((run_dir / "record.json").read_text())
    ours = pd.read_parquet(run_dir / "scores.parquet")
    theirs = pd.read_parquet(alone.record_path.parent / "scores.parquet")
    assert ours["clip_id"].tolist() == theirs["clip_id"].tolist()
    assert ours["score"].to_numpy() == pytest.approx(theirs["score"].to_numpy(), abs=1e-5)
    assert record["coverage"] == alone.record["coverage"]
    history = record["folds"][0]["history"]
    assert json.dumps(history)  # the fit's history travels to the record as with one process
    assert not list(run_dir.glob("models/*.training"))  # rank 0 cleaned up its training state


def test_devices_are_checked_before_anything_starts(tmp_path):
    result = CliRunner().invoke(app, ["run", "-d", "random", "-p", "demo", "--devices", "cuda:0"])
    assert result.exit_code == 2 and "two or more devices" in result.output
    result = CliRunner().invoke(app, ["run", "-d", "random", "-p", "demo", "--devices", "cpu,cuda:0"])
    assert result.exit_code == 2 and "not a mix" in result.output


def test_run_with_devices_launches_the_ranks_and_rank_0_reports(tiny_demo, tmp_path):
    command = [sys.executable, "-m", "avbench", "run", "-d", "handcrafted", "-p", "demo", "--data-root",
               f"demo={tiny_demo}", "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
               "--devices", "cpu,cpu", "--workers", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("seed 0: done") == 1  # one report, from rank 0
    assert (tmp_path / "runs" / "handcrafted" / "demo" / "seed0" / "record.json").is_file()
