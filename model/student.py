"""The binary student: BiBERT (W1A1) and BinaryBERT (W1A4, ternary W2A4) backbones.

Module and parameter names follow Hugging Face's ``BertForSequenceClassification``
(``bert.encoder.layer.3.attention.self.query.weight`` ...), so a fine-tuned full-precision
teacher initializes a student with ``load_state_dict(teacher_state, strict=False)``, as BiBERT
and BinaryBERT do. Weights are kept as latent floats; the forward pass binarizes them.

Per layer (W1A1), in the notation of :mod:`bebert.model.binarize` and
:mod:`bebert.model.fixedpoint` (``fq`` = fake quantization to a named format)::

    xb        = sign(x)                                     # x: LayerNorm output
    Q, K, V   = fq_res(fq_scale(alpha) * (xb . sign(W)) + fq_bias(b))   # each
    A         = (sign(Q_h) . sign(K_h)^T > 0) & key_mask    # per head, integer scores
    C         = A . sign(V_h)                               # integer context
    y         = fq_res(alpha_o * (sign(C) . sign(W_o)) + b_o)
    x         = LN(fq_res(y + x))                           # LN output fq_ln
    h         = fq_res(alpha_1 * (sign(x) . sign(W_1)) + b_1)
    y         = fq_res(alpha_2 * (sign(h) . sign(W_2)) + b_2)   # sign(GELU(h)) = sign(h)
    x         = LN(fq_res(y + x))

Embeddings: ``fq_res(alpha_e * sign(E[id]) + fq_emb(P[pos]) + fq_emb(T[type]))``, LayerNorm.
Head: ``p = fq_pool(tanh(binary_linear(sign(x[:, 0]))))``,
``logits = fq_logit(p . fq_cls(W_c) + fq_logit(b_c))``.

W1A4 replaces ``sign`` of activations by 4-bit LSQ quantizers and the attention by
BinaryBERT's: ``softmax(Q4 K4^T / sqrt(d))`` quantized to 4 unsigned bits, times ``V4``.

Dropout (training only) acts on dense outputs before the residual sum, on the embedding
output and on the pooler output; there is no dropout on attention probabilities (it would
make binary attention non-binary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from .binarize import attention_bits_ste, binarize_weight, sign_ste
from .config import ModelConfig
from .fixedpoint import FixedPointConfig, fake_quant, quantize
from .intops import (
    codes_of,
    context_bound,
    int_layernorm,
    int_softmax_codes,
    ln_eps_code,
    replace_forward,
    softmax_exp_table,
    softmax_prob_step,
    tanh_table,
)
from .quant import LSQQuantizer, ternarize_weight

__all__ = [
    "StudentOutput",
    "QuantLinear",
    "FQLayerNorm",
    "BinaryBertForSequenceClassification",
    "Ensemble",
]


@dataclass
class StudentOutput:
    """What a student forward pass returns.

    Attributes
    ----------
    logits : torch.Tensor
        ``(B, num_labels)``.
    qkv : list of tuple of torch.Tensor
        Per layer, the real-valued ``(Q, K, V)`` of shape ``(B, n, hidden)`` before
        binarization (only with ``return_internals=True``; used by direction-matching
        distillation).
    hidden : list of torch.Tensor
        Embedding output and every layer's output (only with ``return_internals=True``).
    """

    logits: torch.Tensor
    qkv: list = field(default_factory=list)
    hidden: list = field(default_factory=list)


def _weight_quant(w: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantized weight codes and per-row scales for the configured backbone."""
    if cfg.backbone == "w2a4":
        return ternarize_weight(w)
    return binarize_weight(w, center=cfg.center_weights and cfg.backbone == "w1a1")


