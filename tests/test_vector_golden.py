"""The vector unit's golden function is the step golden/infer.py computes (bit-exact on its taps)."""

import numpy as np
import pytest
import torch

from bebert.golden.export import export_members
from bebert.golden.format import IntModel
from bebert.golden.infer import GoldenModel
from bebert.golden.vector import VectorFormats, vector_step
from bebert.model.config import ModelConfig
from bebert.model.fixedpoint import FixedPointConfig, FixedPointFormat
from bebert.model.student import BinaryBertForSequenceClassification


@pytest.mark.parametrize("saturating", [False, True])
def test_vector_step_reproduces_the_model_taps(saturating):
    fp = FixedPointConfig(residual=FixedPointFormat(10, 6)) if saturating else FixedPointConfig()
    cfg = ModelConfig(vocab_size=300, hidden_size=48, num_layers=2, num_heads=3, ffn_size=80, max_len=20,
                      hidden_dropout=0.0, fixed_point=fp)
    torch.manual_seed(3)
    member = BinaryBertForSequenceClassification(cfg).eval()
    if saturating:
        with torch.no_grad():
            for name, p in member.named_parameters():
                if "LayerNorm.weight" in name:
                    p.mul_(12.0)
                elif name.endswith("bias"):
                    p.normal_(0, 4.0)
    tensors, meta = export_members([member], [1.0])
    model = IntModel(meta, tensors)
    golden = GoldenModel(model)
    fmts = VectorFormats.from_int_model(model)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 300, size=(4, 20))
    mask = np.ones((4, 20), np.int64)
    mask[1, 13:] = 0
    taps = golden.forward(ids, mask, taps=True).taps
    real = mask.astype(bool)
    t = model.member(0)
    h = cfg.hidden_size
    for li in range(cfg.num_layers):
        p = f"layer.{li}."
        x_in = taps["m0.emb.ln" if li == 0 else f"m0.l{li - 1}.ffn_ln"][real]
        steps = [("attn_out", "attn_ln", x_in, h), ("ffn_out", "ffn_ln", taps[f"m0.l{li}.attn_ln"][real], cfg.ffn_size)]
        for lin, lnn, x, k in steps:
            out, bits = vector_step(taps[f"m0.l{li}.{lin}.acc"][real], x, k, t[p + lin + ".scale"],
                                    t[p + lin + ".bias"], t[p + lnn + ".gamma"], t[p + lnn + ".beta"], fmts)
            assert (out == taps[f"m0.l{li}.{lnn}"][real]).all()
            assert (bits == (out >= 0)).all()
    if saturating:
        assert (np.abs(taps["m0.l0.attn_out.sum"]) >= (1 << 9) - 1).any()


def test_default_formats_are_the_model_defaults():
    f = VectorFormats.default(384)
    assert (f.residual.bits, f.residual.frac, f.scale.frac, f.ln_weight.frac, f.eps_code) == (16, 8, 14, 12, 1)
    assert f.ln == {"mant_bits": 16, "rsqrt_frac": 22, "rsqrt_bits": 16, "norm_frac": 15}
