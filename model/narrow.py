"""Narrow students: a smaller BERT cut out of a fine-tuned teacher, to start a student the chip can hold.

The accelerator's on-chip preset holds every member's binary weights in block RAM (3.8 Mbit on the
LFE5U-85F): the MiniLM-L6-H384 shape (10.6 Mbit of binary weights a member) does not fit, a
hidden-128, 2-layer student (0.4 Mbit) does. :func:`narrow_bert` builds that student's
full-precision starting point from the teacher by keeping its leading channels -- the first ``hidden``
embedding channels (so the first ``hidden / head_size`` heads), the first ``ffn`` intermediate units -- and
``layers`` of its layers spread evenly over its depth (the last one always kept, as DistilBERT keeps every
other one). The binary student is then built from it as from any teacher and trained with prediction
distillation from the full teacher (the narrow student has other hidden states and heads, so BiBERT's
direction-matching distillation does not apply).

Slicing a pretrained model is a starting point, not a compression method: the fine-tuning recovers
what the cut loses (the runs and their accuracy: ``docs/results-model.md``).
"""

from __future__ import annotations

import copy

__all__ = ["NarrowSpec", "narrow_bert", "kept_layers"]


class NarrowSpec:
    """``hidden``, ``layers``, ``ffn`` of a narrow student (``None``: the teacher's)."""

    def __init__(self, hidden: int | None = None, layers: int | None = None, ffn: int | None = None):
        for name, v in (("hidden", hidden), ("layers", layers), ("ffn", ffn)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"narrow student: {name} must be a positive integer, not {v!r}")
        self.hidden, self.layers, self.ffn = hidden, layers, ffn

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.hidden, self.layers, self.ffn))

    def resolve(self, hf_config) -> tuple[int, int, int, int]:
        """``(hidden, layers, heads, ffn)`` against a teacher's config; ``ValueError`` naming what does not fit."""
        th, tl, ta, tf = (hf_config.hidden_size, hf_config.num_hidden_layers, hf_config.num_attention_heads,
                          hf_config.intermediate_size)
        head = th // ta
        h = self.hidden if self.hidden is not None else th
        n_layers = self.layers if self.layers is not None else tl
        f = self.ffn if self.ffn is not None else tf
        if h > th or n_layers > tl or f > tf:
            raise ValueError(f"narrow student hidden={h}, layers={n_layers}, ffn={f} is larger than the teacher "
                             f"(hidden={th}, layers={tl}, ffn={tf}); a student is cut out of the teacher")
        if h % head:
            raise ValueError(f"narrow student hidden={h} is not a multiple of the teacher's head size {head} "
                             f"({th} / {ta} heads): the student keeps whole heads")
        return h, n_layers, h // head, f


def kept_layers(teacher_layers: int, layers: int) -> list[int]:
    """The teacher layers a ``layers``-deep student keeps: evenly spread, the last one always kept
    (6 -> 2: ``[2, 5]``; 6 -> 3: ``[1, 3, 5]``)."""
    return [round((i + 1) * teacher_layers / layers) - 1 for i in range(layers)]


def narrow_bert(hf, spec: NarrowSpec):
    """A new ``BertForSequenceClassification`` cut out of ``hf`` (see the module docstring).

    Every tensor of the narrow model is the leading block of the teacher's tensor of the same name (encoder
    layer ``i`` from teacher layer ``kept_layers(...)[i]``), so the embedding, attention, FFN, LayerNorm,
    pooler and classifier weights all come from the teacher. Returns the model in eval mode.
    """
    import torch
    import transformers

    h, n_layers, heads, f = spec.resolve(hf.config)
    cfg = copy.deepcopy(hf.config)
    cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size = h, n_layers, heads, f
    model = transformers.BertForSequenceClassification(cfg)
    layer_map = kept_layers(hf.config.num_hidden_layers, n_layers)
    src = hf.state_dict()
    out = {}
    for name, t in model.state_dict().items():
        key = name
        if ".encoder.layer." in name:
            head_, rest = name.split(".encoder.layer.", 1)
            i, tail = rest.split(".", 1)
            key = f"{head_}.encoder.layer.{layer_map[int(i)]}.{tail}"
        if key not in src:
            raise ValueError(f"narrow student: the teacher has no tensor {key!r} (not a BERT classifier?)")
        s = src[key]
        if s.dim() != t.dim() or any(a > b for a, b in zip(t.shape, s.shape)):
            raise ValueError(f"narrow student: {key} of shape {tuple(s.shape)} cannot give {tuple(t.shape)}")
        out[name] = s[tuple(slice(0, n) for n in t.shape)].clone() if s.dim() else s.clone()
    with torch.no_grad():
        model.load_state_dict(out)
    return model.eval()
