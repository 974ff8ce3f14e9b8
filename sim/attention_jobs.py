"""Bi-Attention heads: generation, beat encoding, expected context rows.

Shared by the Amaranth-simulator tests and the cocotb testbench, so both drive
:class:`bebert.hw.attention.BiAttention` the same way and check it against the
same golden function, :func:`bebert.golden.attention.bi_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..golden.attention import bi_attention
from ..golden.pe_array import pack_bits
from ..hw.attention import AttentionInput, AttentionKind

__all__ = ["Head", "KINDS", "make_head", "encode_beats", "expected_rows", "decode_output"]

KINDS = ("random", "ties", "balanced", "negative", "ones", "zeros", "all_masked", "padded")


@dataclass(frozen=True)
class Head:
    """One head: query bits ``(m, d)``, key and value bits ``(n, d)``, key mask ``(n,)`` (1 = token)."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    mask: np.ndarray

    @property
    def d(self) -> int:
        return int(self.q.shape[1])

    @property
    def n(self) -> int:
        return int(self.k.shape[0])

    @property
    def m(self) -> int:
        return int(self.q.shape[0])


def _bits(rng, *shape):
    return rng.integers(0, 2, size=shape, dtype=np.uint8)


def make_head(rng: np.random.Generator, d: int, n: int, m: int | None = None, kind: str = "random") -> Head:
    """A head of ``kind`` with ``n`` keys and ``m`` (default ``n``) queries:

    - ``random``: random bits, every key a token;
    - ``ties``: each key is a query with ``d // 2`` or ``d // 2 + 1`` bits flipped, so
      scores sit at 0 (ties, attention 0 for even ``d``) and just beside it;
    - ``balanced``: keys in identical pairs with complementary values, so every
      context is exactly 0 (output all ones: sign(0) = +1);
    - ``negative``: all values -1 (a row is all zeros unless it attends to nothing);
    - ``ones`` / ``zeros``: every bit 1 / 0;
    - ``all_masked``: random bits, every key padding (all ones out);
    - ``padded``: random bits, the last third of the keys padding (mask 0).
    """
    m = n if m is None else m
    q, k, v = _bits(rng, m, d), _bits(rng, n, d), _bits(rng, n, d)
    mask = np.ones(n, np.uint8)
    if kind == "random":
        pass
    elif kind == "ties":
        for j in range(n):
            flips = rng.permutation(d)[: d // 2 + int(rng.integers(0, 2))]
            k[j] = q[int(rng.integers(0, m))]
            k[j, flips] ^= 1
    elif kind == "balanced":
        for j in range(1, n, 2):
            k[j] = k[j - 1]
            v[j] = 1 - v[j - 1]
        if n % 2:
            mask[-1] = 0  # an unpaired key would tip the balance
    elif kind == "negative":
        v[:] = 0
    elif kind == "ones":
        q[:], k[:], v[:] = 1, 1, 1
    elif kind == "zeros":
        q[:], k[:], v[:] = 0, 0, 0
    elif kind == "all_masked":
        mask[:] = 0
    elif kind == "padded":
        mask[n - n // 3:] = 0
    else:
        raise ValueError(f"unknown head kind {kind!r}; choose from {', '.join(KINDS)}")
    return Head(q, k, v, mask)


def _int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def encode_beats(head: Head, max_len: int | None = None) -> list[int]:
    """``AttentionInput`` payloads: ``n`` KV beats (the last flagged), then ``m`` Q beats (the last flagged).

    Raises ``ValueError`` if ``n`` exceeds ``max_len`` (a protocol error for the unit).
    """
    if max_len is not None and head.n > max_len:
        raise ValueError(f"n={head.n} keys exceed max_len={max_len}")
    lay = AttentionInput(head.d)
    beats = []
    for j in range(head.n):
        word = int(AttentionKind.KV.value) << lay["kind"].offset
        word |= _int(head.k[j]) << lay["qk"].offset
        word |= _int(head.v[j]) << lay["v"].offset
        word |= int(head.mask[j]) << lay["mask"].offset
        word |= int(j == head.n - 1) << lay["last"].offset
        beats.append(word)
    for i in range(head.m):
        word = int(AttentionKind.Q.value) << lay["kind"].offset
        word |= _int(head.q[i]) << lay["qk"].offset
        word |= int(i == head.m - 1) << lay["last"].offset
        beats.append(word)
    return beats


def expected_rows(head: Head) -> list[tuple[int, int]]:
    """``(context bits, last)`` per query row, from the golden packed words."""
    words = bi_attention(pack_bits(head.q), pack_bits(head.k), pack_bits(head.v), head.d, head.mask)
    rows = [int.from_bytes(r.astype("<u8").tobytes(), "little") for r in words]
    return [(r, int(i == head.m - 1)) for i, r in enumerate(rows)]


def decode_output(word: int, d: int) -> tuple[int, int]:
    """``AttentionOutput`` payload to ``(context bits, last)``."""
    return word & ((1 << d) - 1), (word >> d) & 1
