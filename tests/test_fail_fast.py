"""Runs that cannot succeed stop before the first clip is decoded, with one message; a detector failing
the same way on every clip stops the run; a test set where nothing could be scored ends with a record."""

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avbench import protocol
from avbench.cli import app
from avbench.detectors.havic import HAVICTinyDetector
from avbench.detectors.random_baseline import RandomDetector
from avbench.encode import write_media
from avbench.loader import MediaLoader
from avbench.runner import FAIL_FAST_CLIPS, RunError, RunSettings, Runner
from avbench.testing import random_bytes, talking_face

cli = CliRunner()


@pytest.fixture(scope="module")
def short_folder(tmp_path_factory):
    """A user's folder of 1 s talking faces (2 real, 2 fake): too short for HAVIC's 1.6 s tiny windows."""
    root = tmp_path_factory.mktemp("short")
    face = talking_face(seconds=1.0, size=96)
    for label in ("real", "fake"):
        for i in range(2):
            (root / label).mkdir(exist_ok=True)
            write_media(root / label / f"{label}{i}.mp4", face.frames, face.fps, face.audio, face.sample_rate)
    return root


@pytest.fixture
def nothing_decoded(monkeypatch):
    """Fails the test if any clip is decoded."""
    def refuse(*_, **__):
        raise AssertionError("a clip was decoded before the run's settings were checked")

    monkeypatch.setattr(MediaLoader, "load", refuse)


def run_args(tmp_path, *extra, detector="havic_tiny", root=None):
    args = ["run", "-d", detector, "-p", "test_only", "--dataset", "folder", "--runs-dir", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache")]
    return args + (["--data-root", f"folder={root}"] if root else []) + list(extra)


def said(result) -> str:
    """What the command printed, its lines joined (the error console wraps at its own width)."""
    return " ".join(result.output.split())


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def evil_pickle(path, marker):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Payload()}, path)
    return path


def test_untrusted_pickle_is_refused_before_any_clip_is_decoded(tmp_path, short_folder, nothing_decoded):
    marker = tmp_path / "pwned"
    evil = evil_pickle(tmp_path / "evil.pth", marker)
    result = cli.invoke(app, run_args(tmp_path, "--checkpoint", str(evil), root=short_folder), terminal_width=300)
    assert result.exit_code == 1, result.output
    assert "evil.pth" in said(result) and "pickled objects" in said(result)
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not marker.exists()
    assert files_under(tmp_path / "runs") == [] and files_under(tmp_path / "cache") == []


def test_all_clips_too_short_ends_with_a_record_and_exit_1_and_a_rerun_needs_no_overwrite(tmp_path, short_folder):
    evil = evil_pickle(tmp_path / "evil.pth", tmp_path / "pwned")
    assert cli.invoke(app, run_args(tmp_path, "--checkpoint", str(evil), root=short_folder)).exit_code == 1
    saved = HAVICTinyDetector().save(tmp_path / "havic_tiny")  # corrected settings, same run folder
    result = cli.invoke(app, run_args(tmp_path, "--checkpoint", str(saved), root=short_folder), terminal_width=300)
    assert result.exit_code == 1, result.output
    assert "no clip of test set 'folder' could be scored: too_short 4" in said(result)
    assert "holds a run" not in result.output and "Traceback" not in result.output
    record = json.loads((tmp_path / "runs/havic_tiny/test_only/seed0/record.json").read_text())
    assert record["coverage"] == {"total": 4, "scored": 0, "failed": 4, "reasons": {"too_short": 4}, "fallbacks": {}}
    assert record["problems"] == ["no clip of test set 'folder' could be scored: too_short 4"]
    assert all(row["value"] is None and row["not_computable"] for row in record["metrics"])
    board = cli.invoke(app, ["leaderboard", "--runs-dir", str(tmp_path / "runs"), "--format", "json"])
    assert board.exit_code == 0, board.output
    rows = json.loads(board.output)
    assert rows and all(r["mean"] is None for r in rows) and {r["coverage"] for r in rows} == {0.0}
    table = cli.invoke(app, ["leaderboard", "--runs-dir", str(tmp_path / "runs")], terminal_width=80)
    assert table.exit_code == 0 and "0.0%" in table.output


