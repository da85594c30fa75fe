"""AV-HuBERT in plain PyTorch: the authors' key names and shapes, fairseq's encoder outputs, the
extract_finetune semantics, strict loading, the fairseq-free converter and the input preprocessing."""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import python_speech_features
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from avbench.detectors.avhubert import (AVHubert, AVHubertConfig, FEATURE_RATE, audio_features,
                                        convert_fairseq_checkpoint, infer_config, load, mouth_features,
                                        reinitialise)
from avbench.detectors.avhubert.model import frame_padding_mask
from avbench.detectors.avhubert.preprocess import grey
from avbench.io import sha256_file

DATA = Path(__file__).parent / "data" / "avhubert"
TINY = AVHubertConfig.tiny()


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_model(seed: int = 0, **changes) -> AVHubert:
    """A tiny model with every tensor non-trivial (LayerNorm affine, BatchNorm statistics included)."""
    model = reinitialise(AVHubert(dataclasses.replace(TINY, **changes)), seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            elif tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=gen))
    return model


def inputs(batch: int = 2, frames: int = 10, size: int = 32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 104, frames, generator=gen),
            torch.randn(batch, 1, frames, size, size, generator=gen))


# ---------------------------------------------------------------------------------------------------
# architecture and configuration

def _table(name: str) -> list[tuple[str, str, str]]:
    lines = (DATA / f"avhubert_{name}_state_dict.tsv").read_text().splitlines()[1:]
    return [tuple(line.split("\t")) for line in lines]


@pytest.mark.parametrize("name,params", [("base", 103.33e6), ("large", 325.40e6)])
def test_state_dict_equals_the_authors_table(name, params):
    with torch.device("meta"):
        model = AVHubert(getattr(AVHubertConfig, name)())
    ours = [(key, "x".join(map(str, t.shape)) or "scalar", str(t.dtype).removeprefix("torch."))
            for key, t in model.state_dict().items()]
    assert ours == _table(name)          # keys, order, shapes, dtypes
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, abs=0.006e6)


def test_infer_config_recovers_the_configs():
    for config in (AVHubertConfig.base(), AVHubertConfig.large()):
        with torch.device("meta"):
            state_dict = AVHubert(config).state_dict()
        assert infer_config(state_dict) == config
    state_dict = AVHubert(TINY).state_dict()
    assert infer_config(state_dict, heads=2) == TINY
    with pytest.raises(ValueError, match="not a multiple of 64.*heads="):
        infer_config(state_dict)
    with pytest.raises(ValueError, match="unknown AVHubertConfig field"):
        infer_config(state_dict, heads=2, nheads=2)
    encoder_only = {k: v for k, v in state_dict.items() if k not in ("mask_emb", "label_embs_concat")
                    and not k.startswith("final_proj.")}
    assert infer_config(encoder_only, heads=2) == dataclasses.replace(
        TINY, mask_emb_dim=None, label_rows=None, label_dim=None, final_dim=None)
    with pytest.raises(ValueError, match="missing.*post_extract_proj.weight"):
        infer_config({k: v for k, v in state_dict.items() if k != "post_extract_proj.weight"})


# ---------------------------------------------------------------------------------------------------
# numerics

def test_encoder_reproduces_fairseq():
    ref = load_file(DATA / "reference.safetensors")
    model = AVHubert(TINY).eval()
    model.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in ref.items() if k.startswith("encoder.")},
                                  strict=True)
    with torch.no_grad():
        cases = [("out_final", ref["padding_mask"], None), ("out_layer1", ref["padding_mask"], 1),
                 ("out_final_nopad", None, None)]
        for name, padding_mask, output_layer in cases:
            torch.testing.assert_close(model.encoder(ref["x"], padding_mask, output_layer), ref[name],
                                       atol=1e-5, rtol=0, msg=name)


