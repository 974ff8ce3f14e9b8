"""Multi-bit quantizers for the BinaryBERT backbone (W1A4) and its ternary (TWN) stage.

* Activations: learned step-size quantization (LSQ, Esser et al. 2020), as BinaryBERT uses for
  4-bit activations. Signed inputs take codes ``[-2**(b-1), 2**(b-1) - 1]``, non-negative
  inputs (attention probabilities, the FFN activation) ``[0, 2**b - 1]``. Codes are
  ``q = clamp(floor(x / s + 1/2), qmin, qmax)`` (round half up: the hardware compares ``x``
  with the thresholds ``(q + 1/2) * s``). BinaryBERT's asymmetric quantizer subtracts the
  batch minimum, a data-dependent offset no fixed datapath holds; here the non-negative
  quantizer has a zero offset and clamps the (small) negative GELU outputs to 0.
* Ternary weights: TWN (Li et al. 2016), per output row: ``delta = 0.7 * mean|w|``,
  ``t = sign(w) * (|w| > delta)``, ``alpha = mean(|w| where |w| > delta)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LSQQuantizer", "ternarize_weight", "ternary_parts", "LSQ_MIN_STEP"]

#: The smallest step the forward pass uses (a learned step that drifts below it, or negative,
#: acts as this value; its gradient still reaches the parameter). It keeps every integer constant
#: of the contract in range (the probability step ``m * 2**-k`` has ``k <= 43``).
LSQ_MIN_STEP = 2.0**-20


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


class LSQQuantizer(nn.Module):
    """Learned step-size activation quantizer.

    Codes are ``q = clamp(floor(x / s + 1/2), qmin, qmax)``, evaluated in float64 (exact for
    inputs on a fixed-point grid of up to 2**16 codes: ``docs/arithmetic.md`` section 14), or
    given exactly by the caller (integer inputs through :meth:`int_codes` /
    :meth:`gelu_codes`). The forward value of the step is exactly ``step`` (floored at
    :data:`LSQ_MIN_STEP`).

    Parameters
    ----------
    bits : int
        Code width (4 for W1A4).
    signed : bool
        Signed codes (``[-2**(b-1), 2**(b-1)-1]``) or non-negative ones (``[0, 2**b-1]``).

    Attributes
    ----------
    step : torch.nn.Parameter
        The step size ``s``; initialized from the first batch it sees to
        ``2 * mean|x| / sqrt(qmax)`` (the LSQ rule).
    initialized : torch.Tensor
        Buffer, 1 once ``step`` has been set from data (saved in checkpoints so a resumed run
        does not re-initialize).
    """

    def __init__(self, bits: int = 4, signed: bool = True) -> None:
        super().__init__()
        if not isinstance(bits, int) or bits < 2:
            raise ValueError(f"LSQ bit width must be an integer >= 2, not {bits!r}")
        self.bits = bits
        self.signed = signed
        self.qmin = -(1 << (bits - 1)) if signed else 0
        self.qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"

    def _step_eff(self) -> torch.Tensor:
        """The step the forward pass uses: ``max(step, LSQ_MIN_STEP)`` (no gradient)."""
        return self.step.detach().clamp(min=LSQ_MIN_STEP)

    def step_value(self) -> float:
        """The step the forward pass uses, as a Python float (exactly ``max(step, LSQ_MIN_STEP)``;
        NaN stays NaN)."""
        return float(self._step_eff())

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (no gradient): ``clamp(floor(x / s + 1/2))`` in float64, as float64."""
        q = torch.floor(x.detach().to(torch.float64) / self._step_eff().to(torch.float64) + 0.5)
        return torch.clamp(q, self.qmin, self.qmax)

    def int_codes(self, c: torch.Tensor, lsb, lo: int, hi: int) -> torch.Tensor:
        """Exact codes of the integers ``c`` standing for ``c * lsb``: the multi-threshold of
        :func:`bebert.model.intops.lsq_thresholds` (``lo..hi - 1`` is the range of ``c``)."""
        from .intops import lsq_thresholds

        t = lsq_thresholds(self.step_value(), lsb, self.qmin, self.qmax, lo, hi)
        return self.qmin + torch.bucketize(c, torch.tensor(t, device=c.device), right=True)

    def gelu_codes(self, h: torch.Tensor, frac: int, lo: int, hi: int) -> torch.Tensor:
        """Exact codes of ``GELU(h * 2**-frac)`` for integer pre-GELU codes ``h`` in ``lo..hi``
        (:func:`bebert.model.intops.gelu_thresholds`; unsigned quantizers only)."""
        from .intops import gelu_thresholds

        if self.signed:
            raise ValueError("GELU codes need an unsigned quantizer")
        t = gelu_thresholds(self.step_value(), frac, self.qmax, lo, hi)
        return torch.bucketize(h, torch.tensor(t, device=h.device), right=True)

    def _maybe_init(self, x: torch.Tensor) -> None:
        if not bool(self.initialized):
            with torch.no_grad():
                init = 2.0 * x.detach().abs().mean() / math.sqrt(self.qmax)
                self.step.copy_(torch.clamp(init, min=LSQ_MIN_STEP))
                self.initialized.fill_(1)

    def quantize(self, x: torch.Tensor, exact=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes and step with LSQ gradients: ``(v, s)``, ``x ~ v * s``.

        ``v`` holds the integer codes in its forward value (straight-through rounding), ``s``
        is a scalar whose value is exactly ``step`` (its gradient carries LSQ's scaling).

        Parameters
        ----------
        x : torch.Tensor
            Real input (the surrogate for gradients when ``exact`` is given).
        exact : callable, optional
            ``exact(self) -> codes``: the exact integer codes (called after the step is
            initialized), e.g. ``lambda q: q.int_codes(c, lsb, lo, hi)``. Default: :meth:`codes`.
        """
        self._maybe_init(x)
        g = 1.0 / math.sqrt(x.numel() * self.qmax)
        sg = self.step * g
        s = sg - sg.detach() + self._step_eff()  # value: exactly the (floored) step; gradient: LSQ's g
        v = torch.clamp(x / s, self.qmin, self.qmax)
        with torch.no_grad():
            q = self.codes(x) if exact is None else exact(self)
        v = v + (q.to(v.dtype) - v).detach()  # straight-through rounding
        return v, s

    def forward(self, x: torch.Tensor, exact=None) -> torch.Tensor:
        """Quantize ``x`` to ``codes * step`` with LSQ gradients for ``x`` and ``step``."""
        v, s = self.quantize(x, exact)
        return v * s


def ternary_parts(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN codes and per-row scales of ``w`` (no gradient).

    Parameters
    ----------
    w : torch.Tensor
        ``(rows, K)`` latent weights.

    Returns
    -------
    t : torch.Tensor
        ``(rows, K)`` codes in ``{-1, 0, +1}``.
    alpha : torch.Tensor
        ``(rows, 1)`` scales (0 for an all-zero row).
    """
    w = w.detach()
    delta = 0.7 * w.abs().mean(dim=-1, keepdim=True)
    mask = w.abs() > delta
    t = torch.sign(w) * mask.to(w.dtype)
    count = mask.sum(dim=-1, keepdim=True).clamp(min=1).to(w.dtype)
    alpha = (w.abs() * mask.to(w.dtype)).sum(dim=-1, keepdim=True) / count
    return t, alpha


class _TernarySTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):  # noqa: D102
        t, _ = ternary_parts(w)
        return t

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad


def ternarize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN ternary codes (identity straight-through gradient, as BinaryBERT) and scales."""
    t = _TernarySTE.apply(w)
    _, alpha = ternary_parts(w)
    return t, alpha