def test_one_class_scored_is_said_and_data_failures_go_on_clip_by_clip(tmp_path, short_folder):
    root = tmp_path / "mixed"
    (root / "fake").mkdir(parents=True)
    (root / "real").mkdir()
    for i in range(4):  # corrupt fakes: a data problem per clip, never a reason to stop the run
        random_bytes(root / "fake" / f"broken{i}.mp4", seed=i)
    for path in (short_folder / "real").iterdir():
        (root / "real" / path.name).write_bytes(path.read_bytes())
    result = cli.invoke(app, run_args(tmp_path, detector="avsync", root=root), terminal_width=300)
    assert result.exit_code == 1, result.output
    assert "only real clips of test set 'folder' were scored (2 of 6; failed: corrupt_media 4)" in said(result)
    record = json.loads((tmp_path / "runs/avsync/test_only/seed0/record.json").read_text())
    assert record["coverage"]["scored"] == 2 and record["coverage"]["reasons"] == {"corrupt_media": 4}


def test_demo_corpus_under_test_only_names_the_selection_and_what_to_use(tmp_path, tiny_demo, nothing_decoded):
    args = ["run", "-d", "avsync", "-p", "test_only", "--dataset", "demo", "--data-root", f"demo={tiny_demo}",
            "--runs-dir", str(tmp_path / "runs")]
    result = cli.invoke(app, args, terminal_width=300)
    assert result.exit_code == 1
    assert "no clip of dataset 'demo', split 'test'" in said(result) and "25 clips with no split" in said(result)
    assert "--param test_split=all" in said(result) and "Selection(" not in result.output
    assert files_under(tmp_path / "runs") == []


# -- a systematic detector failure ---------------------------------------------------------------------------
def broken_random(monkeypatch, message):
    calls = []

    def score(self, clip):
        calls.append(clip.ref.clip_id)
        raise RuntimeError(message(clip, len(calls)))

    monkeypatch.setattr(RandomDetector, "score", score)
    monkeypatch.setattr(RandomDetector, "score_batch", lambda self, clips: [score(self, c) for c in clips])
    return calls


def settings(tmp_path, root, **kw):
    return RunSettings(detector="random", protocol=protocol.get("demo"), seeds=(0,), runs_dir=tmp_path / "runs",
                       data_roots={"demo": root}, cache_dir=tmp_path / "cache", **kw)


def test_the_same_detector_error_on_the_first_clips_stops_the_run_once(tmp_path, tiny_demo, monkeypatch):
    calls = broken_random(monkeypatch, lambda clip, n: f"{clip.ref.path}: weights hold NaN")
    with pytest.raises(RunError, match=f"first {FAIL_FAST_CLIPS} clips all failed with the same error.*weights hold NaN"):
        Runner(settings(tmp_path, tiny_demo, chunk_size=2)).run()
    assert len(set(calls)) == 4  # two chunks of two clips of the 10 test clips: stopped at the third failure's chunk
    run_dir = tmp_path / "runs/random/demo/seed0"
    assert files_under(run_dir) == ["run_key.json"]  # nothing computed is kept: a rerun starts clean


def test_different_detector_errors_are_recorded_clip_by_clip(tmp_path, tiny_demo, monkeypatch):
    broken_random(monkeypatch, lambda clip, n: f"frame {n} has no mouth")
    (outcome,) = Runner(settings(tmp_path, tiny_demo, chunk_size=2)).run()
    assert outcome.record["coverage"]["reasons"] == {"detector_error": 10}
    assert outcome.record["problems"] == ["no clip of test set 'demo' could be scored: detector_error 10"]


def test_a_folder_where_nothing_was_computed_is_replaced_without_overwrite(tmp_path, tiny_demo):
    run_dir = tmp_path / "runs/random/demo/seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "run_key.json").write_text(json.dumps({"detector": "random", "seed": 0, "other": "settings"}))
    (outcome,) = Runner(settings(tmp_path, tiny_demo)).run()
    assert outcome.status == "done" and outcome.record["coverage"]["scored"] == 10


