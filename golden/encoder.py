"""Golden model of one W1A1 encoder layer as the hardware runs it (:class:`bebert.hw.encoder.EncoderLayer`).

The layer is composed from the ops' own golden functions, in the order of
:func:`bebert.golden.schedule.schedule` (``qkv``, ``attention``, ``attn_out``, ``ffn_in``, ``ffn_out``)::

    qkv  = linear_sign(sign(R), [Wq; Wk; Wv], H, [Tq; Tk; Tv], [pol])       (n, 3H)   golden.linear
    ctx  = bi_attention(q_h, k_h, v_h, d, key_mask) per head h             (n, H)    golden.attention
    R1   = linear_vector(ctx, Wo, H, attn_out / attn_ln tables, R)          (n, H)    golden.linear_vector
    ffn  = linear_sign(sign(R1), W1, H, T1, pol1)                           (n, F)    golden.linear
    R2   = linear_vector(ffn, W2, F, ffn_out / ffn_ln tables, R1)           (n, H)    golden.linear_vector

exactly :meth:`bebert.golden.infer.GoldenModel.forward`'s W1A1 layer (the tests check every
intermediate against its taps: ``qkv.bits``, ``ctx.bits``, ``attn_ln``, ``ffn_in.bits``, ``ffn_ln``).

Memory image (:func:`layer_image`): a layer's weights in one word memory, the four binary
layers one after the other, each in :func:`bebert.golden.linear.weight_words` layout for the
engine's ``P x S`` tiles: ``qkv`` (``N = 3H``: the query, key and value rows concatenated,
``K = H``), ``attn_out`` (``H x H``), ``ffn_in`` (``F x H``), ``ffn_out`` (``H x F``); the word
offsets are :func:`layer_offsets` (the hardware computes the same offsets from its parameters).

Small parameters (:func:`threshold_table`, :func:`vector_tables`) are loaded through the
hardware's parameter streams: one threshold table of ``ceil(3H/P) + ceil(F/P)`` groups
(the Q/K/V groups, then the FFN1 groups; padding channels ``(min, 0)``, thresholds normalized to
the PE array's accumulator width) and two vector tables (``attn_out`` + ``attn_ln``, ``ffn_out`` +
``ffn_ln``: ``scale``, ``bias``, ``gamma``, ``beta`` per channel).

:func:`expected_cycles` is the layer's cycle model, composed from the ops' models.
"""

from __future__ import annotations

import math

import numpy as np

from . import linear as _linear
from . import linear_vector as _lv
from .attention import bi_attention
from .pe_array import pack_bits, unpack_bits
from .threshold import normalize_threshold
from .vector import VectorFormats

__all__ = ["OPS", "layer_offsets", "layer_image", "threshold_table", "vector_tables", "encoder_layer",
           "expected_cycles", "SEQ_OVERHEAD"]

#: The ops of a layer, in schedule order (the names of the hardware's per-op cycle counters).
OPS = ("qkv", "attention", "attn_out", "ffn_in", "ffn_out")

#: Sequencer cycles per op beyond the ops' own models (command hand-over, copy pipelines),
#: fitted once in the Amaranth simulator (``tests/test_encoder_sim.py``).
SEQ_OVERHEAD = {"qkv": 2, "attention": 3, "attn_out": 2, "ffn_in": 1, "ffn_out": 2}


def _pos(name, v):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, not {v!r}")
    return int(v)


