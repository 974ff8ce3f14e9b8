"""Golden functions for the threshold/sign unit.

The unit turns integer accumulators (the PE array's results) into bits with one
integer threshold ``T`` and one polarity bit ``pol`` per channel, the rule of
``docs/arithmetic.md`` section 4 (FINN's ``MultiThreshold`` with one threshold,
a negative scale flipping the comparison):

    bit = (y >= T)   if pol == 1
    bit = (y <  T)   if pol == 0      (the complement of ``y >= T``)

:func:`bebert.golden.fold.fold_sign_threshold` folds a layer's scale, bias and
sign (sign(0) = +1) into ``(T, pol)`` with ``0 <= T <= K + 1``; this module fixes
the integer compare that hardware matches bit for bit, for any signed ``y`` (XNOR
counts ``0..K`` and AND-mode sums ``-K..K`` alike; the context sign of
Bi-Attention is ``(T, pol) = (0, 1)``).

Constant bits and masks: with ``T = min`` (the most negative value of the
hardware's ``signed(width)`` thresholds) ``y >= T`` always holds, so
``(min, 1)`` gives 1 and ``(min, 0)`` gives 0 for every ``y``. A masked channel
(an attention score of a padding key, a channel past the end of a vector) is
``(min, 0)``. :func:`normalize_threshold` maps a threshold outside
``signed(width)`` (such as ``T = K + 1`` when ``K + 1`` does not fit) to this form.

Attention bool rule (``model.binarize``, ``docs/arithmetic.md`` section 8):
``A_ij = 1`` iff ``score_ij = Qb_i . Kb_j > 0`` (strictly; a tie gives 0) and key
``j`` is not padding. With head size ``d`` and the XNOR popcount
``y = popcount(~(q ^ k))`` that the PE array computes,
``score = 2*y - d > 0  <=>  y >= d // 2 + 1`` for odd and even ``d`` alike
(:func:`score_threshold`).

Packing: bit ``k`` of a vector of ``C`` channel bits is bit ``k % 64`` of word
``k // 64`` (:func:`bebert.golden.pe_array.pack_bits`); bits past ``C`` are 0.
"""

from __future__ import annotations

import numpy as np

from .pe_array import pack_bits

__all__ = [
    "threshold_bits",
    "threshold_words",
    "normalize_threshold",
    "score_threshold",
    "score_bits",
    "attention_table",
]


def _check_table(t, pol, c):
    t = np.asarray(t)
    pol = np.asarray(pol)
    if t.shape != (c,) or pol.shape != (c,):
        raise ValueError(f"thresholds and polarities must have shape ({c},), not {t.shape} and {pol.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"thresholds are integers, not {t.dtype}")
    if not np.isin(pol, (0, 1)).all():
        raise ValueError("polarities are 0 or 1")
    return t.astype(np.int64), pol.astype(np.int64)


def threshold_bits(y: np.ndarray, t: np.ndarray, pol: np.ndarray) -> np.ndarray:
    """Per-channel threshold: ``bit = (y >= t)`` where ``pol == 1``, ``(y < t)`` where ``pol == 0``.

    Parameters
    ----------
    y : integer array ``(..., C)``: accumulators, channel on the last axis.
    t : integer array ``(C,)``: thresholds.
    pol : 0/1 array ``(C,)``: polarities.

    Returns
    -------
    ``uint8`` array ``(..., C)`` of bits (1 = +1).

    Raises
    ------
    ValueError
        On shapes or values that do not match.
    """
    y = np.asarray(y)
    if y.ndim == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be an integer array with channels on the last axis, not {y.dtype} {y.shape}")
    t, pol = _check_table(t, pol, y.shape[-1])
    ge = y.astype(np.int64) >= t
    return (ge == (pol == 1)).astype(np.uint8)


def threshold_words(y: np.ndarray, t: np.ndarray, pol: np.ndarray) -> np.ndarray:
    """:func:`threshold_bits` packed: ``uint64`` array ``(..., ceil(C/64))``, bits past ``C`` zero."""
    return pack_bits(threshold_bits(y, t, pol))


def normalize_threshold(t: np.ndarray, pol: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Map ``(t, pol)`` to an equivalent pair whose ``t`` fits ``signed(width)``.

    Equivalent for every ``y`` in ``signed(width)``: ``t <= min`` makes the
    compare constant (``y >= t`` always true), as does ``t > max`` (always
    false); both become ``t = min`` with the polarity bit that gives the same
    constant.
    """
    if width < 2:
        raise ValueError(f"width must be at least 2, not {width!r}")
    t = np.asarray(t, dtype=object)
    pol = np.asarray(pol).astype(np.int64)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    always_ge = t <= lo
    never_ge = t > hi
    t_out = np.where(always_ge | never_ge, lo, t).astype(np.int64)
    # never_ge gives the constant bit 1 - pol; with t = min (ge = 1) that needs pol flipped
    pol_out = np.where(never_ge, 1 - pol, pol).astype(np.int64)
    return t_out, pol_out


def score_threshold(d: int) -> int:
    """``T`` with ``y >= T  <=>  2*y - d > 0`` for an XNOR popcount ``y`` of ``d`` bits: ``d // 2 + 1``."""
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"head size d must be a positive integer, not {d!r}")
    return int(d) // 2 + 1


def score_bits(pop: np.ndarray, d: int, key_mask: np.ndarray | None = None) -> np.ndarray:
    """Attention bits from XNOR popcounts: ``A = (2*pop - d > 0) & key_mask`` (ties give 0).

    Parameters
    ----------
    pop : integer array ``(..., n)``: ``popcount(~(q_i ^ k_j))`` over ``d`` bits.
    d : head size.
    key_mask : 0/1 array ``(n,)`` (1 = token, 0 = padding) or None (no padding).
    """
    pop = np.asarray(pop, dtype=np.int64)
    bits = (2 * pop - int(d) > 0)
    if key_mask is not None:
        key_mask = np.asarray(key_mask)
        if key_mask.shape != pop.shape[-1:] or not np.isin(key_mask, (0, 1)).all():
            raise ValueError(f"key_mask must be 0/1 of shape {pop.shape[-1:]}, not {key_mask.shape}")
        bits &= key_mask.astype(bool)
    return bits.astype(np.uint8)


def attention_table(d: int, n: int, key_mask: np.ndarray | None = None, width: int = 16,
                    channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Threshold table ``(t, pol)`` that makes the threshold unit compute :func:`score_bits`.

    Channel ``j < n`` (key ``j``) gets ``(d // 2 + 1, 1)``, or ``(min, 0)`` (always
    0) where ``key_mask[j] == 0``; channels ``n .. channels-1`` (default none)
    get ``(min, 0)``. ``min = -2**(width-1)``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n!r}")
    channels = n if channels is None else channels
    if channels < n:
        raise ValueError(f"channels ({channels}) must be >= n ({n})")
    lo = -(1 << (width - 1))
    t = np.full(channels, lo, np.int64)
    pol = np.zeros(channels, np.int64)
    real = np.ones(n, bool) if key_mask is None else np.asarray(key_mask).astype(bool)
    if real.shape != (n,):
        raise ValueError(f"key_mask must have shape ({n},), not {real.shape}")
    t[:n][real] = score_threshold(d)
    pol[:n][real] = 1
    return t, pol
