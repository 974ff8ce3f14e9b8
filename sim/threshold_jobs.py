"""Threshold-unit jobs: generation, beat encoding, expected words.

Shared by the Amaranth-simulator tests and the cocotb testbench, so both drive
:class:`bebert.hw.threshold.ThresholdUnit` the same way and check it against the
same golden function, :func:`bebert.golden.threshold.threshold_words`.

A job is one threshold table (``C`` channels) and ``V`` accumulator vectors
that use it: the table goes in through ``t_stream`` (one beat per group of
``P`` channels), then the vectors through ``i_stream`` (``ceil(C/P)`` beats each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Shape

from ..golden.threshold import attention_table, threshold_words
from ..hw.threshold import ThresholdLoad

__all__ = ["ThresholdJob", "KINDS", "make_job", "encode_loads", "encode_beats", "expected_words",
           "decode_output", "words_per_vector"]

KINDS = ("random", "extremes", "constant", "attention")


@dataclass(frozen=True)
class ThresholdJob:
    """A threshold table and the vectors thresholded with it."""

    t: np.ndarray     # (C,) int64 thresholds
    pol: np.ndarray   # (C,) 0/1 polarities
    y: np.ndarray     # (V, C) int64 accumulators

    @property
    def c(self) -> int:
        return int(self.t.shape[0])

    @property
    def vectors(self) -> int:
        return int(self.y.shape[0])


def _range(width):
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def make_job(rng: np.random.Generator, c: int, width: int, vectors: int, kind: str = "random") -> ThresholdJob:
    """A job of ``kind``:

    - ``random``: random thresholds and polarities; accumulators mostly within
      +-2 of their threshold (ties and both neighbours), some anywhere in range;
    - ``extremes``: thresholds and accumulators from {min, min+1, -1, 0, 1, max-1, max};
    - ``constant``: every threshold ``min`` (constant 1 for ``pol = 1``, constant 0
      for ``pol = 0``, the masked channel);
    - ``attention``: the table of the bool rule for head size ``d = min(c, 64)``
      (:func:`~bebert.golden.threshold.attention_table`) with random padding keys,
      accumulators as XNOR popcounts ``0..d`` (many at ``d/2`` and ``d/2 + 1``).
    """
    lo, hi = _range(width)
    if kind == "random":
        t = rng.integers(lo, hi + 1, size=c)
        pol = rng.integers(0, 2, size=c)
        near = np.clip(t[None, :] + rng.integers(-2, 3, size=(vectors, c)), lo, hi)
        anywhere = rng.integers(lo, hi + 1, size=(vectors, c))
        y = np.where(rng.random((vectors, c)) < 0.75, near, anywhere)
    elif kind == "extremes":
        pick = np.array([lo, lo + 1, -1, 0, 1, hi - 1, hi])
        t = rng.choice(pick, size=c)
        pol = rng.integers(0, 2, size=c)
        y = rng.choice(pick, size=(vectors, c))
    elif kind == "constant":
        t = np.full(c, lo)
        pol = rng.integers(0, 2, size=c)
        y = rng.integers(lo, hi + 1, size=(vectors, c))
    elif kind == "attention":
        d = min(c, 64, hi)
        mask = (rng.random(c) < 0.8).astype(np.uint8)
        t, pol = attention_table(d, c, mask, width)
        y = np.where(rng.random((vectors, c)) < 0.5, d // 2 + rng.integers(0, 2, size=(vectors, c)),
                     rng.integers(0, d + 1, size=(vectors, c)))
    else:
        raise ValueError(f"unknown job kind {kind!r}; choose from {', '.join(KINDS)}")
    return ThresholdJob(t.astype(np.int64), pol.astype(np.int64), y.astype(np.int64))


def _field(lay, name, value):
    return (int(value) & ((1 << Shape.cast(lay[name].shape).width) - 1)) << lay[name].offset


def _signed_array(values, width) -> int:
    mask = (1 << width) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * width)
    return word


def groups_of(c: int, p: int) -> int:
    return -(-c // p)


def encode_loads(job: ThresholdJob, p: int, width: int, groups: int) -> list[int]:
    """``ThresholdLoad`` payloads for the job's table; channels past ``C`` get ``(min, 0)`` (bit 0)."""
    g = groups_of(job.c, p)
    if g > groups:
        raise ValueError(f"{job.c} channels need {g} groups; the unit holds {groups}")
    lo, _ = _range(width)
    t = np.full(g * p, lo, np.int64)
    pol = np.zeros(g * p, np.int64)
    t[:job.c], pol[:job.c] = job.t, job.pol
    lay = ThresholdLoad(p, width, groups)
    beats = []
    for i in range(g):
        sl = slice(i * p, (i + 1) * p)
        word = _field(lay, "addr", i)
        word |= _signed_array(t[sl], width) << lay["t"].offset
        word |= int(sum(int(b) << j for j, b in enumerate(pol[sl]))) << lay["pol"].offset
        word |= _field(lay, "last", i == g - 1)
        beats.append(word)
    return beats


def encode_beats(job: ThresholdJob, p: int, width: int, rng: np.random.Generator | None = None) -> list[int]:
    """``ArrayLayout(signed(width), p)`` payloads, ``ceil(C/P)`` per vector.

    Channels past ``C`` in the last group carry random values (``rng``) or zeros:
    the table's ``(min, 0)`` must turn them into 0 bits whatever they hold.
    """
    g = groups_of(job.c, p)
    lo, hi = _range(width)
    beats = []
    for vec in job.y:
        full = np.zeros(g * p, np.int64)
        if rng is not None:
            full[:] = rng.integers(lo, hi + 1, size=g * p)
        full[:job.c] = vec
        beats.extend(_signed_array(full[i * p:(i + 1) * p], width) for i in range(g))
    return beats


def words_per_vector(c: int, p: int, word_bits: int) -> int:
    return -(-groups_of(c, p) * p // word_bits)


def expected_words(job: ThresholdJob, p: int, word_bits: int) -> list[tuple[int, int]]:
    """``(bits, last)`` per output word, from the golden packed ``uint64`` words."""
    packed = threshold_words(job.y, job.t, job.pol)  # (V, ceil(C/64))
    n_words = words_per_vector(job.c, p, word_bits)
    mask = (1 << word_bits) - 1
    out = []
    for row in packed:
        value = int.from_bytes(row.astype("<u8").tobytes(), "little")
        out.extend(((value >> (i * word_bits)) & mask, int(i == n_words - 1)) for i in range(n_words))
    return out


def decode_output(word: int, word_bits: int) -> tuple[int, int]:
    """``ThresholdOutput`` payload to ``(bits, last)``."""
    return word & ((1 << word_bits) - 1), (word >> word_bits) & 1
