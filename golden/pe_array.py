"""Golden functions for the XNOR/AND-popcount PE array.

Bit packing contract (see ``docs/arithmetic.md``): a K-bit binary vector is
stored as ``ceil(K/64)`` little-endian ``uint64`` words; bit ``k`` of the vector
is bit ``k % 64`` of word ``k // 64``. A set bit means +1 (XNOR domain) or 1
(AND domain); a clear bit means -1 or 0. Bits at positions >= K are ignored by
the golden functions (they are masked off), whatever their value.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "Mode",
    "pack_bits",
    "unpack_bits",
    "popcount_dot",
    "signed_dot",
    "bit_planes",
    "bitserial_dot",
]


class Mode(enum.IntEnum):
    """What one bit pair ``(a_k, w_k)`` contributes to the dot product."""

    #: ``~(a ^ w)``: 1 where the bits agree (+1 * +1 or -1 * -1); ``y = popcount(~(a ^ w))``.
    XNOR = 0
    #: ``w`` selects, ``a`` is +-1: contributes ``w_k * (2*a_k - 1)``;
    #: ``y = 2*popcount(a & w) - popcount(w)``. This is the context product
    #: ``A . sign(V)`` with the attention row ``A`` as ``w`` and a column of
    #: value bits ``v`` as ``a`` (DESIGN.md: ``2*popcount(A & v) - popcount(A)``).
    AND = 1


def _words(k: int) -> int:
    return (k + 63) // 64


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack the last axis of a 0/1 array into little-endian ``uint64`` words.

    Parameters
    ----------
    bits : array of shape ``(..., K)`` holding only 0 and 1.

    Returns
    -------
    ``uint64`` array of shape ``(..., ceil(K/64))``; padding bits are 0.

    Raises
    ------
    ValueError
        If ``bits`` holds anything other than 0 and 1, or ``K`` is 0.
    """
    bits = np.asarray(bits)
    if bits.ndim == 0 or bits.shape[-1] == 0:
        raise ValueError("pack_bits needs an array whose last axis has at least one bit")
    if not np.isin(bits, (0, 1)).all():
        raise ValueError("pack_bits takes only 0/1 values")
    k = bits.shape[-1]
    padded = np.zeros(bits.shape[:-1] + (_words(k) * 64,), dtype=np.uint8)
    padded[..., :k] = bits
    # np.packbits with bitorder="little" packs bit i of each byte at position i;
    # viewing eight bytes as one little-endian uint64 then puts vector bit k at
    # word bit k % 64.
    packed = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64)


def unpack_bits(words: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``(..., W)`` ``uint64`` words to ``(..., k)`` uint8 bits."""
    words = np.ascontiguousarray(np.asarray(words, dtype="<u8"))
    if k < 1 or k > words.shape[-1] * 64:
        raise ValueError(f"k={k} does not fit in {words.shape[-1]} words")
    as_bytes = words.view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, bitorder="little")[..., :k]


def _valid_mask(k: int) -> np.ndarray:
    mask = np.full(_words(k), np.uint64(0xFFFF_FFFF_FFFF_FFFF), dtype=np.uint64)
    rem = k % 64
    if rem:
        mask[-1] = np.uint64((1 << rem) - 1)
    return mask


def popcount_dot(a: np.ndarray, w: np.ndarray, k: int, mode: Mode = Mode.XNOR) -> np.ndarray:
    """Popcount dot products of packed binary vectors: the PE array's output.

    Over the ``k`` valid bits of each pair of vectors:

    - XNOR mode: ``y[..., p] = popcount(~(a ^ w[p]))``, the number of agreeing
      bits, ``0 <= y <= k``; the +-1 dot product is ``2*y - k`` (:func:`signed_dot`).
    - AND mode: ``y[..., p] = 2*popcount(a & w[p]) - popcount(w[p])``, the sum of
      the +-1 values of ``a`` where ``w[p]`` is set, ``-k <= y <= k``.

    Parameters
    ----------
    a : ``uint64`` array ``(..., W)``: packed activation vectors.
    w : ``uint64`` array ``(P, W)``: packed weight rows, one per output channel.
    k : number of valid bits (``W == ceil(k/64)``); bits past ``k`` are ignored.
    mode : :class:`Mode`.

    Returns
    -------
    ``int64`` array ``(..., P)``.

    Raises
    ------
    ValueError
        On a shape, dtype or ``k`` that does not match.
    """
    a = np.asarray(a)
    w = np.asarray(w)
    if a.dtype != np.uint64 or w.dtype != np.uint64:
        raise ValueError(f"popcount_dot takes packed uint64 words, not {a.dtype} and {w.dtype}")
    if k < 1:
        raise ValueError(f"k must be a positive bit count, not {k!r}")
    nw = _words(k)
    if a.shape[-1] != nw or w.ndim != 2 or w.shape[-1] != nw:
        raise ValueError(
            f"k={k} needs {nw} words on the last axis; got a {a.shape} and w {w.shape} (w must be (P, W))"
        )
    mode = Mode(mode)
    mask = _valid_mask(k)
    x = a[..., None, :] & mask
    wm = w & mask
    if mode is Mode.XNOR:
        return np.bitwise_count(~(x ^ wm) & mask).sum(axis=-1, dtype=np.int64)
    both = np.bitwise_count(x & wm).sum(axis=-1, dtype=np.int64)
    return 2 * both - np.bitwise_count(wm).sum(axis=-1, dtype=np.int64)


def signed_dot(a: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """The +-1 dot product ``sum_k a_k * w_k`` (bit 1 = +1, bit 0 = -1): ``2*popcount_xnor - k``."""
    return 2 * popcount_dot(a, w, k, Mode.XNOR) - k


def bit_planes(x: np.ndarray, bits: int) -> np.ndarray:
    """Packed bit-planes of unsigned ``bits``-bit integers: ``(bits, ..., ceil(K/64))`` uint64.

    Plane ``b`` holds bit ``b`` of every element of ``x`` (shape ``(..., K)``), so
    ``x = sum_b 2**b * plane_b``.

    Raises
    ------
    ValueError
        If ``x`` holds a value outside ``0 .. 2**bits - 1``.
    """
    x = np.asarray(x)
    if bits < 1 or x.size == 0 or x.min() < 0 or x.max() >= (1 << bits):
        raise ValueError(f"bit_planes takes integers in 0..{(1 << bits) - 1} (bits={bits}), "
                         f"got range {x.min() if x.size else None}..{x.max() if x.size else None}")
    x = x.astype(np.int64)
    return np.stack([pack_bits(((x >> b) & 1).astype(np.uint8)) for b in range(bits)])


def bitserial_dot(planes: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """The PE array's bit-serial (W1A4) result: ``y = sum_b 2**b * popcount(~(x_b ^ w))``.

    ``planes`` is :func:`bit_planes` of the activations ``x``; with ``B`` planes the
    +-1-weight dot product follows exactly as
    ``sum_k x_k * (2*w_k - 1) = y + (2**B - 1) * (popcount(w) - k)``
    (tested against plain integer arithmetic): the per-channel term is a constant
    of the weights, folded into the bias downstream.
    """
    planes = np.asarray(planes)
    return sum((popcount_dot(planes[b], w, k, Mode.XNOR) << b) for b in range(planes.shape[0]))
