import pandas as pd
import pytest

from avbench import protocol
from avbench.clips import ClipIndex


def make_index(n_ids=10, categories=("fake_audio", "lipsync")) -> ClipIndex:
    rows = []
    for i in range(n_ids):
        ident = f"id{i:02d}"
        rows.append(dict(clip_id=f"real/{ident}", dataset="toy", path=f"real/{ident}.mp4", label=0,
                         category="real", identity=ident))
        for c in categories:
            rows.append(dict(clip_id=f"{c}/{ident}", dataset="toy", path=f"{c}/{ident}.mp4", label=1,
                             category=c, identity=ident))
    return ClipIndex(pd.DataFrame(rows), "/data/toy")


def test_catalogue_has_every_kind_and_versions():
    found = protocol.available()
    assert {"demo", "intra_dataset", "cross_manipulation", "cross_dataset", "test_only"} <= set(found)
    assert {p.kind for p in found.values()} == set(protocol.KINDS)
    assert all(p.version >= 1 and p.description for p in found.values())


def test_missing_audio_variant_and_unknown_names():
    p = protocol.get("demo+missing_audio")
    assert p.missing_audio and p.id == "demo+missing_audio"
    assert p.spec_sha256() != protocol.get("demo").spec_sha256()
    with pytest.raises(KeyError, match="unknown protocol variant"):
        protocol.get("demo+no_video")
    with pytest.raises(KeyError, match="unknown protocol 'nope'"):
        protocol.get("nope")


def test_four_class_variant_is_its_own_protocol_and_does_not_combine_with_missing_audio():
    p = protocol.get("demo+four_class")
    assert p.four_class and not p.missing_audio and p.id == "demo+four_class"
    assert p.spec_sha256() != protocol.get("demo").spec_sha256()
    assert "four_class" not in protocol.get("demo").spec()  # binary runs keep the keys they had
    with pytest.raises(KeyError, match="do not combine"):
        protocol.get("demo+four_class+missing_audio")


def test_identity_split_is_disjoint_seeded_and_complete():
    index = make_index(n_ids=10)
    p = protocol.get("intra_dataset").with_params(dataset="toy")
    split = p.assign_splits(index).frame
    by_identity = split.groupby("identity")["split"].nunique()
    assert (by_identity == 1).all()  # no identity in two splits
    assert set(split["split"]) == {"train", "val", "test"}
    again = p.assign_splits(index).frame
    assert (again["split"] == split["split"]).all()
    other = p.with_params(split_seed=1).assign_splits(index).frame
    assert not (other["split"] == split["split"]).all()


def test_identity_split_refuses_clips_without_identity():
    frame = make_index(4).frame
    frame.loc[0, "identity"] = ""
    with pytest.raises(ValueError, match="no identity"):
        protocol.identity_split(frame["identity"], [0.6, 0.2, 0.2], 0)


def test_cross_manipulation_has_one_fold_per_category_with_the_category_held_out():
    p = protocol.get("cross_manipulation").with_params(dataset="toy")
    index = p.assign_splits(make_index(10, ("a", "b", "c")))
    folds = p.folds({"toy": index}, {"toy": "Toy"})
    assert [f.name for f in folds] == ["a", "b", "c"]
    for fold in folds:
        train = protocol.select(index, fold.train).frame
        test = protocol.select(index, fold.tests[0].selection).frame
        assert fold.name not in set(train.loc[train.label == 1, "category"])
        assert set(test.loc[test.label == 1, "category"]) == {fold.name}
        assert (test.label == 0).any()
        assert fold.train_label == "Toy minus held-out"
        assert fold.tests[0].as_subset == fold.name


def test_cross_dataset_keeps_official_split_of_test_datasets():
    p = protocol.get("cross_dataset").with_params(train="toy", test=["other"])
    # the identity split applies to the training dataset only
    frame = make_index(3).frame.copy()
    frame["dataset"] = "other"
    frame["split"] = "test"
    kept = p.assign_splits(ClipIndex(frame, "/x")).frame
    assert (kept["split"] == "test").all()
    assert p.datasets() == ["other", "toy"]


