"""Golden Bi-Attention against a plain +-1 integer reference and the training rules (model.binarize)."""

import numpy as np
import pytest
import torch

from bebert.golden.attention import attention_bits, attention_context, attention_scores, bi_attention
from bebert.golden.pe_array import pack_bits, unpack_bits
from bebert.model import binarize


def reference(q, k, v, mask):
    """+-1 matrices, integer matmuls, no packing or popcounts."""
    qs, ks, vs = (2 * x.astype(np.int64) - 1 for x in (q, k, v))
    scores = qs @ ks.T
    a = ((scores > 0) & mask.astype(bool)[None, :]).astype(np.int64)
    c = a @ vs
    return scores, a, c, (c >= 0).astype(np.uint8)


@pytest.mark.parametrize("d,n,m", [(1, 1, 1), (2, 5, 3), (5, 9, 9), (32, 40, 17), (64, 70, 8), (70, 130, 5)])
def test_matches_reference(d, n, m):
    rng = np.random.default_rng(d * 100 + n)
    q = rng.integers(0, 2, (m, d), dtype=np.uint8)
    k = rng.integers(0, 2, (n, d), dtype=np.uint8)
    v = rng.integers(0, 2, (n, d), dtype=np.uint8)
    mask = (rng.random(n) < 0.8).astype(np.uint8)
    scores, a, c, out = reference(q, k, v, mask)
    qp, kp, vp = pack_bits(q), pack_bits(k), pack_bits(v)
    assert (2 * attention_scores(qp, kp, d) - d == scores).all()
    ap = attention_bits(qp, kp, d, mask)
    assert (unpack_bits(ap, n) == a).all()
    assert (attention_context(ap, vp, n, d) == c).all()
    got = bi_attention(qp, kp, vp, d, mask)
    assert got.shape == (m, (d + 63) // 64)
    assert (unpack_bits(got, d) == out).all()


@pytest.mark.parametrize("d", [6, 7, 32])
def test_matches_training_rules(d):
    """The same bits as model.binarize.attention_bits / attention_context (sign(0) = +1)."""
    rng = np.random.default_rng(d)
    n = 24
    q = rng.standard_normal((n, d)).astype(np.float32)
    k = rng.standard_normal((n, d)).astype(np.float32)
    v = rng.standard_normal((n, d)).astype(np.float32)
    mask = np.ones(n, np.uint8)
    mask[-5:] = 0
    a_t = binarize.attention_bits(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(mask))
    c_t = binarize.attention_context(a_t, torch.from_numpy(v))
    out_t = binarize.to_bits(c_t).numpy()
    qb, kb, vb = (pack_bits((x >= 0).astype(np.uint8)) for x in (q, k, v))
    assert (unpack_bits(attention_bits(qb, kb, d, mask), n) == a_t.numpy()).all()
    assert (unpack_bits(bi_attention(qb, kb, vb, d, mask), d) == out_t).all()


def test_ties_give_zero_and_empty_rows_give_ones():
    d = 4
    q = pack_bits(np.array([[1, 1, 0, 0]], np.uint8))
    k = pack_bits(np.array([[1, 1, 1, 1], [1, 1, 0, 1]], np.uint8))  # scores 0 (tie) and +2
    v = pack_bits(np.array([[0, 0, 0, 0], [0, 1, 0, 1]], np.uint8))
    assert unpack_bits(attention_bits(q, k, d), 2).tolist() == [[0, 1]]
    assert unpack_bits(bi_attention(q, k, v, d), d).tolist() == [[0, 1, 0, 1]]
    # key 1 masked: nothing attended, C = 0, sign(0) = +1
    assert unpack_bits(bi_attention(q, k, v, d, np.array([1, 0])), d).tolist() == [[1, 1, 1, 1]]


def test_bad_shapes():
    q = pack_bits(np.ones((2, 8), np.uint8))
    with pytest.raises(ValueError, match="packed uint64"):
        bi_attention(q.astype(np.int64), q, q, 8)
    with pytest.raises(ValueError, match="packed uint64"):
        bi_attention(q, q, q, 65)
    with pytest.raises(ValueError, match="expected n"):
        attention_context(attention_bits(q, q, 8), pack_bits(np.ones((3, 8), np.uint8)), 2, 8)
