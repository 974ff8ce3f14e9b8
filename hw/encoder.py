"""One W1A1 encoder layer: the ops of ``golden.schedule`` run in order by a sequencer.

The contract is :func:`bebert.golden.encoder.encoder_layer` (every intermediate, which equals
:class:`bebert.golden.infer.GoldenModel`'s taps) with the memory image
:func:`bebert.golden.encoder.layer_image` and the cycle model
:func:`bebert.golden.encoder.expected_cycles` (``docs/hw-engine.md``, "Encoder layer").
"""

from __future__ import annotations

import math

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ..golden import encoder as _golden
from ..golden.vector import VectorFormats
from ._params import StreamEnds, check_positive, code_beats
from ._params import pack_fields as _pack
from .attention import AttentionKind, BiAttention
from .linear import LinearEngine
from .linear_vector import LinearVectorOp, LinearVectorOutput, lv_channels
from .threshold import ThresholdEntry, ThresholdLoad
from .vector import VectorInputs, VectorLoad, VectorOutputs

__all__ = ["EncoderInput", "EncoderParamLoad", "EncoderCommand", "EncoderCounters", "EncoderLayer",
           "EncoderCodec"]


class EncoderInput(data.StructLayout):
    """An ``i_stream`` beat: ``x`` (one residual code of the layer input, ``layernorm`` format; with ``vw > 1``
    ``vw`` consecutive codes ``x[j]``); ``last`` ends the load."""

    def __init__(self, fmts: VectorFormats, vw: int = 1):
        x = signed(fmts.layernorm.bits) if vw == 1 else data.ArrayLayout(signed(fmts.layernorm.bits), vw)
        super().__init__({"x": x, "last": unsigned(1)})


class EncoderParamLoad(data.StructLayout):
    """A ``p_stream`` beat: channel ``addr`` of vector table ``table`` (0: ``attn_out`` + ``attn_ln``,
    1: ``ffn_out`` + ``ffn_ln``): ``scale``, ``bias``, ``gamma``, ``beta``."""

    def __init__(self, fmts: VectorFormats, hidden: int):
        super().__init__({
            "table": unsigned(1),
            "addr": unsigned(bits_for(hidden - 1)),
            "scale": signed(fmts.scale.bits),
            "bias": signed(fmts.bias.bits),
            "gamma": signed(fmts.ln_weight.bits),
            "beta": signed(fmts.ln_bias.bits),
        })


class _VectorEntry(data.StructLayout):
    def __init__(self, fmts: VectorFormats):
        super().__init__({"scale": signed(fmts.scale.bits), "bias": signed(fmts.bias.bits),
                          "gamma": signed(fmts.ln_weight.bits), "beta": signed(fmts.ln_bias.bits)})


class EncoderCommand(data.StructLayout):
    """A ``c_stream`` beat: ``tokens`` (n, 1..max_tokens), ``keys`` (tokens ``0 .. keys-1`` are real
    keys, the rest padding masked in attention; 1..n), ``base`` (word address of the layer's image)."""

    def __init__(self, max_tokens: int, addr_width: int):
        super().__init__({"tokens": unsigned(bits_for(max_tokens)), "keys": unsigned(bits_for(max_tokens)),
                          "base": unsigned(addr_width)})


class EncoderCounters(data.StructLayout):
    """Performance counters of the last command (see :class:`EncoderLayer`)."""

    def __init__(self, width: int):
        super().__init__({name: unsigned(width) for name in EncoderLayer.COUNTERS})


def _registered(m, name, src, layout):
    """``src`` (a stream interface) through a three-entry ``SyncFIFOBuffered`` (registered outputs, full rate):
    no combinational path between its producer and what reads the returned end. Returns ``(end, fifo)``."""
    m.submodules[name] = q = fifo.SyncFIFOBuffered(width=len(src.payload.as_value()), depth=3)
    end = StreamEnds(valid=q.r_rdy, ready=q.r_en, payload=Signal(layout, name=f"{name}_payload"))
    m.d.comb += [q.w_data.eq(src.payload.as_value()), q.w_en.eq(src.valid), src.ready.eq(q.w_rdy),
                 end.payload.eq(q.r_data)]
    return end, q


class _Copy:
    """A two-level copy loop (``outer x inner`` beats) from synchronous read ports to a stream.

    ``o``, ``i``, ``lin`` are the read side's indices (the caller derives the read address from
    them and drives the read ports' ``en`` with ``advance``); ``b_*`` are the registered indices
    of the beat on offer (``b_valid``), whose data the read ports now hold.
    """

    def __init__(self, m, name, n_outer, max_outer, n_inner, max_inner, dst_ready, o_times=(), i_times=()):
        # ``o_times[c]`` / ``i_times[c]``: ``o * c`` / ``i * c`` for the constants given, kept as registers that
        # step with the indices (a read address needs no multiplier)
        self.o_times = {c: Signal(range(max_outer * c), name=f"{name}_o_x{c}") for c in o_times}
        self.i_times = {c: Signal(range(max_inner * c), name=f"{name}_i_x{c}") for c in i_times}
        self.start = Signal(name=f"{name}_start")
        self.active = Signal(name=f"{name}_active")
        self.o = Signal(range(max_outer), name=f"{name}_o")
        self.i = Signal(range(max_inner), name=f"{name}_i")
        self.lin = Signal(range(max_outer * max_inner), name=f"{name}_lin")
        self.b_valid = Signal(name=f"{name}_b_valid")
        self.b_o = Signal(range(max_outer), name=f"{name}_b_o")
        self.b_i = Signal(range(max_inner), name=f"{name}_b_i")
        self.b_ilast = Signal(name=f"{name}_b_ilast")
        self.b_last = Signal(name=f"{name}_b_last")
        self.advance = Signal(name=f"{name}_advance")
        self.issue = Signal(name=f"{name}_issue")
        self.busy = Signal(name=f"{name}_busy")
        inner_last = Signal(name=f"{name}_inner_last")
        outer_last = Signal(name=f"{name}_outer_last")
        m.d.comb += [
            self.advance.eq(~self.b_valid | dst_ready),
            self.issue.eq(self.advance & self.active),
            inner_last.eq(self.i == n_inner - 1),
            outer_last.eq(self.o == n_outer - 1),
            self.busy.eq(self.active | self.b_valid),
        ]
        with m.If(self.advance):
            m.d.sync += [self.b_valid.eq(self.issue), self.b_o.eq(self.o), self.b_i.eq(self.i),
                         self.b_ilast.eq(inner_last), self.b_last.eq(inner_last & outer_last)]
        ox, ix = list(self.o_times.items()), list(self.i_times.items())
        with m.If(self.start):
            m.d.sync += [self.active.eq(1), self.o.eq(0), self.i.eq(0), self.lin.eq(0)]
            m.d.sync += [v.eq(0) for _, v in ox + ix]
        with m.Elif(self.issue):
            m.d.sync += self.lin.eq(self.lin + 1)
            with m.If(inner_last):
                m.d.sync += self.i.eq(0)
                m.d.sync += [v.eq(0) for _, v in ix]
                with m.If(outer_last):
                    m.d.sync += self.active.eq(0)
                with m.Else():
                    m.d.sync += self.o.eq(self.o + 1)
                    m.d.sync += [v.eq(v + c) for c, v in ox]
            with m.Else():
                m.d.sync += self.i.eq(self.i + 1)
                m.d.sync += [v.eq(v + c) for c, v in ix]


