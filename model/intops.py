"""The integer operations of the deployment contract, in torch, for the fake-quant forward pass.

``docs/arithmetic.md`` defines these operations; ``golden/`` implements them again in NumPy
(independently) and ``hw/`` in gates. The student uses the functions here so that, with fixed
point enabled, its forward values *are* the contract's integers (scaled by the format's LSB);
gradients still flow through the floating-point formula by a straight-through replacement
(:func:`replace_forward`).

Integer LayerNorm (``docs/arithmetic.md`` section 6), for ``H`` residual codes ``x`` (format
``Q(.., fr)``), gain codes ``g`` (``Q(.., fg)``), shift codes ``b`` (``Q(.., fb)``)::

    S = sum x                      d_i = H*x_i - S            (= H * (x_i - mean))
    V = H * sum x^2 - S^2          (= sum d^2 / H = H^2 * variance, exact, >= 0)
    M = V + E                      E = max(1, ceil(eps * H^2 * 4**fr))
    s = bit_length(M) - LN_MANT_BITS, rounded up to even      (may be negative)
    m = M >> s  (or M << -s)       m in [2**(LN_MANT_BITS-2), 2**LN_MANT_BITS)
    R = floor(2**LN_RSQRT_FRAC / sqrt(m))      (bit-serial, exact; LN_RSQRT_BITS result bits)
    n_i = (d_i * R) >> (LN_RSQRT_FRAC + s/2 - LN_NORM_FRAC)   (normalized, Q(.., LN_NORM_FRAC))
    y_i = sat_out(floor(n_i * g_i * 2**-(LN_NORM_FRAC + fg) + b_i * 2**-fb) in the output grid)
"""

from __future__ import annotations

import decimal
import functools
import math

import numpy as np
import torch

__all__ = [
    "LN_MANT_BITS",
    "LN_RSQRT_FRAC",
    "LN_RSQRT_BITS",
    "LN_NORM_FRAC",
    "ln_eps_code",
    "ln_params",
    "int_layernorm",
    "tanh_table",
    "replace_forward",
    "codes_of",
]

#: Width of the normalized variance mantissa ``m`` fed to the reciprocal square root.
LN_MANT_BITS = 16
#: ``R = floor(2**LN_RSQRT_FRAC / sqrt(m))``; with ``m >= 2**14`` this keeps ``R <= 2**15``.
LN_RSQRT_FRAC = 22
#: Result bits of the bit-serial reciprocal square root (``R < 2**LN_RSQRT_BITS``).
LN_RSQRT_BITS = 16
#: Fraction bits of the normalized value ``n = (x - mean) / sigma`` before the gain.
LN_NORM_FRAC = 15


def ln_params() -> dict[str, int]:
    """The LayerNorm method's constants (written into every integer model's metadata)."""
    return {"mant_bits": LN_MANT_BITS, "rsqrt_frac": LN_RSQRT_FRAC, "rsqrt_bits": LN_RSQRT_BITS,
            "norm_frac": LN_NORM_FRAC}


def ln_eps_code(eps: float, hidden: int, frac: int) -> int:
    """The LayerNorm epsilon in units of ``V`` (``H^2 * 4**frac`` per unit of variance), at least 1."""
    return max(1, math.ceil(eps * hidden * hidden * 4.0**frac))


def _shift(x: torch.Tensor, s: int) -> torch.Tensor:
    """``floor(x * 2**-s)`` for a constant ``s`` of either sign (arithmetic shift)."""
    return x >> s if s >= 0 else x << (-s)


def _bit_length(m: torch.Tensor) -> torch.Tensor:
    """Bit length of non-negative int64 values (integer-only binary search)."""
    k = torch.zeros_like(m)
    for sh in (32, 16, 8, 4, 2, 1):
        step = ((m >> (k + sh)) > 0).to(m.dtype) * sh
        k = k + step
    return k + (m > 0).to(m.dtype)


def _rsqrt(m: torch.Tensor) -> torch.Tensor:
    """``floor(2**LN_RSQRT_FRAC / sqrt(m))`` bit-serially: the largest ``R`` with ``R^2 m <= 4**P``."""
    target = 1 << (2 * LN_RSQRT_FRAC)
    r = torch.zeros_like(m)
    for b in range(LN_RSQRT_BITS - 1, -1, -1):
        t = r | (1 << b)
        r = torch.where(t * t * m <= target, t, r)
    return r