def _video_reference(sd: dict, video: torch.Tensor) -> torch.Tensor:
    """The visual front-end written out from the authors' facts, functionally, on the state dict."""
    def p(key):
        return sd[f"feature_extractor_video.{key}"]

    def bn(x, key):
        return F.batch_norm(x, p(f"{key}.running_mean"), p(f"{key}.running_var"), p(f"{key}.weight"),
                            p(f"{key}.bias"), training=False, eps=1e-5)

    x = F.conv3d(video, p("resnet.frontend3D.0.weight"), stride=(1, 2, 2), padding=(2, 3, 3))
    x = F.prelu(bn(x, "resnet.frontend3D.1"), p("resnet.frontend3D.2.weight"))
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    b, c, t, h, w = x.shape
    x = x.transpose(1, 2).reshape(b * t, c, h, w)
    for stage in range(1, 5):
        for block in range(2):
            k = f"resnet.trunk.layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            out = F.prelu(bn(F.conv2d(x, p(f"{k}.conv1.weight"), stride=stride, padding=1), f"{k}.bn1"),
                          p(f"{k}.relu1.weight"))
            out = bn(F.conv2d(out, p(f"{k}.conv2.weight"), padding=1), f"{k}.bn2")
            if f"feature_extractor_video.{k}.downsample.0.weight" in sd:
                x = bn(F.conv2d(x, p(f"{k}.downsample.0.weight"), stride=stride), f"{k}.downsample.1")
            x = F.prelu(out + x, p(f"{k}.relu2.weight"))
    return F.linear(x.mean((2, 3)).view(b, t, -1), p("proj.weight"), p("proj.bias"))


def _reference(model: AVHubert, audio, video, padding_mask=None):
    """extract_finetune from the spec: zeros for a missing modality after its front-end, LayerNorm(2D)
    over [audio, video], post_extract_proj, then the (fairseq-checked) encoder."""
    sd = model.state_dict()
    fa = None if audio is None else F.linear(audio.transpose(1, 2), sd["feature_extractor_audio.proj.weight"],
                                             sd["feature_extractor_audio.proj.bias"])
    fv = None if video is None else _video_reference(sd, video)
    fa = torch.zeros_like(fv) if fa is None else fa
    fv = torch.zeros_like(fa) if fv is None else fv
    x = F.layer_norm(torch.cat([fa, fv], -1), (2 * model.config.dim,), sd["layer_norm.weight"],
                     sd["layer_norm.bias"], 1e-5)
    x = F.linear(x, sd["post_extract_proj.weight"], sd["post_extract_proj.bias"])
    with torch.no_grad():
        return model.encoder(x, padding_mask)


def test_extract_matches_the_reference_for_every_modality_combination():
    model = tiny_model()
    audio, video = inputs()
    for a, v in ((audio, video), (audio, None), (None, video)):
        out = model.extract(audio=a, video=v)
        assert out.shape == (2, 10, TINY.dim)
        torch.testing.assert_close(out, _reference(model, a, v), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="neither"):
        model.extract()


def test_a_missing_modality_is_zeros_after_the_front_end_not_a_zero_input():
    model = tiny_model()
    audio, video = inputs()
    audio_only = model.extract(audio=audio)
    # a zero input still goes through the ResNet and the projection bias: a different result
    assert not torch.allclose(audio_only, model.extract(audio=audio, video=torch.zeros_like(video)), atol=1e-3)
    video_only = model.extract(video=video)
    assert not torch.allclose(video_only, model.extract(audio=torch.zeros_like(audio), video=video), atol=1e-3)
    # audio and video together differ from audio alone (the video is used, not ignored)
    assert not torch.allclose(audio_only, model.extract(audio=audio, video=video), atol=1e-3)


def test_output_layer_stops_early_and_skips_the_final_layer_norm():
    model = tiny_model()
    audio, video = inputs()
    full = model.extract(audio, video)
    last = model.extract(audio, video, output_layer=TINY.layers)
    torch.testing.assert_close(model.encoder.layer_norm(last), full)
    assert not torch.allclose(last, full, atol=1e-3)
    calls = []
    hook = model.encoder.layers[1].register_forward_hook(lambda *args: calls.append(1))
    first = model.extract(audio, video, output_layer=1)
    hook.remove()
    assert calls == [] and not torch.allclose(first, last, atol=1e-3)
    for bad in (0, TINY.layers + 1):
        with pytest.raises(ValueError, match="output_layer"):
            model.extract(audio, video, output_layer=bad)


def test_padded_frames_do_not_change_the_valid_ones():
    """A clip padded to a longer batch gives, on its own frames, the features it has alone."""
    model = tiny_model()
    audio, video = inputs(batch=1, frames=7)
    alone = model.extract(audio, video)
    padded_audio = torch.cat([audio, torch.randn(1, 104, 5)], dim=2)
    padded_video = torch.cat([video, torch.zeros(1, 1, 5, 32, 32)], dim=2)
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[:, 7:] = True
    batched = model.extract(padded_audio, padded_video, padding_mask=mask)
    torch.testing.assert_close(batched[:, :7], alone, atol=1e-5, rtol=0)
    assert not torch.allclose(model.extract(padded_audio, padded_video)[:, :7], alone, atol=1e-3)


