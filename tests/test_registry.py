import pytest

from avbench import registry
from avbench.detector import Detector


def test_builtins_are_listed_without_importing_them():
    r = registry.Registry("detector", "avbench.tests.none", {"lazy": "no_such_module_xyz:Thing"})
    assert r.names() == ["lazy"]  # listing imports nothing
    with pytest.raises(ImportError, match="'lazy'.*cannot be imported"):
        r.get("lazy")


def test_unknown_name_lists_known_ones():
    with pytest.raises(KeyError, match="unknown detector 'nope'; known: .*avsync"):
        registry.detectors.get("nope")


def test_duplicate_names_are_refused_naming_both_sources():
    r = registry.Registry("detector", "avbench.tests.none", {"x": "a:B"})
    with pytest.raises(registry.DuplicateNameError, match=r"'x' is claimed twice: a:B \(avbench\) and c:D \(plugin\)"):
        r.register("x", "c:D", source="plugin")


def test_builtin_detectors_and_datasets_resolve():
    for name in registry.detectors.names():
        cls = registry.detectors.get(name)
        assert issubclass(cls, Detector) and cls.name == name
    for name in registry.datasets.names():
        assert registry.datasets.get(name).name == name
