"""The `hifi_avdf` adapter: per-generator CSVs of alternating real / *_generated rows, or generator folders."""

import pytest

from avbench.datasets.hifi_avdf import HiFiAVDFDataset, generator_of
from avbench.testing_datasets import clip_bytes, put


@pytest.fixture(scope="module")
def video_bytes():
    """One real 1 s clip, copied to every path of a fixture (the adapter indexes, it does not decode)."""
    return clip_bytes(seconds=1.0, size=128)


HEADER = "video_path,audio_label,visual_label,overall_label\n"
CSVS = {
    "Sora2.csv": ["Sora2/00001.mp4,0,0,0", "Sora2/00001_generated.mp4,1,1,1",
                  "Sora2/00002.mp4,0,0,0", "Sora2/00002_generated.mp4,1,1,yes"],
    # paths relative to the CSV's folder; a fake listed twice with another audio_label
    "csv/HiFi_Veo-3.1.csv": ["../Veo3.1/00003.mp4,0,0,0", "../Veo3.1/00003_generated.mp4,1,1,1",
                             "../Veo3.1/00010.mp4,0,0,0", "../Veo3.1/00010_generated.mp4,1,1,1",
                             "../Veo3.1/00003_generated.mp4,0,1,1"],
    # paths relative to the root
    "csv/kling_2.5.csv": ["Kling2.5/00004.mp4,0,0,0", "Kling2.5/00004_generated.mp4,1,1,1"],
    # absolute paths from the authors' machine
    "wan25.csv": ["/data/havic/WAN2.5/00005.mp4,0,0,0", "/data/havic/WAN2.5/00005_generated.mp4,1,1,1"],
    "PixVerse_V5.csv": ["PixVerse/00009_generated.mp4,1,1,1", "PixVerse/00006.mp4,0,1,0"],
    "Seedance1.0.csv": ["Seedance/00007.mp4,0,0,0", "Seedance/00007_generated.mp4,0,1,1"],
    "runway_gen4.csv": ["Runway/00011.mp4,0,0,0", "Runway/00011_generated.mp4,1,1,1"],
}
VIDEOS = ["Sora2/00001.mp4", "Sora2/00001_generated.mp4", "Sora2/00002.mp4", "Sora2/00002_generated.mp4",
          "Sora2/00008.mp4", "Veo3.1/00003.mp4", "Veo3.1/00003_generated.mp4", "Veo3.1/00010_generated.mp4",
          "Kling2.5/00004.mp4", "Kling2.5/00004_generated.mp4", "WAN2.5/00005.mp4", "WAN2.5/00005_generated.mp4",
          "PixVerse/00009_generated.mp4", "PixVerse/00006.mp4", "Seedance/00007.mp4", "Seedance/00007_generated.mp4",
          "Runway/00011.mp4", "Runway/00011_generated.mp4"]


