"""Every protocol of the catalogue, built from small copies of every dataset and run end to end."""

import json

import pytest
from typer.testing import CliRunner

from avbench import protocol, testing_datasets
from avbench.cli import app
from avbench.runner import RunSettings, Runner, load_indexes

PROTOCOLS = sorted(set(protocol.available()) - {"demo"})  # demo has its own end-to-end tests


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return testing_datasets.build_all(tmp_path_factory.mktemp("datasets"))


def test_every_dataset_indexes_without_problems(roots):
    from avbench import registry

    for name, root in roots.items():
        index = registry.datasets.get(name)().index(root)
        assert index.problems == [] and len(index) > 0, name
        assert set(index.frame["label"]) == {0, 1}, name


@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_builds_disjoint_sets_and_runs(name, roots, tmp_path):
    proto = protocol.get(name)
    indexes, display = load_indexes(proto, roots)
    sets = protocol.sets(proto, indexes, display)
    for fold, part in sets.groupby("fold"):
        tests = part[part["set"].str.startswith("test:")]
        assert len(tests) and set(tests["label"]) == {0, 1}, (fold, "a test set needs both classes")
        if proto.params.get("split") == "identity":
            trained = set(part.loc[part["set"].isin(["train", "val"]), "identity"])
            tested = set(tests.loc[tests["dataset"] == proto.split_dataset, "identity"])
            assert not trained & tested, (fold, "identity shared by train and test")
    (outcome,) = Runner(RunSettings(detector="random", protocol=proto, seeds=(0,), runs_dir=tmp_path,
                                    data_roots=roots, cache_dir=tmp_path / "cache")).run()
    cov = outcome.record["coverage"]
    assert cov["scored"] == cov["total"] == len(sets[sets["set"].str.startswith("test:")])
    assert {m["metric"] for m in outcome.record["metrics"]} >= {"AUC", "AP"}


def test_kodf_subset_is_balanced_and_stratified(roots):
    proto = protocol.get("cross_dataset").with_params(test=[{"dataset": "kodf", "split": "all", "sample_per_label": 6,
                                                             "stratify_by": "category", "sample_seed": 0}])
    indexes, _ = load_indexes(proto, roots)
    sets = protocol.sets(proto, indexes)
    kodf = sets[sets["set"] == "test:kodf"]
    assert kodf["label"].value_counts().to_dict() == {0: 6, 1: 6}
    assert kodf.loc[kodf.label == 1, "category"].value_counts().to_dict() == {"dfl": 2, "fsgan": 2, "fo": 2}


def test_audit_finds_the_speakers_av1m_train_and_val_share(roots):
    result = CliRunner().invoke(app, ["datasets", "audit", "av1m", "--root", str(roots["av1m"]), "--format", "json"])
    assert result.exit_code == 1
    rows = {(r["sets"], r["column"]): r for r in json.loads(result.output)}
    assert rows[("train / val", "identity")]["shared"] == 6
    assert rows[("train / val", "group")]["shared"] == 0  # the builder gives val its own source utterances
