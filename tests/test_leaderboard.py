import io
import json
import math

import pandas as pd
import pytest
from rich.console import Console
from rich.table import Table

from avbench.io import write_json
from avbench.leaderboard import (COLUMNS, build_leaderboard, check_against_golden, load_published, load_records,
                                 new_cells, published_cell, read_golden, render, write_golden)


def record(seed, values, *, detector="avsync", protocol="demo", version=1, scored=98, total=100,
           published_as=("AVSync",)):
    """A schema-1 run record; `values` maps (subset, metric) -> value on train/test "demo"."""
    return {"schema": 1, "detector": detector, "protocol": protocol, "protocol_version": version, "seed": seed,
            "device": "cpu", "published_as": list(published_as),
            "metrics": [{"train": "demo", "test_set": "demo", "subset": subset, "metric": metric, "value": value,
                         "ci_low": None, "ci_high": None, "n_real": 40, "n_fake": 60}
                        for (subset, metric), value in values.items()],
            "coverage": {"total": total, "scored": scored, "failed": total - scored, "reasons": {}},
            "timings": {}, "provenance": {}, "created": "2025-01-01T00:00:00+00:00"}


def write_runs(root, records):
    for i, rec in enumerate(records):
        write_json(root / f"{rec['detector']}-{rec['protocol']}" / f"run{i}" / "record.json", rec)


def test_mean_and_sample_std_over_seeds(tmp_path):
    write_runs(tmp_path, [record(s, {("all", "AUC"): v}, scored=sc)
                          for s, v, sc in [(2, 1.0, 100), (0, 0.8, 98), (1, 0.9, 99)]])
    board = build_leaderboard(load_records(tmp_path))
    assert list(board.columns) == list(COLUMNS)
    row = board.iloc[0]
    assert (row["mean"], row["std"]) == pytest.approx((0.9, 0.1))  # ddof=1: population std would be 0.0816
    assert (row["n_seeds"], row["seeds"]) == (3, "0,1,2")
    assert row["coverage"] == pytest.approx(297 / 300)


def test_one_seed_has_no_std_and_a_nan_value_is_not_averaged_away():
    board = build_leaderboard([record(0, {("all", "AUC"): 0.7, ("all", "AP"): None}), record(1, {("all", "AP"): 0.9})])
    by = board.set_index("metric")
    assert by.loc["AUC", "mean"] == 0.7 and math.isnan(by.loc["AUC", "std"]) and by.loc["AUC", "n_seeds"] == 1
    assert math.isnan(by.loc["AP", "mean"]) and by.loc["AP", "n_seeds"] == 2
    assert build_leaderboard([]).empty


def test_cells_sort_like_a_paper_table():
    values = {(s, m): 0.5 for s in ("AVG", "RVFA", "all", "FVFA") for m in ("EER", "AUC", "ACC", "AP")}
    board = build_leaderboard([record(0, values)])
    assert board["subset"].drop_duplicates().tolist() == ["all", "FVFA", "RVFA", "AVG"]
    assert board["metric"].head(4).tolist() == ["AUC", "AP", "ACC", "EER"]


def test_the_same_seed_twice_is_an_error_naming_both_files(tmp_path):
    write_runs(tmp_path, [record(0, {("all", "AUC"): 0.8}), record(0, {("all", "AUC"): 0.9})])
    with pytest.raises(ValueError, match=r"seed 0: .*run0.*record\.json and .*run1.*record\.json"):
        build_leaderboard(load_records(tmp_path))


