"""Ensembles: multi-class AdaBoost (SAMME) and bagging, with sample weights kept by sample.

SAMME (Zhu, Zou, Rosset & Hastie 2009), for ``K`` classes and member ``m``::

    err_m   = sum_i w_i [pred_i != y_i] / sum_i w_i
    alpha_m = log((1 - err_m) / err_m) + log(K - 1)
    w_i    <- w_i * exp(alpha_m [pred_i != y_i]),  then normalized to sum 1

and the ensemble predicts ``argmax_k sum_m alpha_m * logits_m[k]`` (BEBERT combines the
members' logits with the boosting weights; :func:`combine_votes` gives SAMME's original
weighted vote).

Alignment. Every sample carries its dataset index through batching (``collate`` returns it)
and per-sample predictions are scattered back by that index, so the sample weights, labels and
predictions line up whatever order the batches come in. BEBERT's published code instead
fills the prediction vector batch by batch from a *shuffled* loader (``shuffle=True``,
``drop_last=True``) and pairs it with weights in dataset order, which matches each error to a
different sample's weight; it also uses the two-class ``0.5 * log((1-err)/err)`` without the
``log(K-1)`` term.

Edge cases. ``err_m`` is clipped to ``[1e-10, 1 - 1e-10]`` (a perfect member gets a large but
finite weight). A member no better than chance (``err_m >= 1 - 1/K``) gets ``alpha_m = 0``
and leaves the sample weights unchanged (scikit-learn stops boosting there; here the run
continues so that the member count stays as configured).

Training on weights. ``"resample"`` (BEBERT): every epoch of member ``m > 0`` draws ``N``
indices with replacement with probabilities ``w``; member 0 sees a plain permutation.
``"reweight"``: a plain permutation every epoch and each sample's loss multiplied by
``N * w_i``.

Bagging: member ``m`` trains on one bootstrap sample (``N`` draws with replacement, fixed for
the member, reshuffled every epoch); all members weigh 1.
"""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
import torch

__all__ = [
    "derive_seed",
    "samme_update",
    "misclassified",
    "combine_logits",
    "combine_votes",
    "epoch_order",
    "bootstrap_indices",
    "diversity",
    "holdout_split",
    "ERR_EPS",
]

ERR_EPS = 1e-10


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from a base seed and keys (stable across runs and platforms)."""
    ent = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(repr(k).encode()) for k in keys]
    hi, lo = (int(x) for x in np.random.SeedSequence(ent).generate_state(2, dtype=np.uint32))
    return ((hi << 32) | lo) & ((1 << 63) - 1)


def misclassified(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``pred != labels`` with a shape check (both indexed by sample)."""
    if pred.shape != labels.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and labels {tuple(labels.shape)} differ")
    return pred != labels


def samme_update(
    sample_weights: torch.Tensor, miss: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, float, float]:
    """One SAMME step.

    Parameters
    ----------
    sample_weights : torch.Tensor
        ``(N,)`` non-negative weights, indexed by sample.
    miss : torch.Tensor
        ``(N,)`` bool, True where the member misclassifies sample ``i`` (same indexing).
    num_classes : int
        ``K``.

    Returns
    -------
    new_weights : torch.Tensor
        ``(N,)`` float64, normalized to sum 1.
    alpha : float
        The member's weight.
    err : float
        Its weighted training error (before clipping).
    """
    if num_classes < 2:
        raise ValueError(f"SAMME needs at least 2 classes, not {num_classes}")
    w = sample_weights.to(torch.float64)
    if w.shape != miss.shape:
        raise ValueError(f"{w.numel()} sample weights for {miss.numel()} predictions")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("sample weights must be non-negative with a positive sum")
    w = w / w.sum()
    m = miss.to(torch.float64)
    err = float((w * m).sum())
    if err >= 1.0 - 1.0 / num_classes:
        warnings.warn(
            f"Boosting member no better than chance (weighted error {err:.4f}); its weight is 0", RuntimeWarning,
            stacklevel=2,
        )
        return w, 0.0, err
    e = min(max(err, ERR_EPS), 1.0 - ERR_EPS)
    alpha = math.log((1.0 - e) / e) + math.log(num_classes - 1)
    new = w * torch.exp(alpha * m)
    return new / new.sum(), alpha, err


