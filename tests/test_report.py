"""The HTML report: its content, from demo runs plus hand-written perturbed records, and the page
itself in headless Chromium (skipped, saying why, only where no Chromium is installed)."""

import io
import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from avbench import leaderboard, protocol
from avbench.cli import app
from avbench.report import write_report
from avbench.runner import RunSettings, Runner

DETECTORS = ("random", "handcrafted", "avsync")
#: Hand-written records: (protocol, factor on every metric of the demo record). The tiny factor makes
#: a value like 8.7e-05, whose text sorts after "0.9": a numeric sort is told from a text one.
PERTURBED = (("demo+perturb=blur@1", 0.9), ("demo+perturb=blur@3", 0.7),
             ("demo+perturb=blur@5", 1e-4), ("demo+perturb=jpeg@2", 0.8))
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1366,900")


@pytest.fixture(scope="module")
def demo_runs(tiny_demo, tmp_path_factory):
    """Seed 0 of the fast detectors under protocol `demo`, with a small bootstrap for the bars' intervals."""
    runs = tmp_path_factory.mktemp("report") / "runs"
    for name in DETECTORS:
        Runner(RunSettings(detector=name, protocol=protocol.get("demo"), seeds=(0,), runs_dir=runs,
                           data_roots={"demo": tiny_demo}, cache_dir=tmp_path_factory.mktemp("cache"),
                           bootstrap_resamples=50)).run()
    return runs


@pytest.fixture(scope="module")
def sweep_runs(demo_runs):
    """The demo runs plus perturbed records of avsync and handcrafted, written by hand from their demo ones."""
    runs = demo_runs.with_name("sweep")
    shutil.copytree(demo_runs, runs)
    for detector in ("avsync", "handcrafted"):
        for proto, factor in PERTURBED:
            folder = runs / detector / proto / "seed0"
            shutil.copytree(runs / detector / "demo" / "seed0", folder)
            record = json.loads((folder / "record.json").read_text())
            for entry in record["metrics"]:
                entry.update({k: entry[k] * factor for k in ("value", "ci_low", "ci_high") if entry.get(k) is not None})
            if factor < 0.01:  # the strongest level also loses clips
                record["coverage"] = {**record["coverage"], "scored": record["coverage"]["total"] - 2, "failed": 2,
                                      "reasons": {"no_face": 2}}
            (folder / "record.json").write_text(json.dumps({**record, "protocol": proto}))
    return runs


@pytest.fixture(scope="module")
def site(sweep_runs):
    out = sweep_runs.with_name("site")
    result = CliRunner().invoke(app, ["report", "--runs-dir", str(sweep_runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_site_shows_every_cell_and_plot(site, sweep_runs):
    page = (site / "index.html").read_text()
    board = leaderboard.build_leaderboard(leaderboard.load_records(sweep_runs), leaderboard.load_published())
    assert len(re.findall(r"<tr data-cell=", page)) == len(board)
    plots = re.findall(r'<img src="([^"]+)"', page)
    assert plots and all((site / src).is_file() for src in plots)
    kinds = {src.split("-")[1] for src in plots}
    assert kinds == {"curves", "bars", "robustness", "reliability"}
    assert len([s for s in plots if "-curves-demo-" in s]) == 5  # "all" and the demo's four fake categories
    assert not any("perturb" in s for s in plots if "-robustness-" not in s)  # perturbed runs: robustness only
    coverage = page[page.index('id="coverage-table"'):]
    assert coverage.count("<tr><td>") == len(DETECTORS) + 2 * len(PERTURBED)
    assert coverage.count("<td>no_face: 2</td>") == 2
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched


def test_no_robustness_plot_without_perturbed_runs(demo_runs, tmp_path):
    page = write_report(demo_runs, tmp_path / "site").read_text()
    assert 'id="curves"' in page and 'id="robustness"' not in page
    assert not list((tmp_path / "site" / "plots").glob("*robustness*"))


def test_records_without_scores_still_make_a_report(demo_runs, tmp_path):
    record = demo_runs / "avsync" / "demo" / "seed0" / "record.json"
    (tmp_path / "runs" / "avsync" / "demo" / "seed0").mkdir(parents=True)
    shutil.copy(record, tmp_path / "runs" / "avsync" / "demo" / "seed0")
    with pytest.warns(UserWarning, match="scores.parquet is missing"):
        page = write_report(tmp_path / "runs", tmp_path / "site").read_text()
    assert 'id="categories"' in page and 'id="curves"' not in page and 'id="calibration"' not in page


def test_usage_errors_exit_2_and_a_report_is_replaced(demo_runs, tmp_path):
    report = lambda runs, out: CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--out", str(out)])  # noqa: E731
    (tmp_path / "empty").mkdir()
    assert report(tmp_path / "empty", tmp_path / "a").exit_code == 2
    assert report(tmp_path / "absent", tmp_path / "a").exit_code == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert report(demo_runs, tmp_path / "mine").exit_code == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    for _ in range(2):  # the second replaces the first
        assert report(demo_runs, tmp_path / "site").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine", "site"]  # no staging left over


# -- in the browser ----------------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield chrome
    chrome.quit()


def column(browser, index: int) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard tbody tr'), r => r.cells[arguments[0]].dataset.sort "
        "?? r.cells[arguments[0]].textContent)", index)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="no Chromium here: install Debian's chromium and chromium-driver (.ci/run does)")
def test_page_in_chromium(site, sweep_runs, browser):
    from PIL import Image
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    plots = browser.find_elements(By.CSS_SELECTOR, "figure.plot img")
    assert len(plots) == len(re.findall(r"<img ", (site / "index.html").read_text()))
    for plot in plots:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", plot) > 0
        pixels = np.asarray(Image.open(io.BytesIO(plot.screenshot_as_png)).convert("L"), dtype=float)
        assert (pixels < 200).mean() > 0.01 and pixels.std() > 10, plot.get_attribute("src")  # lines, not blank

    headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")]
    ours = headers.index("ours %")
    before = column(browser, ours)
    browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th button")[ours].click()
    ascending = column(browser, ours)
    numbers = [float(v) for v in ascending if v]
    assert ascending != before and numbers == sorted(numbers)
    assert set(ascending[len(numbers):]) <= {""}  # cells without a number last
    browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th button")[ours].click()
    numbers = [float(v) for v in column(browser, ours) if v]
    assert numbers == sorted(numbers, reverse=True)
    detector = headers.index("detector")
    browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th button")[detector].click()
    assert column(browser, detector) == sorted(column(browser, detector))

    row = browser.find_element(By.CSS_SELECTOR, "#leaderboard tbody tr")
    detector_name, proto = row.find_elements(By.TAG_NAME, "td")[0].text, row.find_elements(By.TAG_NAME, "td")[1].text
    panel = browser.find_element(By.ID, "provenance")
    assert not panel.is_displayed()
    row.click()
    record_path = sweep_runs / detector_name / proto / "seed0" / "record.json"
    record = json.loads(record_path.read_text())
    assert panel.is_displayed()
    for shown in (str(record_path), "seed 0", record["provenance"]["protocol_sha256"], record["created"]):
        assert shown in panel.text
    panel.find_element(By.CSS_SELECTOR, ".close").click()
    assert not panel.is_displayed()

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
