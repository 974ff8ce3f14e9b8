"""Golden PE-array functions against an independent, unpacked reference."""

import numpy as np
import pytest

from bebert.golden.pe_array import Mode, bit_planes, bitserial_dot, pack_bits, popcount_dot, signed_dot, unpack_bits


def reference(a_bits, w_bits, mode):
    """Plain integer loops on +-1 / {0,1} values (no packing, no popcount)."""
    out = np.zeros((a_bits.shape[0], w_bits.shape[0]), np.int64)
    for i, a in enumerate(a_bits):
        for p, w in enumerate(w_bits):
            if mode is Mode.XNOR:
                out[i, p] = sum(int(x == y) for x, y in zip(a, w))
            else:  # w selects, a is +-1
                out[i, p] = sum(int(y) * (2 * int(x) - 1) for x, y in zip(a, w))
    return out


@pytest.mark.parametrize("k", [1, 5, 63, 64, 65, 127, 128, 200])
@pytest.mark.parametrize("mode", list(Mode))
def test_popcount_dot_matches_reference(k, mode):
    rng = np.random.default_rng(k)
    a = rng.integers(0, 2, size=(4, k), dtype=np.uint8)
    w = rng.integers(0, 2, size=(3, k), dtype=np.uint8)
    got = popcount_dot(pack_bits(a), pack_bits(w), k, mode)
    assert (got == reference(a, w, mode)).all()


def test_exhaustive_small_width():
    """Every pair of 4-bit vectors, both modes."""
    k = 4
    vecs = np.array([[(v >> i) & 1 for i in range(k)] for v in range(16)], np.uint8)
    for mode in Mode:
        got = popcount_dot(pack_bits(vecs), pack_bits(vecs), k, mode)
        assert (got == reference(vecs, vecs, mode)).all()


def test_bits_past_k_are_ignored():
    rng = np.random.default_rng(0)
    k = 70
    a = pack_bits(rng.integers(0, 2, size=(2, k), dtype=np.uint8))
    w = pack_bits(rng.integers(0, 2, size=(3, k), dtype=np.uint8))
    junk = np.uint64(0xFFFF_FFFF_FFFF_FFC0)  # bits 70..127 set in word 1
    a2, w2 = a.copy(), w.copy()
    a2[:, 1] |= junk
    w2[:, 1] |= junk
    for mode in Mode:
        assert (popcount_dot(a, w, k, mode) == popcount_dot(a2, w2, k, mode)).all()


def test_signed_dot():
    a = pack_bits(np.array([[1, 0, 1]], np.uint8))
    w = pack_bits(np.array([[1, 1, 0], [1, 0, 1]], np.uint8))
    # (+1,-1,+1).(+1,+1,-1) = -1 ; (+1,-1,+1).(+1,-1,+1) = 3
    assert signed_dot(a, w, 3).tolist() == [[-1, 3]]


def test_pack_roundtrip_and_order():
    bits = np.zeros(130, np.uint8)
    bits[[0, 64, 129]] = 1
    words = pack_bits(bits)
    assert words.tolist() == [1, 1, 2]
    assert (unpack_bits(words, 130) == bits).all()


@pytest.mark.parametrize("call,match", [
    (lambda: pack_bits(np.array([0, 2])), "only 0/1"),
    (lambda: pack_bits(np.zeros((2, 0))), "at least one bit"),
    (lambda: popcount_dot(np.zeros(2, np.int64), np.zeros((1, 2), np.uint64), 100), "packed uint64"),
    (lambda: popcount_dot(np.zeros(1, np.uint64), np.zeros((1, 1), np.uint64), 100), "needs 2 words"),
    (lambda: popcount_dot(np.zeros(1, np.uint64), np.zeros((1, 1), np.uint64), 0), "positive bit count"),
    (lambda: unpack_bits(np.zeros(1, np.uint64), 65), "does not fit"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_bitserial_dot_gives_the_w1a4_dot_product(bits):
    """sum_k x_k * (+-1 w_k) = bitserial_dot + (2**B - 1) * (popcount(w) - k), in plain integers."""
    rng = np.random.default_rng(bits)
    k = 77
    x = rng.integers(0, 1 << bits, size=(5, k))
    w = rng.integers(0, 2, size=(3, k), dtype=np.uint8)
    y = bitserial_dot(bit_planes(x, bits), pack_bits(w), k)
    dot = x @ (2 * w.astype(np.int64) - 1).T
    assert (dot == y + ((1 << bits) - 1) * (w.sum(axis=1, dtype=np.int64) - k)).all()


def test_bit_planes_rejects_out_of_range():
    with pytest.raises(ValueError, match="0..15"):
        bit_planes(np.array([0, 16]), 4)
    with pytest.raises(ValueError, match="0..15"):
        bit_planes(np.array([-1, 3]), 4)
