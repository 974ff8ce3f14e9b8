"""Fixed-point formats and fake quantization for the non-binary parts of the student.

Every value that the integer model (``golden/``) and the hardware (``hw/``) hold in fixed point
is, during training, rounded onto the same grid here, so that training sees the deployed
arithmetic. The formats live in one dataclass, :class:`FixedPointConfig`, which is part of the
model configuration (:class:`bebert.model.config.ModelConfig`); nothing else in the package
types a bit width.

Arithmetic contract
-------------------
A format ``Q(bits, frac)`` stores the integer ``q`` in ``bits`` bits (two's complement when
signed) and represents ``q * 2**-frac``. Quantizing a real ``x``::

    q = clamp(floor(x * 2**frac), qmin, qmax)      # rounding="floor" (the default)
    q = clamp(round_half_even(x * 2**frac), ...)   # rounding="half_even"

``qmin = -2**(bits-1)``, ``qmax = 2**(bits-1) - 1`` for signed formats, ``0`` and
``2**bits - 1`` for unsigned ones. Out-of-range values saturate (they never wrap).

``floor`` is the default because it is what an arithmetic right shift computes in hardware
and what ``>>`` computes in NumPy, so the integer model matches bit for bit with no rounding
logic; its bias is at most one LSB. The same rule is applied to parameters (scales, biases,
LayerNorm weights) and to activations.

Gradients use the straight-through estimator: the backward pass treats the rounding as the
identity, and saturation as the identity too (so a parameter that drifts out of range can come
back).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "FixedPointFormat",
    "FixedPointConfig",
    "quantize",
    "fake_quant",
    "ROUNDING_MODES",
]

#: The rounding rules :func:`quantize` implements.
ROUNDING_MODES = ("floor", "half_even")


@dataclass(frozen=True)
class FixedPointFormat:
    """A fixed-point number format ``Q(bits, frac)``.

    Parameters
    ----------
    bits : int
        Total number of bits, sign bit included for signed formats.
    frac : int
        Number of fractional bits; the value of one LSB is ``2**-frac``. May be negative or
        larger than ``bits``.
    signed : bool
        Two's complement when true, unsigned otherwise.

    Raises
    ------
    ValueError
        If ``bits`` is not a positive integer.
    """

    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or self.bits < 1:
            raise ValueError(f"Fixed-point bit width must be a positive integer, not {self.bits!r}")
        if not isinstance(self.frac, int):
            raise ValueError(f"Fixed-point fraction bits must be an integer, not {self.frac!r}")

    @property
    def qmin(self) -> int:
        """Smallest representable integer code."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest representable integer code."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def lsb(self) -> float:
        """Value of one LSB, ``2**-frac``."""
        return math.ldexp(1.0, -self.frac)

    @property
    def min_value(self) -> float:
        """Smallest representable real value."""
        return self.qmin * self.lsb

    @property
    def max_value(self) -> float:
        """Largest representable real value."""
        return self.qmax * self.lsb

    def __str__(self) -> str:
        kind = "s" if self.signed else "u"
        return f"Q{kind}({self.bits},{self.frac})"

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON."""
        return {"bits": self.bits, "frac": self.frac, "signed": self.signed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FixedPointFormat":
        """Inverse of :meth:`to_dict`."""
        return cls(bits=int(d["bits"]), frac=int(d["frac"]), signed=bool(d.get("signed", True)))


def _fmt(bits: int, frac: int, signed: bool = True) -> FixedPointFormat:
    return FixedPointFormat(bits, frac, signed)


@dataclass
class FixedPointConfig:
    """The fixed-point formats of every non-binary value of the student.

    The defaults are provisional; the integer-model issue fixes the final ones. Each field
    names the value it quantizes.

    Attributes
    ----------
    enabled : bool
        When false the student runs in floating point (fake quantization is the identity).
    rounding : str
        ``"floor"`` (default) or ``"half_even"``; see the module docstring.
    residual : FixedPointFormat
        The residual stream: embedding sum, binary-linear outputs (``alpha * popcount + bias``)
        and the sum ``dense + residual`` that enters a LayerNorm.
    layernorm : FixedPointFormat
        LayerNorm outputs (the new residual stream).
    ln_weight : FixedPointFormat
        LayerNorm gain (gamma).
    ln_bias : FixedPointFormat
        LayerNorm shift (beta).
    bias : FixedPointFormat
        Biases of binary linear layers.
    weight_scale : FixedPointFormat
        Per-row scales ``alpha`` of binary (and ternary) weights, and the word-embedding scale.
    embedding : FixedPointFormat
        Position and token-type embedding tables.
    pooler : FixedPointFormat
        Pooler output (after tanh).
    classifier_weight : FixedPointFormat
        Classifier weights (a small fixed-point MAC on the pooler output).
    logits : FixedPointFormat
        Classifier biases and output logits.
    ensemble_weight : FixedPointFormat
        Boosting weights that combine the members' logits.
    dot_scale : FixedPointFormat
        Multi-bit backbones (``w1a4``, ``w2a4``): the per-row product ``s * alpha`` of a linear
        layer's LSQ input step ``s`` and its (already quantized) weight scale ``alpha``, the one
        multiplier of the integer dot product of codes and weights (``docs/arithmetic.md``
        section 14). Unused by ``w1a1``.
    """

    enabled: bool = True
    rounding: str = "floor"
    residual: FixedPointFormat = field(default_factory=lambda: _fmt(16, 8))
    layernorm: FixedPointFormat = field(default_factory=lambda: _fmt(16, 8))
    ln_weight: FixedPointFormat = field(default_factory=lambda: _fmt(16, 12))
    ln_bias: FixedPointFormat = field(default_factory=lambda: _fmt(16, 8))
    bias: FixedPointFormat = field(default_factory=lambda: _fmt(16, 8))
    weight_scale: FixedPointFormat = field(default_factory=lambda: _fmt(16, 14))
    embedding: FixedPointFormat = field(default_factory=lambda: _fmt(16, 8))
    pooler: FixedPointFormat = field(default_factory=lambda: _fmt(16, 14))
    classifier_weight: FixedPointFormat = field(default_factory=lambda: _fmt(16, 12))
    logits: FixedPointFormat = field(default_factory=lambda: _fmt(16, 8))
    ensemble_weight: FixedPointFormat = field(default_factory=lambda: _fmt(16, 12))
    dot_scale: FixedPointFormat = field(default_factory=lambda: _fmt(24, 24))

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ROUNDING_MODES}, not {self.rounding!r}")

    def format_names(self) -> list[str]:
        """Names of the format fields, in declaration order."""
        return [f.name for f in dataclasses.fields(self) if f.name not in ("enabled", "rounding")]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON."""
        d: dict[str, Any] = {"enabled": self.enabled, "rounding": self.rounding}
        for name in self.format_names():
            d[name] = getattr(self, name).to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FixedPointConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown fixed-point config keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            kwargs[k] = FixedPointFormat.from_dict(v) if isinstance(v, dict) else v
        return cls(**kwargs)


