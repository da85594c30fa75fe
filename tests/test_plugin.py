"""The README's plugin example, installed as its own package and found through the entry point."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_files() -> dict[str, str]:
    """Code blocks of the README whose first line is `# file: NAME`."""
    blocks = re.findall(r"```\w+\n# file: (\S+)\n(.*?)```", README.read_text(), flags=re.S)
    return {name: body for name, body in blocks}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    files = readme_files()
    assert set(files) == {"pyproject.toml", "mouth_blur.py"}
    source = tmp_path_factory.mktemp("plugin_src")
    for name, body in files.items():
        (source / name).write_text(body)
    target = tmp_path_factory.mktemp("plugin_site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    return env


def avbench(*args, env, cwd=None):
    return subprocess.run([sys.executable, "-m", "avbench", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_plugin_is_listed_with_its_package(plugin_env):
    out = avbench("detectors", "list", "--format", "json", env=plugin_env)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["mouth_blur"]["source"] == "avbench-mouth-blur"
    assert rows["mouth_blur"]["trains"] is True


def test_plugin_runs_under_a_protocol(plugin_env, tiny_demo, tmp_path):
    out = avbench("run", "--detector", "mouth_blur", "--protocol", "demo", "--seeds", "0",
                  "--data-root", f"demo={tiny_demo}", "--runs-dir", str(tmp_path / "runs"),
                  "--cache-dir", str(tmp_path / "cache"), env=plugin_env)
    assert out.returncode == 0, out.stdout + out.stderr
    record = json.loads((tmp_path / "runs/mouth_blur/demo/seed0/record.json").read_text())
    assert record["coverage"]["scored"] == record["coverage"]["total"] > 0
    assert record["folds"][0]["fit"] == "fitted"
    assert (tmp_path / "runs/mouth_blur/demo/seed0/models/main/state.npz").is_file()
    assert {m["metric"] for m in record["metrics"]} == {"AUC", "AP", "ACC", "EER", "ECE", "BRIER"}
