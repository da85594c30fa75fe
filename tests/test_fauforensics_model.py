"""FauForensics' network: the full size against the authors' state-dict table (a copy of
specs/fauforensics_state_dict.tsv), and on the tiny twin the properties the spec states: TAP
ignores its scales and normalises columns, audio tokens are means of pairs, the FAU encoder is
frozen, the heads' shapes, the 0.8/0.1/0.1 loss."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avbench.detectors.fauforensics.model import FauForensics, FauForensicsConfig, loss, similarity_map

TABLE = Path(__file__).parent / "data" / "fauforensics" / "fauforensics_state_dict.tsv"
TINY = FauForensicsConfig.tiny()

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny(classes: int = 2, seed: int = 0) -> FauForensics:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FauForensics(FauForensicsConfig.tiny(classes)).eval()


def inputs(cfg: FauForensicsConfig = TINY, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, cfg.frames, cfg.image_size, cfg.image_size, generator=g),
            torch.rand(batch, cfg.audio_frames, cfg.n_mels, generator=g) * 2 - 1)


def test_the_full_size_state_dict_is_the_authors_table_key_for_key():
    rows = list(csv.DictReader(TABLE.open(), delimiter="\t"))
    with torch.device("meta"):
        model = FauForensics(FauForensicsConfig())
    state = model.state_dict()
    assert list(state) == [r["key"] for r in rows]  # same keys, same order
    buffers = {name for name, _ in model.named_buffers()}
    for r in rows:
        shape = [2 if s == "C" else int(s) for s in r["shape"].strip("[]").replace("'", "").split(", ") if s]
        assert list(state[r["key"]].shape) == shape, r["key"]
        assert (r["key"] in buffers) == r["kind"].startswith("buffer"), r["key"]
    parameters = list(model.parameters())
    assert sum(p.numel() for p in parameters) == 68_023_785
    assert sum(p.numel() for p in parameters if not p.requires_grad) == 24_558_144  # the FAU encoder
    with torch.device("meta"):
        logits = model(*(torch.empty(s) for s in ((2, 3, 25, 112, 112), (2, 100, 80))))
    assert [tuple(t.shape) for t in logits] == [(2, 2), (2, 2), (2, 2)]


def test_the_tiny_twin_gives_three_heads_and_the_four_class_joint_head():
    video, mel = inputs()
    logits = tiny()(video, mel)
    assert [tuple(t.shape) for t in logits] == [(2, 2), (2, 2), (2, 2)]
    assert tiny(classes=4)(video, mel).joint.shape == (2, 4)
    assert sum(p.numel() for p in tiny().parameters()) < 500_000


def test_tap_ignores_its_scales_and_gives_unit_columns():
    g = torch.Generator().manual_seed(0)
    rows, columns = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    m = similarity_map(rows, columns, torch.tensor(2.7))
    torch.testing.assert_close(m, similarity_map(rows, columns, torch.tensor(-1.0)))
    torch.testing.assert_close(m.view(2, 5, 5).norm(dim=1), torch.ones(2, 5))  # each column, over the rows
    cosine = F.cosine_similarity(rows[0, 1], columns[0, 3], dim=0)  # entry (1, 3), row-major at 5 * 1 + 3
    column = F.cosine_similarity(rows[0], columns[0, 3][None], dim=1)
    torch.testing.assert_close(m[0, 8], cosine / column.norm())


def test_audio_tokens_are_means_of_consecutive_whisper_tokens():
    model, (_, mel) = tiny(), inputs()
    whisper = model.AEncoder.encoder(mel.transpose(1, 2))
    assert whisper.shape == (2, TINY.audio_ctx, TINY.dim)
    torch.testing.assert_close(model.AEncoder(mel.transpose(1, 2))[:, 3], whisper[:, 6:8].mean(dim=1))


def test_the_fau_encoder_is_frozen_and_the_rest_trains():
    model = tiny().train()
    video, mel = inputs()
    logits = model(video, mel)
    loss(logits, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 0])).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.FAUEncoder_cnn.parameters())
    assert model.v_pool.weight.grad is not None and model.AEncoder.encoder.conv1.weight.grad is not None
    assert model.queries.grad is not None


def test_the_loss_mixes_the_heads_point_eight_point_one_point_one():
    g = torch.Generator().manual_seed(0)
    from avbench.detectors.fauforensics.model import Logits

    logits = Logits(*(torch.randn(3, 2, generator=g) for _ in range(3)))
    y, ya, yv = torch.tensor([1, 0, 1]), torch.tensor([1, 0, 0]), torch.tensor([0, 0, 1])
    expected = (0.8 * F.cross_entropy(logits.joint, y) + 0.1 * F.cross_entropy(logits.audio, ya)
                + 0.1 * F.cross_entropy(logits.visual, yv))
    torch.testing.assert_close(loss(logits, y, ya, yv), expected)


def test_frozen_fau_batchnorms_stay_in_eval_mode_while_the_rest_trains():
    model = tiny()
    model.train()
    assert model.FAUEncoder_cnn.training and model.VEncoder_cnn.training  # the authors' code: train mode
    model.fau_bn = "frozen"
    model.train()
    assert not model.FAUEncoder_cnn.training and model.VEncoder_cnn.training
    before = model.FAUEncoder_cnn.backbone.bn1.running_mean.clone()
    model(*inputs())
    assert torch.equal(model.FAUEncoder_cnn.backbone.bn1.running_mean, before)
