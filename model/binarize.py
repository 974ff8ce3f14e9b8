"""Binarization rules shared by training, the integer model and the hardware.

This module is the contract ``docs/arithmetic.md`` cites. Every rule here is exact: the
floating-point training graph computes the same bits the hardware computes.

Rules
-----
sign
    ``sign(x) = +1 if x >= 0 else -1``. Zero maps to ``+1`` (``torch.sign`` gives 0, which a
    binary datapath cannot hold). Negative zero (``-0.0``) compares equal to zero and maps to
    ``+1`` as well.
bit
    A binary value is stored as one bit: ``bit = 1`` for ``+1`` and ``0`` for ``-1``, so
    ``bit = (x >= 0)`` and ``value = 2 * bit - 1``.
XNOR-popcount
    For ``a, w`` in ``{-1, +1}**K`` with bits ``ab, wb``:
    ``a . w = 2 * popcount(~(ab ^ wb)) - K``.
Bi-Attention (BiBERT), per head with head size ``d``
    ``score_ij = Qb_i . Kb_j`` is an integer in ``[-d, d]`` (``Qb = sign(Q)``, ``Kb = sign(K)``).
    The attention bit is ``A_ij = bool(score_ij) = 1 if score_ij > 0 else 0``: **ties at zero
    give 0** (strictly positive; this is also what BiBERT's published code computes, since
    ``torch.sign(0) = 0`` there). A masked (padding) key ``j`` gives ``A_ij = 0`` for every
    ``i``. The context is the integer ``C_i = sum_j A_ij * sign(V_j)``, i.e.
    ``2 * popcount(A & vb) - popcount(A)`` per channel, and the next binary linear layer sees
    ``sign(C)`` (so an even split, ``C = 0``, gives ``+1``).
Binary weights
    ``W ~ alpha * sign(W_c)`` with one ``alpha`` per output row: ``alpha_r = mean_k |W_c[r, k]|``
    (the L2-optimal scale, XNOR-Net / BWN). ``W_c`` is ``W`` itself, or ``W`` minus its row mean
    when centering is on (BiBERT). A binary linear layer computes
    ``y_r = alpha_r * (x_b . sign(W_c[r])) + b_r``: one popcount per output, then a scale and
    a bias in fixed point (see :mod:`bebert.model.fixedpoint`).

Straight-through estimators (training only; the forward values are exact)
    * activations: ``d sign(x)/dx = 1 if |x| <= 1 else 0`` (BiBERT / Bi-Real clipped identity);
    * weights: the gradient passes to the latent weight where ``|W_c| <= 1``;
    * attention bits: the clipped identity on ``score / sqrt(d)``;
    * the sign of the attention context: the clipped identity on ``C / max(1, sum_j A_ij)``.
      Dividing by a positive count does not change the sign, so the forward value is the
      hardware's; BiBERT applies the clip to the raw integer ``C``, which passes a gradient
      only where ``C`` is exactly 0 or +-1.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "sign",
    "to_bits",
    "from_bits",
    "attention_bits",
    "attention_context",
    "xnor_popcount_dot",
    "sign_ste",
    "binarize_activation",
    "attention_bits_ste",
    "binarize_weight",
    "weight_scale",
]


# --------------------------------------------------------------------------------------------
# Exact rules (no gradient): what golden/ and hw/ implement.
# --------------------------------------------------------------------------------------------


def sign(x: torch.Tensor) -> torch.Tensor:
    """Hardware sign: ``+1`` where ``x >= 0`` (zero included), ``-1`` elsewhere.

    Parameters
    ----------
    x : torch.Tensor
        Any real tensor.

    Returns
    -------
    torch.Tensor
        Tensor of ``+-1`` with the dtype of ``x`` (float) or int8 for integer inputs.
    """
    if x.is_floating_point():
        # copysign is several times faster than where(); adding +0.0 turns -0.0 into +0.0
        # (IEEE 754 round-to-nearest) so that zero of either sign maps to +1.
        return torch.ones_like(x).copysign_(x + 0.0)
    one = torch.ones((), dtype=torch.int8, device=x.device)
    return torch.where(x >= 0, one, -one)


def to_bits(x: torch.Tensor) -> torch.Tensor:
    """Bits of ``sign(x)``: ``1`` for ``+1`` (``x >= 0``), ``0`` for ``-1``, as uint8."""
    return (x >= 0).to(torch.uint8)


def from_bits(bits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of :func:`to_bits`: ``2 * bit - 1``."""
    return bits.to(dtype) * 2 - 1


def xnor_popcount_dot(a_bits: torch.Tensor, w_bits: torch.Tensor) -> torch.Tensor:
    """Dot products of +-1 vectors from their bits: ``2 * popcount(XNOR) - K``.

    Parameters
    ----------
    a_bits : torch.Tensor
        ``(..., K)`` bits of the activations.
    w_bits : torch.Tensor
        ``(N, K)`` bits of the weights.

    Returns
    -------
    torch.Tensor
        ``(..., N)`` int64 dot products, equal to ``from_bits(a) @ from_bits(w).T``.
    """
    k = a_bits.shape[-1]
    agree = (a_bits.unsqueeze(-2) == w_bits).sum(-1)
    return 2 * agree.to(torch.int64) - k


