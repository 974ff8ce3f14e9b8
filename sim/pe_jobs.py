"""Dot-product jobs for the PE array: generation, beat encoding, expected results.

Shared by the Amaranth-simulator tests, the cocotb testbench and ``bebert demo``
so that every path drives the block the same way and checks it against the same
golden function, :func:`bebert.golden.pe_array.popcount_dot`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..golden.pe_array import Mode, pack_bits, popcount_dot
from ..hw.pe_array import PEArrayInput

__all__ = ["Job", "make_job", "encode_beats", "decode_result", "expected", "acc_width"]

KINDS = ("random", "ones", "zeros", "alternating")


def acc_width(max_k: int) -> int:
    """Result width of a PE array built for ``max_k``: ``signed(bits_for(max_k) + 1)``."""
    return max(1, int(max_k).bit_length()) + 1


@dataclass(frozen=True)
class Job:
    """One dot product of a K-bit activation with P weight rows."""

    a: np.ndarray      # (K,) uint8 bits
    w: np.ndarray      # (P, K) uint8 bits
    mode: Mode

    @property
    def k(self) -> int:
        return int(self.a.shape[0])

    @property
    def p(self) -> int:
        return int(self.w.shape[0])


def make_job(rng: np.random.Generator, p: int, k: int, mode: Mode = Mode.XNOR, kind: str = "random") -> Job:
    """A job of the given ``kind``: random bits, all ones, all zeros or alternating."""
    if kind == "random":
        a = rng.integers(0, 2, size=k, dtype=np.uint8)
        w = rng.integers(0, 2, size=(p, k), dtype=np.uint8)
    elif kind == "ones":
        a = np.ones(k, np.uint8)
        w = np.ones((p, k), np.uint8)
    elif kind == "zeros":
        a = np.zeros(k, np.uint8)
        w = np.zeros((p, k), np.uint8)
    elif kind == "alternating":
        a = (np.arange(k) % 2).astype(np.uint8)
        w = ((np.arange(k)[None, :] + np.arange(p)[:, None]) % 2).astype(np.uint8)
    else:
        raise ValueError(f"unknown job kind {kind!r}; choose from {', '.join(KINDS)}")
    return Job(a, w, Mode(mode))


def _to_int(bits: np.ndarray) -> int:
    if bits.size == 0:
        return 0
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def encode_beats(job: Job, s: int) -> list[int]:
    """Split a job into ceil(K/S) folds and pack each as a ``PEArrayInput`` payload.

    Layout (LSB first, as Amaranth's ``StructLayout`` lays it out): ``a`` (S bits),
    ``w`` (P x S bits, row 0 lowest), ``n`` (valid bits), ``mode`` (1 bit), ``last``.
    Bits past ``n`` in the last fold are zero, as the block requires.
    """
    k, p = job.k, job.p
    folds = -(-k // s)
    lay = PEArrayInput(p, s)
    beats = []
    for f in range(folds):
        lo, hi = f * s, min(k, (f + 1) * s)
        n = hi - lo
        a = np.zeros(s, np.uint8)
        w = np.zeros((p, s), np.uint8)
        a[:n] = job.a[lo:hi]
        w[:, :n] = job.w[:, lo:hi]
        word = _to_int(a) << lay["a"].offset
        word |= _to_int(w.reshape(-1)) << lay["w"].offset
        word |= n << lay["n"].offset
        word |= int(job.mode) << lay["mode"].offset
        word |= int(f == folds - 1) << lay["last"].offset
        beats.append(word)
    return beats


def decode_result(word: int, p: int, width: int) -> list[int]:
    """Unpack an ``ArrayLayout(signed(width), p)`` output payload."""
    mask = (1 << width) - 1
    vals = [(word >> (i * width)) & mask for i in range(p)]
    return [v - (1 << width) if v >> (width - 1) else v for v in vals]


def expected(job: Job, max_k: int) -> list[int]:
    """Golden results for a job, wrapped to the signed result width."""
    y = popcount_dot(pack_bits(job.a), pack_bits(job.w), job.k, job.mode)
    width = acc_width(max_k)
    half = 1 << (width - 1)
    return [(int(v) + half) % (1 << width) - half for v in y]
