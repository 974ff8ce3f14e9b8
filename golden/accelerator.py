"""Golden model of the whole W1A1 accelerator (:class:`bebert.hw.accelerator.Accelerator`).

The accelerator reads every parameter of the model from one word-addressed memory; the host gives
only token ids, token types and the real length. :func:`model_image` builds that memory from a
deployment file's tensors, :func:`model_layout` gives the word addresses of its regions (the
hardware computes the same addresses from :class:`AccelSpec`), :func:`expected_outputs` the member
and combined logits (from :class:`bebert.golden.infer.GoldenModel`) and :func:`expected_cycles`
the analytic cycle estimate.

Memory image (words of ``word_bits`` bits, ``word_bits >= 16``)::

    shared:   tanh       Nt words, one pooler code per word (random access by the pooler index)
              ensemble   M words, one ensemble_weight code per word
    member m (all members the same size, ``member_words`` apart):
              word       V records (H sign bits, the row's scale)
              position   max_len * Hc words, c embedding codes per word (row p = words p*Hc ..; channel
                         j*c + i in bits i*b .. of word j of its row: c = AccelSpec.emb_codes,
                         Hc = ceil(H/c), b the embedding format's width; packed_code_words)
              type       types * Hc words, packed the same way
              emb_ln     H records (gamma, beta)
              layer l:   image      golden.encoder.layer_image (the four binary layers' weight tiles)
                         thr        ceil(3H/P) + ceil(F/P) records (P thresholds of acc_width bits,
                                    then P polarity bits): golden.encoder.threshold_table
                         vec        2H records (scale, bias, gamma, beta): attn_out then ffn_out
                                    tables of golden.encoder.vector_tables
              pooler     H records (H weight bits of row c, scale, bias)
              classifier L * H words, one classifier_weight code per word, row major (l*H + k)
              cls_bias   L words, one logits code per word

A *record* is its fields concatenated least significant first (codes in two's complement of
their format's width) and cut into ``ceil(bits / word_bits)`` words, the low word first
(:func:`records`). A *code word* holds one code in its low bits (two's complement), the rest zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import encoder as _enc
from .intops import Fmt
from .pe_array import unpack_bits
from .vector import VectorFormats, stats_engine

__all__ = ["AccelSpec", "records", "code_words", "packed_code_words", "model_layout", "model_image",
           "expected_outputs", "expected_cycles", "param_words", "record_bits", "OVERHEAD", "EMB_CODES_MAX",
           "IMAGE_VERSION"]

#: The memory image's format version: bump it with any change to what model_image writes (caches of images,
#: such as the Verilator testbench's, are keyed by it). 2: position/type rows packed emb_codes to a word.
IMAGE_VERSION = 2

#: Most embedding codes per position/type word (the lane unpacks a word pair through two shift registers of
#: this many codes; more would not help while the embedding LayerNorm takes one channel a cycle).
EMB_CODES_MAX = 16


@dataclass(frozen=True)
class AccelSpec:
    """Everything the accelerator is built for: the model's dimensions and formats and the engine's tiles.

    Build it with :meth:`from_int_model`; the hardware and :func:`model_layout` take nothing else.
    """

    hidden: int
    heads: int
    ffn: int
    layers: int
    vocab: int
    types: int
    max_len: int
    labels: int
    members: int
    tanh_c0: int
    tanh_len: int
    fmt: dict
    vfmts: VectorFormats
    p: int
    s: int
    word_bits: int

    @classmethod
    def from_int_model(cls, model, p: int, s: int, word_bits: int) -> "AccelSpec":
        """From a loaded W1A1 :class:`bebert.golden.format.IntModel` and the engine's ``P``, ``S``, word width."""
        if model.config.get("backbone", "w1a1") != "w1a1":
            raise ValueError(f"the accelerator runs the w1a1 backbone, not {model.config.get('backbone')!r}")
        d = model.dims
        spec = cls(d["hidden_size"], d["num_heads"], d["ffn_size"], d["num_layers"], d["vocab_size"],
                   d["type_vocab_size"], d["max_len"], d["num_labels"], int(model.members),
                   int(model.meta["tanh_c0"]), int(np.asarray(model.tensors["tanh.table"]).size), dict(model.fmt),
                   VectorFormats.from_int_model(model), int(p), int(s), int(word_bits))
        spec.check()
        return spec

    @property
    def acc_width(self) -> int:
        """The PE array's accumulator width (``bits_for(H) + 1``): the threshold records' field width."""
        return self.hidden.bit_length() + 1

    @property
    def emb_codes(self) -> int:
        """Embedding codes per position/type word: the largest power of two ``<= min(word_bits // b,
        EMB_CODES_MAX)`` (``b``: the embedding format's width; a power of two, so the lane unpacks
        ``min(vw, emb_codes)`` codes a step)."""
        return 1 << (max(1, min(self.word_bits // self.fmt["embedding"].bits, EMB_CODES_MAX)).bit_length() - 1)

    @property
    def emb_words(self) -> int:
        """Words of a position or type row: ``ceil(H / emb_codes)``."""
        return -(-self.hidden // self.emb_codes)

    @property
    def groups(self) -> int:
        """Threshold groups of a layer: ``ceil(3H/P) + ceil(F/P)``."""
        return -(-3 * self.hidden // self.p) + -(-self.ffn // self.p)

    def check(self) -> None:
        """``ValueError`` if the memory layout cannot hold the model (word width, formats)."""
        for name in ("hidden", "heads", "ffn", "layers", "vocab", "types", "max_len", "labels", "members", "p", "s",
                     "word_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        widest = max(self.fmt[n].bits for n in ("embedding", "pooler", "ensemble_weight", "classifier_weight",
                                                "logits"))
        if self.word_bits < widest:
            raise ValueError(f"word_bits={self.word_bits} is narrower than a {widest}-bit code (one code per word)")
        f = self.fmt
        if f["layernorm"].bits != f["residual"].bits or f["layernorm"].frac != f["residual"].frac:
            raise ValueError("the embedding LayerNorm runs on the vector unit's residual input, which needs the "
                             f"layernorm format equal to the residual format ({f['layernorm']} vs {f['residual']})")


def record_bits(spec: AccelSpec) -> dict[str, list[int]]:
    """Field widths of each record kind, least significant field first."""
    f, h, p = spec.fmt, spec.hidden, spec.p
    return {
        "word": [h, f["weight_scale"].bits],
        "emb_ln": [f["ln_weight"].bits, f["ln_bias"].bits],
        "thr": [spec.acc_width] * p + [1] * p,
        "vec": [f["weight_scale"].bits, f["bias"].bits, f["ln_weight"].bits, f["ln_bias"].bits],
        "pooler": [h, f["weight_scale"].bits, f["bias"].bits],
    }


def wpr(spec: AccelSpec, kind: str) -> int:
    """Words per record of ``kind``."""
    return -(-sum(record_bits(spec)[kind]) // spec.word_bits)


def records(fields, widths, word_bits: int) -> np.ndarray:
    """Records of ``len(fields[0])`` rows: row ``r`` = ``sum_i (fields[i][r] mod 2**w_i) << offset_i``, split
    into ``ceil(sum(w) / word_bits)`` words, low word first (``uint64`` array)."""
    total = sum(widths)
    per = -(-total // word_bits)
    rows = len(fields[0])
    out = np.zeros(rows * per, np.uint64)
    mask = (1 << word_bits) - 1
    for r in range(rows):
        v, at = 0, 0
        for fld, w in zip(fields, widths):
            x = int(fld[r])
            if not -(1 << w) < x < (1 << w):
                raise ValueError(f"field value {x} does not fit {w} bits")
            v |= (x & ((1 << w) - 1)) << at
            at += w
        for i in range(per):
            out[r * per + i] = (v >> (i * word_bits)) & mask
    return out


def code_words(codes, fmt: Fmt) -> np.ndarray:
    """One code per word (two's complement of ``fmt.bits``, zero above)."""
    c = np.asarray(codes, dtype=np.int64).reshape(-1)
    if c.size and (c.min() < fmt.qmin or c.max() > fmt.qmax):
        raise ValueError(f"codes outside {fmt}")
    return (c & ((1 << fmt.bits) - 1)).astype(np.uint64)


def packed_code_words(codes, fmt: Fmt, per_word: int) -> np.ndarray:
    """Rows of codes ``(R, H)``, ``per_word`` to a word: row ``r``'s word ``j`` holds channel ``j*per_word + i`` in
    bits ``i*fmt.bits ..`` (two's complement, zero past ``H``); ``R * ceil(H/per_word)`` words, row major."""
    c = np.asarray(codes, dtype=np.int64)
    c = c.reshape(1, -1) if c.ndim == 1 else c
    words = code_words(c, fmt).reshape(c.shape)
    hw = -(-c.shape[1] // per_word)
    pad = np.zeros((c.shape[0], hw * per_word), np.uint64)
    pad[:, :c.shape[1]] = words
    pad = pad.reshape(c.shape[0], hw, per_word)
    out = np.zeros((c.shape[0], hw), np.uint64)
    for i in range(per_word):
        out |= pad[:, :, i] << np.uint64(i * fmt.bits)
    return out.reshape(-1)


def _bits_ints(packed: np.ndarray, k: int) -> list[int]:
    """Packed uint64 rows -> Python ints of their first ``k`` bits."""
    bits = unpack_bits(np.asarray(packed, np.uint64), k)
    weights = [1 << i for i in range(k)]
    return [sum(w for w, b in zip(weights, row) if b) for row in bits]


def model_layout(spec: AccelSpec) -> dict[str, int]:
    """Word addresses of the image's regions.

    Keys: ``tanh``, ``ensemble``, ``members`` (member 0's base), ``member_words`` (member stride), and member
    offsets (add ``members + m * member_words``): ``word``, ``position``, ``type``, ``emb_ln``, ``layers``
    (layer 0's base), ``layer_words`` (layer stride), layer offsets ``image``, ``thr``, ``vec`` (add
    ``layers + l * layer_words``), ``pooler``, ``classifier``, ``cls_bias``; ``words`` (the image size) and the
    words per record ``wpr_<kind>``.
    """
    spec.check()
    h, ff = spec.hidden, spec.ffn
    out = {f"wpr_{k}": wpr(spec, k) for k in record_bits(spec)}
    out["tanh"] = 0
    out["ensemble"] = spec.tanh_len
    out["members"] = spec.tanh_len + spec.members
    at = 0
    for name, size in (("word", spec.vocab * out["wpr_word"]), ("position", spec.max_len * spec.emb_words),
                       ("type", spec.types * spec.emb_words), ("emb_ln", h * out["wpr_emb_ln"])):
        out[name] = at
        at += size
    out["layers"] = at
    img = _enc.layer_offsets(h, ff, spec.p, spec.s, spec.word_bits)["words"]
    out["image"], out["thr"], out["vec"] = 0, img, img + spec.groups * out["wpr_thr"]
    out["layer_words"] = out["vec"] + 2 * h * out["wpr_vec"]
    at += spec.layers * out["layer_words"]
    for name, size in (("pooler", h * out["wpr_pooler"]), ("classifier", spec.labels * h), ("cls_bias", spec.labels)):
        out[name] = at
        at += size
    out["member_words"] = at
    out["words"] = out["members"] + spec.members * at
    return out


def model_image(model, spec: AccelSpec) -> tuple[np.ndarray, dict[str, int]]:
    """The memory image (``uint64`` array of ``word_bits``-bit words) of a W1A1 model and its :func:`model_layout`."""
    lay = model_layout(spec)
    f, h = spec.fmt, spec.hidden
    rb = record_bits(spec)
    parts = [code_words(model.tensors["tanh.table"], f["pooler"]),
             code_words(model.tensors["ensemble.weight"], f["ensemble_weight"])]
    for m in range(spec.members):
        t = model.member(m)
        parts.append(records([_bits_ints(t["emb.word.bits"], h), t["emb.word.scale"]], rb["word"], spec.word_bits))
        parts.append(packed_code_words(t["emb.position"], f["embedding"], spec.emb_codes))
        parts.append(packed_code_words(t["emb.token_type"], f["embedding"], spec.emb_codes))
        parts.append(records([t["emb.ln.gamma"], t["emb.ln.beta"]], rb["emb_ln"], spec.word_bits))
        for li in range(spec.layers):
            parts.append(_enc.layer_image(t, li, spec.p, spec.s, spec.word_bits))
            thr, pol = _enc.threshold_table(t, li, spec.p, spec.acc_width)
            g = spec.groups
            parts.append(records([thr.reshape(g, spec.p)[:, i] for i in range(spec.p)] +
                                 [pol.reshape(g, spec.p)[:, i] for i in range(spec.p)], rb["thr"], spec.word_bits))
            vt = _enc.vector_tables(t, li)
            cols = [np.concatenate([vt["attn_out"][k], vt["ffn_out"][k]]) for k in ("scale", "bias", "gamma", "beta")]
            parts.append(records(cols, rb["vec"], spec.word_bits))
        parts.append(records([_bits_ints(t["pooler.bits"], h), t["pooler.scale"], t["pooler.bias"]], rb["pooler"],
                             spec.word_bits))
        parts.append(code_words(t["classifier.weight"], f["classifier_weight"]))
        parts.append(code_words(t["classifier.bias"], f["logits"]))
    words = np.concatenate(parts)
    assert len(words) == lay["words"], (len(words), lay["words"])
    return words, lay


def expected_outputs(model, ids, types, length: int) -> dict:
    """Member logits ``(M, L)``, combined logits ``(L,)`` and the prediction of one sequence, by
    :class:`bebert.golden.infer.GoldenModel` on its ``length`` real tokens (padding after them does not
    change the result). Raises :class:`bebert.golden.infer.GoldenInputError` on bad input."""
    from .infer import GoldenModel

    ids = np.asarray(ids, np.int64)[:length]
    types = np.asarray(types, np.int64)[:length]
    out = GoldenModel(model).forward(ids[None, :], None, types[None, :])
    return {"member_logits": out.member_logits[:, 0, :], "logits": out.logits[0], "pred": int(out.predictions[0])}


def param_words(spec: AccelSpec, n: int) -> int:
    """Words the parameter reader reads in one inference of ``n`` tokens (the ``param_words`` counter): per member
    the embedding LayerNorm table, per token its word record and ``Hc`` position/type word pairs, per layer the
    threshold and vector records, the pooler records, ``H`` tanh look-ups, the classifier, its biases and the
    ensemble weight."""
    lay, h = model_layout(spec), spec.hidden
    return spec.members * (h * lay["wpr_emb_ln"] + n * (lay["wpr_word"] + 2 * spec.emb_words)
                           + spec.layers * (spec.groups * lay["wpr_thr"] + 2 * h * lay["wpr_vec"])
                           + h * lay["wpr_pooler"] + h + spec.labels * h + spec.labels + 1)


#: Fitted fixed cycles per phase beyond the analytic terms (Amaranth simulator, ``tests/test_accelerator_sim.py``).
OVERHEAD = {"embed": -11, "load": 6, "run": 2, "head": 12, "combine": 1}


def expected_cycles(spec: AccelSpec, n: int, bits_per_cycle: float, latency: int, *, kb: int = 4,
                    pe_latency: int = 4, fetch_depth: int = 2, stats_cycles: int | None = None,
                    vector_latency: int = 13,
                    attn_latency: int = 8, reader_depth: int = 16, lanes: int = 1, prefetch: bool = False,
                    vw: int = 1, detail: bool = False):
    """Cycles of one inference (command acceptance to the last output transfer), always-ready output.

    The parameter reader streams words at ``pace = max(word_bits / bits_per_cycle, (latency + 3) /
    reader_depth)`` cycles per word (the memory's rate or the reader's credit loop), the first
    ``latency + 2`` cycles after its command. Per member, in turn:

    - ``embed``: the LayerNorm table (``H`` records), then per token its word record and ``Hc`` position/type
      word pairs (``emb_codes`` channels each); a pair's channels are unpacked ``u = min(vw, emb_codes)`` a
      cycle after it is in and enter the vector unit ``vw`` a beat; the vector unit's recurrence of :func:`bebert.golden.linear_vector.expected_cycles` (pass 1, the statistics engine's
      worst case, pass 2, three banks) gives when the last LayerNorm output is written;
    - per layer ``l``: the load (threshold and vector records through the reader; for the first layer the
      ``n*H/vw`` input beats replayed meanwhile, later layers run on the previous output in place), then
      :func:`bebert.golden.encoder.expected_cycles`;
    - ``head``: ``H`` pooler records; ``H`` one-word tanh look-ups (one command per 2 cycles at most), the
      ``L*H`` classifier codes, ``L`` biases and the ensemble weight back to back (consumed as they come,
      one MAC per cycle); ``L`` output beats;

    and the ``L`` combined output beats. With ``lanes = E > 1``, the members run in ``ceil(M/E)`` rounds of up
    to ``E`` lanes in lockstep (a phase ends when every busy lane has finished it); the ``k`` busy lanes of a
    round share the memory port, modelled as each lane seeing ``bits_per_cycle / k``, and a round's
    phases cost one member's at that bandwidth (its ``k`` output blocks of ``L`` beats each). ``prefetch``:
    the layers run behind the lanes' weight prefetch (the encoder model's ``prefetch=True``).
    ``stats_cycles`` (default: the vector unit's for this model, :func:`bebert.golden.vector.stats_engine`) is
    the same for every token, so the estimate is not a bound: within a few cycles a phase of the Amaranth
    simulator and Verilator (``tests/test_accelerator_sim.py``, ``bebert.sim.perf_check``). ``detail=True``
    returns ``total`` and the hardware's phase counters summed over the members: ``embed``, ``layer<l>``,
    ``head``, and ``load`` (part of the layer counters).
    """
    if stats_cycles is None:      # the vector unit's, for this model's H and formats
        stats_cycles = stats_engine(spec.vfmts, spec.hidden)[0]
    lay = model_layout(spec)
    m = spec.members
    rounds = [min(lanes, m - r) for r in range(0, m, lanes)]
    res = {"embed": 0, "head": spec.labels + OVERHEAD["combine"], **{f"layer{li}": 0 for li in range(spec.layers)},
           "load": 0}
    for k in rounds:
        one = _member_cycles(spec, lay, n, bits_per_cycle / k, latency, kb=kb, pe_latency=pe_latency,
                             fetch_depth=fetch_depth, stats_cycles=stats_cycles, vector_latency=vector_latency,
                             attn_latency=attn_latency, reader_depth=reader_depth, prefetch=prefetch, vw=vw)
        res["embed"] += one["embed"]
        res["head"] += one["head"] + (k - 1) * spec.labels
        for li in range(spec.layers):
            res[f"layer{li}"] += one["layer0" if li == 0 else "layer"]
        res["load"] += one["load0"] + (spec.layers - 1) * one["load"]
    total = sum(v for key, v in res.items() if key != "load")
    if detail:
        return dict(res, total=total)
    return total


def _member_cycles(spec, lay, n, bits_per_cycle, latency, *, kb, pe_latency, fetch_depth, stats_cycles,
                   vector_latency, attn_latency, reader_depth, prefetch, vw=1) -> dict:
    """One member's ``embed``, ``layer`` (each), ``load`` (each layer's) and ``head`` cycles, rounded up."""
    h, iv = spec.hidden, spec.word_bits / bits_per_cycle
    pace = max(iv, (latency + 3) / reader_depth)

    def stream(words: int) -> float:
        return latency + 2 + max(words - 1, 0) * pace

    # embedding: the table, then per token the word record and the pairs; the vector unit (three banks)
    t = stream(h * lay["wpr_emb_ln"]) + 1
    ins, sts, outs = [], [], []
    rd = t
    hw, c_last = spec.emb_words, h - (spec.emb_words - 1) * spec.emb_codes
    u = min(vw, spec.emb_codes)        # channels an unpack step; vw a vector-unit beat
    for i in range(n):
        # the token's last pair is in (plus a fitted word time: the reader's two commands a token, no longer
        # hidden behind 2H pair words since the rows are packed)
        rd = rd + (lay["wpr_word"] + 2 * hw + 1) * pace
        # its first step: a cycle after its first pair, two after the previous token's last step (the word
        # record's cycle and the pair's latch); h / u steps a token
        start = max(rd - (2 * hw - 2) * pace + 1, ins[-1] + h / u + 2 if ins else 0, outs[i - 3] if i >= 3 else 0)
        fin_in = max(start + h / u, rd + c_last / u)
        st = max(fin_in + 9, sts[-1] if sts else 0) + stats_cycles
        o = max(st, outs[-1] if outs else 0) + h / vw
        ins.append(start)
        sts.append(st)
        outs.append(o)
    embed = outs[-1] + vector_latency + OVERHEAD["embed"]
    run = _enc.expected_cycles(n, h, spec.heads, spec.ffn, spec.p, spec.s, bits_per_cycle, latency,
                               word_bits=spec.word_bits, kb=kb, pe_latency=pe_latency, fetch_depth=fetch_depth,
                               stats_cycles=stats_cycles, vector_latency=vector_latency,
                               attn_latency=attn_latency, prefetch=prefetch, vw=vw) + OVERHEAD["run"]
    records = stream(spec.groups * lay["wpr_thr"] + 2 * h * lay["wpr_vec"])
    load0 = max(records, n * h / vw) + OVERHEAD["load"]  # the first layer: its input replayed, vw codes a beat
    load = records + OVERHEAD["load"]                     # later layers run on the previous output in place
    lab = spec.labels
    head = (stream(h * lay["wpr_pooler"]) + latency + 2 + (h - 1) * max(pace, 2) + (lab * h + lab + 1) * pace
            + lab + OVERHEAD["head"])
    return {"embed": math.ceil(embed), "head": math.ceil(head), "layer0": math.ceil(load0 + run),
            "layer": math.ceil(load + run), "load0": math.ceil(load0), "load": math.ceil(load)}