# -- checkpoints -------------------------------------------------------------------------------------------
def test_checkpoint_with_a_tampered_or_foreign_state_file_is_refused(tmp_path, short_folder, nothing_decoded):
    saved = HAVICTinyDetector().save(tmp_path / "ckpt")
    with open(saved / "state.npz", "ab") as fh:
        fh.write(b"\0")
    result = cli.invoke(app, run_args(tmp_path, "--checkpoint", str(saved), root=short_folder), terminal_width=300)
    assert result.exit_code == 1 and "was changed or replaced since it was saved" in said(result)

    config = json.loads((saved / "config.json").read_text())
    del config["state_sha256"]  # a folder from before hashes were recorded, holding another model's state
    (saved / "config.json").write_text(json.dumps(config))
    np.savez(saved / "state.npz", weight=np.zeros((2, 3), dtype=np.float32))
    result = cli.invoke(app, run_args(tmp_path, "--checkpoint", str(saved), root=short_folder), terminal_width=300)
    assert result.exit_code == 1 and "does not fit a 'havic_tiny' detector" in said(result)

    result = cli.invoke(app, run_args(tmp_path, "--checkpoint", str(saved), root=short_folder, detector="havic"),
                        terminal_width=300)
    assert result.exit_code == 1 and "holds a 'havic_tiny' checkpoint, not 'havic'" in said(result)
    assert files_under(tmp_path / "runs") == []


