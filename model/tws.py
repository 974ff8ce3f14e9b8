"""Ternary weight splitting (TWS, BinaryBERT, Bai et al. 2021).

A ternary (TWN) weight group ``w`` (one output row, or a whole embedding table) with codes
``t`` and scale ``alpha_t`` is split into two latent binary weights ``w1, w2`` whose BWN
binarizations add up to the ternary weight::

    alpha_1 * sign(w1) + alpha_2 * sign(w2) == alpha_t * t,    alpha_p = mean |w_p|

With ``I = {t != 0}``, ``J = {t == 0, w > 0}``, ``K = {t == 0, w <= 0}``, ``S_X = sum_X |w|``
and ``n`` the group size::

    a  = (S_I + S_K - S_J) / (2 S_I)
    b  = (n S_I / |I| - S_all) / (2 (|J| + |K|))
    w1 = a w        on I,   w + b  on J,   b      on K
    w2 = (1 - a) w  on I,   -b     on J,   w - b  on K

Then on ``I`` both halves keep the sign of ``w`` (for ``0 < a < 1``), on ``J`` and ``K`` they
have opposite signs, ``alpha_1 = alpha_2 = alpha_t / 2`` and the sum is exact. ``K`` includes
``w == 0`` (``sign(0) = +1`` puts a zero latent weight on the positive side of ``w1`` and the
negative side of ``w2``). These are the formulas of BinaryBERT's paper and code
(``binary_model_init.py``), applied per output row here to match the per-row scales of this
package.

The split model is "full width": each split layer is a binary layer with twice the input
width, ``[sign(w1) sign(w2)]`` applied to ``[x; x]``.
"""

from __future__ import annotations

import torch

from .config import ModelConfig
from .quant import ternary_parts
from .student import BinaryBertForSequenceClassification, BinaryWordEmbedding, QuantLinear

__all__ = ["tws_split", "split_ternary_model"]


def tws_split(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split latent weights row by row (each row one group).

    Parameters
    ----------
    w : torch.Tensor
        ``(rows, n)`` latent weights of the ternary model.

    Returns
    -------
    w1, w2 : torch.Tensor
        Latent binary weights of the same shape and dtype.

    Raises
    ------
    ValueError
        If some row has ``a`` outside ``(0, 1)`` (the split would flip signs and not be
        exact); the message names the first such row.
    """
    dtype = w.dtype
    w = w.detach().to(torch.float64)
    t, _ = ternary_parts(w)
    nz = t != 0
    zero = ~nz
    jpos = zero & (w > 0)
    kneg = zero & ~(w > 0)
    absw = w.abs()
    s_i = (absw * nz).sum(-1, keepdim=True)
    s_j = (absw * jpos).sum(-1, keepdim=True)
    s_k = (absw * kneg).sum(-1, keepdim=True)
    n_i = nz.sum(-1, keepdim=True).to(torch.float64)
    n_z = zero.sum(-1, keepdim=True).to(torch.float64)
    n = w.shape[-1]
    safe_si = torch.where(s_i > 0, s_i, torch.ones_like(s_i))
    a = torch.where(s_i > 0, (s_i + s_k - s_j) / (2 * safe_si), torch.full_like(s_i, 0.5))
    b = torch.where(
        (n_z > 0) & (n_i > 0),
        (n * s_i / n_i.clamp(min=1) - absw.sum(-1, keepdim=True)) / (2 * n_z.clamp(min=1)),
        torch.zeros_like(s_i),
    )
    bad = ((a <= 0) | (a >= 1)) & (n_i > 0)
    if bad.any():
        row = int(bad.view(-1).nonzero()[0])
        raise ValueError(f"TWS split not exact for row {row}: a = {float(a.view(-1)[row]):.4f} is outside (0, 1)")
    w1 = torch.where(nz, a * w, torch.where(jpos, w + b, b.expand_as(w)))
    w2 = torch.where(nz, (1 - a) * w, torch.where(jpos, -b.expand_as(w), w - b))
    return w1.to(dtype), w2.to(dtype)


def split_ternary_model(ternary: BinaryBertForSequenceClassification) -> BinaryBertForSequenceClassification:
    """Build the full-width binary (W1A4, ``tws=True``) model from a ternary (W2A4) one.

    Every :class:`~bebert.model.student.QuantLinear` weight and the word embedding are split
    with :func:`tws_split`; biases, LayerNorms, position/type embeddings, LSQ step sizes and
    the classifier are copied. At initialization the result computes the ternary model's
    function (up to floating-point rounding; with fixed-point scales enabled, up to one LSB of
    the scale format per split scale).

    Parameters
    ----------
    ternary : BinaryBertForSequenceClassification
        A model with ``backbone="w2a4"``.

    Returns
    -------
    BinaryBertForSequenceClassification
        A new model with ``backbone="w1a4", tws=True`` and the same dtype.
    """
    cfg: ModelConfig = ternary.config
    if cfg.backbone != "w2a4":
        raise ValueError(f"TWS splits a ternary (w2a4) model, not {cfg.backbone!r}")
    new_cfg = cfg.replace(backbone="w1a4", tws=True)
    dtype = next(ternary.parameters()).dtype
    binary = BinaryBertForSequenceClassification(new_cfg).to(dtype)
    state = {k: v.clone() for k, v in ternary.state_dict().items()}
    for name, mod in ternary.named_modules():
        if isinstance(mod, QuantLinear):
            w1, w2 = tws_split(mod.weight)
            state[f"{name}.weight"], state[f"{name}.weight_2"] = w1, w2
        elif isinstance(mod, BinaryWordEmbedding):
            w = mod.weight
            if cfg.embedding_scale == "row":
                w1, w2 = tws_split(w)
            else:
                w1, w2 = (p.view_as(w) for p in tws_split(w.reshape(1, -1)))
            state[f"{name}.weight"], state[f"{name}.weight_2"] = w1, w2
    binary.load_state_dict(state, strict=True)
    return binary