def test_with_params_rejects_unknown_parameters():
    with pytest.raises(ValueError, match="has no parameter"):
        protocol.get("demo").with_params(datset="x")


def test_file_random_split_is_seeded_and_mixes_identities():
    index = make_index(n_ids=20)
    p = protocol.get("intra_dataset").with_params(dataset="toy", split="file_random", split_ratios=[0.6, 0.1, 0.3])
    split = p.assign_splits(index).frame["split"]
    assert split.value_counts().to_dict() == {"train": 36, "test": 18, "val": 6}
    assert (p.assign_splits(index).frame["split"] == split).all()
    crossing = index.frame.assign(split=split).groupby("identity")["split"].nunique()
    assert (crossing > 1).any()  # the point of the named variant: not identity-disjoint


def test_sets_lists_every_clip_of_every_set_once_per_fold():
    p = protocol.get("cross_manipulation").with_params(dataset="toy")
    index = p.assign_splits(make_index(10, ("a", "b")))
    table = protocol.sets(p, {"toy": index})
    assert set(table["fold"]) == {"a", "b"}
    for fold, part in table.groupby("fold"):
        test = part[part["set"] == "test:toy"]
        assert set(test.loc[test.label == 1, "category"]) == {fold}
        assert not set(part.loc[part["set"] == "train", "identity"]) & set(test["identity"])


def test_seeded_stratified_sample_is_balanced_and_reproducible():
    index = make_index(n_ids=30, categories=("dfl", "fsgan", "fo"))
    frame = index.frame.copy()
    frame.loc[frame["category"] == "fo", "label"] = 1
    index = ClipIndex(frame.iloc[:-20], "/")  # uneven strata: "fo" has 10 fewer clips
    sel = protocol.Selection("toy", "all", sample_per_label=24, stratify_by="category", sample_seed=3)
    chosen = protocol.select(index, sel).frame
    assert chosen["label"].value_counts().to_dict() == {0: 24, 1: 24}
    assert chosen.loc[chosen.label == 1, "category"].value_counts().to_dict() == {"dfl": 8, "fsgan": 8, "fo": 8}
    shuffled = ClipIndex(index.frame.sample(frac=1, random_state=1), "/")
    assert protocol.select(shuffled, sel).frame["clip_id"].tolist() == chosen["clip_id"].tolist()
    other = protocol.select(index, protocol.Selection("toy", "all", sample_per_label=24, stratify_by="category",
                                                      sample_seed=4)).frame
    assert other["clip_id"].tolist() != chosen["clip_id"].tolist()
    assert protocol._even_quota(10, [2, 10, 10]) == [2, 4, 4]


def test_both_modalities_keeps_reals_and_fakes_manipulated_in_both():
    frame = make_index(2, ("a", "v", "av")).frame
    frame["video_label"] = frame["category"].map({"real": 0, "a": 0, "v": 1, "av": 1}).astype("Int8")
    frame["audio_label"] = frame["category"].map({"real": 0, "a": 1, "v": 0, "av": 1}).astype("Int8")
    frame.loc[frame.index[-1], ["video_label", "audio_label"]] = pd.NA  # unknown: kept
    chosen = protocol.select(ClipIndex(frame, "/"), protocol.Selection("toy", "all", fakes="both_modalities")).frame
    assert sorted(chosen["category"]) == ["av", "av", "real", "real"]


def test_test_sets_may_be_tables_and_val_may_be_absent():
    p = protocol.get("cross_dataset").with_params(
        train="toy", val_split="", test=["toy", {"dataset": "other", "split": "all", "subsets": "category",
                                                 "subset_reals": "own"}])
    (fold,) = p.folds(None)
    assert fold.val is None
    assert fold.tests[1].selection.split == "all" and fold.tests[1].subset_reals == "own"
    with pytest.raises(ValueError, match="unknown test-set keys"):
        p.with_params(test=[{"dataset": "x", "splitt": "all"}]).folds(None)


