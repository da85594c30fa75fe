"""Protocols: which clips train, select and test a detector, and how results are reported.

A protocol is data: a TOML file in avbench/protocols/ with a `kind` and its parameters, and a
`version` bumped whenever a change would move a number. Four kinds cover the field:

- intra_dataset: train, validate and test on one dataset, by its official split or by a seeded
  identity-disjoint split (no person appears in two of train / val / test); or, with `split =
  "identity_folds"`, by k-fold cross-validation over identities (`folds`), each fold testing on
  one group of identities after training on the others, reported per fold (fold1 ...) and as
  their average (AVG); `per_identity_class = n` first keeps n clips of each identity and
  four-class label (drawn with `split_seed`), the balanced FakeAVCeleb subset of MRDF.
- cross_manipulation: leave one fake category out: train on reals and the other categories,
  test on held-out reals plus the held-out category; one fold per category, reported per
  category and as their average (AVG).
- cross_dataset: train on one dataset, test on the test sets of several others.
- test_only: no training: score a training-free or already-trained detector on one dataset.

Any protocol has three variants, named by suffixes: `NAME+missing_audio` removes the audio from the
test clips (never from training clips), as in HAVIC's robustness study; `NAME+four_class` is the
four-class task of the FauForensics paper (which modality is fake: metrics.FOUR_CLASSES), run by a
detector with those `class_names` only, reporting CLASS_ACC and CLASS_AUC on each whole test set
beside the binary metrics of its fake score. The two do not combine: with the audio removed, no
detector can tell a fake audio track from a real one. `NAME+trim_silence` cuts the leading silence
of every clip the run reads (training and test alike, audio and video together, so they stay in
sync): fake audio tends to start later than real audio in FakeAVCeleb (AVH-Align), a shortcut this
variant takes away; runs count the clips trimmed (fallback `leading_silence_trimmed`). `NAME+perturb=KIND@LEVEL` degrades the test
clips' media (avbench.perturbations: DeeperForensics-1.0's visual kinds and avbench's audio kinds,
levels 1-5; level 0 is NAME itself); it combines with either variant.

A protocol may name an unlabelled `pool` (Pool): a detector that learns from one after fitting
(`Detector.uses_pool`, e.g. HOLA's PSSI) gets a label-stripped view of it (loader.UnlabeledPool);
a run whose pool overlaps a scored test set is marked transductive and listed apart.

A test set may be divided into subsets by an index column (usually `category`). Every subset is
scored against all real clips of the test set (its fakes + all reals), the usual convention of
per-category tables; `AVG` is the unweighted mean over subsets, and `averages` names means over
some of them (a table's average column that leaves a category out).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, replace
from importlib.resources import files

import numpy as np
import pandas as pd

from avbench.clips import ClipIndex
from avbench.io import sha256_json
from avbench.perturbations import Perturbation

KINDS = ("intra_dataset", "cross_manipulation", "cross_dataset", "test_only")
IDENTITY_FOLDS = "identity_folds"
UNUSED = "unused"  # the split of clips a balanced subset leaves out
MISSING_AUDIO = "missing_audio"
FOUR_CLASS = "four_class"
TRIM_SILENCE = "trim_silence"
VARIANTS = (FOUR_CLASS, MISSING_AUDIO, TRIM_SILENCE)
PERTURB = "perturb"
#: Parameters any protocol may set or override, with their defaults where they are read.
OPTIONAL_PARAMS = {"split", "split_ratios", "split_seed", "folds", "per_identity_class", "val_split", "test_split",
                   "subsets", "subset_reals", "averages", "pool", "extra_metrics",
                   "fakes", "train_label"}


@dataclass(frozen=True)
class Selection:
    """Clips of one dataset: a split, optionally with only / without some fake categories, only
    the fakes manipulated in both modalities, or a seeded sample of each label."""

    dataset: str
    split: str  # "train" | "val" | "test" | "all" | a fold ("fold1", split = "identity_folds")
    other_folds: bool = False  # every fold but `split` (the training side of a cross-validation fold)
    only_categories: tuple[str, ...] = ()  # fakes kept only from these (reals always kept)
    without_categories: tuple[str, ...] = ()  # fakes of these dropped
    #: "all", or "both_modalities": fakes whose video and audio are both manipulated (kept where
    #: the dataset does not say), as the self-supervised-features paper restricts its test sets.
    fakes: str = "all"
    #: > 0: keep this many clips of each label, drawn with `sample_seed`, spread evenly over the
    #: values of `stratify_by` (e.g. KoDF's methods); a reproducible subset of a large test set.
    sample_per_label: int = 0
    stratify_by: str = ""
    sample_seed: int = 0


@dataclass(frozen=True)
class TestSet:
    name: str  # dataset name, the `test_set` of leaderboard rows
    selection: Selection
    subsets: str = ""  # index column dividing the fakes into subsets; "" = none
    #: "all": each subset is its fakes + all reals; "own": the clips whose subset column has the
    #: value, reals included (datasets that pair each real with a fake of one generator).
    subset_reals: str = "all"
    #: Report the whole set under this subset name instead of "all" (cross-manipulation folds).
    as_subset: str = ""


@dataclass(frozen=True)
class Pool:
    """Unlabelled clips a detector may learn from after fitting (self-training, test-time adaptation):
    a selection of an indexed dataset, whose labels the runner withholds, or subsets a dataset ships
    without labels (`unlabeled`, read through its adapter's `unlabeled`). A run whose pool shares a
    clip with a scored test set is transductive, and says so."""

    dataset: str
    selection: Selection | None
    unlabeled: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fold:
    name: str
    train_label: str  # how published tables name the training data
    train: Selection | None
    val: Selection | None
    tests: tuple[TestSet, ...]


@dataclass(frozen=True)
class Protocol:
    name: str
    kind: str
    version: int
    description: str
    params: dict = field(hash=False)
    seeds: tuple[int, ...] = (0, 1, 2)
    missing_audio: bool = False
    four_class: bool = False
    trim_silence: bool = False
    perturbation: str = ""  # "KIND@LEVEL" (avbench.perturbations), "" for none

    @property
    def id(self) -> str:
        return (self.name + "".join(f"+{v}" for v in self.variants)
                + (f"+{PERTURB}={self.perturbation}" if self.perturbation else ""))

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(v for v in VARIANTS if getattr(self, v))

    @property
    def trains(self) -> bool:
        return self.kind != "test_only"

    def spec(self) -> dict:
        """Everything that defines the protocol's numbers, for provenance and run keys."""
        spec = {"name": self.name, "kind": self.kind, "version": self.version, "params": self.params,
                "missing_audio": self.missing_audio}
        for variant in (FOUR_CLASS, TRIM_SILENCE):  # set only when used, so that earlier runs keep their keys
            if getattr(self, variant):
                spec[variant] = True
        if self.perturbation:
            spec["perturbation"] = Perturbation.parse(self.perturbation).describe()
        return spec

    @classmethod
    def from_spec(cls, spec: dict) -> "Protocol":
        """The protocol a record's `protocol_spec` describes (its description is not part of it)."""
        perturbation = spec.get("perturbation")
        return cls(name=spec["name"], kind=spec["kind"], version=spec["version"], description="",
                   params=dict(spec["params"]), missing_audio=spec.get("missing_audio", False),
                   four_class=spec.get(FOUR_CLASS, False), trim_silence=spec.get(TRIM_SILENCE, False),
                   perturbation=str(Perturbation(perturbation["kind"], perturbation["level"])) if perturbation else "")

    def spec_sha256(self) -> str:
        return sha256_json(self.spec())

    def datasets(self) -> list[str]:
        names = {s.dataset for fold in self.folds(None) for s in _selections(fold)}
        return sorted(names | ({self.pool.dataset} if self.pool else set()))

    @property
    def extra_metrics(self) -> tuple[str, ...]:
        """Metrics a paper's table adds (metrics.THRESHOLD_METRICS), reported beside the usual ones."""
        names = self.params.get("extra_metrics", [])
        if problem := _param_problem("extra_metrics", names):
            raise ValueError(f"protocol '{self.name}': extra_metrics {problem}, got {names!r}")
        return tuple(names)

    @property
    def pool(self) -> Pool | None:
        """The unlabelled pool the `pool` parameter names ({dataset, split} of an indexed dataset, or
        {dataset, unlabeled = [subset, ...]}; sample_per_label and sample_seed as for test sets), or None."""
        spec = self.params.get("pool")
        if not spec:
            return None
        if problem := _param_problem("pool", spec):
            raise ValueError(f"protocol '{self.name}': pool {problem}, got {spec!r}")
        unlabeled = tuple(spec.get("unlabeled", ()))
        selection = None if unlabeled else Selection(
            spec["dataset"], spec.get("split", "test"), sample_per_label=int(spec.get("sample_per_label", 0)),
            sample_seed=int(spec.get("sample_seed", 0)))
        return Pool(spec["dataset"], selection, unlabeled)

    def with_params(self, **overrides) -> "Protocol":
        """The same protocol with some parameters replaced (e.g. --dataset, --test-sets); a value of the
        wrong form raises ValueError saying the form expected."""
        unknown = set(overrides) - set(self.params) - OPTIONAL_PARAMS
        if unknown:
            raise ValueError(f"protocol '{self.name}' has no parameter {sorted(unknown)}; it has "
                             f"{', '.join(sorted(set(self.params) | OPTIONAL_PARAMS))}")
        for key, value in overrides.items():
            if problem := _param_problem(key, value):
                raise ValueError(f"--param {key} {problem}, got {json.dumps(value)}")
        return replace(self, params={**self.params, **overrides})

    # -- folds ----------------------------------------------------------------------------------
    def folds(self, indexes: dict[str, ClipIndex] | None, display: dict[str, str] | None = None) -> list[Fold]:
        """The folds of this protocol. Without indexes (listing), cross-manipulation has one
        placeholder fold; with them it has one fold per fake category."""
        p, display = self.params, display or {}
        label = lambda name: display.get(name, name)  # noqa: E731
        if self.kind == "intra_dataset" and p.get("split") == IDENTITY_FOLDS:
            d = p["dataset"]
            return [Fold(f"fold{k}", label(d), Selection(d, f"fold{k}", other_folds=True), self._val(d),
                         (TestSet(d, Selection(d, f"fold{k}"), as_subset=f"fold{k}"),))
                    for k in range(1, int(p.get("folds", 5)) + 1)]
        if self.kind == "intra_dataset":
            d = p["dataset"]
            return [Fold("main", label(d), Selection(d, "train"), self._val(d), (self._test_set(d),))]
        if self.kind == "cross_dataset":
            d = p["train"]
            return [Fold("main", label(d), Selection(d, "train"), self._val(d),
                         tuple(self._test_set(t) for t in p["test"]))]
        if self.kind == "test_only":
            return [Fold("main", p.get("train_label", "none"), None, None, (self._test_set(p["dataset"]),))]
        if self.kind == "cross_manipulation":
            d, column = p["dataset"], p.get("hold_out_by", "category")
            held_out = p.get("categories") or (_fake_values(indexes[d], column) if indexes else ["<category>"])
            train_label = f"{label(d)} minus held-out"
            return [
                Fold(c, train_label,
                     Selection(d, "train", without_categories=(c,)),
                     Selection(d, "val", without_categories=(c,)),
                     (TestSet(d, Selection(d, "test", only_categories=(c,)), as_subset=c),))
                for c in held_out
            ]
        raise ValueError(f"protocol '{self.name}': unknown kind '{self.kind}'; kinds: {', '.join(KINDS)}")

    def _val(self, dataset: str) -> Selection | None:
        """The validation set; `val_split = ""` means none (the detector keeps its defaults),
        for datasets whose only labelled held-out split is the test set."""
        split = self.params.get("val_split", "val")
        return Selection(dataset, split) if split else None

    def _test_set(self, spec: str | dict) -> TestSet:
        """A test set from a dataset name, or from a table that overrides the protocol's defaults:
        {dataset, split, subsets, subset_reals, fakes, sample_per_label, stratify_by, sample_seed}."""
        p = self.params
        spec = {"dataset": spec} if isinstance(spec, str) else dict(spec)
        unknown = set(spec) - {"dataset", "split", "subsets", "subset_reals", "averages", "pool", "extra_metrics", "fakes", "sample_per_label",
                               "stratify_by", "sample_seed"}
        if unknown:
            raise ValueError(f"protocol '{self.name}': unknown test-set keys {sorted(unknown)}")
        d = spec["dataset"]
        selection = Selection(d, spec.get("split", p.get("test_split", "test")), fakes=spec.get("fakes", p.get("fakes", "all")),
                              sample_per_label=int(spec.get("sample_per_label", 0)),
                              stratify_by=spec.get("stratify_by", ""), sample_seed=int(spec.get("sample_seed", 0)))
        return TestSet(d, selection, spec.get("subsets", p.get("subsets", "")),
                       spec.get("subset_reals", p.get("subset_reals", "all")))

    @property
    def split_dataset(self) -> str:
        """The dataset the `split` parameter applies to; other datasets keep their official split."""
        return self.params.get("dataset") or self.params.get("train", "")

    @property
    def reports_average(self) -> bool:
        return (self.kind == "cross_manipulation" or bool(self.params.get("subsets"))
                or self.params.get("split") == IDENTITY_FOLDS)

    @property
    def named_averages(self) -> dict[str, tuple[str, ...]]:
        """Averages over some of the subsets, beside AVG over all of them (`averages = {NAME = [subset,
        ...]}`), for tables whose average column leaves some out (CAD's AVG-FV skips RVFA)."""
        named = self.params.get("averages", {})
        if problem := _param_problem("averages", named):
            raise ValueError(f"protocol '{self.name}': averages {problem}, got {named!r}")
        return {name: tuple(subsets) for name, subsets in named.items()}

    # -- splits ---------------------------------------------------------------------------------
    def assign_splits(self, index: ClipIndex) -> ClipIndex:
        """The index with its `split` column as this protocol defines it."""
        how = self.params.get("split", "official")
        if how == "official" or index.datasets != [self.split_dataset]:
            return index
        ratios, seed = self.params.get("split_ratios", [0.7, 0.1, 0.2]), int(self.params.get("split_seed", 0))
        frame = index.frame.copy()
        if how == "identity":
            frame["split"] = identity_split(frame["identity"], ratios, seed, dataset=index.datasets)
        elif how == "file_random":
            frame["split"] = file_split(len(frame), ratios, seed)
        elif how == IDENTITY_FOLDS:
            frame["split"] = identity_folds(frame["identity"], int(self.params.get("folds", 5)), seed, index.datasets)
            if per := int(self.params.get("per_identity_class", 0)):
                frame.loc[~balanced(frame, per, seed), "split"] = UNUSED
        else:
            raise ValueError(f"protocol '{self.name}': split must be one of {', '.join(_CHOICES['split'])}, not '{how}'")
        return ClipIndex(frame, index.root, index.problems)


_CHOICES = {"split": ("official", "identity", "file_random", "identity_folds"), "subset_reals": ("all", "own"),
            "fakes": ("all", "both_modalities")}
_TEXTS = ("val_split", "subsets", "train_label", "hold_out_by")  # "" allowed: none


def _param_problem(key: str, value) -> str:
    """What is wrong with a protocol parameter's value ("" when nothing): the form it takes."""
    if key in _CHOICES:
        return "" if value in _CHOICES[key] else "takes one of " + ", ".join(_CHOICES[key])
    if key in ("dataset", "train"):  # that an adapter of this name exists is checked where datasets are read
        return "" if isinstance(value, str) and value else "takes a dataset name (`avbench datasets list`)"
    if key == "test":
        entries = value if isinstance(value, list) else [None]
        ok = bool(entries) and all(isinstance(e, str) and e or isinstance(e, dict) and isinstance(e.get("dataset"), str)
                                   for e in entries)
        return "" if ok else 'takes a JSON list of dataset names or tables, e.g. ["kodf", {"dataset": "avlips"}]'
    if key == "split_ratios":
        ok = (isinstance(value, list) and len(value) == 3
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)
              and value[0] > 0 and sum(value[1:]) > 0)
        return "" if ok else "takes a JSON list of three train/val/test weights, e.g. [0.7, 0.1, 0.2]"
    if key == "split_seed":
        return "" if isinstance(value, int) and not isinstance(value, bool) else "takes an integer"
    if key in ("folds", "per_identity_class"):
        least = 2 if key == "folds" else 0
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
        return "" if ok else f"takes an integer >= {least}"
    if key == "test_split":
        return "" if isinstance(value, str) and value else "takes a split name: train, val, test or all"
    if key in _TEXTS:
        return "" if isinstance(value, str) else "takes a text"
    if key == "categories":
        return "" if isinstance(value, list) and all(isinstance(v, str) for v in value) else \
            'takes a JSON list of category names, e.g. ["RVFA"]'
    if key == "extra_metrics":
        from avbench.metrics import THRESHOLD_METRICS

        ok = isinstance(value, list) and all(v in THRESHOLD_METRICS for v in value)
        return "" if ok else "takes a list of " + ", ".join(THRESHOLD_METRICS)
    if key == "pool":
        ok = (isinstance(value, dict) and isinstance(value.get("dataset"), str) and value["dataset"]
              and set(value) <= {"dataset", "split", "unlabeled", "sample_per_label", "sample_seed"}
              and ("unlabeled" not in value or "split" not in value)
              and all(isinstance(v, str) for v in value.get("unlabeled", [])))
        return "" if ok else ('takes a table {dataset, split} or {dataset, unlabeled = [subset, ...]}, e.g. '
                              '{"dataset": "av1m_pp", "unlabeled": ["testA"]}')
    if key == "averages":
        ok = isinstance(value, dict) and all(isinstance(v, list) and v and all(isinstance(x, str) for x in v)
                                             for v in value.values())
        return "" if ok else 'takes a table of named subset lists, e.g. {"AVG-FV": ["FVRA-WL", "FVFA-WL"]}'
    return ""


