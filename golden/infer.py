"""Bit-accurate integer inference: token ids to logits, integers only (``docs/arithmetic.md``).

:class:`GoldenModel` runs an :class:`~bebert.golden.format.IntModel` on a padded batch. Linear
layers run over the batch's real tokens at once (packed ``uint64`` words, XNOR popcounts by
``np.bitwise_count``); attention runs per sequence and head with the padding mask. Every array
on the path is ``int64``, ``uint64`` or ``uint8``; no value is ever converted to floating point.

With ``taps=True`` the result holds every intermediate the hardware produces (accumulators,
bits, residual codes, LayerNorm statistics), per member ``m`` and layer ``l`` under names like
``m0.l3.qkv.acc``; positions of padding tokens are zero in every tap.

The W1A4 backbone (BinaryBERT, ``docs/arithmetic.md`` section 14) runs through
:func:`bebert.golden.w1a4.member_forward`: the same input checks, embeddings' positions, LayerNorm,
pooler, classifier and ensemble combine; taps like ``m0.l3.query.dot``, ``m0.l3.attn.p_codes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fold import score_threshold
from .format import IntModel
from .intops import align_add, and_popcount, layernorm, pack_rows, threshold, xnor_popcount, xnor_popcount_pairs
from .w1a4 import W1A4Member, member_forward

__all__ = ["GoldenInputError", "GoldenOutput", "GoldenModel", "pad_batch"]


class GoldenInputError(ValueError):
    """Token ids, types or masks the model cannot take (the message says which and why)."""


@dataclass
class GoldenOutput:
    """What :meth:`GoldenModel.forward` returns.

    Attributes
    ----------
    logits : int64 ``(B, num_labels)``
        Combined logits, ``logits`` format codes.
    member_logits : int64 ``(M, B, num_labels)``
        Each member's logits.
    predictions : int64 ``(B,)``
        ``argmax`` of ``logits`` (ties go to the lowest class index).
    taps : dict of str to numpy.ndarray
        Intermediates (empty unless ``taps=True``).
    """

    logits: np.ndarray
    member_logits: np.ndarray
    predictions: np.ndarray
    taps: dict = field(default_factory=dict)


def pad_batch(sequences, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pad a list of token-id sequences to ``(ids, mask)`` of shape ``(B, max length)``.

    Raises
    ------
    GoldenInputError
        On an empty batch or an empty sequence.
    """
    seqs = [list(s) for s in sequences]
    if not seqs:
        raise GoldenInputError("empty input: no sequences")
    for i, s in enumerate(seqs):
        if not s:
            raise GoldenInputError(f"empty input: sequence {i} has no tokens")
    n = max(len(s) for s in seqs)
    ids = np.full((len(seqs), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), n), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


class _Member:
    """One member's tensors, converted once for fast inference."""

    def __init__(self, t: dict[str, np.ndarray], num_layers: int) -> None:
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
        wt = lambda a: np.ascontiguousarray(a.T)  # noqa: E731 - word-major weights for xnor_popcount
        self.word_bits = t["emb.word.bits"]
        self.word_scale = i64(t["emb.word.scale"])
        self.position = i64(t["emb.position"])
        self.token_type = i64(t["emb.token_type"])
        self.emb_ln = (i64(t["emb.ln.gamma"]), i64(t["emb.ln.beta"]))
        self.layers = []
        for li in range(num_layers):
            p = f"layer.{li}."
            qkv = ("query", "key", "value")
            self.layers.append({
                "qkv_w": wt(np.concatenate([t[p + n + ".bits"] for n in qkv])),
                # thresholds in the accumulators' dtype (int32): no widening copy per compare
                "qkv_thr": np.concatenate([t[p + n + ".thr"] for n in qkv]).astype(np.int32),
                "qkv_pol": np.concatenate([t[p + n + ".pol"] for n in qkv]).astype(np.uint8),
                "o_w": wt(t[p + "attn_out.bits"]),
                "o_scale": i64(t[p + "attn_out.scale"]),
                "o_bias": i64(t[p + "attn_out.bias"]),
                "ln1": (i64(t[p + "attn_ln.gamma"]), i64(t[p + "attn_ln.beta"])),
                "f1_w": wt(t[p + "ffn_in.bits"]),
                "f1_thr": t[p + "ffn_in.thr"].astype(np.int32),
                "f1_pol": t[p + "ffn_in.pol"].astype(np.uint8),
                "f2_w": wt(t[p + "ffn_out.bits"]),
                "f2_scale": i64(t[p + "ffn_out.scale"]),
                "f2_bias": i64(t[p + "ffn_out.bias"]),
                "ln2": (i64(t[p + "ffn_ln.gamma"]), i64(t[p + "ffn_ln.beta"])),
            })
        self.pool_w = wt(t["pooler.bits"])
        self.pool_scale = i64(t["pooler.scale"])
        self.pool_bias = i64(t["pooler.bias"])
        self.cls_w = i64(t["classifier.weight"])
        self.cls_b = i64(t["classifier.bias"])


