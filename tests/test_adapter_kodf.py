"""The `kodf` adapter on AI-Hub's Korean metadata CSVs (UTF-8 and CP949) and on the international folders."""

import unicodedata

import pytest

from avbench.datasets.kodf import KoDFDataset
from avbench.testing_datasets import clip_bytes, put


@pytest.fixture(scope="module")
def video_bytes():
    """One real 1 s clip, copied to every path of a fixture (the adapter indexes, it does not decode)."""
    return clip_bytes(seconds=1.0, size=128)




def by_id(index):
    return {ref.clip_id: ref for ref in index.refs()}


TRAIN, VAL = "1.Training", "2.Validation"
REAL_TRAIN_CSV = f"{TRAIN}/라벨링데이터/train_meta_data/원본영상_training_메타데이터.csv"
FAKE_TRAIN_CSV = f"{TRAIN}/라벨링데이터/train_meta_data/변조영상_training_메타데이터.csv"
# unpacked on macOS: the name is decomposed (NFD), and must still be recognised
REAL_VAL_CSV = unicodedata.normalize("NFD", f"{VAL}/라벨링데이터/validate_meta_data/원본영상_validation_메타데이터.csv")
FAKE_VAL_CSV = f"{VAL}/라벨링데이터/validate_meta_data/변조영상_validation_메타데이터.csv"

REAL_TRAIN = """영상ID,UUID,인물성별,촬영장소,촬영시작,스크립트파일,시나리오번호
0001_001.mp4,0001,남,실내,0,s1.txt,1
0002_001.mp4,0002,여,실내,0,s1.txt,1
0003_001.mp4,0003,여,실외,0,s2.txt,2
0001_002,0001,남,실내,0,s2.txt,2
"""
FAKE_TRAIN = """영상ID,타겟영상,타겟UUID,소스UUID,변조모델,촬영시작,인물성별
0001_0002_1_0001.mp4,0001_001.mp4,0001,0002,dfl,0,남
0002_0001_1_0001.mp4,0002_001.mp4,0002,0001,FSGAN,0,여
0001_0002_3_0001.mp4,0001_001.mp4,0001,0002,deepfake,0,남
0002_0001_4_0001.mp4,0002_001.mp4,0002,0001,wav2lip,0,여,extra
"""
# the validation CSVs come in CP949 and without the UUID columns
REAL_VAL = """영상ID,인물성별
0004_001.mp4,남
0002_001.mp4,여
"""
FAKE_VAL = """영상ID,타겟영상,변조모델,인물성별
0004_0001_5_0001.mp4,0004_001.mp4,atfhp,남
,0004_001.mp4,fo,남
"""


def ai_hub(root, video_bytes):
    for csv_path, text, encoding in ((REAL_TRAIN_CSV, REAL_TRAIN, "utf-8-sig"), (FAKE_TRAIN_CSV, FAKE_TRAIN, "utf-8"),
                                     (REAL_VAL_CSV, REAL_VAL, "cp949"), (FAKE_VAL_CSV, FAKE_VAL, "cp949")):
        put(root, text.encode(encoding), csv_path)
    put(root, REAL_TRAIN.encode("utf-8"), f"{TRAIN}/라벨링데이터/train_meta_data/원본영상_training_메타데이터 (1).csv")
    put(root, video_bytes,
        f"{TRAIN}/원천데이터/train_원본/원본1/0001/0001_001.mp4",
        f"{TRAIN}/원천데이터/train_원본/원본1/0001/0001_002.mp4",
        f"{TRAIN}/원천데이터/train_원본/원본1/0001/._0001_001.mp4",  # macOS AppleDouble file: not a video
        f"{TRAIN}/원천데이터/train_원본/원본1/0002/0002_001.mp4",
        f"{TRAIN}/원천데이터/train_탐지방해/원본영상/01_blur/0001_002.mp4",
        f"{TRAIN}/원천데이터/train_변조/dfl1/0001/0001_0002_1_0001.mp4",
        f"{TRAIN}/원천데이터/train_변조/fsgan1/0002/0002_0001_1_0001.mp4",
        f"{TRAIN}/원천데이터/train_변조/dfl1/0001/0001_0002_3_0001.mp4",
        f"{TRAIN}/원천데이터/train_변조/audio_driven1/0002/0002_0001_4_0001.mp4",
        f"{TRAIN}/원천데이터/train_변조/fo1/0009/0009_0001_2_0001.mp4",
        f"{VAL}/원천데이터/validate_원본/원본1/0004/0004_001.mp4",
        f"{VAL}/원천데이터/validate_변조/audio_driven1/0004/0004_0001_5_0001.mp4")