def test_padding_mask_reduction_follows_the_authors():
    mask = torch.tensor([[False] * 8 + [True] * 4 + [True]])     # 13 entries for 6 frames: last one dropped
    assert frame_padding_mask(mask, 6).tolist() == [[False] * 4 + [True] * 2]
    mask = torch.tensor([[False, True, True, True]])               # a frame is padded only if its whole run is
    assert frame_padding_mask(mask, 2).tolist() == [[False, True]]
    with pytest.raises(ValueError, match="fewer than"):
        frame_padding_mask(mask, 5)


def test_reinitialise_follows_the_paper_and_the_seed():
    model = reinitialise(tiny_model(), seed=3)
    assert torch.equal(model.layer_norm.weight, torch.ones(2 * TINY.dim))
    assert torch.equal(model.encoder.layers[0].final_layer_norm.bias, torch.zeros(TINY.dim))
    bn = model.feature_extractor_video.resnet.trunk.layer2[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    linears = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(linears.std().item() - 0.02) < 0.002 and abs(linears.mean().item()) < 0.002
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in model.modules() if isinstance(m, torch.nn.Linear))
    again = reinitialise(tiny_model(seed=9), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    other = reinitialise(tiny_model(), seed=4)
    assert not torch.equal(model.post_extract_proj.weight, other.post_extract_proj.weight)
    assert torch.isfinite(model.extract(*inputs())).all()


# ---------------------------------------------------------------------------------------------------
# loading

def test_load_safetensors_and_pt_strictly(tmp_path):
    model = tiny_model(final_dim=None)
    audio, video = inputs()
    expected = model.extract(audio, video)
    sd = model.state_dict()
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"model": sd}, tmp_path / "wrapped.pt")
    seq2seq = {f"encoder.w2v_model.{k}": v for k, v in sd.items()} | {"decoder.embed_tokens.weight": torch.zeros(5, 4)}
    torch.save({"model": seq2seq}, tmp_path / "seq2seq.pth")
    for name in ("w.safetensors", "plain.pt", "wrapped.pt", "seq2seq.pth"):
        loaded = load(tmp_path / name, heads=2)
        assert not loaded.training and loaded.config == model.config, name
        torch.testing.assert_close(loaded.extract(audio, video), expected, atol=1e-6, rtol=0)
    digest = sha256_file(tmp_path / "plain.pt")
    load(tmp_path / "plain.pt", sha256=digest, heads=2)
    with pytest.raises(ValueError, match="sha256"):
        load(tmp_path / "plain.pt", sha256="0" * 64, heads=2)
    with pytest.raises(FileNotFoundError, match="absent.pt.*avbench avhubert convert"):
        load(tmp_path / "absent.pt")


