"""Checks of an indexed dataset: its counts against the published ones, and leaks between splits.

`verify` counts clips per split x category and compares the totals with what the dataset's
authors published (an adapter's `published_counts`: keys "real", "fake" or a category name).
`audit` finds people and source clips (`identity`, `group`) present on both sides of a split,
the leak that makes intra-dataset numbers optimistic (e.g. AV-Deepfake1M's train and val share
speakers and source utterances).
"""

from __future__ import annotations

from itertools import combinations

import pandas as pd

from avbench.clips import ClipIndex


def split_counts(index: ClipIndex) -> pd.DataFrame:
    """Clips per split x category x label."""
    frame = index.frame.assign(split=index.frame["split"].fillna("").replace("", "(none)"))
    return frame.groupby(["split", "category", "label"], dropna=False).size().rename("clips").reset_index()


def verify(index: ClipIndex, published: dict[str, int]) -> pd.DataFrame:
    """One row per published count: ours, published, difference, ok."""
    frame = index.frame
    rows = []
    for key, expected in published.items():
        if key in ("real", "fake"):
            ours = int((frame["label"] == (key == "fake")).sum())
        else:
            ours = int((frame["category"] == key).sum())
        rows.append({"count": key, "ours": ours, "published": int(expected), "difference": ours - int(expected),
                     "ok": ours == int(expected)})
    return pd.DataFrame(rows, columns=["count", "ours", "published", "difference", "ok"])


def audit(sets: pd.DataFrame, columns=("identity", "group")) -> pd.DataFrame:
    """Values of `columns` shared between two sets of the same fold.

    `sets` has fold, set and the columns (the output of `avbench.protocol.sets`, or an index
    frame with fold = "official" and set = its split). One row per fold x pair of sets x column
    with the number of shared values and up to five examples.
    """
    rows = []
    for fold, part in sets.groupby("fold", sort=False):
        names = list(dict.fromkeys(part["set"]))
        for a, b in combinations(names, 2):
            for column in columns:
                values_a = set(part.loc[part["set"] == a, column].dropna()) - {""}
                values_b = set(part.loc[part["set"] == b, column].dropna()) - {""}
                shared = sorted(values_a & values_b)
                rows.append({"fold": fold, "sets": f"{a} / {b}", "column": column, "shared": len(shared),
                             "of": f"{len(values_a)} / {len(values_b)}", "examples": ", ".join(shared[:5])})
    return pd.DataFrame(rows, columns=["fold", "sets", "column", "shared", "of", "examples"])


def official_sets(index: ClipIndex) -> pd.DataFrame:
    """The index's official split as sets for `audit`."""
    frame = index.frame[index.frame["split"].fillna("") != ""]
    return frame.assign(fold="official", set=frame["split"])