class EncoderLayer(wiring.Component):
    """One BiBERT (W1A1) encoder layer for ``n`` tokens, its ops run in the schedule's order.

    ``out = ffn_ln`` of the layer for the input residual codes ``R`` (``n x H``), exactly
    :func:`bebert.golden.encoder.encoder_layer` (= :class:`bebert.golden.infer.GoldenModel`'s
    layer). One dual :class:`~bebert.hw.linear.LinearEngine` runs all four linear ops, so a lane has one
    PE array, one weight buffer and one fetch unit: Q/K/V (one sign command of ``N = 3H`` channels) and
    FFN1 (a sign command) for the layer, ``attn_out`` and ``ffn_out`` (raw commands) for the
    :class:`~bebert.hw.linear_vector.LinearVectorOp` (``attn_out`` + ``attn_ln`` with the layer input as
    residual, then ``ffn_out`` + ``ffn_ln``), which shares it; one
    :class:`~bebert.hw.attention.BiAttention` (head size ``d = H / heads``); the buffers between them:

    - the bit buffer (``max_tokens`` words of ``max(ceil(3H/P), ceil(F/P)) * P`` bits, written
      ``P`` bits per engine beat): the Q/K/V bits, later the FFN1 bits of token ``t`` in word ``t``;
    - the context buffer (``max_tokens`` words of ``H`` bits, written ``d`` bits per attention row);
    - the residual codes live in the linear + vector op's own buffer, which each of its commands
      overwrites with its output (the ``attn_ln`` output is the ``ffn_out`` residual in place, the
      ``ffn_ln`` output the next layer's ``attn_out`` residual): no copy between the ops;
    - the threshold table (``ceil(3H/P) + ceil(F/P)`` groups) and the vector tables (``2H``
      entries), copied into the ops before their commands.

    Sequencer (one command; the counters' op names in brackets): [qkv] copy the Q/K/V thresholds
    into the engine, engine command ``(n, H, 3H)`` -> bit buffer; [attention] per head, ``n`` K/V
    beats (key ``j`` masked for ``j >= keys``) then ``n`` queries -> context buffer; [attn_out]
    context bits into the linear + vector op, its command ``(n, H, H)``; its output bits, packed into
    ``S``-bit words, go into the engine's activation buffer (the FFN1 input) as they stream; meanwhile the
    FFN1 thresholds go into the engine; [ffn_in] engine command ``(n, H, F)`` -> bit buffer, meanwhile the
    ``ffn_out`` table goes into the linear + vector op; [ffn_out] FFN bits into the op, its command
    ``(n, F, H)``, its output out on ``o_stream`` and its bits packed into the engine's activation buffer
    (the next layer's Q/K/V input).

    **Layers back to back without a load**: after a command, the engine's activation buffer holds the
    output's sign bits and the op's residual buffer its codes, so a next command (same ``tokens``, the next
    layer's weights and tables) given with no ``i_stream`` load runs the next layer on this one's output;
    the accelerator loads only the first layer of a member.

    The ops run one at a time; the memory port is the engine's. The engine's two activation buffers
    are the sign commands' (the layer input's and ``attn_ln``'s bits, written by the bit packer while
    a raw command runs) and the raw commands' (the context and FFN1 bits, copied in before them).

    Ports
    -----
    i_stream : In(:class:`EncoderInput`)
        The layer input before the command: ``n*H`` residual codes, token major, ``vw`` a beat (code ``j`` of
        beat ``(t*H + c) / vw``), ``last`` on the final beat. The sign bits (``x >= 0``) are packed on the fly into the
        engine's activation buffer (the Q/K/V input); the codes go into the linear + vector op's
        residual buffer (the ``attn_out`` residual). Ready only while no command runs. Optional after a
        command: without a load the next command takes that command's output as its input.
    t_stream : In(:class:`bebert.hw.threshold.ThresholdLoad`)
        The threshold table before the command: group ``addr`` of ``ceil(3H/P)`` Q/K/V groups then
        ``ceil(F/P)`` FFN1 groups (:func:`bebert.golden.encoder.threshold_table`); ``last`` ignored.
    p_stream : In(:class:`EncoderParamLoad`)
        The two vector tables before the command (:func:`bebert.golden.encoder.vector_tables`).
    c_stream : In(:class:`EncoderCommand`)
        ``tokens`` (must equal the loaded input's), ``keys``, ``base``: the layer's weights are the
        image of :func:`bebert.golden.encoder.layer_image` from word ``base``.
    req_stream, rsp_stream : the memory port (word addresses out, words back in request order).
    o_stream : Out(:class:`bebert.hw.linear_vector.LinearVectorOutput`)
        The layer output: ``n*H`` beats token major, ``y`` (``ffn_ln`` code), ``bit`` (``y >= 0``),
        ``last`` on each token's last channel, ``final`` on the command's last beat.
    counters : Out(:class:`EncoderCounters`)
        Cleared when a command is accepted, final once ``running`` falls: ``cycles`` (acceptance to
        the ``final`` transfer), the cycles of each op (``qkv``, ``attention``, ``attn_out``,
        ``ffn_in``, ``ffn_out``; they sum to ``cycles``), summed over the linear ops ``busy``,
        ``stall_weights``, ``stall_output`` (the engines' PE-array counters), over the two vector
        ops ``vector_beats``, ``vector_wait``, ``vector_stalls``, and ``attn_beats`` (attention
        input beats, ``heads * 2n``).
    running : Out(1)
        A command is in progress (one cycle past the final output transfer).
    vp_stream, v_stream, vo_stream : the linear + vector op's vector unit, between commands
        (:class:`~bebert.hw.vector.VectorLoad` table beats, :class:`~bebert.hw.vector.VectorInput` beats in,
        :class:`~bebert.hw.vector.VectorOutput` results out; ready only while no command runs): the
        accelerator's embedding LayerNorm uses it, so a lane needs no second vector unit. Every direct result
        must be out before the next command.

    Parameters
    ----------
    hidden, heads, ffn : the layer's ``H``, attention heads (``H % heads == 0``), ``F``.
    max_tokens : longest ``n``.
    p, s : the PE array (of both linear ops).
    word_bits, addr_width, fetch_depth, counter_bits, impl : as :class:`~bebert.hw.linear.LinearEngine`.
    kb : Bi-Attention keys per cycle.
    fmts : the vector unit's formats (default :meth:`VectorFormats.default`).

    Raises
    ------
    TypeError
        If a size parameter is not a positive integer, or ``fmts`` is not a ``VectorFormats``.
    ValueError
        If ``heads`` does not divide ``hidden``, or from the ops.
    """

    COUNTERS = ("cycles",) + _golden.OPS + ("busy", "stall_weights", "stall_output", "vector_beats",
                                            "vector_wait", "vector_stalls", "attn_beats")

    def __init__(self, *, hidden: int, heads: int, ffn: int, max_tokens: int, p: int, s: int, word_bits: int,
                 kb: int = 4, fmts: VectorFormats | None = None, addr_width: int = 24, fetch_depth: int = 2,
                 counter_bits: int = 32, impl: str = "behavioral", vw: int = 1):
        for name, v in (("hidden", hidden), ("heads", heads), ("ffn", ffn), ("max_tokens", max_tokens),
                        ("P (output channels)", p), ("S (input bits per cycle)", s), ("word_bits", word_bits),
                        ("kb (keys per cycle)", kb), ("counter_bits", counter_bits)):
            check_positive(self, name, v)
        if hidden % heads:
            self._MustUse__used = True
            raise ValueError(f"{heads} heads do not divide hidden size {hidden}")
        if fmts is not None and not isinstance(fmts, VectorFormats):
            self._MustUse__used = True
            raise TypeError(f"fmts must be a VectorFormats, not {type(fmts).__name__}")
        if isinstance(vw, int) and vw >= 1 and (s % vw or hidden % vw):
            self._MustUse__used = True
            raise ValueError(f"vw = {vw} channels a beat must divide S = {s} and the hidden size {hidden}")
        try:
            # one dual engine for the four linear ops: Q/K/V and FFN1 as sign commands, attn_out and ffn_out as
            # the linear + vector op's raw commands
            self.eng = LinearEngine(p=p, s=s, max_k=hidden, max_n=max(3 * hidden, ffn), max_tokens=max_tokens,
                                    word_bits=word_bits, addr_width=addr_width, fetch_depth=fetch_depth,
                                    counter_bits=counter_bits, impl=impl, dual=True, max_k_raw=max(hidden, ffn))
            self.lv = LinearVectorOp(p=p, s=s, max_k=max(hidden, ffn), max_h=hidden, max_tokens=max_tokens,
                                     word_bits=word_bits, fmts=fmts if fmts is not None else VectorFormats.default(hidden),
                                     addr_width=addr_width, fetch_depth=fetch_depth, counter_bits=counter_bits,
                                     impl=impl, vw=vw, engine=self.eng)
            self.att = BiAttention(d=hidden // heads, max_len=max_tokens, kb=kb, impl=impl)
        except (TypeError, ValueError):
            self._MustUse__used = True
            raise
        self._h, self._a, self._f, self._d = hidden, heads, ffn, hidden // heads
        self._max_tokens, self._p, self._s, self._word_bits = max_tokens, p, s, word_bits
        self._addr_width, self._fetch_depth, self._counter_bits, self._kb = addr_width, fetch_depth, counter_bits, kb
        self._fmts = self.lv.fmts
        self._vw = vw
        self._gq, self._gf = -(-3 * hidden // p), -(-ffn // p)
        # buffer word widths: the bit buffer takes P-bit pieces and gives S- and d-bit ones, the context
        # buffer takes d-bit pieces and gives S-bit ones (see elaborate)
        self._wb = math.lcm(s, hidden // heads, p)
        self._wc = math.lcm(s, hidden // heads)
        self._offsets = _golden.layer_offsets(hidden, ffn, p, s, word_bits)
        super().__init__({
            "i_stream": In(stream.Signature(EncoderInput(self._fmts, vw))),
            "t_stream": In(stream.Signature(ThresholdLoad(p, self.eng.t_width, self._gq + self._gf))),
            "p_stream": In(stream.Signature(EncoderParamLoad(self._fmts, hidden))),
            "c_stream": In(stream.Signature(EncoderCommand(max_tokens, addr_width))),
            "req_stream": Out(stream.Signature(unsigned(addr_width))),
            "rsp_stream": In(stream.Signature(unsigned(word_bits))),
            "o_stream": Out(stream.Signature(LinearVectorOutput(self._fmts, vw))),
            "counters": Out(EncoderCounters(counter_bits)),
            "running": Out(1),
            "vp_stream": In(stream.Signature(VectorLoad(self._fmts, hidden, max(hidden, ffn)))),
            "v_stream": In(stream.Signature(VectorInputs(self._fmts, self.lv.vu.acc_width, vw))),
            "vo_stream": Out(stream.Signature(VectorOutputs(self._fmts, vw))),
        })

    hidden = property(lambda self: self._h)
    heads = property(lambda self: self._a)
    ffn = property(lambda self: self._f)
    max_tokens = property(lambda self: self._max_tokens)
    p = property(lambda self: self._p)
    s = property(lambda self: self._s)
    word_bits = property(lambda self: self._word_bits)
    fmts = property(lambda self: self._fmts)
    acc_width = property(lambda self: self.eng.t_width)   # of the threshold table's entries
    offsets = property(lambda self: dict(self._offsets))
    vw = property(lambda self: self._vw)

    @property
    def codec(self) -> "EncoderCodec":
        """Payload encoders for this layer's streams."""
        return EncoderCodec(hidden=self._h, ffn=self._f, p=self._p, max_tokens=self._max_tokens, fmts=self._fmts,
                            acc_width=self.eng.t_width, addr_width=self._addr_width, vw=self._vw)

    def expected_cycles(self, n: int, bits_per_cycle: float, latency: int, **kw):
        """:func:`bebert.golden.encoder.expected_cycles` with this layer's parameters."""
        return _golden.expected_cycles(n, self._h, self._a, self._f, self._p, self._s, bits_per_cycle, latency,
                                       word_bits=self._word_bits, kb=self._kb, pe_latency=self.eng.pe.latency,
                                       fetch_depth=self._fetch_depth, stats_cycles=self.lv.vu.stats_cycles,
                                       vector_latency=self.lv.vu.latency, attn_latency=self.att.latency,
                                       vw=self._vw, banks=self.lv.vu.banks, **kw)

    @staticmethod
    def _merge(m, acc_rd, acc_wr, mem_wr, row, slot, piece, slots, width, valid, whole, addr):
        """Put ``piece`` (``width`` bits) into slot ``slot`` of row ``row``'s accumulator word (slot 0 starts a
        new word); when the word is ``whole``, write it into ``mem_wr`` at ``addr``."""
        merged = Signal(len(acc_wr.data))
        old = acc_rd.data
        m.d.comb += [acc_rd.addr.eq(row), acc_wr.addr.eq(row), acc_wr.en.eq(valid), acc_wr.data.eq(merged),
                     mem_wr.addr.eq(addr), mem_wr.data.eq(merged), mem_wr.en.eq(valid & whole)]
        m.d.comb += merged.eq(Cat(*(Mux(slot == k, piece, Mux(slot == 0, 0, old[k * width:(k + 1) * width]))
                                    for k in range(slots))))

    def elaborate(self, platform):
        m = Module()
        h, a, f, d, p, s = self._h, self._a, self._f, self._d, self._p, self._s
        mt, gq, gf = self._max_tokens, self._gq, self._gf
        g_max = max(gq, gf)
        fh, ff = -(-h // s), -(-f // s)
        off = self._offsets
        m.submodules.eng = eng = self.eng
        m.submodules.lv = lv = self.lv
        m.submodules.att = att = self.att

        cmd = Signal(EncoderCommand(mt, self._addr_width))
        accept = self.c_stream.valid & self.c_stream.ready

        # ---- buffers and tables
        # The bit buffer (Q/K/V, later FFN1 bits) and the context buffer hold token rows as narrow, deep
        # memories (EBR): row t, bit c is bit c % W of word t*C + c // W. The writers fill W-bit words a piece
        # (P bits, d bits) at a time; the pieces of a word arrive n beats apart, so each writer merges them in
        # a one-word-per-token accumulator (LUT RAM, asynchronous read) and writes the word when it is whole.
        # (One row per word, 1536 x 16 bits with a P-bit write granularity, cost about 4k LUT4 and 400 LUT
        # RAM per lane: the write-enable decoder of 768 granules and the read multiplexers.)
        wb_, wc_ = self._wb, self._wc
        cb_, cc_ = -(-g_max * p // wb_), -(-h // wc_)
        m.submodules.bbuf = bbuf = Memory(shape=unsigned(wb_), depth=mt * cb_, init=[])
        m.submodules.cbuf = cbuf = Memory(shape=unsigned(wc_), depth=mt * cc_, init=[])
        m.submodules.bacc = bacc = Memory(shape=unsigned(wb_), depth=mt, init=[])
        m.submodules.cacc = cacc = Memory(shape=unsigned(wc_), depth=mt, init=[])
        m.submodules.tbl = tbl = Memory(shape=ThresholdEntry(p, eng.t_width), depth=gq + gf, init=[])
        m.submodules.vtbl = vtbl = Memory(shape=_VectorEntry(self._fmts), depth=2 * h, init=[])
        b_wr, b_rd, b_rv = bbuf.write_port(), bbuf.read_port(), bbuf.read_port()
        c_wr, c_rd = cbuf.write_port(), cbuf.read_port()
        ba_wr, ba_rd = bacc.write_port(), bacc.read_port(domain="comb")
        ca_wr, ca_rd = cacc.write_port(), cacc.read_port(domain="comb")
        t_wr, t_rd = tbl.write_port(), tbl.read_port()
        v_wr, v_rd = vtbl.write_port(), vtbl.read_port()

        # ---- sequencer state
        phase = Signal(range(7))   # 0 idle, 1 qkv, 2 attention, 3 attn_out, 4 ffn_in, 5 ffn_out, 6 done
        step = Signal()            # within a phase: 0 command pending, 1 command running
        idle = phase == 0
        in_qkv, in_att, in_ao, in_fi, in_fo = (phase == i for i in range(1, 6))
        running = Signal()
        in_empty = Signal()        # the input FIFO below holds no beat (a command waits for the whole load)
        m.d.comb += [running.eq(~idle), self.running.eq(running), self.c_stream.ready.eq(idle & in_empty)]

        # ---- parameter loads (only between commands)
        m.d.comb += [
            self.t_stream.ready.eq(idle),
            t_wr.addr.eq(self.t_stream.payload.addr), t_wr.data.t.eq(self.t_stream.payload.t),
            t_wr.data.pol.eq(self.t_stream.payload.pol), t_wr.en.eq(self.t_stream.valid & idle),
            self.p_stream.ready.eq(idle),
            v_wr.addr.eq(Mux(self.p_stream.payload.table, h + self.p_stream.payload.addr, self.p_stream.payload.addr)),
            v_wr.data.scale.eq(self.p_stream.payload.scale), v_wr.data.bias.eq(self.p_stream.payload.bias),
            v_wr.data.gamma.eq(self.p_stream.payload.gamma), v_wr.data.beta.eq(self.p_stream.payload.beta),
            v_wr.en.eq(self.p_stream.valid & idle),
        ]

        # ---- copy loops
        t_base = Signal(range(gq + gf))
        t_cnt = Signal(range(max(gq, gf) + 1))
        tcopy = _Copy(m, "tcopy", 1, 1, t_cnt, max(gq, gf), eng.t_stream.ready)
        m.d.comb += [
            t_rd.addr.eq(t_base + tcopy.lin), t_rd.en.eq(tcopy.advance),
            eng.t_stream.valid.eq(tcopy.b_valid),
            eng.t_stream.payload.addr.eq(tcopy.b_i),
            eng.t_stream.payload.t.eq(t_rd.data.t), eng.t_stream.payload.pol.eq(t_rd.data.pol),
            eng.t_stream.payload.last.eq(tcopy.b_last),
        ]
        p_sel = Signal()
        pcopy = _Copy(m, "pcopy", 1, 1, h, h, lv.p_stream.ready)
        vp = self.vp_stream
        m.d.comb += [
            v_rd.addr.eq(Mux(p_sel, h, 0) + pcopy.lin), v_rd.en.eq(pcopy.advance),
            lv.p_stream.valid.eq(Mux(idle, vp.valid, pcopy.b_valid)),
            vp.ready.eq(idle & lv.p_stream.ready),
        ]
        with m.If(idle):
            m.d.comb += lv.p_stream.payload.eq(vp.payload)
        with m.Else():
            m.d.comb += [
                lv.p_stream.payload.addr.eq(pcopy.b_i),
                lv.p_stream.payload.scale.eq(v_rd.data.scale), lv.p_stream.payload.bias.eq(v_rd.data.bias),
                lv.p_stream.payload.gamma.eq(v_rd.data.gamma), lv.p_stream.payload.beta.eq(v_rd.data.beta),
                lv.p_stream.payload.k.eq(Mux(pcopy.b_last, Mux(p_sel, f, h), 0)),
                lv.p_stream.payload.last.eq(pcopy.b_last),
            ]
        # the direct path to the vector unit (between commands)
        m.d.comb += [
            lv.v_stream.valid.eq(self.v_stream.valid & idle), lv.v_stream.payload.eq(self.v_stream.payload),
            self.v_stream.ready.eq(lv.v_stream.ready & idle),
            self.vo_stream.valid.eq(lv.vo_stream.valid), self.vo_stream.payload.eq(lv.vo_stream.payload),
            lv.vo_stream.ready.eq(self.vo_stream.ready),
        ]
        # x copy: a bit buffer (context or FFN bits) into the linear + vector op's activations
        x_sel = Signal()           # 0: context buffer (H bits), 1: bit buffer (FFN bits)
        x_cnt = Signal(range(max(fh, ff) + 1))
        xcopy = _Copy(m, "xcopy", cmd.tokens, mt, x_cnt, max(fh, ff), eng.xr_stream.ready, o_times=sorted({cb_, cc_}))
        # attention feed: outer = 2*head + (0: K/V beats, 1: queries), inner = token
        afeed = _Copy(m, "afeed", 2 * a, 2 * a, cmd.tokens, mt, att.i_stream.ready, i_times=(cb_,))

        def rom(values, name):
            """A constant table indexed by a counter (small: a LUT multiplexer)."""
            values = [int(v) for v in values]
            return Array(Const(v, range(max(values) + 1)) for v in values)

        # x copy: fold i of token t is S-bit slot (i*S % W) / S of word t*C + i*S // W
        nf = max(fh, ff)
        xb_word, xb_slot = rom([i * s // wb_ for i in range(nf)], "xbw"), rom([i * s % wb_ // s for i in range(nf)], "xbs")
        xc_word, xc_slot = rom([i * s // wc_ for i in range(nf)], "xcw"), rom([i * s % wc_ // s for i in range(nf)], "xcs")
        xb_sel = Signal(s)
        xc_sel = Signal(s)
        m.d.comb += [
            c_rd.addr.eq(xcopy.o_times[cc_] + xc_word[xcopy.i]), c_rd.en.eq(xcopy.advance),
            xb_sel.eq(b_rd.data.word_select(xb_slot[xcopy.b_i], s)) if wb_ > s else xb_sel.eq(b_rd.data),
            xc_sel.eq(c_rd.data.word_select(xc_slot[xcopy.b_i], s)) if wc_ > s else xc_sel.eq(c_rd.data),
            eng.xr_stream.valid.eq(xcopy.b_valid),
            eng.xr_stream.payload.data.eq(Mux(x_sel, xb_sel, xc_sel)),
            eng.xr_stream.payload.last.eq(xcopy.b_last),
        ]
        # the attention feed reads head j's d bits (Q: j = head, K: head + A, V: head + 2A) from word
        # t*C + j*d // W, slot (j*d % W) / d; the bit buffer's first read port serves the x copy outside it
        outer_j_qk = rom([(o >> 1) + (0 if o & 1 else a) for o in range(2 * a)], "jqk")
        outer_j_v = rom([(o >> 1) + 2 * a for o in range(2 * a)], "jv")
        j_word = rom([j * d // wb_ for j in range(3 * a)], "jw")
        j_slot = rom([j * d % wb_ // d for j in range(3 * a)], "js")
        row = Signal(range(mt * cb_))
        m.d.comb += row.eq(Mux(in_att, afeed.i_times[cb_], xcopy.o_times[cb_]))
        m.d.comb += [
            b_rd.addr.eq(row + Mux(in_att, j_word[outer_j_qk[afeed.o]], xb_word[xcopy.i])),
            b_rd.en.eq(Mux(in_att, afeed.advance, xcopy.advance)),
            b_rv.addr.eq(row + j_word[outer_j_v[afeed.o]]), b_rv.en.eq(afeed.advance),
        ]
        is_q = afeed.b_o[0]
        qk_bits = b_rd.data.word_select(j_slot[outer_j_qk[afeed.b_o]], d) if wb_ > d else b_rd.data
        v_bits = b_rv.data.word_select(j_slot[outer_j_v[afeed.b_o]], d) if wb_ > d else b_rv.data
        m.d.comb += [
            att.i_stream.valid.eq(afeed.b_valid),
            att.i_stream.payload.kind.eq(Mux(is_q, AttentionKind.Q, AttentionKind.KV)),
            att.i_stream.payload.qk.eq(qk_bits),
            att.i_stream.payload.v.eq(v_bits),
            att.i_stream.payload.mask.eq(afeed.b_i < cmd.keys),
            att.i_stream.payload.last.eq(afeed.b_ilast),
        ]

        # ---- bit packer: sign bits into the engine's activation buffer, S per beat, F = ceil(H/S)
        # per token. Sources: the layer input (idle) or the attn_out op's output.
        # (vw bits a beat from the layer input and from the op's output beats)
        vw = self._vw
        pk_valid, pk_bits, pk_final, pk_ready = Signal(), Signal(vw), Signal(), Signal()
        pk_n = Signal(range(vw + 1))
        xw = Signal(s)
        xb = Signal(range(s))
        xc = Signal(range(h))
        emit = Signal()
        word = Signal(s)
        m.d.comb += [
            pk_n.eq(vw),
            emit.eq((xb + pk_n == s) | (xc + pk_n == h) | pk_final),
            word.eq(xw | (pk_bits << xb)[:s]),
            pk_ready.eq(~emit | eng.x_stream.ready),
            eng.x_stream.valid.eq(pk_valid & emit),
            eng.x_stream.payload.data.eq(word),
            eng.x_stream.payload.last.eq(pk_final),
        ]
        with m.If(pk_valid & pk_ready):
            with m.If(emit):
                m.d.sync += [xw.eq(0), xb.eq(0)]
            with m.Else():
                m.d.sync += [xw.eq(word), xb.eq(xb + pk_n)]
            m.d.sync += xc.eq(Mux((xc + pk_n == h) | pk_final, 0, xc + pk_n))
        with m.Elif(accept):
            m.d.sync += [xw.eq(0), xb.eq(0), xc.eq(0)]

        # the layer input: codes into the op's residual buffer, sign bits into the packer
        # through a three-entry FIFO with registered outputs: the lane drives i_stream straight from its
        # activation buffer's read port (an EBR's unregistered output, 5.8 ns), which ran on through the packer
        ins, in_q = _registered(m, "in_q", self.i_stream, EncoderInput(self._fmts, vw))
        m.d.comb += in_empty.eq(in_q.r_level == 0)
        in_codes = [ins.payload.x] if vw == 1 else [ins.payload.x[j] for j in range(vw)]
        m.d.comb += [
            ins.ready.eq(idle & pk_ready & lv.r_stream.ready),
            lv.r_stream.valid.eq(idle & ins.valid & pk_ready),
            lv.r_stream.payload.x.eq(ins.payload.x.as_value() if vw > 1 else ins.payload.x),
            lv.r_stream.payload.last.eq(ins.payload.last),
        ]
        # the linear + vector op's output through a three-entry FIFO with registered outputs (amaranth's
        # SyncFIFOBuffered): no combinational path from the op's pipeline through the bit packer, the engine's
        # activation load and the phase logic back into it (it was the whole design's critical path, 22.7 ns)
        lvo, _ = _registered(m, "lvo_q", lv.o_stream, LinearVectorOutput(self._fmts, self._vw))
        # attn_out's output: its bits into the packer (the FFN1 input); ffn_out's: out on o_stream and its bits
        # into the packer too (the next layer's Q/K/V input, for a command given without an input load). The
        # codes need no copy: the op writes its outputs back over its residual buffer.
        m.d.comb += [
            pk_valid.eq(Mux(idle, ins.valid & lv.r_stream.ready,
                            lvo.valid & (in_ao | in_fo & self.o_stream.ready))),
            pk_bits.eq(Mux(idle, Cat(*(~x[-1] for x in in_codes)), lvo.payload.bit)),
            pk_final.eq(Mux(idle, ins.payload.last, lvo.payload.final)),
            lvo.ready.eq(Mux(in_ao, pk_ready, in_fo & self.o_stream.ready & pk_ready)),
            self.o_stream.valid.eq(lvo.valid & in_fo & pk_ready),
            self.o_stream.payload.eq(lvo.payload),
        ]

        # ---- engine output (Q/K/V or FFN1 bits, group major) into the bit buffer
        eo = eng.o_stream
        e_g = Signal(range(g_max))
        e_t = Signal(range(mt))
        e_w = Signal(range(cb_))                # word of group e_g in the row
        e_slot = Signal(range(wb_ // p))        # its P-bit slot
        e_base = Signal(range(mt * cb_))        # e_t * C
        e_take = eo.valid   # always ready
        e_glast = Signal()
        m.d.comb += e_glast.eq(e_g == Mux(in_qkv, gq - 1, gf - 1))
        self._merge(m, ba_rd, ba_wr, b_wr, e_t, e_slot, eo.payload.bits, wb_ // p, p, e_take,
                    (e_slot == wb_ // p - 1) | e_glast, e_base + e_w)
        m.d.comb += eo.ready.eq(1)
        with m.If(eng.c_stream.valid & eng.c_stream.ready):
            m.d.sync += [e_g.eq(0), e_t.eq(0), e_w.eq(0), e_slot.eq(0), e_base.eq(0)]
        with m.Elif(e_take):
            with m.If(e_t == cmd.tokens - 1):
                m.d.sync += [e_t.eq(0), e_g.eq(e_g + 1), e_base.eq(0)]
                with m.If(e_slot == wb_ // p - 1):
                    m.d.sync += [e_slot.eq(0), e_w.eq(e_w + 1)]
                with m.Else():
                    m.d.sync += e_slot.eq(e_slot + 1)
            with m.Else():
                m.d.sync += [e_t.eq(e_t + 1), e_base.eq(e_base + cb_)]
        eng_done = e_take & eo.payload.last

        # ---- attention output rows (head major) into the context buffer
        ao_ = att.o_stream
        o_h = Signal(range(a))
        o_i = Signal(range(mt))
        o_w = Signal(range(cc_))
        o_slot = Signal(range(wc_ // d))
        o_base = Signal(range(mt * cc_))
        m.d.comb += ao_.ready.eq(1)
        self._merge(m, ca_rd, ca_wr, c_wr, o_i, o_slot, ao_.payload.c, wc_ // d, d, ao_.valid,
                    (o_slot == wc_ // d - 1) | (o_h == a - 1), o_base + o_w)
        att_done = Signal()
        m.d.comb += att_done.eq(ao_.valid & (o_h == a - 1) & (o_i == cmd.tokens - 1))
        with m.If(accept):
            m.d.sync += [o_h.eq(0), o_i.eq(0), o_w.eq(0), o_slot.eq(0), o_base.eq(0)]
        with m.Elif(ao_.valid):
            with m.If(o_i == cmd.tokens - 1):
                m.d.sync += [o_i.eq(0), o_h.eq(o_h + 1), o_base.eq(0)]
                with m.If(o_slot == wc_ // d - 1):
                    m.d.sync += [o_slot.eq(0), o_w.eq(o_w + 1)]
                with m.Else():
                    m.d.sync += o_slot.eq(o_slot + 1)
            with m.Else():
                m.d.sync += [o_i.eq(o_i + 1), o_base.eq(o_base + cc_)]
        lv_done = lvo.valid & lvo.ready & lvo.payload.final

        # ---- memory port: the engine's (all four linear ops)
        wiring.connect(m, eng.req_stream, wiring.flipped(self.req_stream))
        wiring.connect(m, wiring.flipped(self.rsp_stream), eng.rsp_stream)

        # ---- commands of the ops: the engine's own (sign: Q/K/V, FFN1) or the linear + vector op's (raw)
        base = cmd.base
        sign_valid = (in_qkv | in_fi) & (step == 0) & ~tcopy.busy
        ec = lv.ec_stream
        m.d.comb += [
            eng.c_stream.valid.eq(sign_valid | ec.valid),
            ec.ready.eq(eng.c_stream.ready),
            eng.c_stream.payload.tokens.eq(Mux(ec.valid, ec.payload.tokens, cmd.tokens)),
            eng.c_stream.payload.k.eq(Mux(ec.valid, ec.payload.k, h)),
            eng.c_stream.payload.channels.eq(Mux(ec.valid, ec.payload.channels, Mux(in_qkv, 3 * h, f))),
            eng.c_stream.payload.base.eq(Mux(ec.valid, ec.payload.base, base + Mux(in_qkv, off["qkv"], off["ffn_in"]))),
            eng.c_stream.payload.raw.eq(ec.valid),
            lv.eo_stream.valid.eq(eng.r_stream.valid), lv.eo_stream.payload.eq(eng.r_stream.payload),
            eng.r_stream.ready.eq(lv.eo_stream.ready),
            lv.e_counters.eq(eng.counters),
            lv.c_stream.valid.eq((in_ao | in_fo) & (step == 0) & ~xcopy.busy & ~pcopy.busy),
            lv.c_stream.payload.tokens.eq(cmd.tokens),
            lv.c_stream.payload.k.eq(Mux(in_ao, h, f)),
            lv.c_stream.payload.channels.eq(h),
            lv.c_stream.payload.base.eq(base + Mux(in_ao, off["attn_out"], off["ffn_out"])),
        ]
        with m.If(eng.c_stream.valid & eng.c_stream.ready):
            m.d.sync += step.eq(1)

        # ---- the sequence
        with m.If(accept):
            m.d.sync += [cmd.eq(self.c_stream.payload), phase.eq(1), step.eq(0), t_base.eq(0), t_cnt.eq(gq),
                         p_sel.eq(0)]
            m.d.comb += [tcopy.start.eq(1), pcopy.start.eq(1)]
        with m.If(in_qkv & eng_done):
            m.d.sync += [phase.eq(2), step.eq(1)]
            m.d.comb += afeed.start.eq(1)
        with m.If(in_att & att_done):
            m.d.sync += [phase.eq(3), step.eq(0), x_sel.eq(0), x_cnt.eq(fh), t_base.eq(gq), t_cnt.eq(gf)]
            m.d.comb += [xcopy.start.eq(1), tcopy.start.eq(1)]
        with m.If(in_ao & lv_done):
            m.d.sync += [phase.eq(4), step.eq(0), p_sel.eq(1)]
            m.d.comb += pcopy.start.eq(1)
        with m.If(in_fi & eng_done):
            m.d.sync += [phase.eq(5), step.eq(0), x_sel.eq(1), x_cnt.eq(ff)]
            m.d.comb += xcopy.start.eq(1)
        with m.If(in_fo & lv_done):
            m.d.sync += phase.eq(6)
        with m.If(phase == 6):
            m.d.sync += phase.eq(0)

        # ---- performance counters
        ctr = self.counters
        eng_fin, lv_fin = Signal(), Signal()
        m.d.sync += [eng_fin.eq(eng_done), lv_fin.eq(lv_done)]
        with m.If(accept):
            m.d.sync += [getattr(ctr, name).eq(0) for name in self.COUNTERS]
        with m.Else():
            with m.If(running & (phase != 6)):
                m.d.sync += ctr.cycles.eq(ctr.cycles + 1)
                for i, name in enumerate(_golden.OPS):
                    with m.If(phase == i + 1):
                        m.d.sync += getattr(ctr, name).eq(getattr(ctr, name) + 1)
            with m.If(eng_fin):
                m.d.sync += [getattr(ctr, n).eq(getattr(ctr, n) + getattr(eng.counters, n))
                             for n in ("busy", "stall_weights", "stall_output")]
            with m.If(lv_fin):
                m.d.sync += [getattr(ctr, n).eq(getattr(ctr, n) + getattr(lv.counters, n))
                             for n in ("busy", "stall_weights", "stall_output", "vector_beats", "vector_wait",
                                       "vector_stalls")]
            with m.If(att.i_stream.valid & att.i_stream.ready):
                m.d.sync += ctr.attn_beats.eq(ctr.attn_beats + 1)
        return m


# ---- plain-integer encoders for testbenches



class EncoderCodec:
    """Payload encoders/decoders of an :class:`EncoderLayer`'s streams, from its parameters alone."""

    def __init__(self, *, hidden: int, ffn: int, p: int, max_tokens: int, fmts: VectorFormats, acc_width: int,
                 addr_width: int = 24, vw: int = 1):
        self.h, self.f, self.p, self.max_tokens, self.fmts = hidden, ffn, p, max_tokens, fmts
        self.vw = vw
        self.acc_width = acc_width
        self.groups = -(-3 * hidden // p) + -(-ffn // p)
        self.i_layout = EncoderInput(fmts, vw)
        self.t_layout = ThresholdLoad(p, acc_width, self.groups)
        self.p_layout = EncoderParamLoad(fmts, hidden)
        self.c_layout = EncoderCommand(max_tokens, addr_width)
        self.o_layout = LinearVectorOutput(fmts, vw)

    def inputs(self, x) -> list[int]:
        """``i_stream`` payloads of the layer input ``x`` ``(n, H)`` codes, token major, the last flagged."""
        rows = [[int(v) for v in row] for row in x]
        if not 1 <= len(rows) <= self.max_tokens or any(len(r) != self.h for r in rows):
            raise ValueError(f"the layer input must be (n, {self.h}) codes with 1 <= n <= {self.max_tokens}, "
                             f"not {len(rows)} rows of {sorted({len(r) for r in rows})}")
        return code_beats(self.i_layout, [v for r in rows for v in r], self.fmts.layernorm.bits, self.vw)

    def input_codes(self, payload: int) -> tuple[list[int], int]:
        """An ``i_stream`` payload -> ``([vw codes], last)``."""
        b, off = self.fmts.layernorm.bits, self.i_layout["x"].offset
        codes = [(payload >> (off + j * b)) & ((1 << b) - 1) for j in range(self.vw)]
        return [c - (1 << b) if c >> (b - 1) else c for c in codes], (payload >> self.i_layout["last"].offset) & 1

    def thresholds(self, t, pol) -> list[int]:
        """``t_stream`` payloads of :func:`bebert.golden.encoder.threshold_table`'s ``(t, pol)``."""
        if len(t) != self.groups * self.p or len(pol) != len(t):
            raise ValueError(f"a threshold table of {len(t)} thresholds and {len(pol)} polarities; this layer "
                             f"takes {self.groups * self.p} (ceil(3H/P) + ceil(F/P) groups of P)")
        lay = self.t_layout
        width = self.acc_width
        beats = []
        for g in range(self.groups):
            tw = 0
            for i in range(self.p):
                v = int(t[g * self.p + i])
                if not -(1 << (width - 1)) <= v < (1 << (width - 1)):
                    raise ValueError(f"threshold {v} of channel {g * self.p + i} does not fit signed({width})")
                tw |= (v & ((1 << width) - 1)) << (i * width)
            pw = sum(int(pol[g * self.p + i]) << i for i in range(self.p))
            beats.append((g << lay["addr"].offset) | (tw << lay["t"].offset) | (pw << lay["pol"].offset))
        return beats

    def params(self, tables: dict) -> list[int]:
        """``p_stream`` payloads of :func:`bebert.golden.encoder.vector_tables`."""
        beats = []
        for table, name in enumerate(("attn_out", "ffn_out")):
            tb = tables[name]
            if any(len(tb[k]) != self.h for k in ("scale", "bias", "gamma", "beta")):
                raise ValueError(f"the {name} table must have {self.h} channels")
            beats += [_pack(self.p_layout, table=table, addr=c, scale=tb["scale"][c], bias=tb["bias"][c],
                            gamma=tb["gamma"][c], beta=tb["beta"][c]) for c in range(self.h)]
        return beats

    def command(self, tokens: int, base: int, keys: int | None = None) -> int:
        """A ``c_stream`` payload; ``ValueError`` for ``tokens`` outside ``1..max_tokens`` or ``keys`` outside ``1..tokens``."""
        keys = tokens if keys is None else keys
        if not 1 <= tokens <= self.max_tokens:
            raise ValueError(f"tokens={tokens} is outside 1..{self.max_tokens} of this layer")
        if not 1 <= keys <= tokens:
            raise ValueError(f"keys={keys} is outside 1..tokens={tokens}")
        return _pack(self.c_layout, tokens=tokens, keys=keys, base=base)

    def output(self, payload: int) -> tuple[int, int, int, int]:
        """``o_stream`` payload -> ``(y, bit, last, final)`` (one channel a beat; see :meth:`channels`)."""
        if self.vw != 1:
            raise ValueError(f"beats carry {self.vw} channels: use channels()")
        return self.channels(payload)[0]

    def channels(self, payload: int) -> list[tuple[int, int, int, int]]:
        """``o_stream`` payload -> ``(y, bit, last, final)`` per channel of the beat."""
        return lv_channels(payload, self.o_layout, self.fmts.layernorm.bits, self.vw)

    def counters(self, value: int, width: int = 32) -> dict[str, int]:
        """The ``counters`` port's bits -> a dict."""
        lay = EncoderCounters(width)
        return {name: (value >> lay[name].offset) & ((1 << width) - 1) for name in EncoderLayer.COUNTERS}
