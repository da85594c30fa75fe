import pandas as pd
import pytest

from avbench.clips import ClipIndex


def frame(**overrides):
    rows = [dict(clip_id="a", dataset="toy", path="real/a.mp4", label=0, identity="p1"),
            dict(clip_id="b", dataset="toy", path="fake/b.mp4", label=1, identity="p2",
                 fake_segments=[[0.5, 1.0]], meta={"source": "a"}, audio_path="fake/b.wav", video_label=1)]
    for r in rows:
        r.update(overrides)
    return pd.DataFrame(rows)


def test_index_round_trips_through_parquet_with_its_root(tmp_path):
    index = ClipIndex(frame(), tmp_path)
    loaded = ClipIndex.load(index.save(tmp_path / "toy.parquet"))
    assert loaded.root == tmp_path.resolve()
    assert loaded.fingerprint() == index.fingerprint()
    a, b = list(loaded.refs())
    assert a.path == tmp_path.resolve() / "real/a.mp4" and a.audio_path is None and a.video_label is None
    assert b.fake_segments == ((0.5, 1.0),) and b.meta == {"source": "a"} and b.video_label == 1
    assert b.audio_path == tmp_path.resolve() / "fake/b.wav"


def test_fingerprint_ignores_row_order_and_root_but_not_content(tmp_path):
    index = ClipIndex(frame(), tmp_path)
    assert ClipIndex(frame().iloc[::-1], "/elsewhere").fingerprint() == index.fingerprint()
    changed = frame()
    changed.loc[0, "label"] = 1
    assert ClipIndex(changed, tmp_path).fingerprint() != index.fingerprint()


@pytest.mark.parametrize("column,value,message", [
    ("label", 2, "labels must be 0 \\(real\\) or 1 \\(fake\\)"),
    ("clip_id", "same", "clip_id must be unique"),
])
def test_bad_rows_are_refused(column, value, message):
    with pytest.raises(ValueError, match=message):
        ClipIndex(frame(**{column: value}), "/")


def test_missing_required_column_is_named():
    with pytest.raises(ValueError, match="lacks required columns: label"):
        ClipIndex(frame().drop(columns="label"), "/")
