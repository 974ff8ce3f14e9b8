"""Vector-unit jobs: generation, beat encoding, expected outputs.

Shared by the Amaranth-simulator tests and the cocotb testbench, so both drive
:class:`bebert.hw.vector.VectorUnit` the same way and check it against the same golden
function, :func:`bebert.golden.vector.vector_step`.

A job is one parameter table (``H`` channels, ``K``) and ``T`` tokens that use it: the table
goes in through ``p_stream`` (one beat per channel), then the tokens through ``i_stream``
(``H`` beats each, channel order); ``H`` results per token come out, the last flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Shape

from ..golden.vector import VectorFormats, vector_step
from ..hw.vector import VectorInput, VectorLoad, VectorOutput

__all__ = ["VectorJob", "KINDS", "make_job", "encode_loads", "encode_beats", "expected_outputs",
           "decode_output"]

KINDS = ("random", "saturate", "zero_variance", "small_variance", "extremes")


@dataclass(frozen=True)
class VectorJob:
    """A parameter table and the tokens computed with it."""

    k: int
    scale: np.ndarray   # (H,) codes
    bias: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    acc: np.ndarray     # (T, H) popcounts 0..k
    x: np.ndarray       # (T, H) residual codes

    @property
    def h(self) -> int:
        return int(self.scale.shape[0])

    @property
    def tokens(self) -> int:
        return int(self.acc.shape[0])


def _rand(rng, fmt, size, lo=None, hi=None):
    return rng.integers(fmt.qmin if lo is None else lo, (fmt.qmax if hi is None else hi) + 1, size=size)


def make_job(rng: np.random.Generator, h: int, k: int, tokens: int, fmts: VectorFormats,
             kind: str = "random") -> VectorJob:
    """A job of ``kind``:

    - ``random``: realistic magnitudes (``alpha`` up to 0.25, biases and residuals of a few
      units, gains near 1) with some negative scales;
    - ``saturate``: large scales and biases, residuals at the format's ends and large gains, so
      that ``y``, the residual sum and the LayerNorm output all saturate;
    - ``zero_variance``: every channel of a token gets the same sum (``V = 0``, ``M = E``);
    - ``small_variance``: sums equal but for one or two channels one code apart (negative
      normalization shift);
    - ``extremes``: every value from the ends of its range (``acc`` 0 or ``K``).
    """
    f = fmts
    shape = (tokens, h)
    if kind == "random":
        scale = _rand(rng, f.scale, h, -(1 << (f.scale.frac - 3)), 1 << (f.scale.frac - 2))
        bias = _rand(rng, f.bias, h, -(4 << f.bias.frac), 4 << f.bias.frac)
        gamma = _rand(rng, f.ln_weight, h, 0, 2 << f.ln_weight.frac)
        beta = _rand(rng, f.ln_bias, h, -(1 << f.ln_bias.frac), 1 << f.ln_bias.frac)
        acc = rng.integers(0, k + 1, size=shape)
        x = _rand(rng, f.layernorm, shape, -(8 << f.layernorm.frac), 8 << f.layernorm.frac)
    elif kind == "saturate":
        scale = _rand(rng, f.scale, h, f.scale.qmax // 2)
        scale[rng.random(h) < 0.3] *= -1
        bias = rng.choice([f.bias.qmin, f.bias.qmax], size=h)
        gamma = rng.choice([f.ln_weight.qmin, f.ln_weight.qmax, f.ln_weight.qmax // 2], size=h)
        beta = rng.choice([f.ln_bias.qmin, f.ln_bias.qmax, 0], size=h)
        acc = rng.choice([0, k, k // 2], size=shape)
        x = rng.choice([f.layernorm.qmin, f.layernorm.qmax, 0], size=shape)
    elif kind in ("zero_variance", "small_variance"):
        # scale 0 and one bias: y is the bias; x equal across channels: the sum is constant
        scale = np.zeros(h, np.int64)
        bias = np.full(h, int(_rand(rng, f.bias, 1)[0]))
        gamma = _rand(rng, f.ln_weight, h)
        beta = _rand(rng, f.ln_bias, h)
        acc = rng.integers(0, k + 1, size=shape)
        x = np.repeat(_rand(rng, f.layernorm, (tokens, 1), -(1 << 12), 1 << 12), h, axis=1)
        if kind == "small_variance":
            for t in range(tokens):
                x[t, rng.integers(0, h, size=2)] += 1
    elif kind == "extremes":
        def pick(fmt, size):
            return rng.choice([fmt.qmin, fmt.qmin + 1, -1, 0, 1, fmt.qmax - 1, fmt.qmax], size=size)
        scale, bias, gamma, beta = (pick(fm, h) for fm in (f.scale, f.bias, f.ln_weight, f.ln_bias))
        acc = rng.choice([0, 1, k - 1, k], size=shape)
        x = pick(f.layernorm, shape)
    else:
        raise ValueError(f"unknown job kind {kind!r}; choose from {', '.join(KINDS)}")
    i64 = lambda a: np.asarray(a, dtype=np.int64)  # noqa: E731
    return VectorJob(int(k), i64(scale), i64(bias), i64(gamma), i64(beta), i64(acc), i64(x))


def _pack(layout, **values) -> int:
    word = 0
    for name, value in values.items():
        fld = layout[name]
        word |= (int(value) & ((1 << Shape.cast(fld.shape).width) - 1)) << fld.offset
    return word


def encode_loads(job: VectorJob, fmts: VectorFormats, max_h: int, max_k: int) -> list[int]:
    """``VectorLoad`` payloads of the job's table, channel 0 first, the last one flagged."""
    if job.h > max_h or job.k > max_k:
        raise ValueError(f"H = {job.h}, K = {job.k} exceed the unit's {max_h}, {max_k}")
    lay = VectorLoad(fmts, max_h, max_k)
    return [_pack(lay, addr=i, scale=job.scale[i], bias=job.bias[i], gamma=job.gamma[i], beta=job.beta[i],
                  k=job.k if i == job.h - 1 else 0, last=int(i == job.h - 1)) for i in range(job.h)]


