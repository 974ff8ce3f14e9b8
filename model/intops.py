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
from fractions import Fraction

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
    "SOFTMAX_EXP_FRAC",
    "lsq_thresholds",
    "gelu_thresholds",
    "softmax_delta_max",
    "context_bound",
    "softmax_exp_table",
    "dyadic",
    "softmax_prob_step",
    "int_softmax_codes",
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


# ------------------------------------------------------------------------------------------
# W1A4 (BinaryBERT) operations, docs/arithmetic.md section 14. Shared by the fake-quant forward
# pass and the export, so both use the same integers; golden/ applies them with NumPy.
# ------------------------------------------------------------------------------------------

#: Fraction bits of the integer softmax's exp table: ``E = floor(2**SOFTMAX_EXP_FRAC * exp(-delta * r))``.
SOFTMAX_EXP_FRAC = 15
#: Largest shift ``k`` of a probability step ``s_p = m * 2**-k`` the integer softmax accepts (int64 widths).
SOFTMAX_MAX_STEP_SHIFT = 45


def _ceil_fraction(v: Fraction) -> int:
    return -((-v.numerator) // v.denominator)


def lsq_thresholds(step: float, lsb, qmin: int, qmax: int, lo: int, hi: int) -> np.ndarray:
    """Multi-threshold form of ``q = clamp(floor(c * lsb / step + 1/2), qmin, qmax)`` for integers ``c``.

    ``q = qmin + #{j : c >= t_j}`` with ``t_j = ceil((j - 1/2) * step / lsb)`` for
    ``j = qmin+1 .. qmax`` (round half up: ``c * lsb / step = j - 1/2`` exactly gives ``j``).
    Computed exactly in rationals (``step`` and ``lsb`` are dyadic). Thresholds are clipped to
    ``[lo, hi]`` (pass ``lo = cmin``, ``hi = cmax + 1`` for inputs in ``cmin..cmax``: the counts
    are unchanged).

    Parameters
    ----------
    step : float
        The LSQ step ``s > 0`` (a float32 value, exact as a rational).
    lsb : int, float or Fraction
        The value of one unit of ``c`` (``2**-frac`` for a fixed-point code).

    Returns
    -------
    numpy.ndarray
        int64 ``(qmax - qmin,)``, non-decreasing.

    Raises
    ------
    ValueError
        If ``step`` or ``lsb`` is not positive and finite.
    """
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"an LSQ step must be positive and finite, not {step!r}")
    lsb = Fraction(lsb)
    if lsb <= 0:
        raise ValueError(f"the input LSB must be positive, not {lsb}")
    ratio = Fraction(step) / lsb
    out = [min(max(_ceil_fraction(Fraction(2 * j - 1, 2) * ratio), lo), hi) for j in range(qmin + 1, qmax + 1)]
    return np.array(out, dtype=np.int64)


def _gelu_float(x: float) -> float:
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def _gelu_ge(h: int, frac: int, target: Fraction) -> bool:
    """``GELU(h * 2**-frac) >= target`` for the exact (erf) GELU; float64 unless too close to call."""
    x = math.ldexp(float(h), -frac)
    g, t = _gelu_float(x), float(target)
    if abs(g - t) > 1e-9 * max(abs(t), 1e-300):
        return g >= t
    import mpmath

    with mpmath.workdps(60):
        xm = mpmath.mpf(h) / mpmath.mpf(2) ** frac
        diff = xm * mpmath.ncdf(xm) - mpmath.mpf(target.numerator) / target.denominator
        if abs(diff) < mpmath.mpf(10) ** -50:
            raise ValueError(f"GELU({h} * 2^-{frac}) is too close to the threshold {target} to decide")
        return bool(diff > 0)


@functools.lru_cache(maxsize=256)
def gelu_thresholds(step: float, frac: int, qmax: int, lo: int, hi: int) -> np.ndarray:
    """Thresholds on pre-GELU codes ``h`` for the unsigned code ``clamp(floor(GELU(h 2^-frac) / step + 1/2), 0, qmax)``.

    ``t_j`` (``j = 1..qmax``) is the smallest code ``h`` in ``lo..hi`` with
    ``GELU(h * 2**-frac) >= (j - 1/2) * step``, or ``hi + 1`` if there is none; then
    ``q = #{j : h >= t_j}``. This is exact because every target is positive, ``GELU(x) <= 0``
    for ``x <= 0`` and GELU is strictly increasing on ``x > 0``: ``{x : GELU(x) >= t}`` is a
    half-line ``[g^-1(t), inf)`` for every ``t > 0``. Binary search with the float64 GELU,
    every comparison within ``1e-9`` (relative) of the target recomputed with 60-digit mpmath.

    Returns
    -------
    numpy.ndarray
        Read-only int64 ``(qmax,)``, non-decreasing.
    """
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"an LSQ step must be positive and finite, not {step!r}")
    out = []
    start = max(lo, 1)
    for j in range(1, qmax + 1):
        target = Fraction(2 * j - 1, 2) * Fraction(step)
        a, b = start, hi + 1  # answer in [a, b]; b = hi + 1 means "none"
        while a < b:
            mid = (a + b) // 2
            if _gelu_ge(mid, frac, target):
                b = mid
            else:
                a = mid + 1
        out.append(a)
        start = a
    t = np.array(out, dtype=np.int64)
    t.setflags(write=False)
    return t