class QuantLinear(nn.Module):
    """A binary (or ternary) linear layer with its input quantizer.

    ``y = fq_res(sum_p fq_scale(alpha_p) * (xq . codes_p^T) + fq_bias(b))`` where
    ``p`` runs over one weight (or two after ternary weight splitting).

    Parameters
    ----------
    in_features, out_features : int
        Shape.
    cfg : ModelConfig
        Backbone and fixed-point formats.
    signed_input : bool
        For multi-bit backbones: signed (LSQ ``[-8, 7]``) or non-negative (``[0, 15]``) input
        codes. Ignored by ``w1a1`` (inputs are ``+-1``).
    """

    def __init__(self, in_features: int, out_features: int, cfg: ModelConfig, signed_input: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        if cfg.tws:
            self.weight_2 = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        if cfg.backbone != "w1a1":
            self.act_quant = LSQQuantizer(cfg.act_bits, signed=signed_input)
        nn.init.normal_(self.weight, std=0.02)
        if cfg.tws:
            nn.init.normal_(self.weight_2, std=0.02)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, backbone={self.cfg.backbone}, tws={self.cfg.tws}"

    def quantize_input(self, x: torch.Tensor, surrogate: torch.Tensor | None = None) -> torch.Tensor:
        """Binary (``w1a1``) or LSQ-quantized input activations."""
        if self.cfg.backbone == "w1a1":
            return sign_ste(x, surrogate)
        return self.act_quant(x)

    def forward(self, x: torch.Tensor, surrogate: torch.Tensor | None = None, exact=None) -> torch.Tensor:
        """Apply the layer.

        Parameters
        ----------
        x : torch.Tensor
            ``(..., in_features)`` real input (quantized here).
        surrogate : torch.Tensor, optional
            ``w1a1`` only: the tensor the sign's straight-through gradient flows into (see
            :func:`bebert.model.binarize.sign_ste`).
        exact : callable, optional
            Multi-bit backbones only: ``exact(act_quant) -> codes``, the exact integer input codes
            when ``x`` is not on a fixed-point grid (the context, the GELU output), see
            :meth:`bebert.model.quant.LSQQuantizer.quantize`.
        """
        fp = self.cfg.fixed_point
        weights = [self.weight, self.weight_2] if self.cfg.tws else [self.weight]
        if self.cfg.backbone != "w1a1":
            return self._forward_multibit(x, weights, exact)
        xq = self.quantize_input(x, surrogate)
        # float64 keeps alpha * popcount + bias exact whatever the magnitudes (the integer
        # contract of docs/arithmetic.md); float32 is exact only while it fits 24 bits
        exact64 = fp.enabled
        y = None
        for w in weights:
            codes, alpha = _weight_quant(w, self.cfg)
            dot = F.linear(xq, codes)
            if exact64:
                dot, alpha = dot.double(), alpha.double()
            alpha = fake_quant(alpha, fp.weight_scale, fp)
            term = dot * alpha.view(-1)
            y = term if y is None else y + term
        b = self.bias.double() if exact64 else self.bias
        y = y + fake_quant(b, fp.bias, fp)
        return fake_quant(y, fp.residual, fp).to(x.dtype)

    def _forward_multibit(self, x: torch.Tensor, weights, exact) -> torch.Tensor:
        """``fq_res(sum_p fq_dot(s * fq_scale(alpha_p)) * (q . codes_p) + fq_bias(b))`` (section 14).

        The dot product of the integer codes ``q`` with the weight codes is exact in float32
        (integers below 2**24); with fixed point, the scale product, the sum and the bias are
        evaluated in float64, where they are exact.
        """
        fp = self.cfg.fixed_point
        v, s = self.act_quant.quantize(x, exact)
        y = None
        for w in weights:
            codes, alpha = _weight_quant(w, self.cfg)
            dot = F.linear(v, codes.to(v.dtype))
            alpha = fake_quant(alpha, fp.weight_scale, fp).view(-1)
            if fp.enabled:
                m = fake_quant(s.double() * alpha.double(), fp.dot_scale, fp)
                term = dot.double() * m
            else:
                term = dot * (s * alpha)
            y = term if y is None else y + term
        b = self.bias.double() if fp.enabled else self.bias
        y = y + fake_quant(b, fp.bias, fp)
        return fake_quant(y, fp.residual, fp).to(x.dtype)


class FQLayerNorm(nn.LayerNorm):
    """LayerNorm with fixed-point gain, shift and output (``fq_ln(LN(x))``).

    With fixed point enabled the forward value is the integer LayerNorm of the contract
    (:func:`bebert.model.intops.int_layernorm`, ``docs/arithmetic.md``) applied to the input's
    ``residual``-format codes; the gradient is that of the floating-point LayerNorm.
    """

    def __init__(self, hidden: int, eps: float, fp: FixedPointConfig) -> None:
        super().__init__(hidden, eps=eps)
        self.fp = fp

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        fp = self.fp
        w = fake_quant(self.weight, fp.ln_weight, fp)
        b = fake_quant(self.bias, fp.ln_bias, fp)
        y = fake_quant(F.layer_norm(x, self.normalized_shape, w, b, self.eps), fp.layernorm, fp)
        if not fp.enabled:
            return y
        with torch.no_grad():
            exact = int_layernorm(
                codes_of(x, fp.residual.frac),
                quantize(self.weight.detach().double(), fp.ln_weight, fp.rounding).to(torch.int64),
                quantize(self.bias.detach().double(), fp.ln_bias, fp.rounding).to(torch.int64),
                fp.residual.frac, fp.ln_weight.frac, fp.ln_bias.frac, fp.layernorm,
                ln_eps_code(self.eps, x.shape[-1], fp.residual.frac),
            ).to(torch.float64) * fp.layernorm.lsb
        return replace_forward(y, exact)


class BinaryWordEmbedding(nn.Module):
    """Binary word embedding ``alpha * sign(E_c[id])`` (two tables after TWS, ternary for w2a4).

    The scale is per vocabulary row or one per table (``ModelConfig.embedding_scale``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.vocab_size, cfg.hidden_size))
        nn.init.normal_(self.weight, std=0.02)
        if cfg.tws:
            self.weight_2 = nn.Parameter(torch.empty(cfg.vocab_size, cfg.hidden_size))
            nn.init.normal_(self.weight_2, std=0.02)

    def _lookup(self, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        fp = self.cfg.fixed_point
        if self.cfg.embedding_scale == "row":
            rows = F.embedding(ids, table)  # quantize only the rows used
            codes, alpha = _weight_quant(rows.reshape(-1, rows.shape[-1]), self.cfg)
            codes = codes.view_as(rows)
            alpha = alpha.view(*rows.shape[:-1], 1)
        else:
            codes_all, alpha = _weight_quant(table.reshape(1, -1), self.cfg)
            codes = F.embedding(ids, codes_all.view_as(table))
        return codes * fake_quant(alpha, fp.weight_scale, fp)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self._lookup(self.weight, ids)
        if self.cfg.tws:
            out = out + self._lookup(self.weight_2, ids)
        return out


class Embeddings(nn.Module):
    """Word (binary) + position + token-type embeddings, summed in fixed point, LayerNorm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.word_embeddings = BinaryWordEmbedding(cfg)
        self.position_embeddings = nn.Embedding(cfg.max_len, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        nn.init.normal_(self.position_embeddings.weight, std=0.02)
        nn.init.normal_(self.token_type_embeddings.weight, std=0.02)
        self.LayerNorm = FQLayerNorm(cfg.hidden_size, cfg.layer_norm_eps, cfg.fixed_point)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:  # noqa: D102
        fp = self.cfg.fixed_point
        n = input_ids.shape[1]
        if n > self.cfg.max_len:
            raise ValueError(f"Sequence length {n} exceeds the model's max_len {self.cfg.max_len}")
        pos = fake_quant(self.position_embeddings.weight[:n], fp.embedding, fp)
        typ = fake_quant(self.token_type_embeddings(token_type_ids), fp.embedding, fp)
        word = self.word_embeddings(input_ids)
        if fp.enabled:  # float64: the sum of the fixed-point terms is exact (section 5)
            x = fake_quant(word.double() + pos.double().unsqueeze(0) + typ.double(), fp.residual, fp).to(word.dtype)
        else:
            x = fake_quant(word + pos.unsqueeze(0) + typ, fp.residual, fp)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Bi-Attention (w1a1) or BinaryBERT's quantized softmax attention (w1a4, w2a4)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.query = QuantLinear(h, h, cfg)
        self.key = QuantLinear(h, h, cfg)
        self.value = QuantLinear(h, h, cfg)
        if cfg.backbone != "w1a1":
            self.q_quant = LSQQuantizer(cfg.act_bits, signed=True)
            self.k_quant = LSQQuantizer(cfg.act_bits, signed=True)
            self.v_quant = LSQQuantizer(cfg.act_bits, signed=True)
            self.p_quant = LSQQuantizer(cfg.act_bits, signed=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.cfg.num_heads, self.cfg.head_size).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        """Return ``(context, aux, (Q, K, V))``; context is ``(B, n, hidden)``.

        ``aux`` is, for ``w1a1``, the context's gradient surrogate; for the multi-bit backbones
        with fixed point, ``(C, lsb)``: the integer context ``C = P4 . V4`` (``(B, n, hidden)``,
        integer-valued) and the value of one unit of it, ``s_p * s_v`` (a ``Fraction``).
        """
        q, k, v = self.query(x), self.key(x), self.value(x)
        qh, kh, vh = self._heads(q), self._heads(k), self._heads(v)
        b, _, n, _ = qh.shape
        merge = lambda t: t.transpose(1, 2).reshape(b, n, self.cfg.hidden_size)  # noqa: E731
        if self.cfg.backbone == "w1a1":
            a = attention_bits_ste(sign_ste(qh), sign_ste(kh), mask)
            ctx = a @ sign_ste(vh)  # exact integers
            count = a.detach().sum(-1, keepdim=True).clamp(min=1)
            return merge(ctx), merge(ctx / count), (q, k, v)
        fp = self.cfg.fixed_point
        d = self.cfg.head_size
        vq, sq = self.q_quant.quantize(qh)
        vk, sk = self.k_quant.quantize(kh)
        vv, sv = self.v_quant.quantize(vh)
        s_int = vq @ vk.transpose(-1, -2)  # integer scores, exact in float32 (|S| <= 64 d)
        key_ok = mask.bool()[:, None, None, :]
        scores = (s_int * (sq * sk / math.sqrt(d))).masked_fill(~key_ok, torch.finfo(s_int.dtype).min)
        soft = torch.softmax(scores, dim=-1)
        exact = None
        if fp.enabled:  # the integer softmax of the contract (section 14)
            def exact(pq):
                table = softmax_exp_table(self.q_quant.step_value(), self.k_quant.step_value(), d,
                                          self.cfg.act_bits)
                m, k_ = softmax_prob_step(pq.step_value())
                return int_softmax_codes(s_int.detach().round().to(torch.int64), key_ok,
                                         torch.tensor(table, device=s_int.device), m, k_, pq.qmax)
        vp, sp = self.p_quant.quantize(soft, exact)
        c_int = vp @ vv  # integer context, exact in float32 (|C| <= 120 n)
        ctx = c_int * (sp * sv)
        aux = None
        if fp.enabled:
            aux = (merge(c_int.detach()), Fraction(self.p_quant.step_value()) * Fraction(self.v_quant.step_value()))
        return merge(ctx), aux, (q, k, v)


class SelfOutput(nn.Module):
    """Output projection, residual sum in fixed point, LayerNorm."""

    def __init__(self, cfg: ModelConfig, in_features: int, signed_input: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.dense = QuantLinear(in_features, cfg.hidden_size, cfg, signed_input=signed_input)
        self.LayerNorm = FQLayerNorm(cfg.hidden_size, cfg.layer_norm_eps, cfg.fixed_point)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x, residual, surrogate=None, exact=None):  # noqa: D102
        fp = self.cfg.fixed_point
        y = self.dropout(self.dense(x, surrogate, exact))
        return self.LayerNorm(fake_quant(y + residual, fp.residual, fp))


class Attention(nn.Module):
    """``attention.self`` + ``attention.output`` (HF names)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = SelfOutput(cfg, cfg.hidden_size)

    def forward(self, x, mask):  # noqa: D102
        ctx, aux, qkv = self.self(x, mask)
        if self.self.cfg.backbone == "w1a1":
            return self.output(ctx, x, aux), qkv
        exact = None
        if aux is not None:  # requantize the integer context exactly (section 14)
            c_int, lsb = aux
            cmax = context_bound(self.self.cfg.act_bits, self.self.cfg.max_len)

            def exact(aq):
                return aq.int_codes(c_int.round().to(torch.int64), lsb, -cmax, cmax + 1)
        return self.output(ctx, x, exact=exact), qkv


class Intermediate(nn.Module):
    """FFN up-projection (pre-activation output)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = QuantLinear(cfg.hidden_size, cfg.ffn_size, cfg)

    def forward(self, x):  # noqa: D102
        return self.dense(x)


class Layer(nn.Module):
    """One transformer layer."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = SelfOutput(cfg, cfg.ffn_size, signed_input=False)

    def forward(self, x, mask):  # noqa: D102
        x, qkv = self.attention(x, mask)
        h = self.intermediate(x)
        g = F.gelu(h)
        if self.cfg.backbone == "w1a1":
            # sign(GELU(h)) == sign(h) exactly; computing sign(h) avoids GELU underflowing
            # to -0.0 (which sign() maps to +1) for very negative h. Gradient via GELU.
            out = self.output(h, x, surrogate=g)
        else:
            fp = self.cfg.fixed_point
            exact = None
            if fp.enabled:  # codes of GELU(h) by thresholds on the pre-GELU codes (section 14)
                def exact(aq):
                    return aq.gelu_codes(codes_of(h, fp.residual.frac), fp.residual.frac, fp.residual.qmin,
                                         fp.residual.qmax)
            out = self.output(g, x, exact=exact)
        return out, qkv


class Encoder(nn.Module):
    """Stack of layers (``encoder.layer.N``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))


class Pooler(nn.Module):
    """Binary linear on the first token, tanh, fixed point."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.dense = QuantLinear(cfg.hidden_size, cfg.hidden_size, cfg)

    def forward(self, x):  # noqa: D102
        fp = self.cfg.fixed_point
        y = self.dense(x[:, 0])
        p = fake_quant(torch.tanh(y), fp.pooler, fp)
        if not fp.enabled:
            return p
        # the contract's tanh is a table over the residual codes (docs/arithmetic.md)
        c0, table = tanh_table(fp.residual, fp.pooler)
        t = torch.tensor(table, device=y.device)
        idx = (codes_of(y, fp.residual.frac) - c0).clamp(0, t.numel() - 1)
        return replace_forward(p, t[idx].to(torch.float64) * fp.pooler.lsb)


class BertBody(nn.Module):
    """Embeddings, encoder, pooler (``bert.*``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = Pooler(cfg)


class FQLinear(nn.Linear):
    """The classifier: fixed-point weights, bias and output."""

    def __init__(self, in_features: int, out_features: int, fp: FixedPointConfig) -> None:
        super().__init__(in_features, out_features)
        self.fp = fp
        nn.init.normal_(self.weight, std=0.02)
        nn.init.zeros_(self.bias)

    def forward(self, x):  # noqa: D102
        fp = self.fp
        if fp.enabled:
            # float64 holds the fixed-point products and their sum exactly (float32 does not)
            dtype = x.dtype
            x, w, b = x.double(), self.weight.double(), self.bias.double()
            w, b = fake_quant(w, fp.classifier_weight, fp), fake_quant(b, fp.logits, fp)
            return fake_quant(F.linear(x, w, b), fp.logits, fp).to(dtype)
        w = fake_quant(self.weight, fp.classifier_weight, fp)
        b = fake_quant(self.bias, fp.logits, fp)
        return fake_quant(F.linear(x, w, b), fp.logits, fp)


class BinaryBertForSequenceClassification(nn.Module):
    """A binary BERT sequence classifier (one ensemble member).

    Parameters
    ----------
    cfg : ModelConfig
        Architecture, backbone and fixed-point formats.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.bert = BertBody(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.classifier = FQLinear(cfg.hidden_size, cfg.num_labels, cfg.fixed_point)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_internals: bool = False,
    ) -> StudentOutput:
        """Classify a batch.

        Parameters
        ----------
        input_ids : torch.Tensor
            ``(B, n)`` token ids.
        attention_mask : torch.Tensor, optional
            ``(B, n)``, 1 for tokens, 0 for padding.
        token_type_ids : torch.Tensor, optional
            ``(B, n)`` segment ids.
        return_internals : bool
            Also return per-layer ``(Q, K, V)`` and hidden states.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.bert.embeddings(input_ids, token_type_ids)
        hidden, qkvs = [x], []
        for layer in self.bert.encoder.layer:
            x, qkv = layer(x, attention_mask)
            if return_internals:
                hidden.append(x)
                qkvs.append(qkv)
        pooled = self.dropout(self.bert.pooler(x))
        logits = self.classifier(pooled)
        if return_internals:
            return StudentOutput(logits, qkvs, hidden)
        return StudentOutput(logits)

    def load_teacher_state(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Initialize from a full-precision BERT state dict (Hugging Face names).

        Shapes must match. Returns the names of this model's parameters the state did not
        provide (the second weight after splitting, LSQ steps): those keep their
        initialization. Raises ``ValueError`` when a shape differs or nothing matched.
        """
        own = self.state_dict()
        used = {}
        for k, v in state.items():
            if k in own:
                if own[k].shape != v.shape:
                    raise ValueError(f"Shape mismatch for {k}: teacher {tuple(v.shape)}, student {tuple(own[k].shape)}")
                used[k] = v
        if not used:
            raise ValueError("No teacher parameter matches the student's names (expected Hugging Face BERT names)")
        self.load_state_dict(used, strict=False)
        return sorted(set(own) - set(used))

    def binary_linear_names(self) -> list[str]:
        """Names of the binary linear layers (Hugging Face names, e.g. ``bert.pooler.dense``)."""
        return [n for n, m in self.named_modules() if isinstance(m, QuantLinear)]

    @torch.no_grad()
    def fold_input_scales(self, scales: dict[str, float]) -> dict[str, float]:
        """Fold an activation scale into the latent weights of binary-input (W1A1) layers.

        A W1A1 layer sees ``sign(x)``, of magnitude 1, where the full-precision teacher it was
        initialized from saw ``x``. The binary approximation of the teacher's ``x . W`` is
        ``beta * alpha * (sign(x) . sign(W))`` with ``beta = E|x|`` (XNOR-Net's activation
        scale); without ``beta`` every binary branch starts ``1 / E|x|`` (about 2-4x) too
        large relative to the residual stream and the bias, the residual information is
        drowned by layer 2 and the student does not learn. Multiplying the latent weights by
        ``beta`` puts ``beta`` into ``alpha = mean |W_c|`` exactly (signs unchanged), so the
        deployed arithmetic and the integer contract are untouched.

        Parameters
        ----------
        scales : dict
            ``beta`` per layer name (see :meth:`binary_linear_names`), e.g. the teacher's mean
            absolute input of that layer (:func:`bebert.model.teacher.linear_input_scales`).
            Layers not named keep their weights.

        Returns
        -------
        dict
            The scales applied (empty for backbones with multi-bit activations, whose LSQ
            quantizers keep the input's magnitude).
        """
        if self.config.backbone != "w1a1":
            return {}
        applied = {}
        mods = dict(self.named_modules())
        for name, beta in scales.items():
            mod = mods.get(name)
            if not isinstance(mod, QuantLinear):
                raise ValueError(f"{name} is not a binary linear layer of this model")
            if not (math.isfinite(beta) and beta > 0):
                raise ValueError(f"Input scale of {name} must be positive and finite, not {beta!r}")
            mod.weight.mul_(beta)
            if self.config.tws:
                mod.weight_2.mul_(beta)
            applied[name] = float(beta)
        return applied


class Ensemble(nn.Module):
    """Members combined by their boosting weights: ``logits = sum_m fq(w_m / W) * logits_m``.

    The weights are normalized by their sum ``W`` before quantization: a positive scale does
    not change the argmax, and normalized weights lie in ``[0, 1]`` so they never saturate the
    ``ensemble_weight`` format (a near-perfect boosted member can get ``alpha > 20``).

    Parameters
    ----------
    members : list of nn.Module
        Members returning :class:`StudentOutput` (or anything with ``.logits``).
    weights : sequence of float
        One weight per member (SAMME's alpha, or 1 for bagging).
    fp : FixedPointConfig, optional
        Formats for the weights (``ensemble_weight``) and the combined logits (``logits``).

    Notes
    -----
    If every weight is 0 (every boosted member was no better than chance) the members are
    averaged with equal weights instead of returning all-zero logits.
    """

    def __init__(self, members, weights, fp: FixedPointConfig | None = None) -> None:
        super().__init__()
        if len(members) != len(weights):
            raise ValueError(f"{len(members)} members but {len(weights)} weights")
        if not members:
            raise ValueError("An ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        w = [float(x) for x in weights]
        if all(x == 0.0 for x in w):
            w = [1.0] * len(w)
        if any(x < 0 for x in w):
            raise ValueError(f"Ensemble weights must be non-negative, not {w}")
        total = sum(w)
        w = [x / total for x in w]
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32))
        self.fp = fp

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> StudentOutput:
        """Combined logits of the members."""
        total = None
        dtype = None
        for m, w in zip(self.members, self.weights):
            logits = m(input_ids, attention_mask, token_type_ids).logits
            dtype = logits.dtype
            if self.fp is not None and self.fp.enabled:
                # float64: products of two 16-bit codes and their sum are exact
                w = fake_quant(w.double(), self.fp.ensemble_weight, self.fp)
                logits = logits.double()
            term = w * logits
            total = term if total is None else total + term
        if self.fp is not None:
            total = fake_quant(total, self.fp.logits, self.fp)
        return StudentOutput(total.to(dtype))
