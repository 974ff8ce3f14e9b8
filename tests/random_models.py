"""Random (untrained) W1A1 ensembles exported to deployment files, for the Verilator tests on random models."""

from __future__ import annotations

import numpy as np


def export_random(path, dims: dict, members: int, seed: int, weights=None) -> str:
    """Export ``members`` random students of ``dims`` (``ModelConfig`` fields) to ``path``; the ensemble
    weights are ``weights`` or random (Dirichlet, seeded). Returns the path as a string."""
    import torch

    from bebert.golden.export import export_members
    from bebert.golden.format import save_int_model
    from bebert.model.config import ModelConfig
    from bebert.model.student import BinaryBertForSequenceClassification

    cfg = ModelConfig(hidden_dropout=0.0, **dims)
    nets = []
    for m in range(members):
        torch.manual_seed(seed * 10 + m)
        nets.append(BinaryBertForSequenceClassification(cfg).eval())
    if weights is None:
        weights = np.random.default_rng(seed).dirichlet(np.ones(members)).tolist()
    tensors, meta = export_members(nets, list(weights))
    save_int_model(path, tensors, meta)
    return str(path)
