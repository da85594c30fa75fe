"""The `fakeavceleb` adapter on a copy of FakeAVCeleb v1.2's layout: shifted meta_data.csv header, race folders
with spaces and parentheses, a root not named FakeAVCeleb, and the metadata's known faults."""

import pytest

from avbench.datasets.fakeavceleb import FakeAVCelebDataset
from avbench.testing_datasets import clip_bytes, put


@pytest.fixture(scope="module")
def video_bytes():
    """One real 1 s clip, copied to every path of a fixture (the adapter indexes, it does not decode)."""
    return clip_bytes(seconds=1.0, size=128)




AF, AS = "African/men", "Asian (South)/women"
RR, RF, FR, FF = "RealVideo-RealAudio", "RealVideo-FakeAudio", "FakeVideo-RealAudio", "FakeVideo-FakeAudio"
# the header names 9 columns and ends with a comma; rows hold the file name under `path` and the directory
# in the unnamed 10th field, under the authors' folder name
METADATA = f"""source,target1,target2,method,category,type,race,gender,path,
id00076,-,-,real,A,{RR},African,men,00109.mp4,FakeAVCeleb/{RR}/{AF}/id00076
id00166,-,-,real,A,{RR},African,men,00010.mp4,FakeAVCeleb/{RR}/{AF}/id00166
id07689,-,-,real,A,{RR},Asian (South),women,00028.mp4,FakeAVCeleb/{RR}/{AS}/id07689
id00076,-,-,rtvc,B,{RF},African,men,00109_fake.mp4,FakeAVCeleb/{RF}/{AF}/id00076
id07689,-,-,rtvc,B,{RF},Asian (South),women,00028_fake.mp4,FakeAVCeleb/{RF}/{AS}/id07689
id00076,id00166,-,wav2lip,C,{FR},African,men,00109_id00166_wavtolip.mp4,FakeAVCeleb/{FR}/{AF}/id00076
id00076,id00166,-,faceswap,C,{FR},African,men,00109_id00166_faceswap.mp4,FakeAVCeleb/{FR}/{AF}/id00076
id07689,id00166,-,fsgan,C,{FR},Asian (South),women,00028_id00166_fsgan.mp4,FakeAVCeleb/{FR}/{AS}/id07689
id00076,id00166,10,wav2lip,D,{FF},African,men,00109_10_id00166_wavtolip.mp4,FakeAVCeleb/{FF}/{AF}/id00076
id00166,id00076,3,faceswap-wav2lip,D,{FF},African,men,00010_3_id00076_wavtolip.mp4,FakeAVCeleb/{FF}/{AF}/id00166
id07689,id00747,-,fsgan-wav2lip,D,{FF},Asian (South),women,00028_id00747_wavtolip.mp4,FakeAVCeleb/{FF}/{AS}/id07689
id07689,id00747,-,wav2lip,D,{FF},Asian (South),women,00028_id00747_wavtolip.mp4,FakeAVCeleb/{FF}/{AS}/id07689
id00166,id00076,-,deepfacelab,C,{FR},African,men,00010_id00076_dfl.mp4,FakeAVCeleb/{FR}/{AF}/id00166
id00166,-,-,rtvc,B,{RF},African,men,00010_fake.mp4,FakeAVCeleb/{RF}/{AF}/id00166
id00166,-,-,wav2lip,D,{FF},African,men
id00166,-,-,rtvc,E,{RF},African,men,00010_fake2.mp4,FakeAVCeleb/{RF}/{AF}/id00166
id00166,id00076,-,wav2lip,C,{FF},African,men,00010_id00076_wavtolip.mp4,FakeAVCeleb/{FF}/{AF}/id00166
id00166,-,-,real,A,{RR},African,men,,FakeAVCeleb/{RR}/{AF}/id00166

"""
ON_DISK = [
    f"{RR}/{AF}/id00076/00109.mp4", f"{RR}/{AF}/id00166/00010.mp4", f"{RR}/{AS}/id07689/00028.mp4",
    f"{RF}/{AF}/id00076/00109_fake.mp4", f"{RF}/{AS}/id07689/00028_fake.mp4",
    f"{FR}/{AF}/id00076/00109_id00166_wavtolip.mp4", f"{FR}/{AF}/id00076/00109_id00166_faceswap.mp4",
    f"{FR}/{AS}/id07689/00028_id00166_fsgan.mp4", f"{FF}/{AF}/id00076/00109_10_id00166_wavtolip.mp4",
    f"{FF}/{AF}/id00166/00010_3_id00076_wavtolip.mp4", f"{FF}/{AS}/id07689/00028_id00747_wavtolip.mp4",
    f"{FR}/{AF}/id00166/00010_id00076_dfl.mp4",  # its row has an unknown method: reported once, not as unlisted
    f"{FF}/{AF}/id00166/00010_id00076_wavtolip.mp4",  # its row puts a category C clip in the D folder
    f"{FF}/{AF}/id00076/00109_9_id09999_wavtolip.mp4",  # listed in no row
]


@pytest.fixture
def root(tmp_path, video_bytes):
    root = tmp_path / "FakeAVCeleb_v1.2"
    put(root, video_bytes, *ON_DISK)
    put(root, b"youtube id and timestamps", f"{RR}/{AF}/id00076/00109.txt")  # not a video: ignored
    (root / "meta_data.csv").write_text(METADATA, encoding="utf-8")
    return root


