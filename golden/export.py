"""Export: a trained student / ensemble checkpoint to the integer deployment file.

``bebert export CHECKPOINT -o MODEL.safetensors`` (see :mod:`bebert.golden.cli`). The weights are
binarized and the fixed-point parameters quantized by the *model's own* functions
(``_weight_quant``, :func:`bebert.model.fixedpoint.quantize`), so the integers are the ones the
fake-quant forward pass uses; the sign-only layers are then folded into integer thresholds
(:mod:`bebert.golden.fold`) from those integers, never from floats.

W1A4 (``docs/arithmetic.md`` section 14): the LSQ steps (float32 values, exact dyadic
rationals) become integer multi-thresholds, exp tables and a probability step here, by the same
functions of :mod:`bebert.model.intops` the fake-quant forward pass calls; the per-row scale
``s * alpha`` is quantized to ``dot_scale`` by the model's own ``quantize``.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .fold import fold_sign_threshold
from .format import IntModelError, save_int_model
from .intops import pack_rows

__all__ = ["export_members", "export_checkpoint"]

BACKBONES = ("w1a1", "w1a4")


def _i32(t) -> np.ndarray:
    a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
    if a.size and (a.min() < -(2**31) or a.max() >= 2**31):
        raise IntModelError("a code does not fit the int32 storage")
    return np.ascontiguousarray(a.astype(np.int64).astype(np.int32))


def _binary_layer(lin, cfg, fp, threshold: bool) -> dict[str, np.ndarray]:
    import torch

    from bebert.model.fixedpoint import quantize
    from bebert.model.student import _weight_quant

    with torch.no_grad():
        codes, alpha = _weight_quant(lin.weight, cfg)
        bits = pack_rows((codes > 0).cpu().numpy())
        scale = quantize(alpha.double().view(-1), fp.weight_scale, fp.rounding).to(torch.int64)
        bias = quantize(lin.bias.double(), fp.bias, fp.rounding).to(torch.int64)
    out = {"bits": bits, "scale": _i32(scale), "bias": _i32(bias)}
    if threshold:
        thr, pol = fold_sign_threshold(scale.numpy(), fp.weight_scale.frac, bias.numpy(), fp.bias.frac,
                                       lin.in_features)
        out["thr"] = _i32(thr)
        out["pol"] = pol.astype(np.uint8)
    return out


def _word_table(table, cfg, fp) -> tuple[np.ndarray, np.ndarray]:
    """Packed sign bits and per-row scale codes of a binary word-embedding table (no gradient).

    With ``embedding_scale == "tensor"`` one scale serves the whole table, repeated per row.
    """
    from bebert.model.fixedpoint import quantize
    from bebert.model.student import _weight_quant

    if cfg.embedding_scale == "row":
        codes, alpha = _weight_quant(table, cfg)
        alpha = alpha.view(-1)
    else:
        codes, alpha = _weight_quant(table.reshape(1, -1), cfg)
        codes = codes.view_as(table)
        alpha = alpha.view(1).expand(table.shape[0])
    return pack_rows((codes > 0).cpu().numpy()), _i32(quantize(alpha.double(), fp.weight_scale, fp.rounding))


def _layernorm(ln, fp) -> dict[str, np.ndarray]:
    import torch

    from bebert.model.fixedpoint import quantize

    with torch.no_grad():
        return {"gamma": _i32(quantize(ln.weight.double(), fp.ln_weight, fp.rounding)),
                "beta": _i32(quantize(ln.bias.double(), fp.ln_bias, fp.rounding))}


def _member_tensors(model) -> dict[str, np.ndarray]:
    import torch

    from bebert.model.fixedpoint import quantize

    cfg = model.config
    fp = cfg.fixed_point
    bert = model.bert
    out: dict[str, np.ndarray] = {}
    emb = bert.embeddings
    with torch.no_grad():
        out["emb.word.bits"], out["emb.word.scale"] = _word_table(emb.word_embeddings.weight, cfg, fp)
        out["emb.position"] = _i32(quantize(emb.position_embeddings.weight.double(), fp.embedding, fp.rounding))
        out["emb.token_type"] = _i32(quantize(emb.token_type_embeddings.weight.double(), fp.embedding, fp.rounding))
    for k, v in _layernorm(emb.LayerNorm, fp).items():
        out[f"emb.ln.{k}"] = v
    for li, layer in enumerate(bert.encoder.layer):
        att = layer.attention
        parts = {
            "query": (att.self.query, True), "key": (att.self.key, True), "value": (att.self.value, True),
            "attn_out": (att.output.dense, False), "ffn_in": (layer.intermediate.dense, True),
            "ffn_out": (layer.output.dense, False),
        }
        for name, (lin, thr) in parts.items():
            for k, v in _binary_layer(lin, cfg, fp, thr).items():
                out[f"layer.{li}.{name}.{k}"] = v
        for name, ln in (("attn_ln", att.output.LayerNorm), ("ffn_ln", layer.output.LayerNorm)):
            for k, v in _layernorm(ln, fp).items():
                out[f"layer.{li}.{name}.{k}"] = v
    for k, v in _binary_layer(bert.pooler.dense, cfg, fp, False).items():
        out[f"pooler.{k}"] = v
    with torch.no_grad():
        out["classifier.weight"] = _i32(quantize(model.classifier.weight.double(), fp.classifier_weight, fp.rounding))
        out["classifier.bias"] = _i32(quantize(model.classifier.bias.double(), fp.logits, fp.rounding))
    return out


def _step(q, name: str) -> float:
    """The LSQ step of quantizer ``q`` as a float (refused if never initialized or not positive)."""
    if not bool(q.initialized):
        raise IntModelError(f"the LSQ step of {name} was never initialized from data; run the model on a batch "
                            "(or train it) before exporting")
    s = q.step_value()
    if not (s > 0 and s < float("inf")):
        raise IntModelError(f"the LSQ step of {name} is {s!r}; a step must be positive and finite")
    return s


def _w1a4_linear(lin, cfg, fp, name: str, thr) -> dict[str, np.ndarray]:
    """Bits, ``dot_scale`` codes of ``s * alpha`` per weight matrix, bias and input thresholds."""
    import torch

    from bebert.model.fixedpoint import quantize
    from bebert.model.student import _weight_quant

    step = _step(lin.act_quant, name)
    out: dict[str, np.ndarray] = {}
    weights = [lin.weight, lin.weight_2] if cfg.tws else [lin.weight]
    with torch.no_grad():
        for i, w in enumerate(weights):
            sfx = "" if i == 0 else "_2"
            codes, alpha = _weight_quant(w, cfg)
            out["bits" + sfx] = pack_rows((codes > 0).cpu().numpy())
            a = quantize(alpha.double().view(-1), fp.weight_scale, fp.rounding) * fp.weight_scale.lsb
            # the product of a float32 step and a weight-scale code is exact in float64
            m = quantize(torch.tensor(step, dtype=torch.float64) * a, fp.dot_scale, fp.rounding)
            out["scale" + sfx] = _i32(m.to(torch.int64))
        out["bias"] = _i32(quantize(lin.bias.double(), fp.bias, fp.rounding).to(torch.int64))
    out["in_thr"] = _i32(thr(lin.act_quant, step))
    return out


def _w1a4_member(model) -> dict[str, np.ndarray]:
    import torch

    from bebert.model.fixedpoint import quantize
    from bebert.model.intops import (
        context_bound,
        gelu_thresholds,
        lsq_thresholds,
        softmax_exp_table,
        softmax_prob_step,
    )

    cfg = model.config
    fp = cfg.fixed_point
    bert = model.bert
    res, lnf = fp.residual, fp.layernorm
    out: dict[str, np.ndarray] = {}

    def ln_thr(q, step):
        return lsq_thresholds(step, Fraction(1, 1 << lnf.frac) if lnf.frac >= 0 else 1 << -lnf.frac,
                              q.qmin, q.qmax, lnf.qmin, lnf.qmax + 1)

    def res_lsb():
        return Fraction(1, 1 << res.frac) if res.frac >= 0 else Fraction(1 << -res.frac)

    def res_thr(q, step):
        return lsq_thresholds(step, res_lsb(), q.qmin, q.qmax, res.qmin, res.qmax + 1)

    def gelu_thr(q, step):
        return gelu_thresholds(step, res.frac, q.qmax, res.qmin, res.qmax)

    emb = bert.embeddings
    tables = [emb.word_embeddings.weight] + ([emb.word_embeddings.weight_2] if cfg.tws else [])
    with torch.no_grad():
        for i, table in enumerate(tables):
            sfx = "" if i == 0 else "_2"
            out["emb.word.bits" + sfx], out["emb.word.scale" + sfx] = _word_table(table, cfg, fp)
        out["emb.position"] = _i32(quantize(emb.position_embeddings.weight.double(), fp.embedding, fp.rounding))
        out["emb.token_type"] = _i32(quantize(emb.token_type_embeddings.weight.double(), fp.embedding, fp.rounding))
    for k, v in _layernorm(emb.LayerNorm, fp).items():
        out[f"emb.ln.{k}"] = v
    cmax = context_bound(cfg.act_bits, cfg.max_len)
    for li, layer in enumerate(bert.encoder.layer):
        att = layer.attention
        sa = att.self
        p = f"layer.{li}."
        steps = {x: _step(getattr(sa, f"{x}_quant"), f"{p}attn.{x}_quant") for x in "qkvp"}
        s_p, s_v = steps["p"], steps["v"]

        def ctx_thr(q, step, s_p=s_p, s_v=s_v):
            return lsq_thresholds(step, Fraction(s_p) * Fraction(s_v), q.qmin, q.qmax, -cmax, cmax + 1)

        parts = {"query": (sa.query, ln_thr), "key": (sa.key, ln_thr), "value": (sa.value, ln_thr),
                 "attn_out": (att.output.dense, ctx_thr), "ffn_in": (layer.intermediate.dense, ln_thr),
                 "ffn_out": (layer.output.dense, gelu_thr)}
        for name, (lin, thr) in parts.items():
            for k, v in _w1a4_linear(lin, cfg, fp, p + name, thr).items():
                out[p + name + "." + k] = v
        for x in "qkv":
            out[p + f"attn.{x}_thr"] = _i32(res_thr(getattr(sa, f"{x}_quant"), steps[x]))
        out[p + "attn.exp"] = _i32(softmax_exp_table(steps["q"], steps["k"], cfg.head_size, cfg.act_bits))
        try:
            out[p + "attn.prob_step"] = _i32(np.array(softmax_prob_step(s_p), dtype=np.int64))
        except ValueError as e:
            raise IntModelError(f"{p}attn: {e}") from None
        for name, ln in (("attn_ln", att.output.LayerNorm), ("ffn_ln", layer.output.LayerNorm)):
            for k, v in _layernorm(ln, fp).items():
                out[p + f"{name}.{k}"] = v
    for k, v in _w1a4_linear(bert.pooler.dense, cfg, fp, "pooler", ln_thr).items():
        out[f"pooler.{k}"] = v
    with torch.no_grad():
        out["classifier.weight"] = _i32(quantize(model.classifier.weight.double(), fp.classifier_weight, fp.rounding))
        out["classifier.bias"] = _i32(quantize(model.classifier.bias.double(), fp.logits, fp.rounding))
    return out


def export_members(members: list, weights: list[float], meta: dict[str, Any] | None = None):
    """Integer tensors and metadata of an ensemble (in memory).

    Parameters
    ----------
    members : list of BinaryBertForSequenceClassification
        Members sharing one config (fixed point enabled, floor rounding, ``w1a1`` or ``w1a4``
        with or without TWS; the LSQ steps of ``w1a4`` initialized).
    weights : list of float
        Their combination weights (normalized and quantized exactly as
        :class:`bebert.model.student.Ensemble` does).
    meta : dict, optional
        Checkpoint metadata to carry (``task``, ``max_len``, ``lowercase``, ``source``).

    Returns
    -------
    tensors : dict of str to numpy.ndarray
    meta : dict

    Raises
    ------
    IntModelError
        If the configuration cannot be exported.
    """
    import torch

    from bebert.model.fixedpoint import quantize
    from bebert.model.intops import ln_eps_code, ln_params, tanh_table
    from bebert.model.student import Ensemble

    if not members:
        raise IntModelError("nothing to export: no members")
    cfg = members[0].config
    for m in members[1:]:
        if m.config.to_dict() != cfg.to_dict():
            raise IntModelError("ensemble members have different configs")
    fp = cfg.fixed_point
    if cfg.backbone not in BACKBONES:
        raise IntModelError(f"export implements the {' and '.join(BACKBONES)} backbones, not {cfg.backbone!r} "
                            "(a ternary w2a4 model is split into w1a4 with TWS first)")
    if not fp.enabled:
        raise IntModelError("the checkpoint was trained without fixed point; its formats do not define an integer model")
    if fp.rounding != "floor":
        raise IntModelError(f"export implements floor rounding only, not {fp.rounding!r}")
    tensors: dict[str, np.ndarray] = {}
    member_tensors = _w1a4_member if cfg.backbone == "w1a4" else _member_tensors
    for i, model in enumerate(members):
        for k, v in member_tensors(model).items():
            tensors[f"member.{i}.{k}"] = v
    ens = Ensemble(members, weights, fp)
    with torch.no_grad():
        tensors["ensemble.weight"] = _i32(quantize(ens.weights.double(), fp.ensemble_weight, fp.rounding))
    c0, table = tanh_table(fp.residual, fp.pooler)
    tensors["tanh.table"] = _i32(table)
    info = dict(meta or {})
    out_meta = {
        "config": cfg.to_dict(),
        "ln": ln_params(),
        "ln_eps_code": ln_eps_code(cfg.layer_norm_eps, cfg.hidden_size, fp.residual.frac),
        "tanh_c0": int(c0),
        "members": len(members),
        "ensemble_weights_float": [float(w) for w in weights],
    }
    if cfg.backbone == "w1a4":
        from bebert.model.intops import SOFTMAX_EXP_FRAC

        out_meta["softmax"] = {"exp_frac": SOFTMAX_EXP_FRAC}
    for key in ("task", "max_len", "lowercase", "source"):
        if key in info:
            out_meta[key] = info[key]
    return tensors, out_meta


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike,
                      members: int | None = None) -> dict[str, Any]:
    """Export a student / ensemble checkpoint folder to ``output`` (written atomically); ``members``: only the
    first that many members with their weights (a boosted ensemble's prefix is the ensemble it was after
    that member).

    Returns the integer model's summary.
    """
    from bebert.model.checkpoint import load_student

    from .format import load_int_model

    nets, weights, meta = load_student(checkpoint, "cpu")
    if members is not None:
        if not 1 <= members <= len(nets):
            raise ValueError(f"{checkpoint} has {len(nets)} member(s); cannot export the first {members}")
        nets, weights = nets[:members], weights[:members]
    meta = dict(meta)
    meta["source"] = str(Path(checkpoint))
    tensors, out_meta = export_members(nets, weights, meta)
    save_int_model(output, tensors, out_meta)
    return load_int_model(output).summary()
