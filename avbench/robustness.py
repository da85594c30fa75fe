"""Robustness sweeps: one protocol under each perturbation kind at each level, and its curves.

A sweep is a list of protocols, `P` for level 0 and `P+perturb=KIND@LEVEL` for the others (each an
ordinary run: resumable, skipped when complete); its curves are leaderboard cells regrouped as a
metric against level, per detector, base protocol, kind, test set and subset. Seed 002 prints its
robustness figure as a plot only, so no published curve is matched.
"""

from __future__ import annotations

import pandas as pd

from avbench import protocol as protocols
from avbench.perturbations import KINDS, LEVELS, Perturbation

_PERTURB = f"+{protocols.PERTURB}="


def parse_levels(text: str) -> list[int]:
    """'0-5', '0,2,4' or '3' -> sorted levels; ValueError naming the form otherwise."""
    levels: set[int] = set()
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            levels.update(range(int(low), int(high) + 1) if dash else [int(low)])
    except ValueError:
        raise ValueError(f"--levels takes levels 0-{LEVELS} as '0-5' or '0,2,4', got '{text}'") from None
    if not levels or min(levels) < 0 or max(levels) > LEVELS:
        raise ValueError(f"--levels takes levels 0 (none) to {LEVELS}, got '{text}'")
    return sorted(levels)


def sweep(protocol_id: str, kinds: list[str], levels: list[int]) -> list[str]:
    """The protocol ids of a sweep in running order: level 0 once (the base protocol), then each kind's
    levels; each id is checked to name a protocol (KeyError otherwise)."""
    if _PERTURB in protocol_id:
        raise ValueError(f"'{protocol_id}' is already perturbed: give the base protocol")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown perturbation kinds {unknown or kinds}; kinds: {', '.join(KINDS)}")
    ids = [protocol_id] if 0 in levels else []
    ids += [f"{protocol_id}{_PERTURB}{Perturbation(k, level)}" for k in kinds for level in levels if level]
    for i in ids:
        protocols.get(i)
    return ids


def split_protocol(protocol_id: str) -> tuple[str, Perturbation | None]:
    """'demo+perturb=blur@3' -> ('demo', blur@3), wherever the suffix stands; unperturbed -> (id, None)."""
    head, found, rest = protocol_id.partition(_PERTURB)
    if not found:
        return protocol_id, None
    text, plus, tail = rest.partition("+")
    return head + plus + tail, Perturbation.parse(text)


def curves(board: pd.DataFrame, metric: str = "AUC") -> pd.DataFrame:
    """Leaderboard cells of `metric` as curves: detector, protocol (the base), kind, test_set, subset,
    one column per level present (0 = the base protocol's cell, repeated for every kind swept)."""
    cells = board[board["metric"] == metric]
    parsed = [split_protocol(p) for p in cells["protocol"]]
    cells = cells.assign(base=[b for b, _ in parsed], kind=[p.kind if p else "" for _, p in parsed],
                         level=[p.level if p else 0 for _, p in parsed])
    keys = ["detector", "base", "test_set", "subset"]
    perturbed = cells[cells["kind"] != ""]
    originals = cells[cells["kind"] == ""].drop(columns="kind")
    swept = perturbed[keys + ["kind"]].drop_duplicates()
    level0 = swept.merge(originals, on=keys)  # the unperturbed cell starts every kind's curve
    rows = pd.concat([level0, perturbed], ignore_index=True)
    if rows.empty:
        return pd.DataFrame(columns=["detector", "protocol", "kind", "test_set", "subset"])
    table = rows.pivot_table(index=keys + ["kind"], columns="level", values="mean", aggfunc="first").reset_index()
    table.columns = [c if isinstance(c, str) else f"L{c}" for c in table.columns]
    return table.rename(columns={"base": "protocol"}).sort_values(["detector", "protocol", "test_set", "subset", "kind"],
                                                                   ignore_index=True)