def softmax_delta_max(bits: int, head_size: int) -> int:
    """Largest score difference ``max_j S_ij - S_ij`` of signed ``bits``-bit codes over ``head_size`` products."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return (lo * lo - lo * hi) * head_size


@functools.lru_cache(maxsize=256)
def softmax_exp_table(step_q: float, step_k: float, head_size: int, bits: int,
                      frac: int = SOFTMAX_EXP_FRAC) -> np.ndarray:
    """The integer softmax's exp table ``T[D] = floor(2**frac * exp(-D * s_q * s_k / sqrt(d)))``.

    Entries for ``D = 0 .. min(Dmax, first zero)`` (``Dmax`` of :func:`softmax_delta_max`); the
    look-up clamps ``D`` to the last entry, which is 0 or covers every reachable ``D``.
    ``T[0] = 2**frac`` exactly; for ``D >= 1`` the exponent is a non-zero algebraic number, so
    ``exp`` is transcendental and never exactly on the grid (Lindemann): float64 decides every
    floor except those within ``1e-9`` of an integer, which are recomputed with 60-digit decimals.

    Returns
    -------
    numpy.ndarray
        Read-only int64 ``(N,)``, non-increasing, ``T[0] = 2**frac``.
    """
    if not (math.isfinite(step_q) and step_q > 0 and math.isfinite(step_k) and step_k > 0):
        raise ValueError(f"LSQ steps must be positive and finite, not {step_q!r}, {step_k!r}")
    dmax = softmax_delta_max(bits, head_size)
    r = step_q * step_k / math.sqrt(head_size)
    one = math.ldexp(1.0, frac)
    delta = np.arange(dmax + 1, dtype=np.float64)
    scaled = np.exp(-delta * r) * one
    # beyond the first value clearly below 1 every floor is 0 (exp is decreasing): keep one zero
    small = np.nonzero(scaled < 0.999)[0]
    if small.size:
        scaled = scaled[: int(small[0]) + 1]
    vals = np.floor(scaled)
    near = np.nonzero(np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, scaled))[0]
    if near.size:
        ctx = decimal.Context(prec=60)
        rd = ctx.divide(ctx.multiply(decimal.Decimal(step_q), decimal.Decimal(step_k)),
                        ctx.sqrt(decimal.Decimal(head_size)))
        for i in near:
            if i == 0:
                continue
            v = ctx.multiply(ctx.exp(ctx.minus(ctx.multiply(decimal.Decimal(int(i)), rd))), decimal.Decimal(1 << frac))
            vals[i] = float(math.floor(v))
    vals[0] = one
    table = vals.astype(np.int64)
    zeros = np.nonzero(table == 0)[0]
    if zeros.size:
        table = table[: int(zeros[0]) + 1]
    table = table.copy()
    table.setflags(write=False)
    return table


def context_bound(bits: int, keys: int) -> int:
    """``max |C|`` of a context ``C = sum_j p_j v_j`` over ``keys`` keys (unsigned ``bits``-bit ``p``, signed ``v``)."""
    return keys * ((1 << bits) - 1) * (1 << (bits - 1))


def dyadic(step: float) -> tuple[int, int]:
    """``(m, k)`` with ``step = m * 2**-k`` exactly, ``k >= 0`` and ``m`` odd when ``k > 0``."""
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"an LSQ step must be positive and finite, not {step!r}")
    num, den = Fraction(step).as_integer_ratio()
    return num, den.bit_length() - 1


def softmax_prob_step(step: float) -> tuple[int, int]:
    """The probability step as ``(m, k)`` (:func:`dyadic`), refused when the integer softmax cannot hold it."""
    m, k = dyadic(step)
    if k > SOFTMAX_MAX_STEP_SHIFT or m >= (1 << 31):
        raise ValueError(f"the attention-probability step {step!r} = {m} * 2^-{k} does not fit the integer softmax "
                         f"(needs k <= {SOFTMAX_MAX_STEP_SHIFT} and m < 2^31)")
    return m, k


def int_softmax_codes(scores: torch.Tensor, key_mask: torch.Tensor, table: torch.Tensor, m: int, k: int,
                      qmax: int) -> torch.Tensor:
    """4-bit probability codes of the integer softmax (torch twin of ``golden.w1a4.int_softmax``).

    ``E_ij = T[min(max_j' S_ij' - S_ij, N-1)]`` over real keys (0 for padding keys),
    ``Z_i = sum_j E_ij``, ``p_ij = #{c in 1..qmax : 2 * E_ij * 2**k >= (2c - 1) * m * Z_i}``
    (``= clamp(floor(E/Z / s_p + 1/2), 0, qmax)`` with ``s_p = m 2^-k``).

    Parameters
    ----------
    scores : int64 ``(..., n_q, n_k)``
    key_mask : bool, broadcastable to ``scores`` (True for real keys)
    table : int64 ``(N,)``
    """
    big = torch.iinfo(torch.int64).min
    mx = scores.masked_fill(~key_mask, big).amax(-1, keepdim=True)
    delta = (mx - scores).clamp(0, table.numel() - 1)
    e = torch.where(key_mask, table[delta], torch.zeros((), dtype=torch.int64))
    z = e.sum(-1, keepdim=True)
    # p >= c  iff  2^(k+1) E >= (2c - 1) m Z  iff  2^(k+1) E + m Z >= 2c m Z: one integer floor
    # division gives the count of the contract's comparator bank (golden.w1a4.int_softmax)
    mz = m * z
    return torch.div((e << (k + 1)) + mz, 2 * mz, rounding_mode="floor").clamp(max=qmax)
