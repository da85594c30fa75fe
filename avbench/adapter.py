"""The dataset adapter contract: a dataset root as it comes from its authors -> a clip index."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from avbench.clips import ClipIndex, ClipRef


class DatasetAdapter:
    """Subclasses read a dataset's own metadata and folder layout; they never move files.

    `index` must describe every clip it finds: a row it cannot use is reported in
    `ClipIndex.problems`, never dropped without a word.
    """

    name: ClassVar[str] = ""
    #: How published tables name the dataset (leaderboards/published.csv, columns train/test).
    display_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Where to find the data, told to a user whose root is missing.
    how_to_get: ClassVar[str] = ""
    #: Folder used when no --data-root names one and it exists (relative to the working directory).
    default_root: ClassVar[str | None] = None

    def index(self, root: Path | None) -> ClipIndex:
        """The clip index of the dataset at `root`; call `check_root(root)` first (None -> a clear error)."""
        raise NotImplementedError

    def unlabeled(self, root: Path | str | None, subsets: tuple[str, ...]) -> list[ClipRef]:
        """Clips of `subsets` the dataset ships without labels (a challenge's test sets), label
        UNLABELED: only ever an unlabelled pool (protocol `pool`), never indexed or scored."""
        raise ValueError(f"dataset '{self.name}' ships no unlabelled subsets (asked for {', '.join(subsets)})")

    def check_root(self, root: Path | str | None) -> Path:
        if root is None and self.default_root and Path(self.default_root).is_dir():
            root = self.default_root
        if root is None:
            raise FileNotFoundError(
                f"dataset '{self.name}' is not available: pass --data-root {self.name}=DIR (the dataset's folder) or "
                f"--data-root {self.name}=INDEX.parquet (built by `avbench datasets index {self.name} --root DIR`). "
                f"{self.how_to_get}"
            )
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset '{self.name}': root {root} is not a folder. {self.how_to_get}")
        return root
