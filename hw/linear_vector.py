"""Linear + vector op: a W1A1 binary linear layer whose popcounts go through the vector unit.

The attention output projection and the FFN down-projection of a W1A1 layer:
``LN(align(alpha*(2*popcount_xnor(x, W) - K) + bias) + residual)`` and its sign bits, exactly
:func:`bebert.golden.linear_vector.linear_vector` (``docs/hw-engine.md``, "Linear + vector op").
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ..golden import linear_vector as _golden
from ..golden.vector import VectorFormats
from ._params import check_positive, code_beats
from ._params import pack_fields as _pack
from .linear import ActivationLoad, LinearCodec, LinearCommand, LinearEngine, LinearRawOutput, PerfCounters
from .vector import VectorInputs, VectorLoad, VectorOutputs, VectorUnit

__all__ = ["ResidualLoad", "LinearVectorOutput", "LinearVectorCounters", "LinearVectorOp", "LinearVectorCodec"]


class ResidualLoad(data.StructLayout):
    """An ``r_stream`` beat: ``x`` (one residual code, ``layernorm`` format; with ``vw > 1`` ``vw`` consecutive
    codes ``x[j]``); ``last`` ends the load."""

    def __init__(self, fmts: VectorFormats, vw: int = 1):
        x = signed(fmts.layernorm.bits) if vw == 1 else data.ArrayLayout(signed(fmts.layernorm.bits), vw)
        super().__init__({"x": x, "last": unsigned(1)})


class LinearVectorOutput(data.StructLayout):
    """An ``o_stream`` beat: ``y`` (LayerNorm output code), ``bit`` (``y >= 0``), ``last`` (the
    token's last channel), ``final`` (the command's last beat). With ``vw > 1`` a beat carries ``vw``
    consecutive channels: ``y[j]``, ``bit[j]`` (``last``: the token's last beat); for ``vw = 1`` the bits
    are the same."""

    def __init__(self, fmts: VectorFormats, vw: int = 1):
        y = signed(fmts.layernorm.bits) if vw == 1 else data.ArrayLayout(signed(fmts.layernorm.bits), vw)
        super().__init__({"y": y, "bit": unsigned(vw), "last": unsigned(1), "final": unsigned(1)})


class LinearVectorCounters(data.StructLayout):
    """Performance counters of the last command (see :class:`LinearVectorOp`)."""

    def __init__(self, width: int):
        super().__init__({name: unsigned(width) for name in LinearVectorOp.COUNTERS})


class LinearVectorOp(wiring.Component):
    """``n`` tokens through a binary linear layer of ``H`` output channels and the vector unit.

    ``acc[t, c] = popcount(~(x[t] ^ W[c]))`` (``K`` input bits, ``c < H``) by a raw-mode
    :class:`bebert.hw.linear.LinearEngine` (channel group major: group ``g`` of ``P``
    channels, all tokens, all folds), stored in a popcount buffer of ``max_tokens x
    ceil(max_h/P)`` words of ``P`` accumulators (word ``t*G_max + g`` = group ``g`` of token
    ``t``: one write per engine beat, never a stall); then each token's row, channel by
    channel, with the residual code ``x[t, c]`` from the residual buffer, into a
    :class:`bebert.hw.vector.VectorUnit`: ``out[t, c]`` (the LayerNorm output) and
    ``bit = out >= 0``, exactly :func:`bebert.golden.linear_vector.linear_vector`.

    A token's row is complete once the last group's beat for it is written, so the vector
    feed of token 0 starts while the last group still computes the later tokens; the vector
    unit's two banks let token ``t+1`` enter while token ``t`` is normalized.

    Ports
    -----
    x_stream : In(:class:`bebert.hw.linear.ActivationLoad`)
        The engine's activation load (``n*F`` beats, token major), before the command.
    p_stream : In(:class:`bebert.hw.vector.VectorLoad`)
        The vector unit's parameter table (``scale``, ``bias``, ``gamma``, ``beta`` per
        channel; ``last`` on channel ``H - 1`` with ``k = K``), before the command. ``H`` and
        ``K`` of the table must equal the command's ``channels`` and ``k``.
    r_stream : In(:class:`ResidualLoad`)
        The residual codes entering the layer, ``n*H/vw`` beats of ``vw`` codes token major (code ``j`` of beat
        ``(t*H + c) / vw`` = ``x[t, c]``), written from address 0; ``last`` resets the write address. A command writes its
        outputs back over the residual buffer (``out[t, c]`` at ``t*H + c``), so a command given without a
        residual load takes the previous command's outputs as its residual (the encoder layer's
        ``ffn_out`` after ``attn_out``, and the next layer's ``attn_out`` after ``ffn_out``).
    c_stream : In(:class:`bebert.hw.linear.LinearCommand`)
        ``tokens`` = n, ``k`` = K, ``channels`` = H, ``base`` (weight tiles, the engine's layout).
    req_stream, rsp_stream : the engine's memory port.
    o_stream : Out(:class:`LinearVectorOutput`)
        ``n*H`` beats token major: ``out[t, c]``, its sign bit, ``last`` on channel ``H-1``,
        ``final`` on the command's last beat.
    counters : Out(:class:`LinearVectorCounters`)
        Cleared when a command is accepted, final when ``running`` falls. ``cycles``
        (acceptance to the transfer of the ``final`` beat); ``busy``, ``stall_weights``,
        ``stall_output`` (the engine's, see :class:`~bebert.hw.linear.LinearEngine`; the
        popcount buffer never backpressures); ``vector_beats`` (beats into the vector unit,
        ``n*H``); ``vector_wait`` (cycles the feed had no beat because the next token's row
        was not complete: waiting on the linear layer); ``vector_stalls`` (cycles a beat
        waited at the vector unit's input: its banks busy or output backpressure).
    running : Out(1)
        A command is in progress; all loads and commands are refused while it is.
    v_stream, vo_stream : In(:class:`bebert.hw.vector.VectorInputs`), Out(:class:`bebert.hw.vector.VectorOutputs`)
        The vector unit itself, between commands (the accelerator's embedding LayerNorm runs on it, so a lane
        has one vector unit): ``v_stream`` beats (``vw`` channels each) go straight into it, its results come
        out on ``vo_stream`` (``vw`` channels a beat).
        A command must not be given before the last direct result is out (they would leave on ``o_stream``).

    With ``engine`` given (a dual :class:`~bebert.hw.linear.LinearEngine` that its owner elaborates and
    shares, as the encoder layer does for all four of its linear ops), the op has no engine of its own and
    no ``x_stream`` or memory port; instead:

    ec_stream : Out(:class:`bebert.hw.linear.LinearCommand`)
        The accepted ``c_stream`` command, for the owner to give to the shared engine as a raw command.
    eo_stream : In(:class:`bebert.hw.linear.LinearRawOutput`)
        The shared engine's ``r_stream`` (always ready).
    e_counters : In(:class:`bebert.hw.linear.PerfCounters`)
        The shared engine's counters (``busy``, ``stall_weights``, ``stall_output`` pass through).

    Parameters
    ----------
    p, s, max_k, max_tokens, word_bits, addr_width, fetch_depth, counter_bits, impl :
        As :class:`bebert.hw.linear.LinearEngine` (its ``max_n`` is ``max_h``).
    max_h : int
        Largest ``H`` (output channels of the linear layer = LayerNorm width).
    fmts : VectorFormats, optional
        The vector unit's formats (default :meth:`VectorFormats.default` for ``max_h``).
    engine : LinearEngine, optional
        A shared dual engine (``p``, ``s``, ``counter_bits`` equal, ``max_k_raw >= max_k``,
        ``max_n >= max_h``, ``max_tokens >= max_tokens``).

    Raises
    ------
    TypeError
        If a size parameter is not a positive integer, or ``fmts`` is not a ``VectorFormats``.
    ValueError
        From the sub-blocks (counter width, ``impl``, formats).
    """

    COUNTERS = ("cycles", "busy", "stall_weights", "stall_output", "vector_beats", "vector_wait",
                "vector_stalls")

    def __init__(self, *, p: int, s: int, max_k: int, max_h: int, max_tokens: int, word_bits: int,
                 fmts: VectorFormats | None = None, addr_width: int = 24, fetch_depth: int = 2,
                 counter_bits: int = 32, impl: str = "behavioral", vw: int = 1, engine: LinearEngine | None = None):
        for name, v in (("P (output channels)", p), ("S (input bits per cycle)", s), ("max_k", max_k),
                        ("max_h", max_h), ("max_tokens", max_tokens), ("word_bits", word_bits),
                        ("counter_bits", counter_bits)):
            check_positive(self, name, v)
        if fmts is not None and not isinstance(fmts, VectorFormats):
            self._MustUse__used = True
            raise TypeError(f"fmts must be a VectorFormats, not {type(fmts).__name__}")
        if isinstance(vw, int) and not isinstance(vw, bool) and vw >= 1 and p % vw:
            self._MustUse__used = True
            raise ValueError(f"vw = {vw} channels a beat must divide P = {p} (a beat is a slice of a P-channel group)")
        if engine is not None:
            bad = not isinstance(engine, LinearEngine) or not engine.dual or (
                engine.p, engine.s, engine.counter_bits) != (p, s, counter_bits) or engine.max_k_raw < max_k \
                or engine.max_n < max_h or engine.max_tokens < max_tokens
            if bad:
                self._MustUse__used = True
                raise ValueError(f"engine must be a dual LinearEngine of P = {p}, S = {s}, {counter_bits}-bit "
                                 f"counters, max_k_raw >= {max_k}, max_n >= {max_h}, max_tokens >= {max_tokens}")
        self._shared = engine is not None
        try:
            self.engine = engine if engine is not None else LinearEngine(
                p=p, s=s, max_k=max_k, max_n=max_h, max_tokens=max_tokens, word_bits=word_bits,
                addr_width=addr_width, fetch_depth=fetch_depth, counter_bits=counter_bits, impl=impl, raw=True)
            self.vu = VectorUnit(max_h=max_h, max_k=max_k, fmts=fmts, vw=vw)
        except (TypeError, ValueError):
            self._MustUse__used = True
            raise
        self._p, self._s, self._max_k, self._max_h = p, s, max_k, max_h
        self._max_tokens, self._word_bits, self._addr_width = max_tokens, word_bits, addr_width
        self._counter_bits = counter_bits
        self._vw = vw
        self._fmts = self.vu.fmts
        self._g_max = -(-max_h // p)
        cmd_sig = stream.Signature(LinearCommand(max_tokens, max_k, max_h, addr_width))
        if self._shared:
            ends = {"ec_stream": Out(cmd_sig),
                    "eo_stream": In(stream.Signature(LinearRawOutput(p, self.engine.acc_width))),
                    "e_counters": In(PerfCounters(counter_bits))}
        else:
            ends = {"x_stream": In(stream.Signature(ActivationLoad(s))),
                    "req_stream": Out(stream.Signature(unsigned(addr_width))),
                    "rsp_stream": In(stream.Signature(unsigned(word_bits)))}
        super().__init__(ends | {
            "p_stream": In(stream.Signature(VectorLoad(self._fmts, max_h, max_k))),
            "r_stream": In(stream.Signature(ResidualLoad(self._fmts, vw))),
            "c_stream": In(cmd_sig),
            "o_stream": Out(stream.Signature(LinearVectorOutput(self._fmts, vw))),
            "counters": Out(LinearVectorCounters(counter_bits)),
            "running": Out(1),
            "v_stream": In(stream.Signature(VectorInputs(self._fmts, self.vu.acc_width, vw))),
            "vo_stream": Out(stream.Signature(VectorOutputs(self._fmts, vw))),
        })

    p = property(lambda self: self._p)
    s = property(lambda self: self._s)
    max_k = property(lambda self: self._max_k)
    max_h = property(lambda self: self._max_h)
    max_tokens = property(lambda self: self._max_tokens)
    word_bits = property(lambda self: self._word_bits)
    fmts = property(lambda self: self._fmts)
    acc_width = property(lambda self: self.engine.acc_width)
    vw = property(lambda self: self._vw)

    @property
    def codec(self) -> "LinearVectorCodec":
        """Payload encoders for this op's streams."""
        return LinearVectorCodec(p=self._p, s=self._s, max_k=self._max_k, max_h=self._max_h,
                                 max_tokens=self._max_tokens, fmts=self._fmts, addr_width=self._addr_width,
                                 vw=self._vw)

    def expected_cycles(self, n: int, k: int, h: int, bits_per_cycle: float, latency: int, **kw):
        """:func:`bebert.golden.linear_vector.expected_cycles` with this op's parameters."""
        return _golden.expected_cycles(n, k, h, self._p, self._s, bits_per_cycle, latency,
                                       word_bits=self._word_bits, pe_latency=self.engine.pe.latency,
                                       stats_cycles=self.vu.stats_cycles, vector_latency=self.vu.latency,
                                       banks=self.vu.banks, vw=self._vw, **kw)

    def elaborate(self, platform):
        m = Module()
        p, g_max, aw = self._p, self._g_max, self.engine.acc_width
        m.submodules.vu = vu = self.vu
        running = Signal()
        if self._shared:    # the owner's engine: its command, raw output and counters through ports
            e_cmd, e_out, e_ctr = self.ec_stream, self.eo_stream, self.e_counters
        else:
            m.submodules.engine = eng = self.engine
            wiring.connect(m, eng.req_stream, wiring.flipped(self.req_stream))
            wiring.connect(m, wiring.flipped(self.rsp_stream), eng.rsp_stream)
            e_cmd, e_out, e_ctr = eng.c_stream, eng.o_stream, eng.counters
            m.d.comb += [   # the activation load only between commands
                eng.x_stream.payload.eq(self.x_stream.payload),
                eng.x_stream.valid.eq(self.x_stream.valid & ~running),
                self.x_stream.ready.eq(eng.x_stream.ready & ~running),
            ]

        cmd = Signal(LinearCommand(self._max_tokens, self._max_k, self._max_h, self._addr_width))
        accept = self.c_stream.valid & self.c_stream.ready
        m.d.comb += [
            self.running.eq(running),
            # loads and commands only between commands
            vu.p_stream.payload.eq(self.p_stream.payload),
            vu.p_stream.valid.eq(self.p_stream.valid & ~running),
            self.p_stream.ready.eq(vu.p_stream.ready & ~running),
            e_cmd.payload.eq(self.c_stream.payload),
            e_cmd.valid.eq(self.c_stream.valid & ~running),
            self.c_stream.ready.eq(e_cmd.ready & ~running),
        ]
        with m.If(accept):
            m.d.sync += [cmd.eq(self.c_stream.payload), running.eq(1)]

        # ---- residual buffer: n*H codes, token major, loaded from address 0
        # (between commands from r_stream; during one, each output code is written back over the residual it
        # was computed from, which the feed read earlier and never reads again: after the command the buffer
        # holds the output, the residual of a next command that is given no r_stream load)
        # (vw memories: code t*H + c in memory c % vw, word (t*H + c) // vw; a load beat and a write-back beat
        # each write all vw)
        vw = self._vw
        lw = vw.bit_length() - 1
        depth_w = self._max_tokens * self._max_h // vw
        r_wrs, r_rds = [], []
        for j in range(vw):
            m.submodules["rbuf" if vw == 1 else f"rbuf{j}"] = rb_ = Memory(
                shape=signed(self._fmts.layernorm.bits), depth=depth_w, init=[])
            r_wrs.append(rb_.write_port())
            r_rds.append(rb_.read_port())
        r_ptr = Signal(range(depth_w))
        wb_ptr = Signal(range(depth_w))
        gave = self.o_stream.valid & self.o_stream.ready
        m.d.comb += self.r_stream.ready.eq(~running)
        r_x = [self.r_stream.payload.x] if vw == 1 else [self.r_stream.payload.x[j] for j in range(vw)]
        for j, r_wr in enumerate(r_wrs):
            m.d.comb += [
                r_wr.addr.eq(Mux(running, wb_ptr, r_ptr)),
                r_wr.data.eq(Mux(running, vu.o_stream.payload.y[j], r_x[j])),
                r_wr.en.eq(Mux(running, gave, self.r_stream.valid)),
            ]
        with m.If(self.r_stream.valid & ~running):
            m.d.sync += r_ptr.eq(Mux(self.r_stream.payload.last, 0, r_ptr + 1))
        with m.If(accept):
            m.d.sync += wb_ptr.eq(0)
        with m.Elif(gave):
            m.d.sync += wb_ptr.eq(wb_ptr + 1)

        # ---- popcount buffer: word t*G_max + g holds group g of token t (P accumulators)
        m.submodules.abuf = abuf = Memory(shape=unsigned(p * aw), depth=self._max_tokens * g_max, init=[])
        a_wr, a_rd = abuf.write_port(), abuf.read_port()
        wr_addr = Signal(range(self._max_tokens * g_max))
        wr_gaddr = Signal(range(g_max + 1))               # group g: word of token 0
        wr_c0 = Signal(bits_for(self._max_h + p))
        wr_t = Signal(range(self._max_tokens))
        rows_done = Signal(range(self._max_tokens + 1))   # tokens whose whole row is in the buffer
        take = e_out.valid
        m.d.comb += [
            e_out.ready.eq(1),
            a_wr.addr.eq(wr_addr), a_wr.data.eq(e_out.payload.acc.as_value()), a_wr.en.eq(take),
        ]
        with m.If(accept):
            m.d.sync += [wr_addr.eq(0), wr_gaddr.eq(0), wr_c0.eq(0), wr_t.eq(0), rows_done.eq(0)]
        with m.Elif(take):
            with m.If(wr_t == cmd.tokens - 1):
                m.d.sync += [wr_t.eq(0), wr_gaddr.eq(wr_gaddr + 1), wr_addr.eq(wr_gaddr + 1), wr_c0.eq(wr_c0 + p)]
            with m.Else():
                m.d.sync += [wr_t.eq(wr_t + 1), wr_addr.eq(wr_addr + g_max)]
            with m.If(wr_c0 + p >= cmd.channels):
                m.d.sync += rows_done.eq(rows_done + 1)

        # ---- feed: token t, channel c -> (acc lane c % P of word t*G_max + c//P, residual t*H + c)
        rd_active = Signal()
        rd_t = Signal(range(self._max_tokens))
        rd_c = Signal(range(self._max_h))
        rd_i = Signal(range(p // vw))                      # beat (vw channels) within the group word
        rd_tbase = Signal(range(self._max_tokens * g_max + g_max))
        rd_addr = Signal(range(self._max_tokens * g_max + g_max))
        rd_raddr = Signal(range(depth_w))
        b_valid = Signal()
        b_lane = Signal(range(p // vw))
        advance = Signal()
        row_in = Signal()
        issue = Signal()
        m.d.comb += [
            row_in.eq(rows_done > rd_t),
            advance.eq(~b_valid | vu.i_stream.ready),
            issue.eq(advance & rd_active & row_in),
            a_rd.addr.eq(rd_addr), a_rd.en.eq(advance),
        ]
        m.d.comb += [r.addr.eq(rd_raddr) for r in r_rds] + [r.en.eq(advance) for r in r_rds]
        lanes = data.ArrayLayout(signed(aw), p)(a_rd.data)
        feed_acc = [Signal(signed(aw), name="feed_acc" if vw == 1 else f"feed_acc{j}") for j in range(vw)]
        with m.Switch(b_lane):
            for i in range(p // vw):
                with m.Case(i):
                    m.d.comb += [feed_acc[j].eq(lanes[i * vw + j]) for j in range(vw)]
        # between commands the vector unit is the direct path's (v_stream -> vo_stream, vw channels a beat)
        dv, dvo = self.v_stream, self.vo_stream
        m.d.comb += [
            vu.i_stream.valid.eq(Mux(running, b_valid, dv.valid)),
            dv.ready.eq(vu.i_stream.ready & ~running),
        ]
        with m.If(running):
            m.d.comb += [vu.i_stream.payload.x[j].eq(r_rds[j].data) for j in range(vw)]
            m.d.comb += [vu.i_stream.payload.acc[j].eq(feed_acc[j]) for j in range(vw)]
        with m.Else():
            m.d.comb += vu.i_stream.payload.eq(dv.payload.as_value())
        with m.If(advance):
            m.d.sync += [b_valid.eq(issue), b_lane.eq(rd_i)]
        with m.If(accept):
            m.d.sync += [rd_active.eq(1), rd_t.eq(0), rd_c.eq(0), rd_i.eq(0), rd_tbase.eq(0), rd_addr.eq(0),
                         rd_raddr.eq(0)]
        with m.Elif(issue):
            m.d.sync += rd_raddr.eq(rd_raddr + 1)
            with m.If(rd_c == cmd.channels - vw):
                m.d.sync += [rd_c.eq(0), rd_i.eq(0), rd_t.eq(rd_t + 1), rd_tbase.eq(rd_tbase + g_max),
                             rd_addr.eq(rd_tbase + g_max)]
                with m.If(rd_t == cmd.tokens - 1):
                    m.d.sync += rd_active.eq(0)
            with m.Elif(rd_i == p // vw - 1):
                m.d.sync += [rd_c.eq(rd_c + vw), rd_i.eq(0), rd_addr.eq(rd_addr + 1)]
            with m.Else():
                m.d.sync += [rd_c.eq(rd_c + vw), rd_i.eq(rd_i + 1)]

        # ---- output: the vector unit's beats, the command's last one flagged
        out_t = Signal(range(self._max_tokens))
        final = vu.o_stream.payload.last & (out_t == cmd.tokens - 1)
        m.d.comb += [
            self.o_stream.valid.eq(vu.o_stream.valid & running),
            dvo.valid.eq(vu.o_stream.valid & ~running),
            dvo.payload.eq(vu.o_stream.payload.as_value()),
            vu.o_stream.ready.eq(Mux(running, self.o_stream.ready, dvo.ready)),
            self.o_stream.payload.y.eq(vu.o_stream.payload.y if vw > 1 else vu.o_stream.payload.y[0]),
            self.o_stream.payload.bit.eq(vu.o_stream.payload.bit),
            self.o_stream.payload.last.eq(vu.o_stream.payload.last),
            self.o_stream.payload.final.eq(final),
        ]
        with m.If(accept):
            m.d.sync += out_t.eq(0)
        with m.Elif(gave & vu.o_stream.payload.last):
            m.d.sync += out_t.eq(out_t + 1)
            with m.If(final):
                m.d.sync += running.eq(0)

        # ---- performance counters
        ctr = self.counters
        m.d.comb += [ctr.busy.eq(e_ctr.busy), ctr.stall_weights.eq(e_ctr.stall_weights),
                     ctr.stall_output.eq(e_ctr.stall_output)]
        own = (ctr.cycles, ctr.vector_beats, ctr.vector_wait, ctr.vector_stalls)
        with m.If(accept):
            m.d.sync += [c.eq(0) for c in own]
        with m.Elif(running):
            m.d.sync += ctr.cycles.eq(ctr.cycles + 1)
            with m.If(vu.i_stream.valid & vu.i_stream.ready):
                m.d.sync += ctr.vector_beats.eq(ctr.vector_beats + 1)
            with m.If(~b_valid & rd_active & ~row_in):
                m.d.sync += ctr.vector_wait.eq(ctr.vector_wait + 1)
            with m.If(b_valid & ~vu.i_stream.ready):
                m.d.sync += ctr.vector_stalls.eq(ctr.vector_stalls + 1)
        return m


# ---- plain-integer encoders for testbenches



class LinearVectorCodec:
    """Payload encoders/decoders of a :class:`LinearVectorOp`'s streams, from its parameters alone."""

    def __init__(self, *, p: int, s: int, max_k: int, max_h: int, max_tokens: int, fmts: VectorFormats,
                 addr_width: int = 24, vw: int = 1):
        self.p, self.s, self.max_k, self.max_h, self.max_tokens, self.fmts = p, s, max_k, max_h, max_tokens, fmts
        self.vw = vw
        self.linear = LinearCodec(p=p, s=s, max_k=max_k, max_n=max_h, max_tokens=max_tokens, addr_width=addr_width)
        self.p_layout = VectorLoad(fmts, max_h, max_k)
        self.r_layout = ResidualLoad(fmts, vw)
        self.o_layout = LinearVectorOutput(fmts, vw)

    def command(self, tokens: int, k: int, h: int, base: int) -> int:
        """A ``c_stream`` payload; ``ValueError`` outside the op's limits."""
        return self.linear.command(tokens, k, h, base)

    def activations(self, beats: list[int]) -> list[int]:
        """``x_stream`` payloads (:func:`bebert.golden.linear.activation_beats`)."""
        return self.linear.activations(beats)

    def params(self, k: int, scale, bias, gamma, beta) -> list[int]:
        """``p_stream`` payloads: one per channel, the last carrying ``k``."""
        h = len(scale)
        if h % self.vw:
            raise ValueError(f"a table of H = {h} channels: H must be a multiple of the {self.vw} channels a beat")
        if not (1 <= h <= self.max_h and 1 <= k <= self.max_k) or not len(bias) == len(gamma) == len(beta) == h:
            raise ValueError(f"a table of H = {h} channels (bias {len(bias)}, gamma {len(gamma)}, beta "
                             f"{len(beta)}) and K = {k} does not fit H <= {self.max_h}, K <= {self.max_k}")
        return [_pack(self.p_layout, addr=i, scale=scale[i], bias=bias[i], gamma=gamma[i], beta=beta[i],
                      k=k if i == h - 1 else 0, last=int(i == h - 1)) for i in range(h)]

    def residuals(self, x) -> list[int]:
        """``r_stream`` payloads of ``x`` ``(n, H)``, token major, ``vw`` codes a beat, the last flagged."""
        flat = [int(v) for row in x for v in row]
        if len(flat) > self.max_tokens * self.max_h:
            raise ValueError(f"{len(flat)} residual codes overflow the buffer of {self.max_tokens * self.max_h}")
        return code_beats(self.r_layout, flat, self.fmts.layernorm.bits, self.vw)

    def output(self, payload: int) -> tuple[int, int, int, int]:
        """``o_stream`` payload -> ``(y, bit, last, final)`` (one channel a beat; see :meth:`channels`)."""
        if self.vw != 1:
            raise ValueError(f"beats carry {self.vw} channels: use channels()")
        return self.channels(payload)[0]

    def channels(self, payload: int) -> list[tuple[int, int, int, int]]:
        """``o_stream`` payload -> ``(y, bit, last, final)`` per channel of the beat (``last`` and ``final`` on
        the beat's last channel only)."""
        return lv_channels(payload, self.o_layout, self.fmts.layernorm.bits, self.vw)

    def counters(self, value: int, width: int = 32) -> dict[str, int]:
        """The ``counters`` port's bits -> a dict."""
        lay = LinearVectorCounters(width)
        return {name: (value >> lay[name].offset) & ((1 << width) - 1) for name in LinearVectorOp.COUNTERS}


def lv_channels(payload: int, layout, yw: int, vw: int) -> list[tuple[int, int, int, int]]:
    """A :class:`LinearVectorOutput` payload (``vw`` channels) -> ``(y, bit, last, final)`` per channel."""
    out = []
    last, final = (payload >> layout["last"].offset) & 1, (payload >> layout["final"].offset) & 1
    for j in range(vw):
        y = (payload >> (layout["y"].offset + j * yw)) & ((1 << yw) - 1)
        y -= (1 << yw) if y >> (yw - 1) else 0
        edge = j == vw - 1
        out.append((y, (payload >> (layout["bit"].offset + j)) & 1, last & edge, final & edge))
    return out