def test_ai_hub_layout(tmp_path, video_bytes):
    ai_hub(tmp_path, video_bytes)
    index = KoDFDataset().index(tmp_path)
    refs = by_id(index)
    src = f"{TRAIN}/원천데이터"
    expected = {  # clip id: label, category, identity, group, split, meta
        f"{src}/train_원본/원본1/0001/0001_001": (0, "real", "0001", "0001_001", "train", {"gender": "남"}),
        f"{src}/train_원본/원본1/0002/0002_001": (0, "real", "0002", "0002_001", "train", {"gender": "여"}),
        "0003_001": (0, "real", "0003", "0003_001", "train", {"gender": "여"}),
        f"{src}/train_원본/원본1/0001/0001_002": (0, "real", "0001", "0001_002", "train", {"gender": "남"}),
        f"{src}/train_변조/dfl1/0001/0001_0002_1_0001":
            (1, "dfl", "0001", "0001_001", "train", {"gender": "남", "source_identity": "0002"}),
        f"{src}/train_변조/fsgan1/0002/0002_0001_1_0001":
            (1, "fsgan", "0002", "0002_001", "train", {"gender": "여", "source_identity": "0001"}),
        f"{VAL}/원천데이터/validate_원본/원본1/0004/0004_001": (0, "real", "0004", "0004_001", "val", {"gender": "남"}),
        f"{VAL}/원천데이터/validate_변조/audio_driven1/0004/0004_0001_5_0001":
            (1, "atfhp", "0004", "0004_001", "val", {"gender": "남"}),
    }
    assert {k: (r.label, r.category, r.identity, r.group, r.split, r.meta) for k, r in refs.items()} == expected
    for ref in refs.values():
        assert (ref.dataset, ref.video_label, ref.audio_label, ref.audio_path) == ("kodf", ref.label, 0, None)
        assert ref.method == ("" if ref.label == 0 else ref.category)
        assert ref.path.is_file() or ref.clip_id == "0003_001"
    assert refs["0003_001"].path == tmp_path / "0003_001.mp4"
    assert index.problems == [
        f"{TRAIN}/라벨링데이터/train_meta_data/원본영상_training_메타데이터 (1).csv: not a KoDF metadata file name "
        "(원본영상|변조영상_training|validation_메타데이터.csv); skipped",
        "변조영상_training_메타데이터.csv line 4: 0001_0002_3_0001.mp4: unknown 변조모델 'deepfake' "
        "(known: dfl, dffs, fsgan, fo, atfhp, wav2lip); left out",
        "변조영상_training_메타데이터.csv line 5: more fields than the header has columns; left out",
        f"원본영상_training_메타데이터.csv line 4: video 0003_001.mp4 not found under {tmp_path}; "
        "kept, runs will count it as failed",
        f"원본영상_training_메타데이터.csv line 5: 0001_002 matches 2 files ({src}/train_원본/원본1/0001/0001_002.mp4, "
        f"{src}/train_탐지방해/원본영상/01_blur/0001_002.mp4); kept {src}/train_원본/원본1/0001/0001_002.mp4",
        "변조영상_validation_메타데이터.csv line 3: empty 영상ID; left out",
        f"원본영상_validation_메타데이터.csv line 3: same clip id '{src}/train_원본/원본1/0002/0002_001' as "
        "원본영상_training_메타데이터.csv line 3, conflicts (split 'val' vs 'train'); the first is kept",
        f"{tmp_path}: 1 video file(s) listed in no metadata CSV, not indexed: "
        f"{src}/train_변조/fo1/0009/0009_0001_2_0001.mp4",
    ]


def test_unreadable_csv_and_missing_columns_fail_loudly(tmp_path):
    put(tmp_path, b"\xff\xfe\xff not text", REAL_TRAIN_CSV)
    with pytest.raises(ValueError, match=r"원본영상_training_메타데이터\.csv: cannot decode as utf-8-sig or cp949"):
        KoDFDataset().index(tmp_path)
    put(tmp_path, "영상ID,인물성별\n0001_0002_1_0001.mp4,남\n".encode(), FAKE_TRAIN_CSV)
    put(tmp_path, REAL_TRAIN.encode(), REAL_TRAIN_CSV)
    with pytest.raises(ValueError, match="변조영상_training_메타데이터.csv: missing column.s. 변조모델; found 영상ID, 인물성별"):
        KoDFDataset().index(tmp_path)


def test_international_layout_labels_from_folders(tmp_path, video_bytes):
    put(tmp_path, video_bytes, "original_videos/0001/0001_001.mp4", "original_videos/0002/0002_003.mp4",
        "synthesized_videos/dfl/0001/0001_0002_1_0001.mp4", "synthesized_videos/FO/0002/0002_0001_2_0001.mp4",
        "synthesized_videos/audio_driven/0002/0002_0001_4_0001.mp4", "synthesized_videos/loose.mp4")
    put(tmp_path, b"notes", "original_videos/README.txt")
    index = KoDFDataset().index(tmp_path)
    assert {k: (r.label, r.category, r.method, r.identity, r.group, r.split) for k, r in by_id(index).items()} == {
        "original_videos/0001/0001_001": (0, "real", "", "0001", "0001_001", ""),
        "original_videos/0002/0002_003": (0, "real", "", "0002", "0002_003", ""),
        "synthesized_videos/dfl/0001/0001_0002_1_0001": (1, "dfl", "dfl", "0001", "", ""),
        "synthesized_videos/FO/0002/0002_0001_2_0001": (1, "fo", "fo", "0002", "", ""),
    }
    assert index.problems == [
        "synthesized_videos/audio_driven/: unknown method folder (known: dfl, dffs, fsgan, fo, atfhp, wav2lip); "
        "its 1 video(s) left out",
        f"{tmp_path}: 1 video file(s) outside original_videos/ and synthesized_videos/<method>/, not indexed: "
        "synthesized_videos/loose.mp4",
    ]


def test_a_root_with_neither_layout_is_an_error(tmp_path):
    put(tmp_path, b"x", "videos/a.mp4")
    with pytest.raises(FileNotFoundError, match="neither KoDF metadata CSVs"):
        KoDFDataset().index(tmp_path)