# -- hostile input: every option that takes a path, a number or JSON ---------------------------------------
@pytest.fixture(scope="module")
def hostile(tmp_path_factory, short_folder, tiny_demo):
    """Files a careless or hostile user passes: a text file, a truncated parquet, another dataset's index."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "notes.txt").write_text("not a dataset")
    good = root / "folder.parquet"
    assert cli.invoke(app, ["datasets", "index", "folder", "--root", str(short_folder), "--out", str(good)]).exit_code == 0
    (root / "truncated.parquet").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other = root / "demo.parquet"
    assert cli.invoke(app, ["datasets", "index", "demo", "--root", str(tiny_demo), "--out", str(other)]).exit_code == 0
    (root / "golden.json").write_text("{not json")
    return root


H = "{hostile}"
CASES = {  # id: (arguments after `avbench run -d avsync -p test_only --dataset folder`, exit code, words)
    "seeds letters": (["--seeds", "a,b"], 2, "--seeds takes comma-separated integers"),
    "seeds empty": (["--seeds", ""], 2, "--seeds takes comma-separated integers"),
    "seeds gap": (["--seeds", "1,,2"], 2, "--seeds takes comma-separated integers"),
    "param no equals": (["--param", "split_seed"], 2, "--param takes KEY=VALUE"),
    "param no key": (["--param", "=3"], 2, "--param takes KEY=VALUE"),
    "param unknown": (["--param", "nope=1"], 2, "has no parameter ['nope']"),
    "param ratios text": (["--param", "split_ratios=abc"], 2, "--param split_ratios takes a JSON list"),
    "param ratios short": (["--param", "split_ratios=[1,2]"], 2, "--param split_ratios takes a JSON list"),
    "param seed text": (["--param", "split_seed=x"], 2, "--param split_seed takes an integer"),
    "param split choice": (["--param", "split=0"], 2, "--param split takes one of official, identity"),
    "param test_split empty": (["--param", "test_split="], 2, "--param test_split takes a split name"),
    "dataset unknown": (["--dataset", "nope"], 2, "uses dataset 'nope', which avbench does not know"),
    "option unknown": (["-o", "nope=1"], 2, "has no option 'nope'"),
    "option int text": (["-o", "max_offset=abc"], 2, "-o max_offset (detector 'avsync') takes an integer"),
    "option float json": (["-o", "slope=[1]"], 2, "-o slope (detector 'avsync') takes a number"),
    "option value": (["-o", "visual_feature=ears"], 2, "visual_feature must be one of"),
    "option seed": (["-d", "random", "-o", "seed=3"], 2, "a run's seeds come from --seeds"),
    "detect_every zero": (["--detect-every", "0"], 2, "--detect-every"),
    "detect_every text": (["--detect-every", "x"], 2, "--detect-every"),
    "landmark_every zero": (["--landmark-every", "0"], 2, "--landmark-every"),
    "device unknown": (["--device", "tpu"], 2, "--device"),
    "data root empty": (["--data-root", "folder="], 2, "--data-root folder= names no folder"),
    "data root no equals": (["--data-root", "folder"], 2, "--data-root takes KEY=VALUE"),
    "data root unknown dataset": (["--data-root", "nope=/tmp"], 2, "--data-root names 'nope', which is no dataset"),
    "data root missing": (["--data-root", "folder=/no/such/dir"], 1, "root /no/such/dir is not a folder"),
    "data root a file": (["--data-root", f"folder={H}/notes.txt"], 1, "notes.txt, not a folder or a .parquet index"),
    "index truncated": (["--data-root", f"folder={H}/truncated.parquet"], 1, "truncated.parquet: not a readable clip index"),
    "index of another dataset": (["--data-root", f"folder={H}/demo.parquet"], 1, "indexes dataset 'demo', not 'folder'"),
    "checkpoint missing": (["--data-root", f"folder={H}/folder.parquet", "--checkpoint", "/no/such.pth"], 1,
                           "checkpoint not found: /no/such.pth"),
    "runs dir a file": (["--data-root", f"folder={H}/folder.parquet", "--runs-dir", f"{H}/notes.txt"], 1,
                        "--runs-dir"),
    "cache dir a file": (["--data-root", f"folder={H}/folder.parquet", "--cache-dir", f"{H}/notes.txt"], 1,
                         "--cache-dir"),
}
OTHER_COMMANDS = {
    "leaderboard runs dir a file": (["leaderboard", "--runs-dir", f"{H}/notes.txt"], 1, "no run records"),
    "check golden garbage": (["check", "--golden", f"{H}/golden.json", "--runs-dir", H], 1, "golden.json"),
    "export missing run": (["export", f"{H}/nope", "--test-set", "folder"], 1, "not found"),
    "index root a file": (["datasets", "index", "folder", "--root", f"{H}/notes.txt"], 1, "notes.txt"),
    "verify truncated index": (["datasets", "verify", "folder", "--root", f"{H}/truncated.parquet"], 1,
                               "truncated.parquet"),
    "show data root a file": (["protocols", "show", "test_only", "--data-root", f"folder={H}/notes.txt"], 1,
                              "notes.txt"),
    "demo seeds": (["demo", "--seeds", "x", "--root", f"{H}/demo"], 2, "--seeds takes comma-separated integers"),
}


def _check(result, code, words):
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert words in said(result), result.output


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_run_arguments_exit_with_a_message_and_no_traceback(case, hostile, tmp_path, nothing_decoded):
    extra, code, words = CASES[case]
    extra = [a.replace(H, str(hostile)) for a in extra]
    args = ["run", "-d", "avsync", "-p", "test_only", "--dataset", "folder", "--runs-dir", str(tmp_path / "runs")]
    result = cli.invoke(app, args + extra, terminal_width=400)
    _check(result, code, words.replace(H, str(hostile)))
    assert files_under(tmp_path / "runs") == []


@pytest.mark.parametrize("case", OTHER_COMMANDS, ids=str)
def test_hostile_arguments_to_other_commands(case, hostile):
    args, code, words = OTHER_COMMANDS[case]
    result = cli.invoke(app, [a.replace(H, str(hostile)) for a in args], terminal_width=400)
    _check(result, code, words.replace(H, str(hostile)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_fails_at_once_naming_the_device(tmp_path, short_folder, nothing_decoded):
    result = cli.invoke(app, run_args(tmp_path, "--device", "cuda", detector="avsync", root=short_folder),
                        terminal_width=300)
    _check(result, 1, "--device cuda: no CUDA GPU is visible")


def test_options_are_read_as_the_detector_declares_them():
    from avbench.detector import OptionError, parse_options
    from avbench.detectors.avsync import AVSyncDetector
    from avbench.detectors.ssl import LinearProbe

    assert parse_options(AVSyncDetector, {"max_offset": "7", "slope": "2.5", "max_seconds": "none",
                                          "visual_feature": "opening"}) == \
        {"max_offset": 7, "slope": 2.5, "max_seconds": None, "visual_feature": "opening"}
    probe = LinearProbe
    parsed = parse_options(probe, {"features": '["wav2vec2"]', "weights": '{"wav2vec2": "w.pt"}', "tiny": "true"})
    assert parsed == {"features": ["wav2vec2"], "weights": {"wav2vec2": "w.pt"}, "tiny": True}
    assert parse_options(probe, {"weights": "w.pt"}) == {"weights": "w.pt"}
    for bad in ({"max_offset": "1.5"}, {"max_offset": ""}, {"slope": "nan"}, {"max_seconds": "soon"}):
        with pytest.raises(OptionError, match="takes"):
            parse_options(AVSyncDetector, bad)


def test_a_folder_of_other_files_is_never_removed_without_overwrite(tmp_path, tiny_demo):
    run_dir = tmp_path / "runs/random/demo/seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="holds files but no run_key.json"):
        Runner(settings(tmp_path, tiny_demo)).run()
    assert (run_dir / "notes.txt").read_text() == "mine"
