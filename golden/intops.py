"""Integer building blocks of the golden model (``docs/arithmetic.md`` sections 3-9).

Everything here takes and returns integer NumPy arrays (``int64`` / ``uint64`` / ``uint8``);
nothing converts to floating point. Each function states the exact rule it implements; the
tests check each against an independent reference (Python integers, ``math.isqrt``, exact
rationals), exhaustively at small widths.
"""

from __future__ import annotations

import numpy as np

#: Elements of the (chunk, P) temporaries of :func:`xnor_popcount` (about 1.5 MB of uint64).
_CHUNK_ELEMENTS = 196608

__all__ = [
    "Fmt",
    "shift_floor",
    "saturate",
    "align_add",
    "bit_length",
    "rsqrt_bitserial",
    "layernorm",
    "pack_rows",
    "xnor_popcount",
    "and_popcount",
    "xnor_popcount_pairs",
    "threshold",
    "multi_threshold",
]


class Fmt:
    """A fixed-point format ``Q(bits, frac)`` (the integer model's view of ``FixedPointFormat``).

    Parameters
    ----------
    bits : int
        Width, sign included when ``signed``.
    frac : int
        Fraction bits: code ``q`` stands for ``q * 2**-frac``.
    signed : bool
        Two's complement (default) or unsigned.
    """

    __slots__ = ("bits", "frac", "signed")

    def __init__(self, bits: int, frac: int, signed: bool = True) -> None:
        if not isinstance(bits, int) or bits < 1 or bits > 62:
            raise ValueError(f"fixed-point width must be an integer in 1..62, not {bits!r}")
        if not isinstance(frac, int):
            raise ValueError(f"fixed-point fraction bits must be an integer, not {frac!r}")
        self.bits, self.frac, self.signed = bits, frac, bool(signed)

    @classmethod
    def from_dict(cls, d) -> "Fmt":
        """From ``{"bits", "frac", "signed"}`` (``FixedPointFormat.to_dict``)."""
        return cls(int(d["bits"]), int(d["frac"]), bool(d.get("signed", True)))

    @property
    def qmin(self) -> int:
        """Smallest code."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest code."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def __repr__(self) -> str:
        return f"Q{'s' if self.signed else 'u'}({self.bits},{self.frac})"


def shift_floor(x: np.ndarray, s) -> np.ndarray:
    """``floor(x * 2**-s)``: an arithmetic right shift for ``s >= 0``, a left shift otherwise.

    ``s`` may be an integer or an integer array (broadcast with ``x``).
    """
    x = np.asarray(x, dtype=np.int64)
    if np.isscalar(s) or np.ndim(s) == 0:
        s = int(s)
        return x >> s if s >= 0 else x << (-s)
    s = np.asarray(s, dtype=np.int64)
    return np.where(s >= 0, x >> np.maximum(s, 0), x << np.maximum(-s, 0))


def saturate(x: np.ndarray, fmt: Fmt) -> np.ndarray:
    """Clamp codes to ``[fmt.qmin, fmt.qmax]`` (saturation, never wrap-around)."""
    return np.clip(x, fmt.qmin, fmt.qmax)


def align_add(terms, out_fmt: Fmt) -> np.ndarray:
    """``sat_out(floor(sum_t q_t * 2**-f_t * 2**out_frac))`` for terms ``(q_t, f_t)``.

    The terms are aligned exactly to the finest grid ``F = max(f_t, out_frac)`` (left shifts,
    no rounding), added, and floored once onto the output grid: the exact rule a real-valued
    sum followed by :func:`bebert.model.fixedpoint.fake_quant` (floor) computes.
    """
    f = max([out_fmt.frac] + [int(ft) for _, ft in terms])
    z = None
    for q, ft in terms:
        t = shift_floor(q, int(ft) - f)
        z = t if z is None else z + t
    return saturate(shift_floor(z, f - out_fmt.frac), out_fmt)


def bit_length(m: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of non-negative int64 values, by an integer binary search."""
    m = np.asarray(m, dtype=np.int64)
    if (m < 0).any():
        raise ValueError("bit_length takes non-negative values")
    k = np.zeros_like(m)
    for sh in (32, 16, 8, 4, 2, 1):
        k += ((m >> (k + sh)) > 0).astype(np.int64) * sh
    return k + (m > 0).astype(np.int64)


