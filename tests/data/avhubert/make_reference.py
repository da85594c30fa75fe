"""Regenerate reference.safetensors: fairseq's own encoder outputs for tests/test_avhubert.py.

Not part of the test suite: fairseq and OpenCV are no project dependencies. Run it in a throw-away
venv (see README.md), from the repository root:  python tests/data/avhubert/make_reference.py
"""

from pathlib import Path

import cv2
import numpy as np
import torch
from fairseq.models.wav2vec.wav2vec2 import TransformerEncoder, Wav2Vec2Config
from safetensors.torch import save_file

OUT = Path(__file__).with_name("reference.safetensors")

torch.manual_seed(0)
# The tiny AVHubertConfig; the fields fairseq 0.12 adds are set to reproduce the 2021 encoder
# (shared/specs/AVHUBERT.md). Dropouts are irrelevant in eval mode.
cfg = Wav2Vec2Config(encoder_embed_dim=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_embed_dim=64,
                     conv_pos=8, conv_pos_groups=4, layer_norm_first=True, activation_fn="gelu",
                     required_seq_len_multiple=1, layer_type="transformer", checkpoint_activations=False)
encoder = TransformerEncoder(cfg).eval()
with torch.no_grad():   # fairseq initialises biases to 0 and LayerNorms to 1/0: perturb everything
    for p in encoder.parameters():
        p.add_(torch.randn_like(p) * 0.1)

x = torch.randn(2, 20, 32)
padding_mask = torch.zeros(2, 20, dtype=torch.bool)
padding_mask[1, 14:] = True
with torch.no_grad():
    tensors = {
        "x": x,
        "padding_mask": padding_mask,
        "out_final": encoder(x, padding_mask=padding_mask)[0],                 # all blocks + final LayerNorm
        "out_layer1": encoder(x, padding_mask=padding_mask, layer=0)[0],       # extract_finetune output_layer=1
        "out_final_nopad": encoder(x)[0],
    }
tensors.update({f"encoder.{k}": v.detach().clone() for k, v in encoder.state_dict().items()})

rgb = np.random.default_rng(0).integers(0, 256, (1, 2048, 3), dtype=np.uint8)
tensors["rgb"] = torch.from_numpy(rgb[0].copy())
tensors["grey_cv2"] = torch.from_numpy(cv2.cvtColor(rgb[..., ::-1].copy(), cv2.COLOR_BGR2GRAY)[0].copy())

import fairseq  # noqa: E402

save_file(tensors, str(OUT), metadata={"fairseq": fairseq.__version__, "torch": torch.__version__,
                                       "opencv": cv2.__version__})
print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