def test_protocol_versions_are_not_mixed():
    with pytest.raises(ValueError, match="protocol versions 1"):
        build_leaderboard([record(0, {("all", "AUC"): 0.8}), record(1, {("all", "AUC"): 0.9}, version=2)])
    with pytest.raises(ValueError, match="<record 0>: 'seed' must be an integer"):
        build_leaderboard([{**record(0, {}), "seed": "0"}])


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path):
    write_runs(tmp_path, [record(0, {("all", "AUC"): 0.8})])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "record.json").write_text("{not json")
    write_json(tmp_path / "old" / "record.json", {**record(1, {}), "schema": 2})
    write_json(tmp_path / "nocov" / "record.json", {**record(2, {}), "coverage": {"total": 1, "scored": 5}})
    with pytest.warns(UserWarning) as caught:
        records = load_records(tmp_path)
    assert [r["seed"] for r in records] == [0]
    messages = " | ".join(str(w.message) for w in caught)
    assert "broken/record.json" in messages and "old/record.json: schema is 2" in messages
    assert "nocov/record.json: 'coverage'" in messages
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "absent")


def published_frame(rows):
    base = {"source": "p.txt", "table": "Table 2", "method": "AVSync", "modality": "AV", "train": "demo",
            "test": "Demo", "subset": "", "metric": "AUC", "note": ""}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_published_numbers_match_by_method_train_test_subset_and_metric():
    published = published_frame([
        {"value": 91.0},                                           # empty subset = the whole test set
        {"value": 80.0, "subset": "AVG", "table": "Table 4"},
        {"value": 70.0, "subset": "rvfa", "table": "Table 5"},     # names compare case-insensitively
        {"value": 99.0, "method": "Other"},                        # another method
        {"value": 98.0, "train": "FakeAVCeleb"},                   # another training set
        {"value": 97.0, "metric": "AP"},                           # another metric
        {"value": 91.04, "table": "Supp. Table 11"},               # a second source, more digits
        {"value": 91.0, "table": "Table 9"},                       # a third source, same number
        {"value": 42.0, "metric": "params_M", "subset": "AVG"},    # not one of our metrics
    ])
    board = build_leaderboard([record(0, {("all", "AUC"): 0.9, ("AVG", "AUC"): 0.8, ("RVFA", "AUC"): 0.75,
                                          ("all", "ACC"): 0.5})], published)
    by = board.set_index(["subset", "metric"])
    assert by.loc[("all", "AUC"), "published"] == pytest.approx(0.91)
    assert by.loc[("all", "AUC"), "published_source"] == "p.txt Table 2; p.txt Supp. Table 11 (91.04); p.txt Table 9"
    assert by.loc[("AVG", "AUC"), ["published", "published_source"]].tolist() == [pytest.approx(0.8), "p.txt Table 4"]
    assert by.loc[("RVFA", "AUC"), "published"] == pytest.approx(0.7)
    assert math.isnan(by.loc[("all", "ACC"), "published"]) and by.loc[("all", "ACC"), "published_source"] == ""
    unnamed = build_leaderboard([record(0, {("all", "AUC"): 0.9}, published_as=())], published)
    assert math.isnan(unnamed["published"].iloc[0])


def test_table_column_notes_mean_the_whole_test_set_and_regimes_qualify_the_method():
    published = published_frame([
        {"value": 99.8, "method": "M", "subset": "column A; fakes manipulated in both modalities where known"},
        {"value": 80.5, "method": "M", "subset": "next-token prediction", "train": "real videos only"},
        {"value": 70.0, "method": "M", "subset": "next-token prediction", "table": "Table 3"},
    ])
    by_name = {name: build_leaderboard([record(0, {("all", "AUC"): 0.9}, published_as=(name,))], published)
               for name in ("M", "M [next-token prediction]")}
    assert by_name["M"]["published"].iloc[0] == pytest.approx(0.998)
    assert by_name["M [next-token prediction]"]["published"].iloc[0] == pytest.approx(0.70)
    assert published_cell("M", "column J: mean out-of-domain", "AUC") == ("M", "column J: mean out-of-domain", "AUC", "")


