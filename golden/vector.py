"""Golden function of the vector unit: scale, bias, residual add, LayerNorm, sign.

One token's step after a binary linear layer whose result feeds the residual stream (the
attention output projection and the FFN down-projection, ``docs/arithmetic.md`` sections 4, 6
and 7), composed from :mod:`bebert.golden.intops` exactly as :mod:`bebert.golden.infer` does it:

    y   = align_add([(a_r * (2*acc_r - K), f_scale), (c_r, f_bias)] -> residual)     section 4
    s   = align_add([(y, f_res), (x, f_ln)] -> residual)                             section 7
    out = layernorm(s, gamma, beta) -> layernorm format                              section 6
    bit = (out >= 0)                                                                 section 1

``acc`` is the PE array's XNOR popcount over ``K`` bits, ``x`` the previous LayerNorm output
(the residual stream entering the layer), ``out`` the new residual stream and ``bit`` the sign
bit of the next binary layer's input (``sign(0) = +1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .intops import Fmt, align_add, layernorm

__all__ = ["VectorFormats", "vector_step", "stats_engine", "stats_widths"]


@dataclass(frozen=True)
class VectorFormats:
    """The formats and LayerNorm constants the vector unit is built for (one source of truth).

    Attributes
    ----------
    scale, bias : Fmt
        Per-channel ``alpha`` (``weight_scale``) and bias (``bias``) of the binary linear layer.
    residual : Fmt
        The residual sum entering the LayerNorm (``residual``).
    layernorm : Fmt
        LayerNorm outputs: the residual stream ``x`` that comes in and ``out`` that goes out.
    ln_weight, ln_bias : Fmt
        LayerNorm gain and shift.
    ln : dict
        ``mant_bits``, ``rsqrt_frac``, ``rsqrt_bits``, ``norm_frac`` (the model's ``ln`` metadata).
    eps_code : int
        ``E`` of the LayerNorm (the model's ``ln_eps_code``).
    """

    scale: Fmt
    bias: Fmt
    residual: Fmt
    layernorm: Fmt
    ln_weight: Fmt
    ln_bias: Fmt
    ln: dict = field(default_factory=dict)
    eps_code: int = 1

    @classmethod
    def from_formats(cls, fmt: dict, ln: dict, eps_code: int) -> "VectorFormats":
        """From an integer model's ``fmt`` dict (:attr:`bebert.golden.format.IntModel.fmt`), ``ln`` and ``E``."""
        return cls(fmt["weight_scale"], fmt["bias"], fmt["residual"], fmt["layernorm"], fmt["ln_weight"],
                   fmt["ln_bias"], dict(ln), int(eps_code))

    @classmethod
    def from_int_model(cls, model) -> "VectorFormats":
        """From a loaded :class:`bebert.golden.format.IntModel`."""
        return cls.from_formats(model.fmt, model.meta["ln"], model.meta["ln_eps_code"])

    @classmethod
    def default(cls, hidden: int = 384, eps: float = 1e-12) -> "VectorFormats":
        """The defaults of :class:`bebert.model.fixedpoint.FixedPointConfig` and :mod:`bebert.model.intops`."""
        from ..model.fixedpoint import FixedPointConfig
        from ..model.intops import ln_eps_code, ln_params

        fp = FixedPointConfig()
        fmt = {name: Fmt.from_dict(getattr(fp, name).to_dict()) for name in fp.format_names()}
        return cls.from_formats(fmt, ln_params(), ln_eps_code(eps, hidden, fmt["residual"].frac))


def vector_step(acc, x, k: int, scale, bias, gamma, beta, fmts: VectorFormats):
    """Scale, bias, residual add, LayerNorm and sign of tokens, exactly as :mod:`bebert.golden.infer`.

    Parameters
    ----------
    acc : int array ``(T, H)``
        XNOR popcounts ``0..k`` of the binary linear layer (the PE array's results).
    x : int array ``(T, H)``
        Residual-stream codes entering the layer (``fmts.layernorm``).
    k : int
        The dot-product length ``K`` of ``acc``.
    scale, bias, gamma, beta : int arrays ``(H,)``
        Per-channel codes of ``alpha``, the bias, the LayerNorm gain and shift.
    fmts : VectorFormats

    Returns
    -------
    out : int64 ``(T, H)``
        LayerNorm outputs (``fmts.layernorm`` codes): the new residual stream.
    bits : uint8 ``(T, H)``
        ``out >= 0``: the next binary layer's input bits.
    """
    acc = np.asarray(acc, dtype=np.int64)
    scale, bias = np.asarray(scale, np.int64), np.asarray(bias, np.int64)
    y = align_add([(scale * (2 * acc - k), fmts.scale.frac), (bias, fmts.bias.frac)], fmts.residual)
    s = align_add([(y, fmts.residual.frac), (np.asarray(x, np.int64), fmts.layernorm.frac)], fmts.residual)
    out = layernorm(s, np.asarray(gamma, np.int64), np.asarray(beta, np.int64), fmts.residual.frac,
                    fmts.ln_weight.frac, fmts.ln_bias.frac, fmts.layernorm, fmts.eps_code, fmts.ln)
    return out, (out >= 0).astype(np.uint8)


def stats_engine(fmts: VectorFormats, max_h: int) -> tuple[int, int]:
    """``(stats_cycles, norm_steps)`` of :class:`bebert.hw.vector.VectorUnit`'s serial statistics engine for
    tokens of up to ``max_h`` channels: one cycle per bit of ``H`` and of ``|S|``, at most ``norm_steps``
    normalization steps, three per result bit of the reciprocal square root, the start and the write-back
    (the normalization always takes ``norm_steps`` cycles, so this is every token's time). The hardware takes
    its figures from here."""
    hb = int(max_h).bit_length()
    s_width, _, m_width = stats_widths(fmts, max_h)
    mant = int(fmts.ln["mant_bits"])
    norm_steps = max((m_width - mant) // 2 + 1, (mant - 2) // 2 + 1)
    return 1 + hb + s_width + norm_steps + 3 * int(fmts.ln["rsqrt_bits"]) + 1, norm_steps


def stats_widths(fmts: VectorFormats, max_h: int) -> tuple[int, int, int]:
    """Widths of the statistics engine's sums for tokens of up to ``max_h`` channels: ``S`` (signed; ``|S| <=
    H * 2^(rb-1)``), ``Q`` (``Q <= H * 4^(rb-1)``) and ``M = H*Q - S^2 + E``."""
    hb = int(max_h).bit_length()
    rb = fmts.residual.bits
    q_width = 2 * rb - 1 + hb
    return rb + hb, q_width, q_width + hb + max(int(fmts.eps_code).bit_length(), 1) + 1