def encode_beats(job: VectorJob, fmts: VectorFormats, acc_width: int, vw: int = 1) -> list[int]:
    """``VectorInput`` payloads, ``H`` per token in channel order; with ``vw > 1`` ``VectorInputs`` payloads
    of ``vw`` channels each, ``H / vw`` per token."""
    if vw == 1:
        lay = VectorInput(fmts, acc_width)
        return [_pack(lay, acc=a, x=xv) for t in range(job.tokens) for a, xv in zip(job.acc[t], job.x[t])]
    if job.h % vw:
        raise ValueError(f"H = {job.h} is not a multiple of vw = {vw}")
    xb, am, xm = fmts.layernorm.bits, (1 << acc_width) - 1, (1 << fmts.layernorm.bits) - 1
    beats = []
    for t in range(job.tokens):
        for c in range(0, job.h, vw):
            w = 0
            for j in range(vw):
                w |= (int(job.acc[t, c + j]) & am) << (j * acc_width)
                w |= (int(job.x[t, c + j]) & xm) << (vw * acc_width + j * xb)
            beats.append(w)
    return beats


def expected_outputs(job: VectorJob, fmts: VectorFormats) -> list[tuple[int, int, int]]:
    """``(y, bit, last)`` per output beat, from the golden function."""
    out, bits = vector_step(job.acc, job.x, job.k, job.scale, job.bias, job.gamma, job.beta, fmts)
    return [(int(out[t, i]), int(bits[t, i]), int(i == job.h - 1))
            for t in range(job.tokens) for i in range(job.h)]


def decode_outputs(word: int, fmts: VectorFormats, vw: int) -> list[tuple[int, int, int]]:
    """``VectorOutputs`` payload of ``vw`` channels to ``(y, bit, last)`` per channel (``last`` on the token's
    last channel)."""
    yb = fmts.layernorm.bits
    out = []
    for j in range(vw):
        y = (word >> (j * yb)) & ((1 << yb) - 1)
        y -= (1 << yb) if y >> (yb - 1) else 0
        bit = (word >> (vw * yb + j)) & 1
        last = (word >> (vw * yb + vw)) & 1
        out.append((y, bit, int(bool(last) and j == vw - 1)))
    return out


def decode_output(word: int, fmts: VectorFormats) -> tuple[int, int, int]:
    """``VectorOutput`` payload to ``(y, bit, last)``."""
    lay = VectorOutput(fmts)

    def field(name, signed=False):
        fld = lay[name]
        w = Shape.cast(fld.shape).width
        v = (word >> fld.offset) & ((1 << w) - 1)
        return v - (1 << w) if signed and v >> (w - 1) else v

    return field("y", True), field("bit"), field("last")
