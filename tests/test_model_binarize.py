"""The binarization contract: sign(0) = +1, the Bi-Attention tie rule, exact integer attention."""

import math

import pytest
import torch

from bebert.model.binarize import (
    attention_bits,
    attention_bits_ste,
    attention_context,
    binarize_weight,
    from_bits,
    sign,
    sign_ste,
    to_bits,
    weight_scale,
    xnor_popcount_dot,
)
from bebert.model.config import ModelConfig
from bebert.model.student import BinaryBertForSequenceClassification

torch.set_num_threads(1)


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 2.5, -3.0, math.inf, -math.inf])
    assert sign(x).tolist() == [1, 1, 1, -1, 1, -1, 1, -1]
    # torch.sign would give 0 for zero: the reason this module exists.
    assert torch.sign(torch.tensor(0.0)).item() == 0
    assert sign(torch.tensor([0, -1, 3])).tolist() == [1, -1, 1]
    assert sign(x.double()).dtype == torch.float64


def test_bits_round_trip_and_zero_bit():
    x = torch.tensor([0.0, -0.0, -1.0, 0.5])
    assert to_bits(x).tolist() == [1, 1, 0, 1]
    assert torch.equal(from_bits(to_bits(x)), sign(x))


def test_xnor_popcount_equals_dot_product():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 37, generator=g)
    w = torch.randn(7, 37, generator=g)
    ref = (sign(a) @ sign(w).T).to(torch.int64)
    assert torch.equal(xnor_popcount_dot(to_bits(a), to_bits(w)), ref)


def test_sign_ste_forward_and_clipped_gradient():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1, -1, 1, 1, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0]


def test_sign_ste_surrogate_carries_gradient_not_value():
    h = torch.tensor([-50.0, -0.3, 0.0, 0.4], requires_grad=True)
    g = torch.nn.functional.gelu(h)
    y = sign_ste(h, g)
    # GELU(-50) underflows to -0.0 in float32; sign(GELU) would then read +1, sign(h) reads -1.
    assert y.tolist() == [-1, -1, 1, 1]
    y.sum().backward()
    assert h.grad[0] == 0 and h.grad[3] > 0


def test_bool_tie_rule_hand_made():
    # head size 2: q . k in {-2, 0, 2}
    q = torch.tensor([[[1.0, 1.0], [1.0, -1.0]]])  # (1, n=2, d=2)
    k = torch.tensor([[[1.0, 1.0], [1.0, -1.0]]])
    # scores: q0.k0=2, q0.k1=0, q1.k0=0, q1.k1=2
    bits = attention_bits(q, k)
    assert bits.tolist() == [[[1, 0], [0, 1]]], "a zero score must give 0 (strictly positive rule)"
    masked = attention_bits(q, k, key_mask=torch.tensor([[1, 0]]))
    assert masked.tolist() == [[[1, 0], [0, 0]]], "a padding key must give 0"
    # zero-valued Q/K entries binarize to +1 before the product
    zeros = torch.zeros(1, 2, 2)
    assert attention_bits(zeros, zeros).tolist() == [[[1, 1], [1, 1]]]


def test_context_is_integer_popcount_formula():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g) for _ in range(3))
    a = attention_bits(q, k)
    c = attention_context(a, v)
    vb = to_bits(v)
    pop_and = (a.unsqueeze(-1).bool() & vb.unsqueeze(-3).bool()).sum(-2)  # sum_j A_ij & vb_jc
    ref = 2 * pop_and - a.sum(-1, keepdim=True)
    assert torch.equal(c, ref.to(torch.int64))


def test_ste_attention_bits_equal_exact_rule_including_ties():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(3, 2, 9, 4, generator=g), torch.randn(3, 2, 9, 4, generator=g)  # d=4: many ties
    mask = torch.ones(3, 9, dtype=torch.int64)
    mask[1, 6:] = 0
    ste = attention_bits_ste(sign_ste(q), sign_ste(k), mask)
    exact = attention_bits(q, k, mask[:, None, :].expand(3, 2, 9))
    assert torch.equal(ste.to(torch.uint8), exact)
    scores = sign(q) @ sign(k).transpose(-1, -2)
    assert (scores == 0).any(), "the test data must contain ties"


def test_binarize_weight_scale_and_sign():
    w = torch.tensor([[0.0, -0.5, 0.25, 0.25], [1.0, -1.0, 2.0, -2.0]], requires_grad=True)
    signs, alpha = binarize_weight(w)
    assert signs.tolist() == [[1, -1, 1, 1], [1, -1, 1, -1]]
    assert torch.allclose(alpha.view(-1), torch.tensor([0.25, 1.5]))
    signs.sum().backward()
    assert w.grad.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]  # clipped where |w| > 1
    c_signs, c_alpha = binarize_weight(w, center=True)
    assert torch.equal(c_alpha, weight_scale(w, center=True))
    assert c_signs[0].tolist() == [1, -1, 1, 1]  # row mean 0: unchanged


def test_student_attention_matches_the_contract():
    cfg = ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, ffn_size=32, max_len=16)
    model = BinaryBertForSequenceClassification(cfg).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 16, generator=g)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    att = model.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        ctx, _, (q, k, v) = att(x, mask)

    def heads(t):
        return t.view(2, 7, 2, 8).transpose(1, 2)

    bits = attention_bits(heads(q), heads(k), mask[:, None, :].expand(2, 2, 7))
    ref = attention_context(bits, heads(v)).transpose(1, 2).reshape(2, 7, 16)
    assert torch.equal(ctx.to(torch.int64), ref)


@pytest.mark.parametrize("backbone", ["w1a1", "w1a4", "w2a4"])
def test_every_parameter_gets_a_gradient(backbone):
    cfg = ModelConfig(vocab_size=60, hidden_size=16, num_layers=2, num_heads=2, ffn_size=32, max_len=16,
                      backbone=backbone, hidden_dropout=0.0)
    model = BinaryBertForSequenceClassification(cfg)
    ids = torch.randint(0, 60, (4, 9), generator=torch.Generator().manual_seed(4))
    out = model(ids, torch.ones_like(ids))
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 0, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