def combine_logits(logits: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """``sum_m w_m * logits_m`` (the ensemble's output)."""
    if len(logits) != len(weights) or not logits:
        raise ValueError("need one weight per member and at least one member")
    return sum(w * lg for w, lg in zip(weights, logits))


def combine_votes(logits: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """SAMME's weighted vote: ``sum_m w_m * onehot(argmax logits_m)``."""
    k = logits[0].shape[-1]
    return sum(w * torch.nn.functional.one_hot(lg.argmax(-1), k).to(torch.float64) for w, lg in zip(weights, logits))


def bootstrap_indices(n: int, seed: int, member: int) -> torch.Tensor:
    """The bootstrap sample (``n`` draws with replacement) of bagging member ``member``."""
    g = torch.Generator().manual_seed(derive_seed(seed, "bag", member))
    return torch.randint(0, n, (n,), generator=g)


def epoch_order(
    n: int,
    seed: int,
    member: int,
    epoch: int,
    sampling: str = "permute",
    weights: torch.Tensor | None = None,
    subset: torch.Tensor | None = None,
) -> torch.Tensor:
    """The sample indices of one epoch, a pure function of its arguments.

    Parameters
    ----------
    n : int
        Dataset size.
    seed, member, epoch : int
        Determine the random stream.
    sampling : str
        ``"permute"`` (a permutation of ``subset`` or of ``range(n)``) or ``"weighted"``
        (``n`` draws with replacement with probabilities ``weights``).
    weights : torch.Tensor, optional
        ``(n,)`` sample weights for ``"weighted"``.
    subset : torch.Tensor, optional
        Indices to permute (bagging's bootstrap sample).
    """
    g = torch.Generator().manual_seed(derive_seed(seed, "order", member, epoch))
    if sampling == "weighted":
        if weights is None:
            raise ValueError("weighted sampling needs weights")
        return torch.multinomial(weights.to(torch.float64), n, replacement=True, generator=g)
    if sampling != "permute":
        raise ValueError(f"sampling must be 'permute' or 'weighted', not {sampling!r}")
    base = subset if subset is not None else torch.arange(n)
    return base[torch.randperm(base.numel(), generator=g)]


def diversity(preds: list[torch.Tensor], labels: torch.Tensor) -> dict[str, float | None]:
    """How differently the members err (Kuncheva & Whitaker 2003), over one split.

    ``disagreement``: the mean over member pairs of the fraction of samples on which the two predict
    different classes. ``error_corr``: the mean over pairs of the Pearson correlation of their error
    indicators (``None`` when every pair has a member that is always or never wrong). An ensemble can beat
    its best member only where members disagree and their errors are not strongly correlated.
    """
    if len(preds) < 2:
        return {"disagreement": None, "error_corr": None}
    miss = [misclassified(p, labels).double() for p in preds]
    dis, cor = [], []
    for i in range(len(preds)):
        for j in range(i + 1, len(preds)):
            dis.append(float((preds[i] != preds[j]).double().mean()))
            a, b = miss[i] - miss[i].mean(), miss[j] - miss[j].mean()
            den = float(a.norm() * b.norm())
            if den > 0:
                cor.append(float((a * b).sum()) / den)
    return {"disagreement": sum(dis) / len(dis), "error_corr": sum(cor) / len(cor) if cor else None}


def holdout_split(n: int, holdout: int) -> tuple[list[int], list[int]]:
    """``(train rows, held-out rows)`` of ``n`` training rows: ``holdout`` rows drawn at random with a fixed
    seed (the same rows for every run of the same data, whatever its ``--seed``), both in dataset order. The
    held-out rows are never trained on and never used to choose anything: the ensemble's accuracy on data no
    selection has seen (dev is the split recipes were compared on)."""
    if not isinstance(holdout, int) or holdout < 0:
        raise ValueError(f"holdout must be a non-negative integer, not {holdout!r}")
    if holdout >= n:
        raise ValueError(f"holdout of {holdout} rows leaves nothing to train on ({n} training rows)")
    rng = np.random.default_rng(derive_seed(0, "holdout", n))
    held = np.sort(rng.permutation(n)[:holdout])
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return [int(i) for i in np.flatnonzero(mask)], [int(i) for i in held]