def quantize(x: torch.Tensor, fmt: FixedPointFormat, rounding: str = "floor") -> torch.Tensor:
    """Return the integer codes of ``x`` in format ``fmt`` (as a float tensor holding integers).

    Parameters
    ----------
    x : torch.Tensor
        Real values.
    fmt : FixedPointFormat
        Target format.
    rounding : str
        ``"floor"`` or ``"half_even"``.

    Returns
    -------
    torch.Tensor
        ``clamp(round(x * 2**frac), qmin, qmax)``, same dtype as ``x``.
    """
    scaled = x * math.ldexp(1.0, fmt.frac)
    if rounding == "floor":
        q = torch.floor(scaled)
    elif rounding == "half_even":
        q = torch.round(scaled)  # torch.round rounds half to even
    else:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, not {rounding!r}")
    return torch.clamp(q, fmt.qmin, fmt.qmax)


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt, rounding):  # noqa: D102 - autograd boilerplate
        return quantize(x, fmt, rounding) * fmt.lsb

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad, None, None


def fake_quant(x: torch.Tensor, fmt: FixedPointFormat, cfg: FixedPointConfig | None) -> torch.Tensor:
    """Round ``x`` onto the grid of ``fmt`` with a straight-through gradient.

    Parameters
    ----------
    x : torch.Tensor
        Real values.
    fmt : FixedPointFormat
        Target format.
    cfg : FixedPointConfig or None
        Supplies ``enabled`` and ``rounding``; ``None`` or ``enabled=False`` returns ``x``.

    Returns
    -------
    torch.Tensor
        ``quantize(x) * 2**-frac`` in the forward pass; identity gradient.
    """
    if cfg is None or not cfg.enabled:
        return x
    return _FakeQuantSTE.apply(x, fmt, cfg.rounding)