def sets(protocol: Protocol, indexes: dict[str, ClipIndex], display: dict[str, str] | None = None) -> pd.DataFrame:
    """Every clip of every set the protocol builds: fold, set (train / val / test:<name>), clip_id,
    dataset, label, category, identity, group; what a user audits and publishes as the exact data used."""
    parts = []
    for fold in protocol.folds(indexes, display):
        named = [("train", fold.train), ("val", fold.val)] + [(f"test:{t.name}", t.selection) for t in fold.tests]
        for name, selection in named:
            if selection is None:
                continue
            frame = select(indexes[selection.dataset], selection).frame
            parts.append(frame[["clip_id", "dataset", "label", "category", "identity", "group"]]
                         .assign(fold=fold.name, set=name))
    columns = ["fold", "set", "clip_id", "dataset", "label", "category", "identity", "group"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def _selections(fold: Fold) -> list[Selection]:
    return [s for s in (fold.train, fold.val) if s is not None] + [t.selection for t in fold.tests]


def _fake_values(index: ClipIndex, column: str) -> list[str]:
    fakes = index.frame[index.frame["label"] == 1]
    return sorted(v for v in fakes[column].dropna().unique() if v)


def identity_split(identities: pd.Series, ratios, seed: int, dataset=None) -> pd.Series:
    """Seeded identity-disjoint train/val/test assignment; every split gets at least one identity
    when there are three or more."""
    ids = sorted(v for v in identities.dropna().unique() if v)
    if len(ids) < 3:
        raise ValueError(f"an identity-disjoint split needs >= 3 identities; {dataset or 'the dataset'} has {len(ids)}: "
                         "use the official split instead")
    ratios = np.asarray(ratios, dtype=float) / np.sum(ratios)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = max(1, int(round(ratios[1] * len(ids))))
    n_test = max(1, int(round(ratios[2] * len(ids))))
    n_train = len(ids) - n_val - n_test
    if n_train < 1:
        raise ValueError(f"split ratios {ratios.tolist()} leave no training identity among {len(ids)}")
    names = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    assignment = {ids[i]: names[k] for k, i in enumerate(order)}
    missing = identities.isna() | (identities == "")
    if missing.any():
        raise ValueError(f"{int(missing.sum())} clips have no identity: an identity-disjoint split cannot place them")
    return identities.map(assignment).astype("string")


def identity_folds(identities: pd.Series, k: int, seed: int, dataset=None) -> pd.Series:
    """Seeded assignment of whole identities to folds fold1 ... fold<k>, dealt in turn so that fold
    sizes (in identities) differ by at most one."""
    ids = sorted(v for v in identities.dropna().unique() if v)
    if len(ids) < k:
        raise ValueError(f"{k} identity folds need >= {k} identities; {dataset or 'the dataset'} has {len(ids)}")
    if (identities.isna() | (identities == "")).any():
        raise ValueError("some clips have no identity: identity folds cannot place them")
    order = np.random.default_rng(seed).permutation(len(ids))
    assignment = {ids[i]: f"fold{1 + position % k}" for position, i in enumerate(order)}
    return identities.map(assignment).astype("string")


def balanced(frame: pd.DataFrame, per: int, seed: int) -> np.ndarray:
    """Which clips a balanced subset keeps: `per` of each identity and four-class label, drawn with
    `seed` in clip_id order; a fake of no class (metrics.four_class_label) is left out."""
    from avbench.metrics import four_class_label

    opt = lambda v: None if pd.isna(v) else int(v)  # noqa: E731
    classes = pd.Series([four_class_label(int(r.label), opt(r.video_label), opt(r.audio_label))
                         for r in frame.itertuples()], index=frame.index, dtype="Int8")
    rng, keep = np.random.default_rng(seed), np.zeros(len(frame), dtype=bool)
    position = pd.Series(np.arange(len(frame)), index=frame.index)
    for _, group in frame[classes.notna()].assign(cls=classes).sort_values("clip_id").groupby(["identity", "cls"]):
        keep[position[rng.permutation(group.index.to_numpy())[:per]].to_numpy()] = True
    return keep


def file_split(n: int, ratios, seed: int) -> pd.Series:
    """Seeded train/val/test assignment of individual clips: identities may cross splits. Some
    papers report this split; it is offered under its own name, never as the default."""
    ratios = np.asarray(ratios, dtype=float) / np.sum(ratios)
    n_val, n_test = int(round(ratios[1] * n)), int(round(ratios[2] * n))
    names = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
    return pd.Series(names[np.argsort(np.random.default_rng(seed).permutation(n))], dtype="string")


def select(index: ClipIndex, selection: Selection) -> ClipIndex:
    frame = index.frame
    if selection.other_folds:
        mask = frame["split"].str.startswith("fold") & (frame["split"] != selection.split)
    else:
        mask = pd.Series(True, index=frame.index) if selection.split == "all" else frame["split"] == selection.split
    fake = frame["label"] == 1
    if selection.only_categories:
        mask &= ~fake | frame["category"].isin(selection.only_categories)
    if selection.without_categories:
        mask &= ~(fake & frame["category"].isin(selection.without_categories))
    if selection.fakes == "both_modalities":
        partial = (frame["video_label"] == 0) | (frame["audio_label"] == 0)
        mask &= ~(fake & partial.fillna(False))
    elif selection.fakes != "all":
        raise ValueError(f"fakes must be 'all' or 'both_modalities', not '{selection.fakes}'")
    chosen = index.subset(mask.fillna(False).to_numpy())
    return _sample(chosen, selection) if selection.sample_per_label else chosen


def _sample(index: ClipIndex, selection: Selection) -> ClipIndex:
    """`sample_per_label` clips of each label, spread evenly over the strata, seeded and
    independent of row order (clips are ordered by clip_id before drawing)."""
    rng = np.random.default_rng(selection.sample_seed)
    frame = index.frame.sort_values("clip_id").reset_index(drop=True)
    keep: list[int] = []
    for _, by_label in frame.groupby("label"):
        strata = [g.index.to_numpy() for _, g in by_label.groupby(selection.stratify_by)] if selection.stratify_by \
            else [by_label.index.to_numpy()]
        quota = _even_quota(selection.sample_per_label, [len(s) for s in strata])
        keep += [int(i) for rows, n in zip(strata, quota) for i in rng.permutation(rows)[:n]]
    return ClipIndex(frame.loc[sorted(keep)], index.root, index.problems)


def _even_quota(total: int, sizes: list[int]) -> list[int]:
    """Split `total` over strata as evenly as their sizes allow (water-filling)."""
    quota = [0] * len(sizes)
    remaining = min(total, sum(sizes))
    while remaining:
        open_strata = [i for i, size in enumerate(sizes) if quota[i] < size]
        share = max(1, remaining // len(open_strata))
        for i in open_strata:
            take = min(share, sizes[i] - quota[i], remaining)
            quota[i] += take
            remaining -= take
            if not remaining:
                break
    return quota


# -- the catalogue of protocols --------------------------------------------------------------------
def _parse(name: str, text: str) -> Protocol:
    data = tomllib.loads(text)
    missing = [k for k in ("kind", "version", "description") if k not in data]
    if missing:
        raise ValueError(f"protocol file {name}.toml lacks {missing}")
    if data["kind"] not in KINDS:
        raise ValueError(f"protocol file {name}.toml: unknown kind '{data['kind']}'; kinds: {', '.join(KINDS)}")
    protocol = Protocol(
        name=name,
        kind=data["kind"],
        version=int(data["version"]),
        description=" ".join(data["description"].split()),
        params=data.get("params", {}),
        seeds=tuple(data.get("seeds", (0, 1, 2))),
    )
    protocol.named_averages, protocol.pool, protocol.extra_metrics  # malformed: fails when read, not after a run
    return protocol


def available() -> dict[str, Protocol]:
    root = files("avbench.protocols")
    found = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            name = entry.name[: -len(".toml")]
            found[name] = _parse(name, entry.read_text())
    return found


def get(protocol_id: str) -> Protocol:
    """A protocol by name, with optional variant suffixes: `demo`, `demo+missing_audio`, `demo+four_class`,
    `demo+trim_silence`, `demo+perturb=blur@3` (level 0 is the protocol itself)."""
    name, *variants = protocol_id.split("+")
    protocols = available()
    if name not in protocols:
        raise KeyError(f"unknown protocol '{name}'; known: {', '.join(protocols)}")
    perturbations = [v.partition("=")[2] for v in variants if v.startswith(PERTURB + "=")]
    variants = [v for v in variants if not v.startswith(PERTURB + "=")]
    for variant in variants:
        if variant not in VARIANTS:
            raise KeyError(f"unknown protocol variant '+{variant}'; variants: "
                           + ", ".join([*("+" + v for v in VARIANTS), f"+{PERTURB}=KIND@LEVEL"]))
    if {FOUR_CLASS, MISSING_AUDIO} <= set(variants):
        raise KeyError(f"'{protocol_id}': +{FOUR_CLASS} and +{MISSING_AUDIO} do not combine (with the audio removed "
                       "no detector can tell which modality is fake)")
    if {TRIM_SILENCE, MISSING_AUDIO} <= set(variants):
        raise KeyError(f"'{protocol_id}': +{TRIM_SILENCE} and +{MISSING_AUDIO} do not combine (the test clips have no "
                       "audio to find silence in)")
    if len(perturbations) > 1:
        raise KeyError(f"'{protocol_id}': one +{PERTURB}= at a time")
    try:
        perturbation = Perturbation.parse(perturbations[0]) if perturbations else None
    except ValueError as exc:
        raise KeyError(f"'{protocol_id}': {exc}") from None
    return replace(protocols[name], **{v: True for v in variants},
                   perturbation=str(perturbation) if perturbation and perturbation.level else "")
