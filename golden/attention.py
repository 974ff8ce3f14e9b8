"""Golden functions for the Bi-Attention unit (one head), on packed ``uint64`` words.

For a head of size ``d`` with query bits ``Q`` (``m x d``), key bits ``K`` and
value bits ``V`` (``n x d``; bit 1 = +1, 0 = -1) and a key mask (1 = token,
0 = padding), the rules of :mod:`bebert.model.binarize`:

1. scores: ``y_ij = popcount(~(q_i ^ k_j))`` over the ``d`` bits (the +-1 dot
   product is ``2*y_ij - d``);
2. attention bits: ``A_ij = 1`` iff ``2*y_ij - d > 0`` (strictly: a tie gives 0)
   and ``key_mask[j] == 1`` (:func:`bebert.golden.threshold.score_bits`);
3. context: ``C_ic = sum_j A_ij * (2*v_jc - 1) = 2*popcount(A_i & v_c) - popcount(A_i)``
   with ``v_c`` the value column ``c`` (``n`` bits): the PE array's AND mode with
   the attention row as the selecting operand;
4. output bits: ``sign(C_ic)``, 1 for ``C_ic >= 0`` (sign(0) = +1, so a query that
   attends to nothing gives all ones).

Packing as everywhere (``docs/arithmetic.md`` section 1): bit ``k`` of a row is bit
``k % 64`` of word ``k // 64``. The number of queries ``m`` need not equal ``n``
(the hardware takes any number of query rows per loaded K/V).
"""

from __future__ import annotations

import numpy as np

from .pe_array import Mode, pack_bits, popcount_dot, unpack_bits
from .threshold import score_bits

__all__ = ["attention_scores", "attention_bits", "attention_context", "bi_attention"]


def _rows(x, name, d):
    x = np.asarray(x)
    if x.dtype != np.uint64 or x.ndim != 2 or x.shape[1] != (d + 63) // 64:
        raise ValueError(f"{name} must be packed uint64 rows of shape (rows, {(d + 63) // 64}) "
                         f"for d={d}, not {x.dtype} {x.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} needs at least one row")
    return x


def attention_scores(q: np.ndarray, k: np.ndarray, d: int) -> np.ndarray:
    """XNOR popcounts ``y_ij = popcount(~(q_i ^ k_j))``: ``int64`` ``(m, n)``, ``0 <= y <= d``."""
    q, k = _rows(q, "q", d), _rows(k, "k", d)
    return popcount_dot(q, k, d, Mode.XNOR)


def attention_bits(q: np.ndarray, k: np.ndarray, d: int, key_mask: np.ndarray | None = None) -> np.ndarray:
    """Attention bits ``A`` packed: ``uint64`` ``(m, ceil(n/64))``, bit ``j`` of row ``i`` is ``A_ij``."""
    return pack_bits(score_bits(attention_scores(q, k, d), d, key_mask))


def attention_context(a: np.ndarray, v: np.ndarray, n: int, d: int) -> np.ndarray:
    """Integer context ``C_ic = 2*popcount(A_i & v_c) - popcount(A_i)``: ``int64`` ``(m, d)``.

    Parameters
    ----------
    a : packed attention rows ``(m, ceil(n/64))``.
    v : packed value rows ``(n, ceil(d/64))``.
    n : number of keys (valid bits of each attention row).
    d : head size.
    """
    v = _rows(v, "v", d)
    if v.shape[0] != n:
        raise ValueError(f"v has {v.shape[0]} rows, expected n={n}")
    cols = pack_bits(unpack_bits(v, d).T)  # (d, ceil(n/64)): value column c as an n-bit vector
    # popcount_dot AND mode: 2*popcount(a & w) - popcount(w), w selects: w = A_i, a = v_c
    return popcount_dot(cols, np.asarray(a), n, Mode.AND).T.copy()


def bi_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, d: int,
                 key_mask: np.ndarray | None = None) -> np.ndarray:
    """Context sign bits of one head: ``uint64`` ``(m, ceil(d/64))``, bit ``c`` of row ``i`` = ``C_ic >= 0``.

    ``q`` is ``(m, ceil(d/64))``, ``k`` and ``v`` are ``(n, ceil(d/64))`` packed
    rows; ``key_mask`` is 0/1 of shape ``(n,)`` or None (all tokens).

    Raises
    ------
    ValueError
        On packed arrays of the wrong shape or dtype, or ``k`` and ``v`` of different lengths.
    """
    k = _rows(k, "k", d)
    n = k.shape[0]
    a = attention_bits(q, k, d, key_mask)
    c = attention_context(a, v, n, d)
    return pack_bits((c >= 0).astype(np.uint8))
