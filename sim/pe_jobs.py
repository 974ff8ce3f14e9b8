"""Dot-product jobs for the PE array: generation, beat encoding, expected results.

Shared by the Amaranth-simulator tests, the cocotb testbench and ``bebert demo``
so that every path drives the block the same way and checks it against the same
golden function, :func:`bebert.golden.pe_array.popcount_dot`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..golden.pe_array import Mode, bit_planes, bitserial_dot, pack_bits, popcount_dot
from ..hw.pe_array import PEArrayInput

__all__ = ["Job", "make_job", "encode_beats", "decode_result", "expected", "acc_width"]

KINDS = ("random", "ones", "zeros", "alternating")


def acc_width(max_k: int, max_shift: int = 0) -> int:
    """Result width of a ``PEArray(max_k=max_k, max_shift=max_shift)`` (signed)."""
    return max(1, int(max_k * ((2 << max_shift) - 1)).bit_length()) + 1


@dataclass(frozen=True)
class Job:
    """One dot product of a K-bit activation with P weight rows."""

    a: np.ndarray      # (K,) activations: bits, or unsigned `bits`-bit integers (bit-serial)
    w: np.ndarray      # (P, K) uint8 bits
    mode: Mode
    bits: int = 1      # activation width; > 1 is sent as bit-planes (XNOR mode, shift = plane)

    @property
    def k(self) -> int:
        return int(self.a.shape[0])

    @property
    def p(self) -> int:
        return int(self.w.shape[0])


def make_job(rng: np.random.Generator, p: int, k: int, mode: Mode = Mode.XNOR, kind: str = "random",
             bits: int = 1) -> Job:
    """A job of the given ``kind``: random bits, all ones, all zeros or alternating.

    With ``bits > 1`` the activations are ``bits``-bit integers (XNOR mode): random,
    all at the maximum (``ones``), zero, or alternating between 0 and the maximum.
    """
    if bits > 1:
        top = (1 << bits) - 1
        base = make_job(rng, p, k, Mode.XNOR, kind)
        a = rng.integers(0, top + 1, size=k) if kind == "random" else base.a.astype(np.int64) * top
        return Job(a, base.w, Mode.XNOR, bits)
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


def encode_beats(job: Job, s: int, max_shift: int = 0) -> list[int]:
    """Split a job into ceil(K/S) folds and pack each as a ``PEArrayInput`` payload.

    Layout (LSB first, as Amaranth's ``StructLayout`` lays it out): ``a`` (S bits),
    ``w`` (P x S bits, row 0 lowest), ``n`` (valid bits), ``mode`` (1 bit), ``last``,
    and ``shift`` when ``max_shift > 0``. Bits past ``n`` in the last fold are zero,
    as the block requires. A multi-bit job is sent fold-major: each fold's
    bit-planes one after the other (plane ``b`` with ``shift = b``), so a fold's
    weights are used ``bits`` times in a row.
    """
    k, p = job.k, job.p
    if job.bits > 1 and (job.bits - 1 > max_shift or job.mode is not Mode.XNOR):
        raise ValueError(f"a {job.bits}-bit job needs XNOR mode and max_shift >= {job.bits - 1}")
    folds = -(-k // s)
    lay = PEArrayInput(p, s, max_shift)
    a_all = np.asarray(job.a, dtype=np.int64)
    beats = []
    for f in range(folds):
        lo, hi = f * s, min(k, (f + 1) * s)
        n = hi - lo
        w = np.zeros((p, s), np.uint8)
        w[:, :n] = job.w[:, lo:hi]
        w_word = _to_int(w.reshape(-1)) << lay["w"].offset
        for b in range(job.bits):
            a = np.zeros(s, np.uint8)
            a[:n] = (a_all[lo:hi] >> b) & 1
            word = _to_int(a) << lay["a"].offset
            word |= w_word
            word |= n << lay["n"].offset
            word |= int(job.mode) << lay["mode"].offset
            word |= int(f == folds - 1 and b == job.bits - 1) << lay["last"].offset
            if max_shift:
                word |= b << lay["shift"].offset
            beats.append(word)
    return beats


def decode_result(word: int, p: int, width: int) -> list[int]:
    """Unpack an ``ArrayLayout(signed(width), p)`` output payload."""
    mask = (1 << width) - 1
    vals = [(word >> (i * width)) & mask for i in range(p)]
    return [v - (1 << width) if v >> (width - 1) else v for v in vals]


def expected(job: Job, max_k: int, max_shift: int = 0) -> list[int]:
    """Golden results for a job, wrapped to the signed result width."""
    if job.bits > 1:
        y = bitserial_dot(bit_planes(job.a, job.bits), pack_bits(job.w), job.k)
    else:
        y = popcount_dot(pack_bits(job.a), pack_bits(job.w), job.k, job.mode)
    width = acc_width(max_k, max_shift)
    half = 1 << (width - 1)
    return [(int(v) + half) % (1 << width) - half for v in y]