def attention_bits(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bi-Attention bits ``A_ij = (sign(Q_i) . sign(K_j) > 0)``, masked keys zero.

    Parameters
    ----------
    q, k : torch.Tensor
        ``(..., n, d)`` real queries and keys (only their signs matter).
    key_mask : torch.Tensor, optional
        ``(..., n)`` with 1 (or True) for real tokens and 0 for padding; broadcast over the
        query axis.

    Returns
    -------
    torch.Tensor
        ``(..., n, n)`` uint8 attention bits. Ties (score 0) give 0.
    """
    scores = sign(q).to(torch.float64) @ sign(k).to(torch.float64).transpose(-1, -2)
    bits = scores > 0
    if key_mask is not None:
        bits = bits & key_mask.bool().unsqueeze(-2)
    return bits.to(torch.uint8)


def attention_context(a_bits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Integer context ``C = A . sign(V)`` of Bi-Attention.

    Parameters
    ----------
    a_bits : torch.Tensor
        ``(..., n, n)`` attention bits.
    v : torch.Tensor
        ``(..., n, d)`` real values (only their signs matter).

    Returns
    -------
    torch.Tensor
        ``(..., n, d)`` int64 context; the next layer uses ``sign(C)``.
    """
    return (a_bits.to(torch.float64) @ sign(v).to(torch.float64)).to(torch.int64)


# --------------------------------------------------------------------------------------------
# Differentiable versions (straight-through) used for training.
# --------------------------------------------------------------------------------------------


class _SignSTE(torch.autograd.Function):
    """Forward ``sign(value)``; backward ``grad * (|surrogate| <= 1) * d surrogate``."""

    @staticmethod
    def forward(ctx, x, surrogate):  # noqa: D102
        ctx.save_for_backward(surrogate)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (s,) = ctx.saved_tensors
        return None, grad * (s.abs() <= 1).to(grad.dtype)


def sign_ste(x: torch.Tensor, surrogate: torch.Tensor | None = None) -> torch.Tensor:
    """``sign(x)`` with the clipped straight-through gradient.

    Parameters
    ----------
    x : torch.Tensor
        The value whose sign is taken (forward).
    surrogate : torch.Tensor, optional
        The tensor the gradient flows into, with the clip ``|surrogate| <= 1`` applied.
        Defaults to ``x``. It must have the sign of ``x`` wherever the forward value matters
        to training (for instance ``GELU(y)`` for ``sign(y)``, or ``C / count`` for ``C``).

    Returns
    -------
    torch.Tensor
        ``+-1`` values.
    """
    if surrogate is None:
        surrogate = x
    return _SignSTE.apply(x.detach(), surrogate)


def binarize_activation(x: torch.Tensor) -> torch.Tensor:
    """Binary activation for a linear layer's input: :func:`sign_ste` of ``x``."""
    return sign_ste(x)


class _AttnBitsSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, bits, surrogate):  # noqa: D102
        ctx.save_for_backward(surrogate)
        return bits

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (s,) = ctx.saved_tensors
        return None, grad * (s.abs() <= 1).to(grad.dtype)


def attention_bits_ste(qb: torch.Tensor, kb: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Bi-Attention bits from binary queries/keys, differentiable by straight-through.

    Parameters
    ----------
    qb, kb : torch.Tensor
        ``(B, H, n, d)`` tensors of ``+-1`` (outputs of :func:`sign_ste`).
    key_mask : torch.Tensor or None
        ``(B, n)`` 1 for tokens, 0 for padding.

    Returns
    -------
    torch.Tensor
        ``(B, H, n, n)`` float tensor of exact 0/1 bits, ``1`` iff the integer score is
        strictly positive and the key is not masked. The gradient is the clipped identity on
        ``score / sqrt(d)``.
    """
    d = qb.shape[-1]
    scores = qb @ kb.transpose(-1, -2)  # exact integers in float (|score| <= d << 2**24)
    bits = scores > 0
    if key_mask is not None:
        bits = bits & key_mask.bool()[:, None, None, :]
    return _AttnBitsSTE.apply(bits.to(scores.dtype), scores / math.sqrt(d))


def weight_scale(w: torch.Tensor, center: bool = False) -> torch.Tensor:
    """Per-output-row scale ``alpha_r = mean_k |W_c[r, k]|`` (shape ``(rows, 1)``), no grad."""
    w = w.detach()
    if center:
        w = w - w.mean(dim=-1, keepdim=True)
    return w.abs().mean(dim=-1, keepdim=True)


class _WeightSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, wc):  # noqa: D102
        ctx.save_for_backward(wc)
        return sign(wc)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (wc,) = ctx.saved_tensors
        return grad * (wc.abs() <= 1).to(grad.dtype)


def binarize_weight(w: torch.Tensor, center: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary weights ``sign(W_c)`` (straight-through) and per-row scales.

    Parameters
    ----------
    w : torch.Tensor
        ``(rows, K)`` latent weights.
    center : bool
        Subtract each row's mean first (BiBERT).

    Returns
    -------
    signs : torch.Tensor
        ``(rows, K)`` of ``+-1``; gradient flows to ``w`` where ``|W_c| <= 1``.
    alpha : torch.Tensor
        ``(rows, 1)`` scales ``mean |W_c|`` (detached, as in BiBERT and BWN).
    """
    wc = w - w.mean(dim=-1, keepdim=True) if center else w
    return _WeightSTE.apply(wc), weight_scale(w, center)