def test_load_errors_name_the_file_the_keys_and_the_shapes(tmp_path):
    sd = tiny_model().state_dict()
    path = tmp_path / "bad.safetensors"

    save_file({k: v for k, v in sd.items() if k != "encoder.layers.1.fc2.bias"}, str(path))
    with pytest.raises(ValueError, match=r"bad.safetensors.*missing keys \['encoder.layers.1.fc2.bias'\]"):
        load(path, heads=2)

    save_file(sd | {"encoder.extra.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match=r"bad.safetensors.*unexpected keys \['encoder.extra.weight'\]"):
        load(path, heads=2)

    save_file(sd | {"encoder.layers.1.fc1.weight": torch.zeros(48, TINY.dim)}, str(path))
    with pytest.raises(ValueError, match=r"bad.safetensors: encoder.layers.1.fc1.weight has shape \[48, 32\], "
                                         r"the model expects \[64, 32\]"):
        load(path, heads=2)


class NotAllowed:
    """A class weights_only refuses (defined here, so the trusted reader gets an inert stand-in)."""


def test_pt_that_weights_only_refuses_points_to_the_converter(tmp_path):
    sd = tiny_model().state_dict()
    path = tmp_path / "full.pt"
    torch.save({"model": sd, "extra": NotAllowed()}, path)
    with pytest.raises(ValueError, match=r"full.pt: torch.load\(weights_only=True\) refuses.*avbench avhubert "
                                         r"convert.*trusted=True"):
        load(path, heads=2)
    loaded = load(path, trusted=True, heads=2)
    torch.testing.assert_close(loaded.state_dict()["post_extract_proj.weight"], sd["post_extract_proj.weight"])


# ---------------------------------------------------------------------------------------------------
# the converter

def _write_fairseq_checkpoint(path: Path, model: AVHubert) -> None:
    """A seq2seq fine-tuning checkpoint in the fairseq layout, with a pickled `fairseq` Dictionary
    whose module exists only while saving."""
    class Dictionary:
        def __init__(self, symbols):
            self.symbols = symbols
            self.indices = {s: i for i, s in enumerate(symbols)}

    Dictionary.__module__, Dictionary.__qualname__ = "fairseq.data.dictionary", "Dictionary"
    names = ["fairseq", "fairseq.data", "fairseq.data.dictionary"]
    assert not any(name in sys.modules for name in names)
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules["fairseq.data.dictionary"].Dictionary = Dictionary
    decoder = {"decoder.embed_tokens.weight": torch.randn(10, 16), "decoder.layers.0.fc1.weight": torch.randn(8, 16),
               "decoder.layer_norm.weight": torch.ones(16), "decoder.embed_positions._float_tensor": torch.zeros(1)}
    try:
        torch.save({
            "args": None,
            "cfg": {"model": {"_name": "av_hubert_seq2seq", "decoder_layers": 1,
                              "w2v_args": {"model": {"_name": "av_hubert", "encoder_embed_dim": model.config.dim,
                                                     "encoder_attention_heads": model.config.heads}}},
                    "task": {"_name": "av_hubert_pretraining", "modalities": ["video"]}},
            "model": {f"encoder.w2v_model.{k}": v for k, v in model.state_dict().items()} | decoder,
            "task_state": {"dictionaries": [Dictionary(["<s>", "<pad>", "</s>", "<unk>", "a", "b"])]},
            "extra_state": {"epoch": 3, "train_iterator": {"epoch": 3}, "namespace": argparse.Namespace(lr=[1e-3])},
            "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "num_updates": 30000}],
            "last_optimizer_state": None,
        }, path)
    finally:
        for name in names:
            del sys.modules[name]


def test_converter_round_trip_without_fairseq(tmp_path):
    model = tiny_model(final_dim=None)            # the fine-tuned encoder has no final_proj
    src, dst = tmp_path / "self_tiny_433h.pt", tmp_path / "out" / "tiny.safetensors"
    _write_fairseq_checkpoint(src, model)
    with pytest.raises(ValueError, match="weights_only"):      # the layout really needs a fairseq class
        load(src)
    assert convert_fairseq_checkpoint(src, dst) == dst
    assert not any(name.startswith("fairseq") for name in sys.modules)
    with safe_open(str(dst), framework="pt") as fh:
        keys, metadata = list(fh.keys()), fh.metadata()
    assert sorted(keys) == sorted(model.state_dict())
    assert metadata["format"] == "avbench-avhubert" and metadata["source"] == src.name
    assert metadata["source_sha256"] == sha256_file(src)
    loaded = load(dst)                          # heads (2, not dim / 64) come from the fairseq config
    assert loaded.config == model.config
    audio, video = inputs()
    for a, v in ((audio, video), (None, video)):
        torch.testing.assert_close(loaded.extract(a, v, output_layer=1), model.extract(a, v, output_layer=1),
                                   atol=0, rtol=0)


class _Exploit:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.makedirs, (str(self.target),)


def test_converter_runs_no_code_from_the_checkpoint(tmp_path):
    target, src, dst = tmp_path / "created_by_the_pickle", tmp_path / "evil.pt", tmp_path / "out.safetensors"
    model = tiny_model()                         # a pre-training layout: unprefixed keys, heads in cfg.model
    torch.save({"model": model.state_dict(), "cfg": {"model": {"encoder_attention_heads": 2}},
                "task_state": _Exploit(target)}, src)
    pickle.loads(pickle.dumps(_Exploit(tmp_path / "control")))        # an ordinary unpickle runs it
    assert (tmp_path / "control").is_dir()
    convert_fairseq_checkpoint(src, dst)
    assert not target.exists()
    assert load(dst).config == model.config


def test_cli_convert_prints_what_it_wrote(tmp_path):
    import typer
    from typer.testing import CliRunner

    from avbench.detectors.avhubert.cli import app as avhubert_app

    app = typer.Typer()                 # wired as the lead wires it: `avbench avhubert ...`
    app.add_typer(avhubert_app, name="avhubert")

    src, dst = tmp_path / "ft.pt", tmp_path / "ft.safetensors"
    model = tiny_model(final_dim=None)
    _write_fairseq_checkpoint(src, model)
    result = CliRunner().invoke(app, ["avhubert", "convert", str(src), str(dst)])
    assert result.exit_code == 0, result.output
    n_params = sum(p.numel() for p in model.parameters())
    assert f"{len(model.state_dict())} tensors, {n_params:,} parameters" in result.output
    assert '"heads": 2' in result.output and sha256_file(dst) in result.output
    result = CliRunner().invoke(app, ["avhubert", "convert", str(tmp_path / "none.pt"), str(dst)])
    assert result.exit_code == 1 and "none.pt" in result.output


def test_importing_the_package_and_its_cli_does_not_import_torch():
    code = ("import sys, avbench.detectors.avhubert, avbench.detectors.avhubert.cli; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------
# preprocessing

def test_audio_features_against_python_speech_features():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 + 1234)).astype(np.float32)       # 1.08 s: 107 fbank frames
    fbank = python_speech_features.logfbank(audio * 32768.0, samplerate=16000)
    assert fbank.shape == (107, 26)
    feats = audio_features(audio)
    assert FEATURE_RATE == 25.0 and feats.shape == (104, 27) and feats.dtype == np.float32   # ceil(107 / 4)
    row = np.concatenate(fbank[8:12])                                   # model frame 2 = fbank frames 8-11
    np.testing.assert_allclose(feats[:, 2], (row - row.mean()) / np.sqrt(row.var() + 1e-5), atol=1e-4)
    last = np.concatenate([fbank[104:107], np.zeros((1, 26))]).ravel()       # zero-padded to a multiple of 4
    np.testing.assert_allclose(feats[:, 26], (last - last.mean()) / np.sqrt(last.var() + 1e-5), atol=1e-4)
    np.testing.assert_allclose(feats.mean(0), 0, atol=1e-5)
    longer = audio_features(audio, n_frames=30)                         # fewer audio than video frames
    np.testing.assert_array_equal(longer[:, :27], feats)
    assert not longer[:, 27:].any()
    np.testing.assert_array_equal(audio_features(audio, n_frames=20), feats[:, :20])
    # scale-free, except in the frame whose stack is completed with zeros (zeros in the log domain)
    np.testing.assert_allclose(audio_features(audio * 0.5)[:, :26], feats[:, :26], atol=1e-4)
    for bad in (np.zeros((2, 100), np.float32), np.zeros(0, np.float32)):
        with pytest.raises(ValueError, match="mono, non-empty"):
            audio_features(bad)


def test_grey_equals_opencv():
    ref = load_file(DATA / "reference.safetensors")
    np.testing.assert_array_equal(grey(ref["rgb"].numpy()), ref["grey_cv2"].numpy())
    pixels = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]], np.uint8)
    assert grey(pixels).tolist() == [76, 150, 29, 255, 18]   # 0.299 R + 0.587 G + 0.114 B, rounded


def test_mouth_features_crop_and_standardise():
    mouths = np.zeros((3, 96, 96, 3), np.uint8)
    mouths[:, 4, 4] = 255                       # the centre crop starts at (4, 4)
    mouths[1, 50, 60] = (10, 20, 30)
    out = mouth_features(mouths)
    assert out.shape == (1, 3, 88, 88) and out.dtype == np.float32
    assert out[0, 0, 0, 0] == pytest.approx((1 - 0.421) / 0.165, abs=1e-6)
    assert out[0, 1, 46, 56] == pytest.approx((18 / 255 - 0.421) / 0.165, abs=1e-6)
    assert out[0, 0, 1, 1] == pytest.approx(-0.421 / 0.165, abs=1e-6)
    small = np.full((2, 48, 48, 3), 200, np.uint8)
    np.testing.assert_allclose(mouth_features(small), (200 / 255 - 0.421) / 0.165, atol=1e-5)
    with pytest.raises(ValueError, match="square"):
        mouth_features(np.zeros((2, 40, 30, 3), np.uint8))