def _unpack(words: np.ndarray, k: int) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")[..., :k]


class GoldenModel:
    """The integer model of an ensemble (W1A1 or W1A4 backbone).

    Parameters
    ----------
    model : IntModel
        A validated integer model (:func:`bebert.golden.format.load_int_model`).
    """

    def __init__(self, model: IntModel) -> None:
        self.model = model
        self.dims = model.dims
        self.fmt = model.fmt
        self.ln = model.meta["ln"]
        self.eps_code = int(model.meta["ln_eps_code"])
        self.tanh_c0 = int(model.meta["tanh_c0"])
        self.tanh_table = np.ascontiguousarray(model.tensors["tanh.table"], dtype=np.int64)
        self.ens_w = np.ascontiguousarray(model.tensors["ensemble.weight"], dtype=np.int64)
        self.pad_id = int(model.config.get("pad_token_id", 0))
        self.backbone = model.config["backbone"]
        if self.backbone == "w1a4":
            tws = bool(model.config.get("tws", False))
            self.members = [W1A4Member(model.member(m), self.dims, tws) for m in range(model.members)]
        else:
            self.members = [_Member(model.member(m), self.dims["num_layers"]) for m in range(model.members)]

    #: Packs a W1A1 member's binary activations into words: every activation buffer (layer inputs, Q/K/V,
    #: attention and context bits, FFN bits, the pooler's input) goes through it once.
    #: :class:`bebert.golden.faults.FaultyGolden` overrides it to flip bits in those buffers.
    _pack_activations = staticmethod(pack_rows)

    # ---------------------------------------------------------------------------------- checks
    def _check(self, ids, mask, types):
        d = self.dims
        ids = np.asarray(ids)
        if ids.size == 0:
            raise GoldenInputError("empty input: no tokens")
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2:
            raise GoldenInputError(f"token ids must be a (batch, length) array, not shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise GoldenInputError(f"token ids must be integers, not {ids.dtype}")
        b, n = ids.shape
        if n > d["max_len"]:
            raise GoldenInputError(f"sequence length {n} exceeds the model's maximum {d['max_len']}")
        mask = np.ones((b, n), dtype=np.int64) if mask is None else np.asarray(mask)
        types = np.zeros((b, n), dtype=np.int64) if types is None else np.asarray(types)
        if mask.ndim == 1:
            mask = mask[None, :]
        if types.ndim == 1:
            types = types[None, :]
        if mask.shape != ids.shape or types.shape != ids.shape:
            raise GoldenInputError(f"mask {mask.shape} and token types {types.shape} must match ids {ids.shape}")
        if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_:
            raise GoldenInputError(f"the mask must be 0/1 integers, not {mask.dtype}")
        if not np.isin(mask, (0, 1)).all():
            raise GoldenInputError("the mask must hold only 0 and 1")
        valid = mask.astype(bool)
        empty = np.nonzero(~valid.any(axis=1))[0]
        if empty.size:
            raise GoldenInputError(f"empty input: sequence {int(empty[0])} has no tokens (mask all zero)")
        if not valid[:, 0].all():
            bad = int(np.nonzero(~valid[:, 0])[0][0])
            raise GoldenInputError(f"sequence {bad} starts with padding; the pooler reads token 0")
        ids64 = ids.astype(np.int64)
        bad = valid & ((ids64 < 0) | (ids64 >= d["vocab_size"]))
        if bad.any():
            i, j = (int(x[0]) for x in np.nonzero(bad))
            raise GoldenInputError(f"token id {int(ids64[i, j])} at ({i}, {j}) is outside 0..{d['vocab_size'] - 1}")
        if not np.issubdtype(types.dtype, np.integer):
            raise GoldenInputError(f"token types must be integers, not {types.dtype}")
        types64 = types.astype(np.int64)
        bad = valid & ((types64 < 0) | (types64 >= d["type_vocab_size"]))
        if bad.any():
            i, j = (int(x[0]) for x in np.nonzero(bad))
            raise GoldenInputError(f"token type {int(types64[i, j])} at ({i}, {j}) is outside "
                                   f"0..{d['type_vocab_size'] - 1}")
        # padding positions take a harmless id so that table look-ups stay in range
        ids64 = np.where(valid, ids64, 0)
        types64 = np.where(valid, types64, 0)
        return ids64, valid, types64

    # ------------------------------------------------------------------------------- forward
    def forward(self, input_ids, attention_mask=None, token_type_ids=None, taps: bool = False,
                threads: int = 1) -> GoldenOutput:
        """Run the ensemble on a padded batch.

        Parameters
        ----------
        input_ids : int array ``(B, n)`` (or ``(n,)`` for one sequence)
        attention_mask : 0/1 array ``(B, n)``, optional
            1 for tokens, 0 for padding (default: all tokens). Token 0 of every sequence must be
            real (the pooler reads it).
        token_type_ids : int array ``(B, n)``, optional
            Segment ids (default 0).
        taps : bool
            Collect every intermediate (slower, more memory).
        threads : int
            Split the batch over this many threads (NumPy releases the GIL in its kernels, so
            the parts run on separate cores). Results are identical for any value; taps need 1.

        Raises
        ------
        GoldenInputError
            Empty input, ids or types out of range, sequences longer than ``max_len``, a bad mask.
        ValueError
            ``threads`` below 1, or above 1 together with ``taps``.
        """
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, not {threads!r}")
        if threads > 1:
            if taps:
                raise ValueError("taps are collected with threads=1 only")
            return self._forward_threaded(input_ids, attention_mask, token_type_ids, threads)
        ids, valid, types = self._check(input_ids, attention_mask, token_type_ids)
        tp: dict | None = {} if taps else None
        run = (lambda *a: member_forward(self, *a)) if self.backbone == "w1a4" else self._member
        logits = np.stack([run(m, mem, ids, valid, types, tp) for m, mem in enumerate(self.members)])
        f = self.fmt
        total = (self.ens_w[:, None, None] * logits).sum(0)
        combined = align_add([(total, f["ensemble_weight"].frac + f["logits"].frac)], f["logits"])
        if tp is not None:
            tp["logits"] = combined
        return GoldenOutput(combined, logits, np.argmax(combined, axis=-1).astype(np.int64), tp or {})

    __call__ = forward

    def _forward_threaded(self, input_ids, attention_mask, token_type_ids, threads: int) -> GoldenOutput:
        from concurrent.futures import ThreadPoolExecutor

        ids, valid, types = self._check(input_ids, attention_mask, token_type_ids)
        parts = [p for p in np.array_split(np.arange(ids.shape[0]), threads) if p.size]
        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            outs = list(pool.map(lambda p: self.forward(ids[p], valid[p], types[p]), parts))
        return GoldenOutput(np.concatenate([o.logits for o in outs]),
                            np.concatenate([o.member_logits for o in outs], axis=1),
                            np.concatenate([o.predictions for o in outs]), {})

    def predict(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """Predicted class per sequence."""
        return self.forward(input_ids, attention_mask, token_type_ids).predictions

    def _member(self, m: int, mem: _Member, ids, valid, types, tp) -> np.ndarray:
        d, f = self.dims, self.fmt
        pack_rows = self._pack_activations  # the activation buffers' packer (see above)
        b, n = ids.shape
        h, heads = d["hidden_size"], d["num_heads"]
        hd = h // heads
        fr, fl = f["residual"].frac, f["layernorm"].frac
        rows = np.nonzero(valid.reshape(-1))[0]  # the real tokens, flattened

        def tap(name, value):
            if tp is not None:
                tp[f"m{m}.{name}"] = value

        def ttap(name, value):
            """A token-wise tap (T, ...) stored as (B, n, ...), zero at padding."""
            if tp is not None:
                v = value if value.ndim == 2 else value[:, None]
                tp[f"m{m}.{name}"] = scatter(v).reshape((b, n) + value.shape[1:])

        def scatter(x):
            """(T, C) values of the real tokens -> (B, n, C), zero at padding."""
            out = np.zeros((b * n, x.shape[-1]), dtype=x.dtype)
            out[rows] = x
            return out.reshape(b, n, x.shape[-1])

        def ln(x, params, name):
            st = {} if tp is not None else None
            y = layernorm(x, params[0], params[1], fr, f["ln_weight"].frac, f["ln_bias"].frac, f["layernorm"],
                          self.eps_code, self.ln, st, name)
            if st:
                for k, v in st.items():
                    ttap(k, v)
            return y

        def dense(bits_packed, w_t, k, scale, bias, name, record):
            acc = xnor_popcount(bits_packed, w_t, k)
            y = align_add([(scale * (2 * acc - k), f["weight_scale"].frac), (bias, f["bias"].frac)], f["residual"])
            record(name + ".acc", acc)
            record(name + ".y", y)
            return y

        # ---- embeddings (on the real tokens only)
        tid = ids.reshape(-1)[rows]
        pos = np.tile(np.arange(n), b)[rows]
        sgn = 2 * _unpack(mem.word_bits[tid], h).astype(np.int64) - 1
        word = sgn * mem.word_scale[tid][:, None]
        x = align_add([(word, f["weight_scale"].frac), (mem.position[pos], f["embedding"].frac),
                       (mem.token_type[types.reshape(-1)[rows]], f["embedding"].frac)], f["residual"])
        ttap("emb.sum", x)
        x = ln(x, mem.emb_ln, "emb.ln")
        ttap("emb.ln", x)
        key_ok = valid[:, None, None, :]
        for li, L in enumerate(mem.layers):
            name = f"l{li}."
            xb = pack_rows(x >= 0)
            acc = xnor_popcount(xb, L["qkv_w"], h)
            bits = threshold(acc, L["qkv_thr"], L["qkv_pol"])
            ttap(name + "qkv.acc", acc)
            ttap(name + "qkv.bits", bits)
            qkv = scatter(bits).reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)  # (3, B, heads, n, d)
            qp, kp = pack_rows(qkv[0]), pack_rows(qkv[1])  # (B, heads, n, W(d))
            score = xnor_popcount_pairs(qp[:, :, :, None, :], kp[:, :, None, :, :], hd)  # (B, heads, n, n)
            attn = ((score >= score_threshold(hd)) & key_ok & valid[:, None, :, None]).astype(np.uint8)
            tap(name + "score.acc", np.where(key_ok & valid[:, None, :, None], score, 0))
            tap(name + "attn.bits", attn)
            ap = pack_rows(attn)  # (B, heads, n, W(n)) rows of A
            vp = pack_rows(qkv[2].transpose(0, 1, 3, 2))  # (B, heads, d, W(n)) value bits per channel
            ctx = and_popcount(vp[:, :, None, :, :], ap[:, :, :, None, :])  # (B, heads, n, d)
            ctx = ctx.transpose(0, 2, 1, 3).reshape(b * n, h)[rows]
            cbits = (ctx >= 0).astype(np.uint8)
            ttap(name + "ctx.acc", ctx)
            ttap(name + "ctx.bits", cbits)
            y = dense(pack_rows(cbits), L["o_w"], h, L["o_scale"], L["o_bias"], name + "attn_out", ttap)
            s = align_add([(y, fr), (x, fl)], f["residual"])
            ttap(name + "attn_out.sum", s)
            x = ln(s, L["ln1"], name + "attn_ln")
            ttap(name + "attn_ln", x)
            acc = xnor_popcount(pack_rows(x >= 0), L["f1_w"], h)
            fbits = threshold(acc, L["f1_thr"], L["f1_pol"])
            ttap(name + "ffn_in.acc", acc)
            ttap(name + "ffn_in.bits", fbits)
            y = dense(pack_rows(fbits), L["f2_w"], d["ffn_size"], L["f2_scale"], L["f2_bias"], name + "ffn_out", ttap)
            s = align_add([(y, fr), (x, fl)], f["residual"])
            ttap(name + "ffn_out.sum", s)
            x = ln(s, L["ln2"], name + "ffn_ln")
            ttap(name + "ffn_ln", x)
        # ---- pooler on token 0 of each sequence (always real) and classifier
        first = np.searchsorted(rows, np.arange(b) * n)
        x0 = x[first]
        y = dense(pack_rows(x0 >= 0), mem.pool_w, h, mem.pool_scale, mem.pool_bias, "pooler", tap)
        idx = np.clip(y - self.tanh_c0, 0, self.tanh_table.size - 1)
        p = self.tanh_table[idx]
        tap("pooler.tanh", p)
        logits = align_add([(p @ mem.cls_w.T, f["pooler"].frac + f["classifier_weight"].frac),
                            (mem.cls_b, f["logits"].frac)], f["logits"])
        tap("logits", logits)
        return logits

