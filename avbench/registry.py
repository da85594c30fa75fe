"""Detectors and dataset adapters by name: built-ins plus third-party entry points, imported lazily.

A third-party package adds a detector with, in its pyproject.toml:

    [project.entry-points."avbench.detectors"]
    my_detector = "my_package.module:MyDetector"

Nothing is imported until a name is asked for, so a detector's heavy dependencies (torch,
transformers, ...) load only when that detector is used. Two sources claiming one name is an error.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attribute"
    source: str  # "avbench" or the distribution that declared the entry point

    def load(self):
        module_name, _, attribute = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"'{self.name}' ({self.target}, from {self.source}) cannot be imported: {exc}") from exc
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise ImportError(f"'{self.name}': {module_name} has no attribute {attribute}") from None


class DuplicateNameError(RuntimeError):
    pass


class Registry:
    def __init__(self, kind: str, group: str, builtins: dict[str, str]):
        self.kind, self.group = kind, group
        self._builtins = builtins
        self._entries: dict[str, Entry] | None = None

    def _discover(self) -> dict[str, Entry]:
        if self._entries is None:
            entries = {name: Entry(name, target, "avbench") for name, target in self._builtins.items()}
            for ep in entry_points(group=self.group):
                source = ep.dist.name if ep.dist is not None else "an unknown distribution"
                self._add(entries, Entry(ep.name, ep.value, source))
            self._entries = entries
        return self._entries

    def _add(self, entries: dict[str, Entry], entry: Entry) -> None:
        if entry.name in entries:
            other = entries[entry.name]
            raise DuplicateNameError(
                f"{self.kind} name '{entry.name}' is claimed twice: {other.target} ({other.source}) "
                f"and {entry.target} ({entry.source}); uninstall or rename one"
            )
        entries[entry.name] = entry

    def register(self, name: str, target: str, source: str = "runtime") -> None:
        """Add an entry at run time (tests, notebooks); same duplicate rule as entry points."""
        self._add(self._discover(), Entry(name, target, source))

    def names(self) -> list[str]:
        return sorted(self._discover())

    def entry(self, name: str) -> Entry:
        entries = self._discover()
        if name not in entries:
            raise KeyError(f"unknown {self.kind} '{name}'; known: {', '.join(sorted(entries))}")
        return entries[name]

    def get(self, name: str):
        return self.entry(name).load()


detectors = Registry(
    "detector",
    "avbench.detectors",
    {
        "random": "avbench.detectors.random_baseline:RandomDetector",
        "avsync": "avbench.detectors.avsync:AVSyncDetector",
        "handcrafted": "avbench.detectors.handcrafted:HandcraftedDetector",
        "havic": "avbench.detectors.havic:HAVICDetector",
        "havic_tiny": "avbench.detectors.havic:HAVICTinyDetector",
        "fauforensics": "avbench.detectors.fauforensics.detector:FauForensicsDetector",
        "fauforensics_tiny": "avbench.detectors.fauforensics.detector:FauForensicsTinyDetector",
        "cad": "avbench.detectors.cad.detector:CADDetector",
        "cad_tiny": "avbench.detectors.cad.detector:CADTinyDetector",
        "hola": "avbench.detectors.hola.detector:HOLADetector",
        "hola_tiny": "avbench.detectors.hola.detector:HOLATinyDetector",
        # detectors on self-supervised features (avbench.detectors.ssl.zoo.VARIANTS), each with a `_tiny` twin
        **{name + tiny: f"avbench.detectors.ssl.zoo:{name + tiny}" for tiny in ("", "_tiny") for name in (
            "probe_avhubert_a", "probe_avhubert_v", "probe_avhubert_av", "probe_wav2vec2", "probe_whisper", "probe_clip",
            "probe_videomae", "probe_fusion", "ntp", "sync_anomaly", "avhubert_align", "probe_avhubert_a_random",
            "probe_avhubert_v_random", "probe_fusion_random", "sync_anomaly_random")},
    },
)

datasets = Registry(
    "dataset",
    "avbench.datasets",
    {
        "demo": "avbench.datasets.demo:DemoDataset",
        "folder": "avbench.datasets.folder:FolderDataset",
        "fakeavceleb": "avbench.datasets.fakeavceleb:FakeAVCelebDataset",
        "av1m": "avbench.datasets.av1m:AV1MDataset",
        "av1m_pp": "avbench.datasets.av1m:AV1MPlusDataset",
        "lavdf": "avbench.datasets.lavdf:LAVDFDataset",
        "kodf": "avbench.datasets.kodf:KoDFDataset",
        "avlips": "avbench.datasets.avlips:AVLipsDataset",
        "hifi_avdf": "avbench.datasets.hifi_avdf:HiFiAVDFDataset",
        "idforge": "avbench.datasets.idforge:IDForgeDataset",
        "idforge_v1": "avbench.datasets.idforge:IDForgeV1Dataset",
        "ffpp": "avbench.datasets.ffpp:FFPPDataset",
        "ffpp_c40": "avbench.datasets.ffpp:FFPPc40Dataset",
        "ffpp_raw": "avbench.datasets.ffpp:FFPPRawDataset",
        "celebdf": "avbench.datasets.celebdf:CelebDFDataset",
    },
)