def test_generator_csvs(tmp_path, video_bytes):
    for name, rows in CSVS.items():
        put(tmp_path, (HEADER + "\n".join(rows) + "\n").encode(), name)
    put(tmp_path, video_bytes, *VIDEOS)
    index = HiFiAVDFDataset().index(tmp_path)
    refs = {ref.clip_id: ref for ref in index.refs()}
    assert {k: (r.label, r.video_label, r.audio_label, r.category, r.method, r.group) for k, r in refs.items()} == {
        "Sora2/00001": (0, 0, 0, "Sora 2", "", "Sora2/00001"),
        "Sora2/00001_generated": (1, 1, 1, "Sora 2", "Sora 2", "Sora2/00001"),
        "Sora2/00002": (0, 0, 0, "Sora 2", "", "Sora2/00002"),
        "Veo3.1/00003": (0, 0, 0, "Veo 3.1", "", "Veo3.1/00003"),
        "Veo3.1/00003_generated": (1, 1, 1, "Veo 3.1", "Veo 3.1", "Veo3.1/00003"),
        "Veo3.1/00010": (0, 0, 0, "Veo 3.1", "", "Veo3.1/00010"),
        "Veo3.1/00010_generated": (1, 1, 1, "Veo 3.1", "Veo 3.1", "Veo3.1/00010"),
        "Kling2.5/00004": (0, 0, 0, "Kling 2.5", "", "Kling2.5/00004"),
        "Kling2.5/00004_generated": (1, 1, 1, "Kling 2.5", "Kling 2.5", "Kling2.5/00004"),
        "WAN2.5/00005": (0, 0, 0, "WAN 2.5", "", "WAN2.5/00005"),
        "WAN2.5/00005_generated": (1, 1, 1, "WAN 2.5", "WAN 2.5", "WAN2.5/00005"),
        "PixVerse/00009_generated": (1, 1, 1, "PixVerse V5", "PixVerse V5", "PixVerse/00009_generated"),
        "Seedance/00007": (0, 0, 0, "Seedance 1.0", "", "Seedance/00007"),
        "Seedance/00007_generated": (1, 1, 0, "Seedance 1.0", "Seedance 1.0", "Seedance/00007"),
    }
    for ref in refs.values():
        assert (ref.dataset, ref.identity, ref.split, ref.audio_path) == ("hifi_avdf", "", "", None)
        assert ref.path == tmp_path / f"{ref.clip_id}.mp4"
        assert ref.path.is_file() == (ref.clip_id != "Veo3.1/00010")
    assert index.problems == [
        "PixVerse_V5.csv line 3: PixVerse/00006.mp4: overall_label 0 does not fit visual_label 1 and audio_label 0 "
        "(fake if either is 1); left out",
        "PixVerse_V5.csv line 2: PixVerse/00009_generated.mp4: fake without its paired real; "
        "kept as a group of its own",
        "Sora2.csv line 5: Sora2/00002_generated.mp4: overall_label 'yes' not 0 or 1; left out",
        "Sora2.csv line 4: Sora2/00002.mp4: real without its generated fake; kept",
        "runway_gen4.csv: its name holds no one generator (sora, veo, kling, wan, pixverse, seedance); "
        "its rows left out",
        f"csv/HiFi_Veo-3.1.csv line 4: Veo3.1/00010.mp4 not found under {tmp_path}; kept, runs will count it as failed",
        "csv/HiFi_Veo-3.1.csv line 6: Veo3.1/00003_generated.mp4: same clip id 'Veo3.1/00003_generated' as "
        "csv/HiFi_Veo-3.1.csv line 3: Veo3.1/00003_generated.mp4, conflicts (audio_label 0 vs 1); the first is kept",
        f"{tmp_path}: 5 video file(s) named by no usable row of a generator CSV, not indexed: PixVerse/00006.mp4, "
        "Runway/00011.mp4, Runway/00011_generated.mp4, Sora2/00002_generated.mp4, Sora2/00008.mp4",
    ]


def test_generator_csv_without_label_columns_fails_loudly(tmp_path):
    put(tmp_path, b"video_path,label\nSora2/1.mp4,0\n", "sora_2.csv")
    expected = "sora_2.csv: missing column.s. overall_label, visual_label, audio_label; found video_path, label"
    with pytest.raises(ValueError, match=expected):
        HiFiAVDFDataset().index(tmp_path)


def test_generator_folders(tmp_path, video_bytes):
    put(tmp_path, video_bytes, "Sora 2/real/a.mp4", "Sora 2/fake/a.mp4", "Veo3.1/real/b.mp4",
        "Veo3.1/fake/b_generated.mp4", "Veo3.1/fake/c_generated.mp4", "Runway/real/z.mp4", "Kling2.5/extra/q.mp4")
    put(tmp_path, b"notes", "readme.md")
    index = HiFiAVDFDataset().index(tmp_path)
    refs = {ref.clip_id: ref for ref in index.refs()}
    assert {k: (r.label, r.video_label, r.audio_label, r.category, r.group) for k, r in refs.items()} == {
        "Sora 2/real/a": (0, 0, 0, "Sora 2", "Sora 2/real/a"),
        "Sora 2/fake/a": (1, 1, None, "Sora 2", "Sora 2/real/a"),
        "Veo3.1/real/b": (0, 0, 0, "Veo 3.1", "Veo3.1/real/b"),
        "Veo3.1/fake/b_generated": (1, 1, None, "Veo 3.1", "Veo3.1/real/b"),
        "Veo3.1/fake/c_generated": (1, 1, None, "Veo 3.1", "Veo3.1/fake/c_generated"),
    }
    assert index.problems == [
        "Runway/: no one generator in its name (sora, veo, kling, wan, pixverse, seedance); its 1 video(s) left out",
        "Veo3.1/fake/c_generated.mp4: fake without its paired real; kept as a group of its own",
        f"{tmp_path}: 1 video file(s) outside <generator>/real/ and <generator>/fake/, not indexed: "
        "Kling2.5/extra/q.mp4",
    ]


def test_generator_names_map_to_published_subsets():
    assert [generator_of(n) for n in ("sora2", "HiFi_Veo-3.1", "KLING 2.5", "wan2.5", "pixverse_v5", "Seedance-1.0")] \
        == ["Sora 2", "Veo 3.1", "Kling 2.5", "WAN 2.5", "PixVerse V5", "Seedance 1.0"]
    assert generator_of("runway") is None and generator_of("sora_vs_veo") is None


def test_a_root_with_neither_layout_is_an_error(tmp_path):
    put(tmp_path, b"x", "videos/a.mp4")
    with pytest.raises(FileNotFoundError, match="no CSV and no generator folder"):
        HiFiAVDFDataset().index(tmp_path)