def modality_index(n_ids=10) -> ClipIndex:
    """Per identity: two reals, two fake-audio clips, one lip-sync, one of both, one desynchronised."""
    kinds = [("real", 0, 0, 0), ("real", 0, 0, 0), ("fake_audio", 1, 0, 1), ("fake_audio", 1, 0, 1),
             ("lipsync", 1, 1, 0), ("both", 1, 1, 1), ("desync", 1, 0, 0)]
    rows = [dict(clip_id=f"{c}/id{i:02d}_{k}", dataset="toy", path=f"{c}/id{i:02d}_{k}.mp4", label=y, video_label=v,
                 audio_label=a, category=c, identity=f"id{i:02d}")
            for i in range(n_ids) for k, (c, y, v, a) in enumerate(kinds)]
    return ClipIndex(pd.DataFrame(rows), "/data/toy")


def test_identity_folds_cross_validate_a_balanced_subset():
    index = modality_index()
    p = protocol.get("fakeavceleb_mrdf_folds").with_params(dataset="toy", folds=3)
    frame = p.assign_splits(index).frame
    used = frame[frame["split"] != "unused"]
    assert (used.groupby("identity")["split"].nunique() == 1).all()  # an identity lies in one fold
    assert sorted(used["split"].unique()) == ["fold1", "fold2", "fold3"]
    classes = [protocol_four_class(r) for r in used.itertuples()]
    assert pd.Series(list(zip(used["identity"], classes))).value_counts().max() == 1  # one clip per identity x class
    assert None not in classes and len(used) == 10 * 4  # one of each class per identity; no desync
    assert (p.assign_splits(index).frame["split"] == frame["split"]).all()  # seeded
    folds = p.folds({"toy": ClipIndex(frame, index.root)})
    assert [f.name for f in folds] == ["fold1", "fold2", "fold3"] and p.reports_average and folds[0].val is None
    split = ClipIndex(frame, index.root)
    for fold in folds:
        train, test = protocol.select(split, fold.train).frame, protocol.select(split, fold.tests[0].selection).frame
        assert set(test["split"]) == {fold.name} and fold.name not in set(train["split"])
        assert not set(train["identity"]) & set(test["identity"]) and len(train) + len(test) == len(used)
        assert fold.tests[0].as_subset == fold.name
    with pytest.raises(ValueError, match="takes an integer >= 2"):
        p.with_params(folds=1)


def protocol_four_class(row):
    from avbench.metrics import four_class_label

    opt = lambda v: None if pd.isna(v) else int(v)  # noqa: E731
    return four_class_label(int(row.label), opt(row.video_label), opt(row.audio_label))


def test_named_averages_mean_only_their_subsets_and_say_which_are_missing():
    from avbench.runner import _average_rows

    rows = [{"train": "t", "test_set": "s", "subset": subset, "metric": "AUC", "value": value}
            for subset, value in (("all", 0.5), ("RVFA", 0.2), ("FVRA-WL", 0.8), ("FVFA-WL", 0.6))]
    (every,) = _average_rows(rows)
    (fv,) = _average_rows(rows, "AVG-FV", ("FVRA-WL", "FVFA-WL"))
    assert every["value"] == pytest.approx(1.6 / 3) and (fv["subset"], fv["value"]) == ("AVG-FV", pytest.approx(0.7))
    (short,) = _average_rows(rows, "AVG-FV", ("FVRA-WL", "FVFA-GAN"))
    assert short["value"] is None and "FVFA-GAN" in short["not_computable"]
    cross = protocol.get("fakeavceleb_cross_manipulation")
    assert cross.named_averages == {"AVG-FV": ("FVRA-WL", "FVFA-FS", "FVFA-GAN", "FVFA-WL")}
    with pytest.raises(ValueError, match="named subset lists"):
        cross.with_params(averages={"AVG-FV": "RVFA"})
