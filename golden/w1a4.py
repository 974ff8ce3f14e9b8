"""Integer operations and the member forward pass of the W1A4 (BinaryBERT) backbone.

``docs/arithmetic.md`` section 14 is the contract. Everything here takes and returns integer
NumPy arrays; nothing converts to floating point (a source scan checks this file).

* :func:`code_dot`: the dot product of ``B``-bit activation codes with binary (+-1) weight rows,
  computed as the PE array computes it in bit-serial mode (``golden.pe_array.bit_planes`` /
  ``bitserial_dot``, section 2.1) plus a per-output-channel constant correction.
* :func:`act_codes`: the multi-threshold unit (LSQ codes of integer inputs).
* :func:`int_softmax`: exp table, row sum and the division-free probability codes.
* :class:`W1A4Member` / :func:`member_forward`: token ids to one member's logits, with taps.
"""

from __future__ import annotations

import numpy as np

from .intops import align_add, layernorm, pack_rows, xnor_popcount
from .pe_array import bit_planes, bitserial_dot

__all__ = [
    "offset_codes",
    "dot_correction",
    "bitserial_acc",
    "code_dot",
    "act_codes",
    "int_softmax",
    "W1A4Member",
    "member_forward",
]

LINEARS = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


def offset_codes(codes: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Unsigned codes ``u`` the PE array takes: ``u = c + 2**(B-1)`` for signed codes, ``u = c`` otherwise.

    Raises
    ------
    ValueError
        If a code is outside the ``bits``-bit range.
    """
    c = np.asarray(codes, dtype=np.int64)
    lo = -(1 << (bits - 1)) if signed else 0
    hi = lo + (1 << bits) - 1
    if c.size and (int(c.min()) < lo or int(c.max()) > hi):
        raise ValueError(f"{'signed' if signed else 'unsigned'} {bits}-bit codes must lie in {lo}..{hi}, "
                         f"got {int(c.min())}..{int(c.max())}")
    return c - lo


def dot_correction(w_packed: np.ndarray, k: int, bits: int, signed: bool) -> np.ndarray:
    """Per-output-channel constant ``corr`` with ``sum_k c_k (2 w_k - 1) = y + corr`` (``y`` the PE result).

    For unsigned codes ``corr = (2**B - 1) * (popcount(w) - K)`` (section 2.1); for signed codes,
    offset by ``2**(B-1)``, ``corr = (2**B - 1) * (popcount(w) - K) - 2**(B-1) * (2 popcount(w) - K)``
    ``= -popcount(w) - (2**(B-1) - 1) * K``. ``w_packed`` is ``(P, W)`` with zero padding bits.
    """
    w = np.asarray(w_packed, dtype=np.uint64)
    pc = np.bitwise_count(w).sum(axis=-1, dtype=np.int64)
    corr = ((1 << bits) - 1) * (pc - k)
    if signed:
        corr = corr - (1 << (bits - 1)) * (2 * pc - k)
    return corr


def bitserial_acc(u: np.ndarray, wt: np.ndarray, k: int, bits: int) -> np.ndarray:
    """The PE array's bit-serial result ``y = sum_b 2**b popcount(~(u_b ^ w))`` for ``(T, K)`` codes.

    The same plane decomposition, per-plane XNOR popcount and shift-accumulate as
    :func:`bebert.golden.pe_array.bitserial_dot`, with the cache-blocked popcount kernel
    :func:`bebert.golden.intops.xnor_popcount` (word-major weights ``wt``, ``(W, P)``); tested equal.
    """
    y = None
    for b in range(bits):
        plane = pack_rows(((u >> b) & 1).astype(np.uint8))
        t = xnor_popcount(plane, wt, k).astype(np.int64) << b
        y = t if y is None else y + t
    return y


def code_dot(codes: np.ndarray, w_packed: np.ndarray, k: int, signed: bool, bits: int = 4,
             reference: bool = False) -> np.ndarray:
    """Integer dot products ``D[t, p] = sum_k codes[t, k] * (2 w[p, k] - 1)`` through the PE array.

    ``codes`` (``(T, K)``, ``bits``-bit, signed or unsigned) are offset to unsigned
    (:func:`offset_codes`), sent as ``bits`` bit-planes through the XNOR PE array
    (bit-serial mode, section 2.1) and corrected by the per-channel constant
    :func:`dot_correction`.

    Parameters
    ----------
    codes : int array ``(T, K)``
    w_packed : uint64 ``(P, ceil(K/64))``
        Packed weight rows (bit 1 = +1), padding bits zero.
    k : int
        Dot length ``K``.
    signed : bool
        Codes in ``-2**(B-1) .. 2**(B-1)-1`` (else ``0 .. 2**B - 1``).
    bits : int
        ``B``.
    reference : bool
        Use :func:`bebert.golden.pe_array.bit_planes` and
        :func:`~bebert.golden.pe_array.bitserial_dot` literally (slow; the fast path is tested
        equal to it).

    Returns
    -------
    int64 ``(T, P)``
    """
    u = offset_codes(codes, bits, signed)
    w = np.asarray(w_packed, dtype=np.uint64)
    if reference:
        y = bitserial_dot(bit_planes(u, bits), w, k)
    else:
        y = bitserial_acc(u, np.ascontiguousarray(w.T), k, bits)
    return y + dot_correction(w, k, bits, signed)


def act_codes(c: np.ndarray, thr: np.ndarray, qmin: int) -> np.ndarray:
    """Multi-threshold unit: ``q = qmin + #{j : c >= thr[j]}`` (``thr`` ascending), int64.

    Equal to :func:`bebert.golden.intops.multi_threshold` (a binary search per value instead of
    one comparison per threshold).
    """
    return qmin + np.searchsorted(thr, c, side="right").astype(np.int64)


def int_softmax(scores: np.ndarray, key_ok: np.ndarray, table: np.ndarray, m: int, k: int, qmax: int):
    """The integer softmax: exp table, row sum, probability codes (section 14).

    ::

        E_ij = T[min(max_j' S_ij' - S_ij, N - 1)]   real keys j' and j; 0 for padding keys
        Z_i  = sum_j E_ij                            (>= T[0] > 0: the row maximum has D = 0)
        p_ij = #{c in 1..qmax : 2**(k+1) * E_ij >= (2c - 1) * m * Z_i}
             = clamp(floor(E_ij / Z_i / s_p + 1/2), 0, qmax),   s_p = m * 2**-k

    Parameters
    ----------
    scores : int64 ``(..., n_q, n_k)``
    key_ok : bool, broadcastable (True for real keys)
    table : int64 ``(N,)``
    m, k : int
        The probability step.

    Returns
    -------
    e, z, p : int64 arrays (``z`` with a kept last axis of 1)
    """
    s = np.asarray(scores, dtype=np.int64)
    lowest = np.iinfo(np.int64).min
    mx = np.where(key_ok, s, lowest).max(axis=-1, keepdims=True)
    delta = np.clip(mx - s, 0, table.size - 1)
    e = np.where(key_ok, table[delta], 0)
    z = e.sum(axis=-1, keepdims=True)
    lhs = e << (k + 1)
    p = np.zeros(e.shape, dtype=np.int64)
    for c in range(1, qmax + 1):
        p += lhs >= (2 * c - 1) * m * z
    return e, z, p


class W1A4Member:
    """One W1A4 member's tensors, converted once for fast inference."""

    def __init__(self, t: dict[str, np.ndarray], dims: dict[str, int], tws: bool) -> None:
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
        self.bits = dims["act_bits"]
        h, f = dims["hidden_size"], dims["ffn_size"]
        sfx = ("", "_2") if tws else ("",)
        self.word_bits = [t["emb.word.bits" + s] for s in sfx]
        self.word_scale = [i64(t["emb.word.scale" + s]) for s in sfx]
        self.position = i64(t["emb.position"])
        self.token_type = i64(t["emb.token_type"])
        self.emb_ln = (i64(t["emb.ln.gamma"]), i64(t["emb.ln.beta"]))
        kdim = {"query": h, "key": h, "value": h, "attn_out": h, "ffn_in": h, "ffn_out": f}

        def linear(p, k, signed):
            ws = [t[p + ".bits" + s] for s in sfx]
            return {"wt": [np.ascontiguousarray(w.T) for w in ws],
                    "corr": [dot_correction(w, k, self.bits, signed) for w in ws],
                    "scale": [i64(t[p + ".scale" + s]) for s in sfx],
                    "bias": i64(t[p + ".bias"]), "thr": i64(t[p + ".in_thr"]), "k": k, "signed": signed}

        self.layers = []
        for li in range(dims["num_layers"]):
            p = f"layer.{li}."
            layer = {name: linear(p + name, kdim[name], name != "ffn_out") for name in LINEARS}
            layer.update({
                "q_thr": i64(t[p + "attn.q_thr"]), "k_thr": i64(t[p + "attn.k_thr"]),
                "v_thr": i64(t[p + "attn.v_thr"]), "exp": i64(t[p + "attn.exp"]),
                "prob_step": tuple(int(x) for x in t[p + "attn.prob_step"]),
                "ln1": (i64(t[p + "attn_ln.gamma"]), i64(t[p + "attn_ln.beta"])),
                "ln2": (i64(t[p + "ffn_ln.gamma"]), i64(t[p + "ffn_ln.beta"])),
            })
            self.layers.append(layer)
        self.pooler = linear("pooler", h, True)
        self.cls_w = i64(t["classifier.weight"])
        self.cls_b = i64(t["classifier.bias"])


def _unpack(words: np.ndarray, k: int) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")[..., :k]


def member_forward(g, m: int, mem: W1A4Member, ids, valid, types, tp) -> np.ndarray:
    """One member's logits (``logits`` codes) on a checked batch; taps into ``tp`` when it is a dict.

    ``g`` is the :class:`~bebert.golden.infer.GoldenModel` (formats, LayerNorm constants,
    tanh table). Token-wise taps are ``(B, n, ...)`` and zero at padding positions.
    """
    d, f = g.dims, g.fmt
    b, n = ids.shape
    h, heads = d["hidden_size"], d["num_heads"]
    hd = h // heads
    bits = mem.bits
    smin, smax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    fr, fl = f["residual"].frac, f["layernorm"].frac
    fd, fb = f["dot_scale"].frac, f["bias"].frac
    rows = np.nonzero(valid.reshape(-1))[0]

    def tap(name, value):
        if tp is not None:
            tp[f"m{m}.{name}"] = value

    def scatter(x):
        out = np.zeros((b * n,) + x.shape[1:], dtype=x.dtype)
        out[rows] = x
        return out.reshape((b, n) + x.shape[1:])

    def ttap(name, value):
        if tp is not None:
            tp[f"m{m}.{name}"] = scatter(value)

    def ln(x, params, name, record):
        st = {} if tp is not None else None
        y = layernorm(x, params[0], params[1], fr, f["ln_weight"].frac, f["ln_bias"].frac, f["layernorm"],
                      g.eps_code, g.ln, st, name)
        if st:
            for k_, v_ in st.items():
                record(k_, v_)
        return y

    def dense(a, lin, name, record):
        """Codes ``a`` (T, K) into a linear layer: bit-serial dots, scales, bias -> residual codes."""
        u = offset_codes(a, bits, lin["signed"])
        terms = []
        record(name + ".in", a)
        for i, (wt, corr, sc) in enumerate(zip(lin["wt"], lin["corr"], lin["scale"])):
            sfx = "" if i == 0 else "_2"
            acc = bitserial_acc(u, wt, lin["k"], bits)
            dot = acc + corr
            record(name + ".acc" + sfx, acc)
            record(name + ".dot" + sfx, dot)
            terms.append((sc * dot, fd))
        y = align_add(terms + [(lin["bias"], fb)], f["residual"])
        record(name + ".y", y)
        return y

    # ---- embeddings (the real tokens only)
    tid = ids.reshape(-1)[rows]
    pos = np.tile(np.arange(n), b)[rows]
    terms = [((2 * _unpack(wb[tid], h).astype(np.int64) - 1) * ws[tid][:, None], f["weight_scale"].frac)
             for wb, ws in zip(mem.word_bits, mem.word_scale)]
    terms += [(mem.position[pos], f["embedding"].frac), (mem.token_type[types.reshape(-1)[rows]], f["embedding"].frac)]
    x = align_add(terms, f["residual"])
    ttap("emb.sum", x)
    x = ln(x, mem.emb_ln, "emb.ln", ttap)
    ttap("emb.ln", x)
    key_ok = valid[:, None, None, :]
    q_ok = valid[:, None, :, None]
    for li, L in enumerate(mem.layers):
        nm = f"l{li}."
        ys = {x_: dense(act_codes(x, L[x_]["thr"], smin), L[x_], nm + x_, ttap) for x_ in ("query", "key", "value")}
        cq = act_codes(ys["query"], L["q_thr"], smin)
        ck = act_codes(ys["key"], L["k_thr"], smin)
        cv = act_codes(ys["value"], L["v_thr"], smin)
        ttap(nm + "attn.q_codes", cq)
        ttap(nm + "attn.k_codes", ck)
        ttap(nm + "attn.v_codes", cv)
        split = lambda c: scatter(c).reshape(b, n, heads, hd).transpose(0, 2, 1, 3)  # noqa: E731 (B, A, n, d)
        qh, kh, vh = split(cq), split(ck), split(cv)
        s = np.matmul(qh, kh.transpose(0, 1, 3, 2))  # (B, A, n, n) integer scores
        pm, pk = L["prob_step"]
        e, z, p = int_softmax(s, key_ok, L["exp"], pm, pk, (1 << bits) - 1)
        p = np.where(q_ok, p, 0)
        both = key_ok & q_ok
        tap(nm + "attn.score", np.where(both, s, 0))
        tap(nm + "attn.exp", np.where(both, e, 0))
        tap(nm + "attn.sum", np.where(valid[:, None, :], z[..., 0], 0))
        tap(nm + "attn.p_codes", p)
        ctx = np.matmul(p, vh)  # (B, A, n, d): P4 . V4
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b * n, h)[rows]
        ttap(nm + "attn.ctx", ctx)
        y = dense(act_codes(ctx, L["attn_out"]["thr"], smin), L["attn_out"], nm + "attn_out", ttap)
        s_ = align_add([(y, fr), (x, fl)], f["residual"])
        ttap(nm + "attn_out.sum", s_)
        x = ln(s_, L["ln1"], nm + "attn_ln", ttap)
        ttap(nm + "attn_ln", x)
        hpre = dense(act_codes(x, L["ffn_in"]["thr"], smin), L["ffn_in"], nm + "ffn_in", ttap)
        y = dense(act_codes(hpre, L["ffn_out"]["thr"], 0), L["ffn_out"], nm + "ffn_out", ttap)
        s_ = align_add([(y, fr), (x, fl)], f["residual"])
        ttap(nm + "ffn_out.sum", s_)
        x = ln(s_, L["ln2"], nm + "ffn_ln", ttap)
        ttap(nm + "ffn_ln", x)
    # ---- pooler on token 0 (always real), tanh table, classifier
    first = np.searchsorted(rows, np.arange(b) * n)
    y = dense(act_codes(x[first], mem.pooler["thr"], smin), mem.pooler, "pooler", tap)
    idx = np.clip(y - g.tanh_c0, 0, g.tanh_table.size - 1)
    pt = g.tanh_table[idx]
    tap("pooler.tanh", pt)
    logits = align_add([(pt @ mem.cls_w.T, f["pooler"].frac + f["classifier_weight"].frac),
                        (mem.cls_b, f["logits"].frac)], f["logits"])
    tap("logits", logits)
    return logits
