"""The generated demo corpus: real H.264/AAC media, the promised categories and labels, faces dlib
finds, mouths that follow the speech, shifted audio where it should be, and an index that matches."""

import csv
import shutil

import av
import numpy as np
import pytest
from scipy import signal

from avbench.datasets.demo import DemoDataset
from avbench.demo import generate_corpus
from avbench.faces import largest_face

pytestmark = pytest.mark.slow

IDENTITIES, SECONDS, FPS, SIZE, RATE = 3, 2.0, 25, 128, 16000
# label, video_label, audio_label, method: what each category promises, written out independently
EXPECTED = {
    "real": ("0", "0", "0", ""),
    "fake_audio": ("1", "0", "1", "voice_clone"),
    "lipsync": ("1", "1", "0", "lipsync_gan"),
    "both": ("1", "1", "1", "lipsync_gan+voice_clone"),
    "desync": ("1", "0", "0", "av_shift"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_corpus")
    generate_corpus(root, identities=IDENTITIES, real_per_identity=1, seconds=SECONDS, fps=FPS, size=SIZE)
    return root


def rows(root):
    with open(root / "metadata.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def decode(path):
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frames, audio


def test_every_clip_is_h264_with_aac_at_16khz(corpus):
    for row in rows(corpus):
        with av.open(str(corpus / row["path"])) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264", row["path"]
            assert (video.codec_context.width, video.codec_context.height) == (SIZE, SIZE)
            assert audio.codec_context.name == "aac" and audio.codec_context.sample_rate == RATE, row["path"]
            assert sum(1 for _ in container.decode(video=0)) == SECONDS * FPS


def test_categories_labels_and_groups(corpus):
    table = rows(corpus)
    assert [r["path"] for r in table] == sorted(r["path"] for r in table)
    assert {c: sum(r["category"] == c for r in table) for c in EXPECTED} == dict.fromkeys(EXPECTED, IDENTITIES)
    real_ids = {r["path"][:-4] for r in table if r["category"] == "real"}
    for r in table:
        category, identity = r["category"], r["identity"]
        assert (r["label"], r["video_label"], r["audio_label"], r["method"]) == EXPECTED[category], r["path"]
        assert r["path"].startswith(f"{category}/{identity}/") and r["path"].endswith(".mp4")
        assert (corpus / r["path"]).is_file() and r["split"] == ""
        assert r["group"] in real_ids and r["group"].startswith(f"real/{identity}/")
        assert (r["voice_identity"] != identity) == (category in ("fake_audio", "both")), r["path"]
        assert (float(r["audio_offset_s"]) != 0) == (category == "desync"), r["path"]
        assert 0 <= int(r["source_face"]) < 100
    assert len({r["source_face"] for r in table}) == IDENTITIES
    assert "synthetic" in (corpus / "README.txt").read_text()


def test_same_seed_same_corpus_other_seed_other_corpus(tmp_path):
    def make(name, seed):
        root = generate_corpus(tmp_path / name, identities=2, real_per_identity=1, seconds=0.4, size=128, seed=seed)
        return (root / "metadata.csv").read_bytes(), decode(root / "lipsync/id00/c0.mp4")[0]

    (meta_a, frames_a), (meta_b, frames_b), (meta_c, frames_c) = make("a", 7), make("b", 7), make("c", 8)
    assert meta_a == meta_b and np.array_equal(frames_a, frames_b)
    assert meta_a != meta_c and not np.array_equal(frames_a, frames_c)


def test_dlib_finds_a_face_in_every_clip(corpus):
    for row in rows(corpus):
        frames, _ = decode(corpus / row["path"])
        assert largest_face(frames[len(frames) // 2]) is not None, row["path"]


def mouth_against_loudness(frames, audio, lead=1):
    """Per frame: darkness of the mouth box (found once by dlib) and audio RMS `lead` frames later, z-scored."""
    lips = largest_face(frames[0]).landmarks[48:68]
    width = lips[:, 0].max() - lips[:, 0].min()
    x0, x1 = int(lips[:, 0].min()), int(lips[:, 0].max()) + 1
    y0, y1 = int(lips[:, 1].min()), int(lips[:, 1].max() + 0.3 * width)
    darkness = -frames[:, y0:y1, x0:x1].mean(axis=(1, 2, 3))
    hop = RATE // FPS
    rms = np.sqrt([np.mean(audio[k * hop:(k + 1) * hop] ** 2) for k in range(len(frames))])
    return zscore(darkness[:len(frames) - lead]), zscore(rms[lead:])


def zscore(x):
    return (x - x.mean()) / x.std()


def pooled_correlation(pairs):
    mouth, loudness = (np.concatenate(side) for side in zip(*pairs))
    return np.corrcoef(mouth, loudness)[0, 1]


def test_the_mouth_opens_with_the_speech_in_real_clips_only(corpus):
    """The same pixels against their own audio and against the cloned voice laid over them."""
    own, other = [], []
    for i in range(IDENTITIES):
        frames, audio = decode(corpus / f"real/id{i:02d}/c0.mp4")
        _, cloned = decode(corpus / f"fake_audio/id{i:02d}/c0.mp4")
        own.append(mouth_against_loudness(frames, audio))
        other.append(mouth_against_loudness(frames, cloned))
    assert pooled_correlation(own) > 0.3
    assert pooled_correlation(other) < pooled_correlation(own) - 0.3


def test_desync_audio_is_the_real_audio_shifted(corpus):
    for row in (r for r in rows(corpus) if r["category"] == "desync"):
        offset = float(row["audio_offset_s"])
        assert 0.3 <= abs(offset) <= 0.6
        frames, shifted = decode(corpus / row["path"])
        real_frames, real = decode(corpus / f"{row['group']}.mp4")
        assert np.array_equal(frames, real_frames)  # the video is the real clip's
        n = int(SECONDS * RATE)
        score = signal.correlate(shifted[:n], real[:n], mode="full")
        lag = signal.correlation_lags(n, n)[np.argmax(score)]
        assert abs(lag / RATE - offset) < 0.01, row["path"]  # heard at t what was said at t - offset


def test_demo_index_matches_the_metadata(corpus):
    index = DemoDataset().index(corpus)
    table = rows(corpus)
    assert index.problems == [] and len(index) == len(table)
    refs = {ref.clip_id: ref for ref in index.refs()}
    for r in table:
        ref = refs[r["path"][:-4]]
        assert ref.dataset == "demo" and ref.path == corpus / r["path"] and ref.audio_path is None
        labels = tuple(int(r[c]) for c in ("label", "video_label", "audio_label"))
        assert (ref.label, ref.video_label, ref.audio_label) == labels
        assert (ref.method, ref.category, ref.identity, ref.group, ref.split) == (
            r["method"], r["category"], r["identity"], r["group"], "")
        assert ref.meta == {"source_face": int(r["source_face"]), "voice_identity": r["voice_identity"],
                            "audio_offset_s": float(r["audio_offset_s"])}


def test_demo_index_reports_missing_media_and_malformed_rows(corpus, tmp_path):
    table = rows(corpus)
    kept = table[0]
    shutil.copytree(corpus / kept["category"], tmp_path / kept["category"])
    missing = next(r for r in table if r["category"] != kept["category"])
    edited = [kept, dict(kept, label="2"), dict(kept, category="deepfake"), dict(kept, source_face="lfw"),
              missing, kept]
    with open(tmp_path / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(kept))
        writer.writeheader()
        writer.writerows(edited)
    index = DemoDataset().index(tmp_path)
    assert [ref.clip_id for ref in index.refs()] == [kept["path"][:-4], missing["path"][:-4]]
    assert len(index.problems) == 5
    for line, reason in ((3, "do not fit category"), (4, "unknown category 'deepfake'"), (5, "is not a number"),
                         (6, "media file not found")):
        assert sum(p.startswith(f"metadata.csv line {line}: ") and reason in p for p in index.problems) == 1, reason
    assert sum(p.startswith(kept["path"]) and "same clip id" in p for p in index.problems) == 1


def test_demo_index_without_metadata_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="avbench demo"):
        DemoDataset().index(tmp_path)


def test_corpus_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="at least 2 identities"):
        generate_corpus(tmp_path, identities=1)
    with pytest.raises(ValueError, match="even"):
        generate_corpus(tmp_path, size=131)
