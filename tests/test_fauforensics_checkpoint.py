"""FauForensics weights on the tiny twin: a checkpoint in the authors' layout reloads strictly to the same
outputs, each encoder initialises from a file in its public layout dropping only what the model lacks,
and a missing or unsafe file is refused with a message that says what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avbench.detectors.fauforensics.checkpoint import init_audio, init_fau, init_video, load_authors
from avbench.detectors.fauforensics.model import FauForensics, FauForensicsConfig, sinusoids
from avbench.weights import CheckpointError

TINY = FauForensicsConfig.tiny()

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def model(seed: int = 0) -> FauForensics:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FauForensics(TINY).eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, 3, TINY.frames, TINY.image_size, TINY.image_size, generator=g),
            torch.rand(2, TINY.audio_frames, TINY.n_mels, generator=g) * 2 - 1)


def test_an_authors_checkpoint_reloads_strictly_to_the_same_outputs(tmp_path):
    original = model()
    path = tmp_path / "net_end.pth"
    torch.save({"model": {f"module.{k}": v for k, v in original.state_dict().items()}, "epoch": 4}, path)
    reloaded = load_authors(path, config=TINY).eval()
    with torch.no_grad():
        for a, b in zip(original(*inputs()), reloaded(*inputs())):
            assert torch.equal(a, b)


def test_a_checkpoint_with_numpy_metrics_needs_trust_and_a_wrong_one_names_its_keys(tmp_path):
    state = model().state_dict()
    path = tmp_path / "net_best_val_auc.pth"
    torch.save({"model": state, "auc": np.float64(0.99), "acc": np.float64(0.98)}, path)
    with pytest.raises(CheckpointError, match="trusted_pickle=true"):
        load_authors(path, config=TINY)
    assert isinstance(load_authors(path, config=TINY, trusted=True), FauForensics)
    broken = tmp_path / "broken.pth"
    torch.save({"model": {**{k: v for k, v in state.items() if k != "queries"}, "extra.weight": torch.zeros(1)}},
               broken)
    with pytest.raises(CheckpointError, match=r"missing keys: queries.*unexpected keys: extra.weight"):
        load_authors(broken, config=TINY)


def test_the_fau_encoder_initialises_from_an_me_graphau_checkpoint_without_its_head(tmp_path):
    source = model(seed=1).FAUEncoder_cnn.state_dict()
    path = tmp_path / "MEFARG_resnet50_DISFA_fold1.pth"
    torch.save({"state_dict": {**{f"module.{k}": v for k, v in source.items()},
                               "module.head.main_class_linears.0.weight": torch.zeros(4, 4)}}, path)
    target = model()
    assert init_fau(target, path) == ["head.main_class_linears.0.weight"]
    assert all(torch.equal(target.FAUEncoder_cnn.state_dict()[k], v) for k, v in source.items())


def test_the_video_encoder_initialises_from_a_pytorchvideo_checkpoint_without_its_head(tmp_path):
    source = model(seed=1).VEncoder_cnn.state_dict()
    path = tmp_path / "CSN_32x2_R101.pyth"
    torch.save({"model_state": {**source, "blocks.5.proj.weight": torch.zeros(400, 256)}, "epoch": 60}, path)
    target = model()
    assert init_video(target, path) == ["blocks.5.proj.weight"]
    assert all(torch.equal(target.VEncoder_cnn.state_dict()[k], v) for k, v in source.items())


def test_the_audio_encoder_takes_whisper_weights_with_fewer_positions(tmp_path):
    source = model(seed=1).AEncoder.state_dict()
    encoder = {k: v.half() for k, v in source.items() if k != "encoder.positional_embedding"}
    encoder["encoder.positional_embedding"] = sinusoids(60, TINY.dim).half()  # Whisper's table is longer
    path = tmp_path / "base.pt"
    torch.save({"dims": {"n_mels": TINY.n_mels, "n_audio_ctx": 60}, "model_state_dict": {
        **encoder, "decoder.token_embedding.weight": torch.zeros(8, TINY.dim).half()}}, path)
    target = model()
    assert init_audio(target, path) == ["decoder.token_embedding.weight"]
    loaded = target.AEncoder.state_dict()
    for key, value in source.items():  # Whisper's fp16 weights, and the model's own 32-bit sinusoids
        expected = value if key == "encoder.positional_embedding" else value.half().float()
        torch.testing.assert_close(loaded[key], expected, rtol=0, atol=0)
    wrong = tmp_path / "wrong.pt"
    torch.save({"model_state_dict": {**encoder, "encoder.positional_embedding": torch.zeros(60, TINY.dim)}}, wrong)
    with pytest.raises(CheckpointError, match="not Whisper's sinusoids"):
        init_audio(target, wrong)


def test_a_missing_encoder_file_says_what_it_is_where_to_get_it_and_which_option_takes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CSN_32x2_R101.pyth.*-o video_weights=PATH"):
        init_video(model(), tmp_path / "nowhere.pyth")
    with pytest.raises(FileNotFoundError, match=r"ME-GraphAU.*-o fau_weights=PATH"):
        init_fau(model(), tmp_path / "nowhere.pth")
