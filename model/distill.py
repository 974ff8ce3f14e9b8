"""Knowledge distillation from the full-precision teacher (optional; BEBERT's default is none).

``none``
    Cross-entropy on the labels.
``pred``
    Prediction distillation: ``soft_CE(student / T, teacher / T) + ce_weight * CE(labels)``
    (BiBERT adds the label term with weight 0.5).
``dmd``
    BiBERT's direction-matching distillation, added to ``pred``: for every layer ``l`` and
    ``F`` in ``{Q, K, V}`` the similarity matrices ``P_F = F_h F_h^T / sqrt(d)`` (per head,
    before binarization) of student and teacher are each normalized to unit Frobenius norm
    and the norm of their difference is the loss; the hidden states get the same normalized
    distance. Differences from BiBERT's code: padding rows and columns are zeroed before
    normalizing (BiBERT normalizes over padded positions) and the normalization is per
    sample (BiBERT's is over the whole batch, which makes a sample's loss depend on its
    batch mates).

Teacher layers are matched to student layers as in BiBERT: with ``L_t = k * L_s``, student
layer ``i`` (0-based) follows teacher layer ``k * (i + 1) - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["TeacherInternals", "TeacherRunner", "soft_cross_entropy", "dmd_loss", "KD_MODES", "per_sample_loss"]

KD_MODES = ("none", "pred", "dmd")


@dataclass
class TeacherInternals:
    """Teacher outputs used by distillation."""

    logits: torch.Tensor
    qkv: list
    hidden: list


class TeacherRunner:
    """Runs a Hugging Face BERT classifier and captures per-layer Q, K, V through hooks.

    Parameters
    ----------
    model : transformers.BertForSequenceClassification
        The teacher (put in eval mode; it is never trained here).
    """

    def __init__(self, model) -> None:
        self.model = model.eval()
        self._captured: dict[tuple[int, str], torch.Tensor] = {}
        self._handles = []
        layers = model.bert.encoder.layer
        for i, layer in enumerate(layers):
            att = layer.attention.self
            for name in ("query", "key", "value"):
                self._handles.append(getattr(att, name).register_forward_hook(self._hook(i, name)))
        self.num_layers = len(layers)
        self.num_heads = model.config.num_attention_heads

    def _hook(self, i: int, name: str):
        def fn(_mod, _inp, out):
            self._captured[(i, name)] = out

        return fn

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor], internals: bool) -> TeacherInternals:
        """Teacher logits (and Q/K/V and hidden states when ``internals``)."""
        self._captured.clear()
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            output_hidden_states=internals,
        )
        if not internals:
            return TeacherInternals(out.logits, [], [])
        qkv = [tuple(self._captured[(i, n)] for n in ("query", "key", "value")) for i in range(self.num_layers)]
        return TeacherInternals(out.logits, qkv, list(out.hidden_states))


class StudentTeacherRunner:
    """A trained binary student or ensemble as the teacher of prediction distillation (multi-step
    distillation, as BiT does: FP -> W1A4 -> W1A1, each stage taught by the one before).

    Parameters
    ----------
    model : bebert.model.student.Ensemble
        The teacher ensemble (its combined logits are the soft targets); never trained here.
    """

    def __init__(self, model) -> None:
        self.model = model.eval()
        self.num_heads = model.members[0].config.num_heads

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor], internals: bool) -> TeacherInternals:
        if internals:
            raise ValueError("a binary teacher gives predictions only: direction-matching distillation (kd='dmd') "
                             "needs the full-precision teacher; use kd='pred'")
        out = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return TeacherInternals(out.logits, [], [])


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample ``-sum softmax(t/T) * log_softmax(s/T)``, shape ``(B,)``."""
    t = F.softmax(teacher_logits / temperature, dim=-1)
    return -(t * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1)


def _similarity(x: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    b, n, h = x.shape
    d = h // heads
    xh = x.view(b, n, heads, d).transpose(1, 2)
    m = mask.to(x.dtype)
    p = xh @ xh.transpose(-1, -2) / math.sqrt(d)
    return p * m[:, None, :, None] * m[:, None, None, :]


def _direction_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a = a / a.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    b = b / b.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return (a - b).norm(dim=-1)


def dmd_loss(student, teacher: TeacherInternals, mask: torch.Tensor, heads: int, teacher_heads: int) -> torch.Tensor:
    """Direction-matching distillation, per sample ``(B,)``.

    Parameters
    ----------
    student : StudentOutput
        With ``qkv`` and ``hidden`` (``return_internals=True``).
    teacher : TeacherInternals
        With ``qkv`` and ``hidden``.
    mask : torch.Tensor
        ``(B, n)`` attention mask.
    heads, teacher_heads : int
        Head counts (similarities are per head, so they must agree).
    """
    ls, lt = len(student.qkv), len(teacher.qkv)
    if lt % ls:
        raise ValueError(f"Teacher layers ({lt}) must be a multiple of student layers ({ls}) for DMD")
    if heads != teacher_heads:
        raise ValueError(f"DMD needs equal head counts (student {heads}, teacher {teacher_heads})")
    k = lt // ls
    total = torch.zeros(mask.shape[0], dtype=student.logits.dtype, device=mask.device)
    m = mask.to(student.logits.dtype)
    for i in range(ls):
        t_qkv = teacher.qkv[k * (i + 1) - 1]
        for s_f, t_f in zip(student.qkv[i], t_qkv):
            total = total + _direction_distance(_similarity(s_f, heads, mask), _similarity(t_f, teacher_heads, mask))
    for i in range(ls + 1):
        s_h, t_h = student.hidden[i], teacher.hidden[k * i]
        if s_h.shape != t_h.shape:
            raise ValueError(f"DMD hidden-state shapes differ: student {tuple(s_h.shape)}, teacher {tuple(t_h.shape)}")
        total = total + _direction_distance(s_h * m[..., None], t_h * m[..., None])
    return total


def per_sample_loss(
    mode: str,
    student,
    labels: torch.Tensor,
    teacher: TeacherInternals | None,
    mask: torch.Tensor,
    heads: int,
    teacher_heads: int,
    temperature: float = 1.0,
    ce_weight: float = 0.5,
) -> torch.Tensor:
    """The training loss of each sample ``(B,)`` for a distillation mode (see module doc)."""
    if mode not in KD_MODES:
        raise ValueError(f"kd must be one of {KD_MODES}, not {mode!r}")
    ce = F.cross_entropy(student.logits, labels, reduction="none")
    if mode == "none":
        return ce
    if teacher is None:
        raise ValueError(f"kd={mode!r} needs a teacher")
    loss = soft_cross_entropy(student.logits, teacher.logits, temperature) + ce_weight * ce
    if mode == "dmd":
        loss = loss + dmd_loss(student, teacher, mask, heads, teacher_heads)
    return loss
