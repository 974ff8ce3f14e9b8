"""GLUE metrics, computed as GLUE reports them (scikit-learn definitions, no dependency).

* accuracy: fraction of exact matches;
* F1: binary F1 of the positive class (label 1), 0 when there is no true or predicted positive;
* Matthews correlation: ``(TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``, 0 when the
  denominator is 0 (scikit-learn's convention).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["accuracy", "f1_binary", "matthews_corrcoef", "compute_metrics"]


def _arrays(preds: Sequence[int], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(preds).astype(np.int64).reshape(-1)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} labels")
    if p.size == 0:
        raise ValueError("No predictions to score")
    return p, y


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to the labels."""
    p, y = _arrays(preds, labels)
    return float((p == y).mean())


def f1_binary(preds: Sequence[int], labels: Sequence[int]) -> float:
    """F1 score of the positive class (label 1)."""
    p, y = _arrays(preds, labels)
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y != 1)).sum())
    fn = int(((p != 1) & (y == 1)).sum())
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def matthews_corrcoef(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient of binary predictions."""
    p, y = _arrays(preds, labels)
    tp = float(((p == 1) & (y == 1)).sum())
    tn = float(((p == 0) & (y == 0)).sum())
    fp = float(((p == 1) & (y == 0)).sum())
    fn = float(((p == 0) & (y == 1)).sum())
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


_METRICS = {"acc": accuracy, "f1": f1_binary, "mcc": matthews_corrcoef}


def compute_metrics(names: Sequence[str], preds: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """Compute the named metrics (``"acc"``, ``"f1"``, ``"mcc"``)."""
    out = {}
    for n in names:
        if n not in _METRICS:
            raise ValueError(f"Unknown metric {n!r}; known: {sorted(_METRICS)}")
        out[n] = _METRICS[n](preds, labels)
    return out