def test_tasks_and_variants_match_only_cells_of_their_protocol_variant():
    published = published_frame([
        {"value": 99.9, "method": "M", "subset": "binary, identity-independent split"},
        {"value": 99.5, "method": "M", "subset": "four-class", "metric": "ACC"},
        {"value": 99.7, "method": "M", "subset": "four-class"},
        {"value": 96.0, "method": "M, audio removed"},
    ])
    values = {("all", "AUC"): 0.9, ("all", "CLASS_ACC"): 0.8, ("all", "CLASS_AUC"): 0.85}
    boards = {protocol: build_leaderboard([record(0, values, protocol=protocol, published_as=("M",))], published)
              .set_index("metric")["published"] for protocol in ("demo", "demo+four_class", "demo+missing_audio")}
    assert boards["demo"]["AUC"] == pytest.approx(0.999) and boards["demo"][["CLASS_ACC", "CLASS_AUC"]].isna().all()
    assert boards["demo+four_class"]["CLASS_ACC"] == pytest.approx(0.995)
    assert boards["demo+four_class"]["CLASS_AUC"] == pytest.approx(0.997)
    assert math.isnan(boards["demo+four_class"]["AUC"])  # the four-class AUC is not the binary one
    assert boards["demo+missing_audio"]["AUC"] == pytest.approx(0.96)
    assert boards["demo+missing_audio"][["CLASS_ACC", "CLASS_AUC"]].isna().all()


def test_packaged_published_numbers_load():
    published = load_published()
    assert published["value"].dtype == float and len(published) > 500
    havic = published[(published["method"] == "HAVIC") & (published["table"] == "Table 2")
                      & (published["metric"] == "AUC")]
    assert havic["value"].tolist() == [99.9] and havic["subset"].tolist() == [""]


def sample_board():
    published = published_frame([{"value": 91.0}])
    return build_leaderboard([record(s, {("all", "AUC"): v, ("all", "EER"): 0.2, ("AVG", "AUC"): v - 0.1})
                              for s, v in [(0, 0.8), (1, 0.9), (2, 1.0)]]
                             + [record(0, {("all", "AUC"): 0.6}, detector="random", published_as=())], published)


def test_render_machine_formats_parse_back():
    board = sample_board()
    rows = json.loads(render(board, "json"))
    assert len(rows) == len(board)
    first = rows[0]
    assert {"detector", "protocol", "test_set", "subset", "metric", "mean", "std", "n_seeds", "published"} <= set(first)
    assert (first["metric"], first["mean"], first["published"]) == ("AUC", pytest.approx(0.9), 0.91)
    assert next(r for r in rows if r["detector"] == "random")["std"] is None  # NaN -> null
    back = pd.read_csv(io.StringIO(render(board, "csv")), keep_default_na=False, dtype={"seeds": str})
    assert list(back.columns) == list(COLUMNS)
    assert back["mean"].tolist() == pytest.approx(board["mean"].tolist())


def test_render_human_formats_show_percent():
    board = sample_board()
    md = render(board, "md").splitlines()
    assert md[0].startswith("| detector | protocol | train | test set | subset | AUC |") and set(md[1]) <= set("|-:")
    assert "| 90.0 ± 10.0 [91.0]1 |" in md[2] and md[2].endswith("| 3 | 98.0% |")
    assert "[1] p.txt Table 2" in md
    table = render(board, "table")
    groups = board.groupby(["detector", "protocol", "train", "test_set", "subset"]).ngroups
    assert isinstance(table, Table) and table.row_count == groups
    console = Console(record=True, width=250)
    console.print(table)
    assert "90.0 ± 10.0" in console.export_text()
    with pytest.raises(ValueError, match="table, md, csv, json"):
        render(board, "html")