def layer_offsets(hidden: int, ffn: int, p: int, s: int, word_bits: int) -> dict[str, int]:
    """Word offsets of the four binary layers in a layer image, and ``words`` (the image's length).

    Each layer takes ``ceil(N/P) * ceil(K/S) * ceil(P*S/word_bits)`` words.
    """
    for name, v in (("hidden", hidden), ("ffn", ffn), ("P", p), ("S", s), ("word_bits", word_bits)):
        _pos(name, v)
    wpt = -(-(p * s) // word_bits)
    sizes = {"qkv": (hidden, 3 * hidden), "attn_out": (hidden, hidden), "ffn_in": (hidden, ffn),
             "ffn_out": (ffn, hidden)}
    out, at = {}, 0
    for name, (k, n) in sizes.items():
        out[name] = at
        at += -(-n // p) * -(-k // s) * wpt
    out["words"] = at
    return out


def _t(tensors, layer, name):
    key = f"layer.{layer}.{name}"
    if key not in tensors:
        raise ValueError(f"the tensors have no {key!r}")
    return np.asarray(tensors[key])


def _dims(tensors, layer):
    h = int(_t(tensors, layer, "attn_out.scale").shape[0])
    f = int(_t(tensors, layer, "ffn_in.thr").shape[0])
    return h, f


def layer_image(tensors, layer: int, p: int, s: int, word_bits: int) -> np.ndarray:
    """The layer's weight words (``uint64`` array of ``word_bits``-bit words) at the :func:`layer_offsets`.

    ``tensors``: a member's exported tensors (:meth:`bebert.golden.format.IntModel.member`).
    """
    h, f = _dims(tensors, layer)
    qkv = np.concatenate([_t(tensors, layer, f"{n}.bits") for n in ("query", "key", "value")])
    parts = [(qkv, h, 3 * h), (_t(tensors, layer, "attn_out.bits"), h, h), (_t(tensors, layer, "ffn_in.bits"), h, f),
             (_t(tensors, layer, "ffn_out.bits"), f, h)]
    words = [_linear.weight_words(_linear.weight_tiles(w, k, n, p, s), p * s, word_bits) for w, k, n in parts]
    img = np.concatenate(words)
    assert len(img) == layer_offsets(h, f, p, s, word_bits)["words"]
    return img


def threshold_table(tensors, layer: int, p: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(t, pol)`` of ``(ceil(3H/P) + ceil(F/P)) * P`` channels: the Q/K/V groups then the FFN1 groups.

    Padding channels are ``(min, 0)`` (constant 0); thresholds are normalized to ``signed(width)``
    (:func:`bebert.golden.threshold.normalize_threshold`).
    """
    h, f = _dims(tensors, layer)
    lo = -(1 << (width - 1))
    ts, ps = [], []
    for names, n in ((("query", "key", "value"), 3 * h), (("ffn_in",), f)):
        t = np.concatenate([_t(tensors, layer, f"{x}.thr") for x in names]).astype(np.int64)
        pol = np.concatenate([_t(tensors, layer, f"{x}.pol") for x in names]).astype(np.int64)
        pad = -(-n // p) * p - n
        ts.append(np.concatenate([t, np.full(pad, lo, np.int64)]))
        ps.append(np.concatenate([pol, np.zeros(pad, np.int64)]))
    return normalize_threshold(np.concatenate(ts), np.concatenate(ps), width)


def vector_tables(tensors, layer: int) -> dict[str, dict[str, np.ndarray]]:
    """``{"attn_out": {...}, "ffn_out": {...}}``, each with ``scale``, ``bias``, ``gamma``, ``beta`` ``(H,)``."""
    out = {}
    for lin, ln in (("attn_out", "attn_ln"), ("ffn_out", "ffn_ln")):
        out[lin] = {"scale": _t(tensors, layer, f"{lin}.scale").astype(np.int64),
                    "bias": _t(tensors, layer, f"{lin}.bias").astype(np.int64),
                    "gamma": _t(tensors, layer, f"{ln}.gamma").astype(np.int64),
                    "beta": _t(tensors, layer, f"{ln}.beta").astype(np.int64)}
    return out


def encoder_layer(tensors, layer: int, heads: int, residual, fmts: VectorFormats, keys: int | None = None):
    """Every intermediate of one W1A1 encoder layer for ``n`` tokens.

    Parameters
    ----------
    tensors : a member's exported tensors.
    layer : layer index.
    heads : attention heads (``H % heads == 0``).
    residual : int ``(n, H)``: the layer input (the residual stream, ``fmts.layernorm`` codes); its sign
        bits ``residual >= 0`` are the binary input.
    fmts : the vector unit's formats (:meth:`VectorFormats.from_int_model`).
    keys : tokens ``0 .. keys-1`` are real keys, the rest padding (masked in attention); default ``n``.

    Returns
    -------
    dict
        ``qkv_bits`` ``(n, 3H)``, ``ctx_bits`` ``(n, H)``, ``attn_ln`` ``(n, H)`` codes, ``ffn_bits``
        ``(n, F)``, ``ffn_ln`` ``(n, H)`` codes (the layer output), ``attn_acc``, ``ffn_acc``.

    Raises
    ------
    ValueError
        On a residual of the wrong shape, heads not dividing ``H``, ``keys`` outside ``1..n``.
    """
    h, f = _dims(tensors, layer)
    x = np.asarray(residual)
    if x.ndim != 2 or x.shape[1] != h or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"residual must be integer codes of shape (n, {h}), not {x.dtype} {x.shape}")
    x = x.astype(np.int64)
    heads = _pos("heads", heads)
    if h % heads:
        raise ValueError(f"{heads} heads do not divide hidden size {h}")
    n, d = x.shape[0], h // heads
    keys = n if keys is None else keys
    if not isinstance(keys, (int, np.integer)) or not 1 <= keys <= n:
        raise ValueError(f"keys must be 1..{n}, not {keys!r}")
    xb = pack_bits((x >= 0).astype(np.uint8))
    wqkv = np.concatenate([_t(tensors, layer, f"{nm}.bits") for nm in ("query", "key", "value")])
    tq = np.concatenate([_t(tensors, layer, f"{nm}.thr") for nm in ("query", "key", "value")]).astype(np.int64)
    pq = np.concatenate([_t(tensors, layer, f"{nm}.pol") for nm in ("query", "key", "value")]).astype(np.int64)
    qkv = _linear.linear_sign(xb, wqkv, h, tq, pq)
    mask = (np.arange(n) < keys).astype(np.uint8)
    ctx = np.zeros((n, h), np.uint8)
    for hh in range(heads):
        q, k, v = (pack_bits(qkv[:, w * h + hh * d: w * h + (hh + 1) * d]) for w in range(3))
        ctx[:, hh * d:(hh + 1) * d] = unpack_bits(bi_attention(q, k, v, d, mask), d)
    vt = vector_tables(tensors, layer)
    a = vt["attn_out"]
    r1, b1, acc1 = _lv.linear_vector(pack_bits(ctx), _t(tensors, layer, "attn_out.bits"), h, a["scale"], a["bias"],
                                     a["gamma"], a["beta"], x, fmts)
    ffn = _linear.linear_sign(pack_bits(b1), _t(tensors, layer, "ffn_in.bits"), h,
                              _t(tensors, layer, "ffn_in.thr").astype(np.int64),
                              _t(tensors, layer, "ffn_in.pol").astype(np.int64))
    o = vt["ffn_out"]
    r2, _, acc2 = _lv.linear_vector(pack_bits(ffn), _t(tensors, layer, "ffn_out.bits"), f, o["scale"], o["bias"],
                                    o["gamma"], o["beta"], r1, fmts)
    return {"qkv_bits": qkv, "ctx_bits": ctx, "attn_ln": r1, "ffn_bits": ffn, "ffn_ln": r2,
            "attn_acc": acc1, "ffn_acc": acc2}


def expected_cycles(n: int, hidden: int, heads: int, ffn: int, p: int, s: int, bits_per_cycle: float,
                    latency: int, *, word_bits: int = 16, kb: int = 4, pe_latency: int = 4, fetch_depth: int = 2,
                    stats_cycles: int = 80, vector_latency: int = 13, attn_latency: int = 8,
                    prefetch: bool = False, vw: int = 1, banks: int = 3, detail: bool = False):
    """Cycles of one :class:`~bebert.hw.encoder.EncoderLayer` command (acceptance to the last output
    transfer) with an always-ready output, and per op (the hardware's per-op counters).

    ``prefetch=True`` models the layer behind a :class:`~bebert.hw.prefetch.WordPrefetch` deep enough never
    to fill: the memory streams the layer's weight image without a break from the command on (word ``w``
    arrives at ``latency + 2 + w * word_bits / bits_per_cycle``), and each op takes
    ``max(previous op's end + its cycles with the weights already there, arrival of its last weight word +
    its tail)``, the ops' cycles taken at one word per cycle and latency 2 (the FIFO), the tail being the
    op's last group and, for the two linear + vector ops, the vector unit's passes after it. ``detail``
    then gives each op's end time.

    The ops run one after the other (the sequencer of ``docs/hw-engine.md``); per op:

    - ``qkv``: copying the ``ceil(3H/P)`` Q/K/V threshold groups into the engine, then
      :func:`bebert.golden.linear.expected_cycles` ``(n, H, 3H)``;
    - ``attention``: ``heads * (n + n * ceil(n/kb))`` (the Bi-Attention unit's rate) plus, per head
      after the first, the wait for the previous head's pipeline to read its last value rows
      (``attn_latency - 3``), and the last row's latency;
    - ``attn_out``: the context bits into the op's activation buffer (``n * ceil(H/S)``), then
      :func:`bebert.golden.linear_vector.expected_cycles` ``(n, H, H)`` (its output packs the
      FFN1 activations and the residual buffer on the fly);
    - ``ffn_in``: :func:`bebert.golden.linear.expected_cycles` ``(n, H, F)`` (its thresholds were
      copied during ``attn_out``); the ``ffn_out`` vector table (``H``) is copied meanwhile (the
      residual needs no copy: the op's outputs are written back over its residual buffer);
    - ``ffn_out``: the FFN bits into the op's activation buffer (``n * ceil(F/S)``, after the
      table copy if that is still running), then :func:`bebert.golden.linear_vector.expected_cycles`
      ``(n, F, H)``;

    each plus :data:`SEQ_OVERHEAD` (the LayerNorm statistics engine takes the same cycles for every
    token, so the linear + vector ops are modelled within a few cycles; see
    :func:`bebert.golden.linear_vector.expected_cycles`). ``detail=True`` returns a dict with
    ``total`` and the per-op cycles.
    """
    for name, v in (("n", n), ("hidden", hidden), ("heads", heads), ("ffn", ffn), ("kb", kb)):
        _pos(name, v)
    if prefetch:
        return _prefetched(n, hidden, heads, ffn, p, s, bits_per_cycle, latency, word_bits=word_bits, kb=kb,
                           vw=vw, banks=banks, pe_latency=pe_latency, fetch_depth=fetch_depth,
                           stats_cycles=stats_cycles,
                           vector_latency=vector_latency, attn_latency=attn_latency, detail=detail)
    lin = dict(word_bits=word_bits, pe_latency=pe_latency, fetch_depth=fetch_depth)
    vec = dict(lin, stats_cycles=stats_cycles, vector_latency=vector_latency, vw=vw, banks=banks)
    fh, ff = -(-hidden // s), -(-ffn // s)
    ops = {
        "qkv": -(-3 * hidden // p) + _linear.expected_cycles(n, hidden, 3 * hidden, p, s, bits_per_cycle, latency,
                                                             **lin),
        "attention": heads * (n + n * -(-n // kb)) + (heads - 1) * (attn_latency - 3) + attn_latency,
        "attn_out": n * fh + _lv.expected_cycles(n, hidden, hidden, p, s, bits_per_cycle, latency, **vec),
    }
    fi = _linear.expected_cycles(n, hidden, ffn, p, s, bits_per_cycle, latency, **lin)
    ops["ffn_in"] = fi
    table = hidden + SEQ_OVERHEAD["ffn_in"] + 2      # the ffn_out vector table's copy, during ffn_in
    ops["ffn_out"] = max(n * ff, table - fi - SEQ_OVERHEAD["ffn_in"]) + \
        _lv.expected_cycles(n, ffn, hidden, p, s, bits_per_cycle, latency, **vec)
    ops = {k: math.ceil(v) + SEQ_OVERHEAD[k] for k, v in ops.items()}
    total = sum(ops.values())
    if detail:
        return dict(ops, total=total)
    return total


#: Fitted cycles added to the prefetched layer model (Amaranth simulator, ``tests/test_accelerator_sim.py``).
PREFETCH_OVERHEAD = 0


def _prefetched(n, hidden, heads, ffn, p, s, bits_per_cycle, latency, *, word_bits, kb, vw, banks, pe_latency,
                fetch_depth, stats_cycles, vector_latency, attn_latency, detail):
    fast = expected_cycles(n, hidden, heads, ffn, p, s, word_bits, 2, word_bits=word_bits, kb=kb,
                           pe_latency=pe_latency, fetch_depth=fetch_depth, stats_cycles=stats_cycles,
                           vector_latency=vector_latency, attn_latency=attn_latency, vw=vw, banks=banks, detail=True)
    offs = layer_offsets(hidden, ffn, p, s, word_bits)
    ends = {"qkv": offs["attn_out"], "attn_out": offs["ffn_in"], "ffn_in": offs["ffn_out"], "ffn_out": offs["words"]}
    kdim = {"qkv": hidden, "attn_out": hidden, "ffn_in": hidden, "ffn_out": ffn}
    vec = dict(word_bits=word_bits, pe_latency=pe_latency, fetch_depth=fetch_depth, stats_cycles=stats_cycles,
               vector_latency=vector_latency, vw=vw, banks=banks)
    pace = word_bits / bits_per_cycle
    t, out = 0.0, {}
    for op in OPS:
        if op in ends:
            f_count = -(-kdim[op] // s)
            tail = n * f_count + pe_latency + _linear.RAW_TAIL
            if op in ("attn_out", "ffn_out"):
                k, h = kdim[op], hidden
                lv = _lv.expected_cycles(n, k, h, p, s, word_bits, 2, **vec)
                lin = _linear.expected_cycles(n, k, h, p, s, word_bits, 2, word_bits=word_bits,
                                              pe_latency=pe_latency, fetch_depth=fetch_depth, raw=True)
                tail += lv - lin
            t = max(t + fast[op], latency + 2 + (ends[op] - 1) * pace + tail)
        else:
            t += fast[op]
        out[op] = math.ceil(t)
    total = math.ceil(t) + PREFETCH_OVERHEAD
    if detail:
        return dict(out, total=total)
    return total
