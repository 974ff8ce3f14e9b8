"""Golden threshold functions: the compare rule, the scale/bias fold, the attention bool rule."""

from fractions import Fraction

import numpy as np
import pytest

from bebert.golden.fold import fold_sign_threshold
from bebert.golden.pe_array import pack_bits, unpack_bits
from bebert.golden.threshold import (attention_table, normalize_threshold, score_bits, score_threshold,
                                     threshold_bits, threshold_words)


def test_rule_both_polarities():
    y = np.array([[-3, -2, 0, 1, 5, 5]])
    t = np.array([-1, -1, 0, 0, 5, 5])
    pol = np.array([1, 0, 1, 0, 1, 0])
    assert threshold_bits(y, t, pol).tolist() == [[0, 1, 1, 0, 1, 0]]


def test_words_pack_little_endian():
    rng = np.random.default_rng(0)
    y = rng.integers(-50, 50, size=(3, 130))
    t = rng.integers(-50, 50, size=130)
    pol = rng.integers(0, 2, size=130)
    words = threshold_words(y, t, pol)
    assert words.shape == (3, 3) and words.dtype == np.uint64
    assert (unpack_bits(words, 130) == threshold_bits(y, t, pol)).all()
    assert (words[:, 2] >> np.uint64(2) == 0).all()  # bits past C are zero


@pytest.mark.parametrize("k", [7, 64, 255])
def test_matches_the_fold_of_scale_bias_sign(k):
    """The unit's rule applied to golden.fold's (T, pol) is sign(alpha*(2y - K) + b), sign(0) = +1.

    Also for K = 255, where T = K + 1 = 256 does not fit the PE array's signed(9) results and
    normalize_threshold must bring it into range.
    """
    rng = np.random.default_rng(k)
    fs, fb = 6, 4
    scale = np.concatenate([rng.integers(-300, 300, size=40), [0, 0, 5, -5]])
    bias = np.concatenate([rng.integers(-4000, 4000, size=40), [3, -3, 10 ** 4, -(10 ** 4)]])
    t, pol = fold_sign_threshold(scale, fs, bias, fb, k)
    width = int(k).bit_length() + 1  # the PE array's acc_width for max_k = K
    tn, poln = normalize_threshold(t, pol, width)
    assert (tn >= -(1 << (width - 1))).all() and (tn < (1 << (width - 1))).all()
    ys = np.repeat(np.arange(k + 1)[:, None], len(scale), axis=1)  # every count on every channel
    want = [[int(Fraction(int(a), 1 << fs) * (2 * y - k) + Fraction(int(b), 1 << fb) >= 0)
             for a, b in zip(scale, bias)] for y in range(k + 1)]
    assert (threshold_bits(ys, t, pol) == np.array(want)).all()
    assert (threshold_bits(ys, tn, poln) == np.array(want)).all()


def test_normalize_is_exact_everywhere():
    width = 4
    ys = np.arange(-8, 8)[:, None]
    for t in range(-20, 21):
        for pol in (0, 1):
            tn, poln = normalize_threshold(np.array([t]), np.array([pol]), width)
            want = (ys >= t) == bool(pol)
            assert (threshold_bits(ys, tn, poln)[:, 0] == want[:, 0]).all(), (t, pol)


@pytest.mark.parametrize("d", range(1, 10))
def test_score_threshold_odd_and_even(d):
    t = score_threshold(d)
    for y in range(d + 1):
        assert (y >= t) == (2 * y - d > 0)
    if d % 2 == 0:
        assert score_bits(np.array([d // 2]), d)[0] == 0  # a tie gives 0


def test_attention_table_is_the_bool_rule():
    rng = np.random.default_rng(3)
    d, n = 32, 50
    pop = rng.integers(14, 19, size=(7, n))
    mask = (rng.random(n) < 0.7).astype(np.uint8)
    t, pol = attention_table(d, n, mask, width=12, channels=64)
    y = np.concatenate([pop, rng.integers(0, d + 1, size=(7, 14))], axis=1)
    got = threshold_bits(y, t, pol)
    assert (got[:, :n] == score_bits(pop, d, mask)).all()
    assert (got[:, n:] == 0).all()


def test_bad_inputs():
    with pytest.raises(ValueError):
        threshold_bits(np.zeros((2, 3), int), np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(ValueError):
        threshold_bits(np.zeros((2, 3), int), np.zeros(3, int), np.full(3, 2))
    with pytest.raises(ValueError):
        threshold_bits(np.zeros((2, 3)), np.zeros(3, int), np.zeros(3, int))
    with pytest.raises(ValueError):
        score_threshold(0)
    with pytest.raises(ValueError):
        attention_table(8, 10, channels=5)
    assert pack_bits(np.ones(3, np.uint8)).tolist() == [7]
