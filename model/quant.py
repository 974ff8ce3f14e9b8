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

__all__ = ["LSQQuantizer", "ternarize_weight", "ternary_parts"]


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


class LSQQuantizer(nn.Module):
    """Learned step-size activation quantizer.

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

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (no gradient)."""
        return torch.clamp(_round_half_up(x / self.step.detach()), self.qmin, self.qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize ``x`` to ``codes * step`` with LSQ gradients for ``x`` and ``step``."""
        if not bool(self.initialized):
            with torch.no_grad():
                init = 2.0 * x.detach().abs().mean() / math.sqrt(self.qmax)
                self.step.copy_(torch.clamp(init, min=1e-8))
                self.initialized.fill_(1)
        g = 1.0 / math.sqrt(x.numel() * self.qmax)
        s = self.step * g + (self.step - self.step * g).detach()  # LSQ gradient scaling
        v = torch.clamp(x / s, self.qmin, self.qmax)
        v = v + (_round_half_up(v) - v).detach()  # straight-through rounding
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