def test_indexes_meta_data_with_its_shifted_header(root):
    index = FakeAVCelebDataset().index(root)
    refs = {ref.clip_id: ref for ref in index.refs()}
    assert {k: (r.label, r.video_label, r.audio_label, r.category, r.method, r.identity, r.group)
            for k, r in refs.items()} == {
        f"{RR}/{AF}/id00076/00109": (0, 0, 0, "real", "real", "id00076", "id00076/00109"),
        f"{RR}/{AF}/id00166/00010": (0, 0, 0, "real", "real", "id00166", "id00166/00010"),
        f"{RR}/{AS}/id07689/00028": (0, 0, 0, "real", "real", "id07689", "id07689/00028"),
        f"{RF}/{AF}/id00076/00109_fake": (1, 0, 1, "RVFA", "rtvc", "id00076", "id00076/00109"),
        f"{RF}/{AS}/id07689/00028_fake": (1, 0, 1, "RVFA", "rtvc", "id07689", "id07689/00028"),
        f"{RF}/{AF}/id00166/00010_fake": (1, 0, 1, "RVFA", "rtvc", "id00166", "id00166/00010"),
        f"{FR}/{AF}/id00076/00109_id00166_wavtolip": (1, 1, 0, "FVRA-WL", "wav2lip", "id00076", "id00076/00109"),
        f"{FR}/{AF}/id00076/00109_id00166_faceswap": (1, 1, 0, "FVRA-FS", "faceswap", "id00076", "id00076/00109"),
        f"{FR}/{AS}/id07689/00028_id00166_fsgan": (1, 1, 0, "FVRA-GAN", "fsgan", "id07689", "id07689/00028"),
        f"{FF}/{AF}/id00076/00109_10_id00166_wavtolip": (1, 1, 1, "FVFA-WL", "wav2lip", "id00076", "id00076/00109"),
        f"{FF}/{AF}/id00166/00010_3_id00076_wavtolip":
            (1, 1, 1, "FVFA-FS", "faceswap-wav2lip", "id00166", "id00166/00010"),
        f"{FF}/{AS}/id07689/00028_id00747_wavtolip": (1, 1, 1, "FVFA-GAN", "fsgan-wav2lip", "id07689", "id07689/00028"),
    }
    for clip_id, ref in refs.items():
        assert (ref.dataset, ref.split, ref.audio_path, ref.fake_segments) == ("fakeavceleb", "", None, ())
        assert ref.path == root / f"{clip_id}.mp4"
    assert refs[f"{FF}/{AS}/id07689/00028_id00747_wavtolip"].meta == {
        "race": "Asian (South)", "gender": "women", "target1": "id00747", "target2": "-", "type": "D"}
    assert refs[f"{FF}/{AF}/id00076/00109_10_id00166_wavtolip"].meta["target2"] == "10"
    assert index.problems == [
        f"meta_data.csv line 14: {FR}/{AF}/id00166/00010_id00076_dfl.mp4: unknown method 'deepfacelab' for "
        "category C (known: wav2lip, faceswap, fsgan); left out",
        "meta_data.csv line 16: 8 fields, expected 10 (source,target1,target2,method,category,type,race,gender,"
        "path,directory); left out",
        f"meta_data.csv line 17: {RF}/{AF}/id00166/00010_fake2.mp4: unknown category 'E' (known: A, B, C, D); "
        "left out",
        f"meta_data.csv line 18: {FF}/{AF}/id00166/00010_id00076_wavtolip.mp4: category C belongs in {FR}/, not in "
        f"'FakeAVCeleb/{FF}/{AF}/id00166'; left out",
        f"meta_data.csv line 19: source 'id00166', file '', directory 'FakeAVCeleb/{RR}/{AF}/id00166': incomplete; "
        "left out",
        f"meta_data.csv line 13: same clip id '{FF}/{AS}/id07689/00028_id00747_wavtolip' as meta_data.csv line 12, "
        "conflicts (method 'wav2lip' vs 'fsgan-wav2lip', category 'FVFA-WL' vs 'FVFA-GAN'); the first is kept",
        f"meta_data.csv line 15: {RF}/{AF}/id00166/00010_fake.mp4 not found under {root}; kept, runs will count "
        "it as failed",
        f"{root}: 1 video file(s) listed in no row of meta_data.csv, not indexed: "
        f"{FF}/{AF}/id00076/00109_9_id09999_wavtolip.mp4",
    ]


def test_the_index_survives_parquet(root, tmp_path):
    index = FakeAVCelebDataset().index(root)
    loaded = type(index).load(index.save(tmp_path / "fakeavceleb.parquet"))
    assert loaded.fingerprint() == index.fingerprint() and len(loaded) == 12


def test_a_root_without_meta_data_is_an_error(tmp_path, video_bytes):
    put(tmp_path, video_bytes, f"FakeAVCeleb_v1.2/{RR}/{AF}/id00076/00109.mp4")
    with pytest.raises(FileNotFoundError, match="meta_data.csv not found"):
        FakeAVCelebDataset().index(tmp_path)


def test_a_header_that_is_not_fakeavcelebs_is_an_error(tmp_path):
    (tmp_path / "meta_data.csv").write_text("path,label\nx.mp4,0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is not FakeAVCeleb's"):
        FakeAVCelebDataset().index(tmp_path)