def test_golden_check_passes_on_itself_and_names_failing_cells(tmp_path):
    board = sample_board()
    path = write_golden(board, tmp_path / "golden" / "demo.json", tolerance=0.02)
    rows, tolerance = read_golden(path)
    assert tolerance == 0.02 and check_against_golden(board, rows, tolerance) == []
    assert new_cells(board, rows) == []

    moved = board.copy()
    moved.loc[0, "mean"] += 0.021
    problems = check_against_golden(moved, rows, tolerance)
    assert problems == ["avsync/demo/demo/demo/all/AUC: mean 0.9210 vs golden 0.9000 (tolerance 0.02)"]
    moved.loc[0, "mean"] = 0.92  # exactly at the tolerance: not a failure
    assert check_against_golden(moved, rows, tolerance) == []

    fewer = board.drop(index=1).reset_index(drop=True)
    [problem] = check_against_golden(fewer, rows, tolerance)
    assert problem.startswith("avsync/demo/demo/demo/all/EER: missing from the current leaderboard")
    assert new_cells(board, [r for r in rows if r["detector"] != "random"]) == ["random/demo/demo/demo/all/AUC"]


def test_golden_nan_matches_only_nan():
    board = build_leaderboard([record(0, {("all", "AUC"): None})])
    rows = json.loads(render(board, "json"))
    assert check_against_golden(board, rows, 0.02) == []
    assert len(check_against_golden(board, [{**rows[0], "mean": 0.5}], 0.02)) == 1


def test_table_moves_key_columns_with_one_value_into_the_title():
    board = build_leaderboard([record(0, {("all", "AUC"): 0.9, ("RVFA", "AUC"): 0.8})], published_frame([]))
    table = render(board, "table")
    assert "detector avsync · protocol demo" in table.title
    assert [c.header for c in table.columns] == ["subset", "AUC", "seeds", "coverage"]
    assert "| detector |" in render(board, "md")  # the formats tools read keep every column


def test_fauforensics_published_numbers_meet_the_protocols_that_reproduce_them():
    """Tables I-III of seed 002: each protocol's cells, named as a run names them, find the paper's number."""
    from avbench import protocol, registry

    display = {name: registry.datasets.get(name).display_name for name in ("fakeavceleb", "lavdf")}
    expected = {  # protocol id -> {(metric): published percent}
        "fakeavceleb_intra": {"AUC": 99.91, "ACC": 99.71},
        "fakeavceleb_intra+four_class": {"CLASS_AUC": 99.97, "CLASS_ACC": 99.47},
        "lavdf_intra": {"AUC": 99.97, "ACC": 99.78},
        "lavdf_intra+four_class": {"CLASS_AUC": 99.95, "CLASS_ACC": 99.69},
        "fakeavceleb_to_lavdf": {"AUC": 95.44},
        "fakeavceleb_to_lavdf+four_class": {"CLASS_AUC": 92.1},
        "lavdf_to_fakeavceleb": {"AUC": 83.77},
        "lavdf_to_fakeavceleb+four_class": {"CLASS_AUC": 71.2},
    }
    records = []
    for protocol_id, published in expected.items():
        (fold,) = protocol.get(protocol_id).folds(None, display)
        (test,) = fold.tests
        rec = record(0, {}, detector="fauforensics", protocol=protocol_id, published_as=("FauForensics",))
        rec["metrics"] = [{"train": fold.train_label, "test_set": display[test.name], "subset": "all", "metric": m,
                           "value": 0.9} for m in published]
        records.append(rec)
    board = build_leaderboard(records, load_published())
    for row in board.to_dict("records"):
        assert row["published"] == pytest.approx(expected[row["protocol"]][row["metric"]] / 100), row
        assert row["published_source"].startswith("002_480cacf7e7e49e2e.txt Table I")


