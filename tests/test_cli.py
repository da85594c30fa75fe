"""The command line as a user meets it: help, exit codes, formats, the regression check."""

import json

import pytest
from typer.testing import CliRunner

from avbench.cli import app

runner = CliRunner()

COMMANDS = [[], ["run"], ["preprocess"], ["leaderboard"], ["check"], ["demo"], ["export"], ["detectors", "list"], ["datasets", "list"],
            ["datasets", "index"], ["protocols", "list"], ["protocols", "show"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "avbench")
def test_every_command_explains_itself(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Usage" in result.output and len(result.output.splitlines()) > 8


def test_lists_in_machine_formats():
    detectors = json.loads(runner.invoke(app, ["detectors", "list", "--format", "json"]).output)
    assert {"random", "avsync", "handcrafted"} <= {d["name"] for d in detectors}
    protocols = json.loads(runner.invoke(app, ["protocols", "list", "--format", "json"]).output)
    assert {p["kind"] for p in protocols} == {"intra_dataset", "cross_manipulation", "cross_dataset", "test_only"}
    csv = runner.invoke(app, ["datasets", "list", "--format", "csv"]).output
    assert csv.splitlines()[0] == "name,published as,description" and "folder" in csv


def test_usage_errors_exit_2_and_missing_data_exits_1(tmp_path):
    result = runner.invoke(app, ["run", "--detector", "nope", "--protocol", "demo"])
    assert result.exit_code == 2 and "unknown detector 'nope'" in result.output
    result = runner.invoke(app, ["run", "--detector", "avsync", "--protocol", "test_only", "--dataset", "folder",
                                 "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1 and "--data-root folder=DIR" in result.output
    result = runner.invoke(app, ["leaderboard", "--runs-dir", str(tmp_path / "none")])
    assert result.exit_code == 1


def test_users_own_folder_indexed_and_scored_then_checked(tmp_path, tiny_demo):
    # the demo corpus laid out as a user's folder: real/ and fake/
    mine = tmp_path / "mine"
    for path in tiny_demo.glob("*/*/*.mp4"):
        label = "real" if path.parts[-3] == "real" else "fake"
        target = mine / label / f"{path.parts[-3]}_{path.parts[-2]}_{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    index = tmp_path / "mine.parquet"
    result = runner.invoke(app, ["datasets", "index", "folder", "--root", str(mine), "--out", str(index)])
    assert result.exit_code == 0 and index.is_file() and "25 clips" in result.output

    runs = tmp_path / "runs"
    args = ["run", "--detector", "avsync", "--protocol", "test_only", "--dataset", "folder",
            "--data-root", f"folder={mine}", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "coverage 25/25 scored" in result.output
    again = runner.invoke(app, args, terminal_width=200)
    assert "already complete" in again.output
    from_index = [a.replace(f"folder={mine}", f"folder={index}").replace(str(runs), str(tmp_path / "runs2"))
                  for a in args]
    result = runner.invoke(app, from_index, terminal_width=200)
    assert result.exit_code == 0 and "coverage 25/25 scored" in result.output
    same = [json.loads((d / "avsync/test_only/seed0/record.json").read_text())["metrics"] for d in (runs, tmp_path / "runs2")]
    assert same[0] == same[1]

    rows = json.loads(runner.invoke(app, ["leaderboard", "--runs-dir", str(runs), "--format", "json"]).output)
    assert {"detector", "protocol", "test_set", "subset", "metric", "mean", "std", "n_seeds", "published"} <= set(rows[0])
    auc = next(r for r in rows if r["subset"] == "all" and r["metric"] == "AUC")
    assert auc["detector"] == "avsync" and auc["test_set"] == "folder" and auc["n_seeds"] == 1

    exported = runner.invoke(app, ["export", str(runs / "avsync/test_only/seed0"), "--test-set", "folder"])
    assert exported.exit_code == 0
    lines = exported.output.splitlines()
    assert len(lines) == 25 and all(line.count(";") == 1 for line in lines)
    assert lines[0].split(";")[0].startswith(("fake/", "real/")) and lines[0].endswith(tuple("0123456789"))

    golden = tmp_path / "golden.json"
    assert runner.invoke(app, ["check", "--golden", str(golden), "--runs-dir", str(runs), "--write"]).exit_code == 0
    assert runner.invoke(app, ["check", "--golden", str(golden), "--runs-dir", str(runs)]).exit_code == 0

    data = json.loads(golden.read_text())
    cell = next(r for r in data["rows"] if r["subset"] == "all" and r["metric"] == "AUC")
    cell["mean"] = cell["mean"] - 0.05
    golden.write_text(json.dumps(data))
    result = runner.invoke(app, ["check", "--golden", str(golden), "--runs-dir", str(runs)], terminal_width=300)
    assert result.exit_code == 3
    assert "avsync/test_only/none/folder/all/AUC" in result.output
    assert runner.invoke(app, ["check", "--golden", str(golden), "--runs-dir", str(runs),
                               "--tolerance", "0.06"]).exit_code == 0


def test_protocols_show_publishes_the_sets(tiny_demo):
    result = runner.invoke(app, ["protocols", "show", "demo", "--data-root", f"demo={tiny_demo}", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["set"] for r in rows} == {"train", "val", "test:demo"} and len(rows) == 25
    train = {r["identity"] for r in rows if r["set"] == "train"}
    assert not train & {r["identity"] for r in rows if r["set"] == "test:demo"}


def test_verify_flags_counts_that_differ_from_the_published_ones(tiny_demo):
    result = runner.invoke(app, ["datasets", "verify", "demo", "--root", str(tiny_demo), "--format", "csv"])
    assert result.exit_code == 1  # the tiny corpus is not the default one
    assert "real,5,72,-67,False" in result.output and "desync,5,24,-19,False" in result.output


def test_audit_finds_identities_shared_by_a_file_level_split(tiny_demo):
    ok = runner.invoke(app, ["datasets", "audit", "demo", "--root", str(tiny_demo), "--protocol", "demo",
                             "--format", "json"])
    assert ok.exit_code == 0 and all(r["shared"] == 0 for r in json.loads(ok.output))
    leaky = runner.invoke(app, ["datasets", "audit", "demo", "--root", str(tiny_demo), "--protocol", "demo",
                                "--param", "split=file_random", "--format", "json"])
    assert leaky.exit_code == 1
    rows = json.loads(leaky.output)
    assert any(r["column"] == "identity" and r["sets"] == "train / test:demo" and r["shared"] > 0 for r in rows)
