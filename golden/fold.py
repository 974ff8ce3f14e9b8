"""Threshold folding: scale, bias, sign (and GELU) of a binary linear layer as one integer
threshold and a polarity bit per output channel (FINN-style), ``docs/arithmetic.md`` section 4.

A W1A1 binary linear layer whose output is consumed only through its sign (Q, K, V and the
FFN up-projection, where ``sign(GELU(h)) = sign(h)``) computes, per channel, with ``y`` the
PE array's XNOR popcount over ``K`` bits (``0 <= y <= K``)::

    out = sign(sat_res(floor(alpha * (2y - K) + b)))         # alpha = a * 2**-fs, b = c * 2**-fb

Flooring onto the residual grid and saturating never change a sign (``floor(z) >= 0`` iff
``z >= 0`` for the exact value ``z``), so with ``F = max(fs, fb)``, ``A = a * 2**(F - fs)``,
``B = c * 2**(F - fb)`` (exact integers)::

    out = +1  iff  A*(2y - K) + B >= 0            (sign(0) = +1: a tie gives +1)

which is one comparison of the accumulator ``y`` with an integer threshold ``T`` and a
polarity ``pol`` (the threshold unit's convention, :func:`bebert.golden.threshold.threshold_bits`:
``bit = (y >= T)`` when ``pol = 1``, ``bit = (y < T)`` when ``pol = 0``):

    A > 0:  y >= T,   T = ceil((A*K - B) / (2A)),        pol = 1
    A < 0:  y <  T,   T = floor((A*K - B) / (2A)) + 1,   pol = 0
    A = 0:  constant: T = 0 when B >= 0 (always +1) else T = K + 1 (always -1), pol = 1

``T`` is clipped to ``[0, K + 1]`` (outside that range the comparison is constant anyway), so
it needs ``bits_for(K + 1)`` unsigned bits.
"""

from __future__ import annotations

import numpy as np

from .threshold import score_threshold  # one rule for the attention bit (section 8)

__all__ = ["fold_sign_threshold", "score_threshold", "ceil_div", "floor_div"]


def floor_div(n, d):
    """``floor(n / d)`` for integers (arrays) with ``d != 0``, either sign."""
    return np.floor_divide(n, d)


def ceil_div(n, d):
    """``ceil(n / d)`` for integers (arrays) with ``d != 0``, either sign."""
    return -np.floor_divide(-np.asarray(n), d)


def fold_sign_threshold(scale, fs: int, bias, fb: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``sign(alpha * (2y - K) + b)`` into ``(T, pol)``: ``bit = (y >= T) if pol else (y < T)``.

    Parameters
    ----------
    scale : int array ``(P,)``
        Codes ``a`` of ``alpha`` (``fs`` fraction bits), any sign.
    bias : int array ``(P,)``
        Codes ``c`` of ``b`` (``fb`` fraction bits).
    k : int
        Dot-product length ``K``.

    Returns
    -------
    thr : int64 ``(P,)`` in ``0..K+1``
    pol : uint8 ``(P,)``
    """
    scale = np.asarray(scale, dtype=np.int64)
    bias = np.asarray(bias, dtype=np.int64)
    f = max(fs, fb)
    a = scale << (f - fs)
    b = bias << (f - fb)
    num = a * k - b
    den = 2 * np.where(a == 0, 1, a)
    thr = np.where(a > 0, ceil_div(num, den), floor_div(num, den) + 1)
    thr = np.where(a == 0, np.where(b >= 0, 0, k + 1), thr)
    pol = (a >= 0).astype(np.uint8)
    return np.clip(thr, 0, k + 1).astype(np.int64), pol