def test_cad_published_numbers_meet_the_protocols_that_reproduce_them():
    """Seed 004: Table 1's "70/30 random" only on the file-level split, Table 2's mean over subsets as
    AVG, Table 3's AVG-FV, Tables 4-5 per ablation on FaceShifter and Celeb-DF."""
    from avbench import protocol, registry

    names = ("fakeavceleb", "idforge", "ffpp", "celebdf")
    display = {name: registry.datasets.get(name).display_name for name in names}
    cells = [  # (protocol, published_as, test set, subset, metric, published percent or None)
        ("fakeavceleb_intra_file_random", "CAD", "fakeavceleb", "all", "AUC", 99.6),
        ("fakeavceleb_intra_file_random", "CAD", "fakeavceleb", "all", "ACC", 99.0),
        ("fakeavceleb_intra", "CAD", "fakeavceleb", "all", "AUC", None),  # identity split: not Table 1
        ("fakeavceleb_cross_manipulation", "CAD", "fakeavceleb", "RVFA", "AP", 99.9),
        ("fakeavceleb_cross_manipulation", "AVFF", "fakeavceleb", "AVG-FV", "AP", 98.5),
        ("fakeavceleb_cross_manipulation", "CAD", "fakeavceleb", "AVG-FV", "AP", None),  # truncated row
        ("idforge_intra", "CAD", "idforge", "AVG", "AUC", 99.96),
        ("idforge_to_ffpp_celebdf", "CAD", "ffpp", "FaceShifter", "AUC", 99.6),
        ("idforge_to_ffpp_celebdf", "CAD", "celebdf", "all", "AUC", 94.2),
        ("idforge_to_ffpp_celebdf", "CAD w/o alignment", "celebdf", "all", "AP", 96.0),
        ("idforge_to_ffpp_celebdf", "CAD only video", "ffpp", "FaceShifter", "AUC", 100.0),
    ]
    records = []
    for k, (protocol_id, name, test_set, subset, metric, _) in enumerate(cells):
        chosen = protocol.get(protocol_id)
        fold = chosen.folds(None, display)[0]
        rec = record(0, {}, detector=f"d{k}", protocol=protocol_id, published_as=(name,))
        rec["provenance"] = {"protocol_spec": chosen.spec()}
        rec["metrics"] = [{"train": fold.train_label, "test_set": display[test_set], "subset": subset,
                           "metric": metric, "value": 0.9}]
        records.append(rec)
    board = build_leaderboard(records, load_published()).set_index("detector")
    for k, (*_, expected) in enumerate(cells):
        published = board.loc[f"d{k}", "published"]
        assert (math.isnan(published) if expected is None else published == pytest.approx(expected / 100)), cells[k]


def test_hola_published_numbers_meet_av1m_pp_and_say_they_may_be_transductive():
    from avbench import protocol, registry

    chosen = protocol.get("av1m_pp_classification")
    display = {"av1m_pp": registry.datasets.get("av1m_pp").display_name}
    fold = chosen.folds(None, display)[0]
    records = []
    for k, names in enumerate([("HOLA", "HOLA + ICMI + LGCF + refiner + PSSI"), ("HOLA + ICMI + LGCF + refiner",)]):
        rec = record(0, {}, detector=f"d{k}", protocol=chosen.id, published_as=names)
        rec["provenance"] = {"protocol_spec": chosen.spec()}
        rec["metrics"] = [{"train": fold.train_label, "test_set": "AV1M++", "subset": "all", "metric": m, "value": 0.9}
                          for m in ("AUC", "ACC", "WA-F1", "UAR")]
        records.append(rec)
    board = build_leaderboard(records, load_published()).set_index(["detector", "metric"])
    assert board.loc[("d0", "AUC"), "published"] == pytest.approx(0.9991)
    assert "[possibly transductive]" in board.loc[("d0", "AUC"), "published_source"]
    assert board.loc[("d1", "ACC"), "published"] == pytest.approx(0.9821)
    assert board.loc[("d0", "UAR"), "published"] == pytest.approx(0.9807)
    assert board.loc[("d1", "WA-F1"), "published"] == pytest.approx(0.9832)
    assert "transductive" not in board.loc[("d1", "ACC"), "published_source"]