def int_layernorm(
    x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, fr: int, fg: int, fb: int, out_fmt, eps_code: int
) -> torch.Tensor:
    """Integer LayerNorm over the last axis (see the module docstring); int64 codes in and out."""
    h = x.shape[-1]
    s_ = x.sum(-1, keepdim=True)
    d = h * x - s_
    v = h * (x * x).sum(-1, keepdim=True) - s_ * s_
    m_full = v + eps_code
    if bool((m_full >= (1 << 62)).any()):
        raise ValueError("LayerNorm variance overflows the 62-bit integer range")
    k = _bit_length(m_full)
    s = k - LN_MANT_BITS
    s = s + (s & 1)
    m = torch.where(s >= 0, m_full >> s.clamp(min=0), m_full << (-s).clamp(min=0))
    r = _rsqrt(m)
    n = (d * r) >> (LN_RSQRT_FRAC + s // 2 - LN_NORM_FRAC)
    fp = LN_NORM_FRAC + fg
    f = max(fp, fb, out_fmt.frac)
    z = _shift(n * g, fp - f) + _shift(b, fb - f)
    y = _shift(z, f - out_fmt.frac)
    return y.clamp(out_fmt.qmin, out_fmt.qmax)


@functools.lru_cache(maxsize=16)
def _tanh_table_cached(in_bits: int, in_frac: int, in_signed: bool, out_bits: int, out_frac: int, out_signed: bool):
    lo = -(1 << (in_bits - 1)) if in_signed else 0
    hi = (1 << (in_bits - 1)) - 1 if in_signed else (1 << in_bits) - 1
    codes = np.arange(lo, hi + 1, dtype=np.int64)
    scaled = np.tanh(np.ldexp(codes.astype(np.float64), -in_frac)) * math.ldexp(1.0, out_frac)
    vals = np.floor(scaled)
    # The contract is the floor of the true tanh. float64 is within a few ulp of it, so only
    # values within 1e-9 of an integer can floor the wrong way (tanh(19.1) rounds to 1.0, for
    # one); those are recomputed with 60-digit decimals.
    near = np.nonzero(np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled)))[0]
    if near.size:
        ctx = decimal.Context(prec=60)
        one = decimal.Decimal(1 << out_frac) if out_frac >= 0 else ctx.divide(1, decimal.Decimal(1 << -out_frac))
        for i in near:
            c = int(codes[i])
            if c == 0:
                vals[i] = 0.0
                continue
            x = ctx.divide(decimal.Decimal(abs(c)), decimal.Decimal(2) ** in_frac)
            # 2**out_frac * (1 - tanh|x|) = 2**out_frac * 2 / (exp(2|x|) + 1), with no cancellation
            sm = ctx.divide(ctx.multiply(one, 2), ctx.add(ctx.exp(ctx.multiply(x, 2)), 1))
            vals[i] = float(int(one) - math.ceil(sm) if c > 0 else math.floor(sm) - int(one))
    qmin = -(1 << (out_bits - 1)) if out_signed else 0
    qmax = (1 << (out_bits - 1)) - 1 if out_signed else (1 << out_bits) - 1
    table = np.clip(vals, qmin, qmax).astype(np.int64)
    # keep only the part that changes: clamping the input to [start, end] gives the same table
    changes = np.nonzero(table != table[0])[0]
    start = max(int(changes[0]) - 1, 0) if changes.size else 0
    changes = np.nonzero(table != table[-1])[0]
    end = min(int(changes[-1]) + 1, table.size - 1) if changes.size else table.size - 1
    table = table[start : end + 1].copy()
    table.setflags(write=False)
    return lo + start, table


def tanh_table(in_fmt, out_fmt) -> tuple[int, np.ndarray]:
    """The pooler's tanh as a table: ``out = T[clamp(c, c0, c0 + len(T) - 1) - c0]``.

    ``T[c - c0] = sat_out(floor(tanh(c * 2**-in_frac) * 2**out_frac))`` for input codes ``c``; the
    table keeps only the codes where it changes (it is constant beyond both ends).

    Returns
    -------
    c0 : int
        The input code of entry 0.
    table : numpy.ndarray
        Read-only int64 output codes.
    """
    return _tanh_table_cached(in_fmt.bits, in_fmt.frac, in_fmt.signed, out_fmt.bits, out_fmt.frac, out_fmt.signed)


class _Replace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, surrogate, exact):  # noqa: D102
        return exact.to(surrogate.dtype).clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad, None


def replace_forward(surrogate: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """The values of ``exact`` with the gradient of ``surrogate`` (exact straight-through)."""
    return _Replace.apply(surrogate, exact.detach())


def codes_of(x: torch.Tensor, frac: int) -> torch.Tensor:
    """Integer codes (int64) of values already on the grid ``2**-frac``."""
    return torch.round(x.detach().to(torch.float64) * math.ldexp(1.0, frac)).to(torch.int64)