def rsqrt_bitserial(m: np.ndarray, frac: int, bits: int) -> np.ndarray:
    """``R = floor(2**frac / sqrt(m))`` for ``m >= 1``, bit-serially, most significant bit first.

    Step ``b = bits-1 .. 0``: ``t = R | 2**b``; keep ``t`` when ``t*t*m <= 2**(2*frac)``. This is
    the restoring method the hardware runs (``bits`` steps, one multiply-compare each); the
    result equals ``isqrt(4**frac // m)`` whenever that is below ``2**bits``.
    """
    m = np.asarray(m, dtype=np.int64)
    target = np.int64(1) << np.int64(2 * frac)
    r = np.zeros_like(m)
    for b in range(bits - 1, -1, -1):
        t = r | np.int64(1 << b)
        r = np.where(t * t * m <= target, t, r)
    return r


def layernorm(x, g, b, fr: int, fg: int, fb: int, out_fmt: Fmt, eps_code: int, ln: dict, taps: dict | None = None,
              name: str = "ln"):
    """Integer LayerNorm over the last axis (``docs/arithmetic.md`` section 6).

    Parameters
    ----------
    x : int64 array ``(..., H)``
        Residual-stream codes (``fr`` fraction bits).
    g, b : int64 arrays ``(H,)``
        Gain codes (``fg`` fraction bits) and shift codes (``fb``).
    out_fmt : Fmt
        Output format.
    eps_code : int
        ``E = max(1, ceil(eps * H^2 * 4**fr))``.
    ln : dict
        ``mant_bits``, ``rsqrt_frac``, ``rsqrt_bits``, ``norm_frac`` (from the model's metadata).
    taps : dict, optional
        Receives ``{name}.var`` (``V``), ``{name}.shift`` (``s``), ``{name}.rsqrt`` (``R``) and
        ``{name}.norm`` (``n``).
    """
    x = np.asarray(x, dtype=np.int64)
    h = x.shape[-1]
    s_ = x.sum(-1, keepdims=True)
    d = h * x - s_
    v = h * (x * x).sum(-1, keepdims=True) - s_ * s_
    mm = v + np.int64(eps_code)
    if (mm >= (np.int64(1) << np.int64(62))).any():
        raise ValueError("LayerNorm variance overflows the 62-bit integer range")
    mant, pfrac, norm = int(ln["mant_bits"]), int(ln["rsqrt_frac"]), int(ln["norm_frac"])
    s = bit_length(mm) - mant
    s += s & 1
    m = shift_floor(mm, s)
    r = rsqrt_bitserial(m, pfrac, int(ln["rsqrt_bits"]))
    n = (d * r) >> (pfrac + s // 2 - norm)
    y = align_add([(n * np.asarray(g, np.int64), norm + fg), (np.asarray(b, np.int64), fb)], out_fmt)
    if taps is not None:
        taps[f"{name}.var"] = v[..., 0]
        taps[f"{name}.shift"] = s[..., 0]
        taps[f"{name}.rsqrt"] = r[..., 0]
        taps[f"{name}.norm"] = n
    return y


def pack_rows(bits: np.ndarray) -> np.ndarray:
    """Pack the last axis of a 0/1 (or bool) array into little-endian uint64 words.

    The fast twin of :func:`bebert.golden.pe_array.pack_bits` (same layout, no value check):
    bit ``k`` goes to bit ``k % 64`` of word ``k // 64``; padding bits are zero.
    """
    bits = np.asarray(bits)
    k = bits.shape[-1]
    nw = (k + 63) // 64
    packed = np.packbits(bits.astype(np.bool_, copy=False), axis=-1, bitorder="little")
    nbytes = nw * 8
    if packed.shape[-1] != nbytes:
        pad = np.zeros(packed.shape[:-1] + (nbytes - packed.shape[-1],), dtype=np.uint8)
        packed = np.concatenate([packed, pad], axis=-1)
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def xnor_popcount(a: np.ndarray, wt: np.ndarray, k: int) -> np.ndarray:
    """PE-array XNOR popcounts ``y[t, p] = popcount(~(a[t] ^ w[p]))`` over ``k`` bits.

    Parameters
    ----------
    a : uint64 ``(T, W)``
        Packed activations, padding bits zero.
    wt : uint64 ``(W, P)``
        Packed weight rows, *transposed* (word-major, so each word step is one contiguous
        ``(T, P)`` operation), padding bits zero.
    k : int
        Valid bits.

    Returns
    -------
    int32 ``(T, P)`` in ``0..k`` (int64 when ``k >= 2**31``).
    """
    t, nw = a.shape
    p = wt.shape[1]
    if wt.shape[0] != nw:
        raise ValueError(f"activation has {nw} words, weights {wt.shape[0]}")
    out = np.empty((t, p), dtype=np.int32 if k < (1 << 31) else np.int64)
    # tokens in chunks whose (chunk, P) temporaries stay in the cache (2x faster than one pass)
    chunk = max(8, min(t, _CHUNK_ELEMENTS // max(p, 1)))
    acc = np.empty((chunk, p), dtype=np.uint16 if k < (1 << 16) else np.int64)
    buf = np.empty((chunk, p), dtype=np.uint64)
    cnt = np.empty((chunk, p), dtype=np.uint8)
    for s in range(0, t, chunk):
        e = min(t, s + chunk)
        ac, bf, cn = acc[: e - s], buf[: e - s], cnt[: e - s]
        ac.fill(0)
        for w in range(nw):
            np.bitwise_xor(a[s:e, w, None], wt[None, w, :], out=bf)
            np.bitwise_count(bf, out=cn)
            ac += cn
        # zero padding bits agree in ~(a ^ w) but never differ in a ^ w: y = K - disagreements
        np.subtract(k, ac, out=out[s:e], casting="unsafe")
    return out


def and_popcount(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """PE-array AND-mode popcounts ``y = 2*popcount(a & w) - popcount(w)`` (broadcast).

    ``a`` and ``w`` are packed uint64 arrays that broadcast against each other with the
    word axis last; padding bits of ``w`` must be zero.
    """
    nw = max(a.shape[-1], w.shape[-1])
    both = np.bitwise_count(a[..., 0] & w[..., 0]).astype(np.int64)
    ones = np.bitwise_count(w[..., 0]).astype(np.int64)
    for i in range(1, nw):
        both += np.bitwise_count(a[..., i] & w[..., i])
        ones += np.bitwise_count(w[..., i])
    return 2 * both - ones


def xnor_popcount_pairs(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """``popcount(~(a ^ b))`` over ``k`` bits for packed arrays that broadcast (padding bits zero)."""
    nw = a.shape[-1]
    dis = np.bitwise_count(a[..., 0] ^ b[..., 0]).astype(np.int64)
    for i in range(1, nw):
        dis += np.bitwise_count(a[..., i] ^ b[..., i])
    return k - dis


def threshold(acc: np.ndarray, thr: np.ndarray, pol: np.ndarray) -> np.ndarray:
    """Threshold unit: ``bit = (acc >= thr)`` where ``pol = 1``, ``(acc < thr)`` where ``pol = 0``.

    Per channel (last axis), as uint8; the convention of
    :func:`bebert.golden.threshold.threshold_bits`.
    """
    bits = acc >= thr
    if not pol.all():
        bits ^= pol == 0
    return bits.view(np.uint8)


def multi_threshold(acc: np.ndarray, thr: np.ndarray, base: int) -> np.ndarray:
    """Multi-threshold unit: ``q = base + #{j : acc >= thr[..., j]}`` (thresholds ascending)."""
    return base + (acc[..., None] >= thr).sum(-1, dtype=np.int64)
