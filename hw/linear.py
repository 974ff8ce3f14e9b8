"""Binary linear-layer engine: weights streamed per channel group, PE array, threshold unit.

The contract is :func:`bebert.golden.linear.linear_sign` (bits) with the layouts of
:mod:`bebert.golden.linear` (weight tiles in memory, activation beats, output beats) and
the cycle model :func:`bebert.golden.linear.expected_cycles`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ..golden import linear as _golden
from ._params import check_positive
from .cells import IMPLS
from .fetch import WeightFetch
from .pe_array import Mode, PEArray
from .threshold import ThresholdEntry, ThresholdLoad, ThresholdUnit

__all__ = ["LinearCommand", "ActivationLoad", "LinearOutput", "LinearRawOutput", "PerfCounters", "LinearEngine",
           "LinearCodec"]


class LinearCommand(data.StructLayout):
    """One layer: ``tokens`` (n, 1..max_tokens), ``k`` (input bits, 1..max_k),
    ``channels`` (N, 1..max_n), ``base`` (word address of the layer's first weight tile); with
    ``raw=True`` (a dual engine's commands) also ``raw`` (1: popcounts out on ``r_stream``)."""

    def __init__(self, max_tokens: int, max_k: int, max_n: int, addr_width: int, raw: bool = False):
        super().__init__({
            "tokens": unsigned(bits_for(max_tokens)),
            "k": unsigned(bits_for(max_k)),
            "channels": unsigned(bits_for(max_n)),
            "base": unsigned(addr_width),
        } | ({"raw": unsigned(1)} if raw else {}))


class ActivationLoad(data.StructLayout):
    """An ``x_stream`` beat: ``data`` (``S`` activation bits); ``last`` ends the load."""

    def __init__(self, s: int):
        super().__init__({"data": unsigned(s), "last": unsigned(1)})


class LinearOutput(data.StructLayout):
    """An ``o_stream`` beat: ``bits`` (``P`` channel bits of one token); ``last``: the command's final beat."""

    def __init__(self, p: int):
        super().__init__({"bits": unsigned(p), "last": unsigned(1)})


class LinearRawOutput(data.StructLayout):
    """An ``o_stream`` beat of a raw-mode engine: ``acc`` (``P`` XNOR popcounts of one token,
    channel ``g*P + i`` in element ``i``, ``signed(acc_width)``, 0 for channels ``>= N``);
    ``last``: the command's final beat."""

    def __init__(self, p: int, acc_width: int):
        super().__init__({"acc": data.ArrayLayout(signed(acc_width), p), "last": unsigned(1)})


class PerfCounters(data.StructLayout):
    """Performance counters of the last command (see :class:`LinearEngine`)."""

    def __init__(self, width: int):
        super().__init__({"cycles": unsigned(width), "busy": unsigned(width),
                          "stall_weights": unsigned(width), "stall_output": unsigned(width)})


class LinearEngine(wiring.Component):
    """One W1A1 binary linear layer and its sign threshold for ``n`` tokens.

    ``out[t, c] = threshold_c(popcount(~(x[t] ^ W[c])))`` for ``t < n``, ``c < N``, exactly
    :func:`bebert.golden.linear.linear_sign`.

    Loop order, channel group major: for each group ``g`` of ``P`` output channels the
    group's ``F = ceil(K/S)`` weight tiles (``P x S`` bits each,
    :func:`bebert.golden.linear.weight_tiles`) are fetched from external memory into one
    bank of a double-buffered group buffer, then every token ``t = 0..n-1`` runs through
    all ``F`` folds (one PE-array beat per fold: ``a`` = fold ``f`` of token ``t`` from the
    activation buffer, ``w`` = tile ``f``). The next group's tiles are fetched into the other
    bank while the current group computes, so a layer takes about
    ``max(G*n*F, weight stream)`` cycles plus pipeline latency
    (:func:`bebert.golden.linear.expected_cycles`, a recurrence that matches the simulated
    count within a few cycles). The fetch unit streams at the memory's full bandwidth only
    while its credit covers the round trip, ``fetch_depth * wpt * iv >= wpt * iv + latency + 6``
    (``wpt`` words per tile, ``iv`` cycles per word): always at 4096-bit tiles, not at the
    tiny tiles of some tests (the model covers both).

    Buffers: activations ``max_tokens * ceil(max_k/S)`` words of ``S`` bits; group weights
    ``2 * ceil(max_k/S)`` words of ``P*S`` bits (two banks); thresholds ``ceil(max_n/P)``
    entries. ``ceil(K/S)`` is found at the start of a command by a loop of ``ceil(K/S)``
    cycles (no divider).

    Ports
    -----
    x_stream : In(:class:`ActivationLoad`)
        Activation buffer load, before the command: ``n*F`` beats of ``S`` bits, token
        major (beat ``t*F + f`` = input bits ``f*S ..`` of token ``t``,
        :func:`bebert.golden.linear.activation_beats`), written from address 0; the beat
        flagged ``last`` resets the write address to 0. Bits past ``K`` are masked by the
        engine. Ready only while no command runs.
    t_stream : In(:class:`bebert.hw.threshold.ThresholdLoad`)
        Threshold table load (the threshold unit's load format; ``addr`` = group, ``last``
        is ignored: ``N`` comes from the command), before the command; ready only while no
        command runs. The engine keeps the table and, before each group, writes that
        group's entry into its threshold unit (a one-group vector; one cycle per group:
        the threshold unit walks a vector's groups in order, the engine needs one group
        for ``n`` tokens in a row).
    c_stream : In(:class:`LinearCommand`)
        Starts a layer; ready only while no command runs.
    req_stream, rsp_stream : the memory port of the internal
        :class:`bebert.hw.fetch.WeightFetch` (word addresses out, words back in request
        order). The layer's weights are ``G*F*wpt`` words from ``base``
        (:func:`bebert.golden.linear.weight_words`); tiles carry zero padding past ``K``
        and ``N`` (the PE array requires zero weight bits past ``K``).
    o_stream : Out(:class:`LinearOutput`)
        ``G*n`` beats, group major: beat ``g*n + t`` = channels ``g*P .. g*P + P - 1`` of
        token ``t``, channel ``g*P + i`` in bit ``i``; channels ``>= N`` are 0; ``last`` on
        the final beat (:func:`bebert.golden.linear.output_beats`).
    counters : Out(:class:`PerfCounters`)
        Cleared when a command is accepted, final once ``running`` falls:
        ``cycles`` (cycles from the command's acceptance to the transfer of its last
        output beat), ``busy`` (PE-array beats issued: ``G*n*F``), ``stall_weights``
        (cycles the PE-array input was empty because the group's weights were not in
        the buffer yet, including the first group's), ``stall_output`` (cycles a beat
        waited at the PE-array input: PE array / threshold / output backpressure).
        ``busy + stall_weights + stall_output <= cycles``.
    running : Out(1)
        A command is in progress.

    Command values outside ``1..max_*`` are not checked by the hardware
    (:meth:`LinearCodec.command` refuses them).

    Raw mode (``raw=True``): no threshold unit and no ``t_stream``; ``o_stream`` carries the
    PE array's popcounts instead of sign bits (:class:`LinearRawOutput`, same beat order,
    :func:`bebert.golden.linear.raw_output_beats`), for a layer whose result goes to the
    vector unit (:class:`bebert.hw.linear_vector.LinearVectorOp`). Counters and loop order
    are the same (no per-group threshold reload).

    Dual mode (``dual=True``): both, one command at a time, so that the encoder layer's four linear
    ops share one PE array, one weight buffer and one fetch unit. A command's ``raw`` bit picks its
    output: 0 sign bits on ``o_stream`` through the threshold unit, 1 popcounts on ``r_stream``
    (:class:`LinearRawOutput`). The two kinds read separate activation buffers: sign commands the one
    ``x_stream`` loads (``ceil(max_k/S)`` words a token), raw commands the one ``xr_stream`` loads
    (``ceil(max_k_raw/S)`` words a token); ``x_stream`` and ``t_stream`` are also ready while a raw
    command runs and ``xr_stream`` while a sign command runs (a layer's next input is loaded while
    the current op computes). Thresholds keep the sign commands' width (:attr:`t_width`, that of
    ``max_k``) and are sign-extended into the threshold unit.

    Parameters
    ----------
    p, s : the PE array's output channels and fold width.
    max_k, max_n, max_tokens : largest ``K``, ``N`` and ``n`` (buffer and table sizes).
    word_bits : external memory word width.
    addr_width : word address width (default 24).
    fetch_depth : tiles of prefetch in the fetch unit (default 2).
    counter_bits : width of each performance counter (default 32).
    impl : ``"behavioral"`` or ``"ecp5"`` (passed to the PE array and fetch unit).
    raw : output popcounts, not threshold bits (default False).
    dual : sign and raw commands (default False; not with ``raw``).
    max_k_raw : largest ``K`` of a raw command of a dual engine (default ``max_k``).

    Raises
    ------
    TypeError
        If a size parameter is not a positive integer.
    ValueError
        If ``max_tokens * ceil(max_k / s)`` does not fit ``counter_bits`` or ``impl`` is unknown.
    """

    def __init__(self, *, p: int, s: int, max_k: int, max_n: int, max_tokens: int, word_bits: int,
                 addr_width: int = 24, fetch_depth: int = 2, counter_bits: int = 32, impl: str = "behavioral",
                 raw: bool = False, dual: bool = False, max_k_raw: int | None = None):
        if raw and dual:
            self._MustUse__used = True
            raise ValueError("an engine is raw or dual, not both")
        if max_k_raw is not None and not dual:
            self._MustUse__used = True
            raise ValueError("max_k_raw is a dual engine's parameter")
        self._dual = bool(dual)
        self._max_k_raw = (check_positive(self, "max_k_raw", max_k_raw) if max_k_raw is not None else max_k) \
            if dual else None
        self._p = check_positive(self, "P (output channels)", p)
        self._s = check_positive(self, "S (input bits per cycle)", s)
        self._max_k = check_positive(self, "max_k", max_k)
        self._max_n = check_positive(self, "max_n", max_n)
        self._max_tokens = check_positive(self, "max_tokens", max_tokens)
        self._word_bits = check_positive(self, "word_bits", word_bits)
        self._addr_width = check_positive(self, "addr_width", addr_width)
        self._fetch_depth = check_positive(self, "fetch_depth", fetch_depth)
        self._counter_bits = check_positive(self, "counter_bits", counter_bits)
        if counter_bits < 8:
            self._MustUse__used = True
            raise ValueError(f"counter_bits must be at least 8, not {counter_bits}")
        if impl not in IMPLS:
            self._MustUse__used = True
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
        self._impl = impl
        self._raw = bool(raw)
        self._k_all = max(max_k, self._max_k_raw) if dual else max_k   # the largest K of any command
        self._f_max = -(-self._k_all // s)
        self._f_sign = -(-max_k // s)
        self._f_raw = -(-self._max_k_raw // s) if dual else 0   # a raw command's folds, at most
        self._g_max = -(-max_n // p)
        # the sub-blocks are built here so that their parameter errors surface at construction
        self.pe = PEArray(p=p, s=s, max_k=self._k_all, impl=impl)
        self._t_width = bits_for(max_k) + 1     # the PE array's acc_width for max_k
        self.thr = None if self._raw else ThresholdUnit(p=p, width=self.pe.acc_width, max_channels=p, word_bits=p)
        self.fetch = WeightFetch(word_bits=word_bits, tile_bits=p * s, addr_width=addr_width,
                                 max_tiles=self._f_max, depth=fetch_depth, impl=impl)
        ports = {"x_stream": In(stream.Signature(ActivationLoad(s)))}
        if self._dual:
            ports["xr_stream"] = In(stream.Signature(ActivationLoad(s)))
        if not self._raw:
            ports["t_stream"] = In(stream.Signature(ThresholdLoad(p, self._t_width, self._g_max)))
        out_layout = LinearRawOutput(p, self.pe.acc_width) if self._raw else LinearOutput(p)
        if self._dual:
            ports["r_stream"] = Out(stream.Signature(LinearRawOutput(p, self.pe.acc_width)))
        super().__init__(ports | {
            "c_stream": In(stream.Signature(LinearCommand(max_tokens, self._k_all, max_n, addr_width, raw=dual))),
            "req_stream": Out(stream.Signature(unsigned(addr_width))),
            "rsp_stream": In(stream.Signature(unsigned(word_bits))),
            "o_stream": Out(stream.Signature(out_layout)),
            "counters": Out(PerfCounters(counter_bits)),
            "running": Out(1),
        })

    p = property(lambda self: self._p)
    s = property(lambda self: self._s)
    max_k = property(lambda self: self._max_k)
    max_n = property(lambda self: self._max_n)
    max_tokens = property(lambda self: self._max_tokens)
    word_bits = property(lambda self: self._word_bits)
    acc_width = property(lambda self: self.pe.acc_width)
    groups = property(lambda self: self._g_max)
    words_per_tile = property(lambda self: self.fetch.words_per_tile)
    raw = property(lambda self: self._raw)
    dual = property(lambda self: self._dual)
    max_k_raw = property(lambda self: self._max_k_raw)
    t_width = property(lambda self: self._t_width)
    counter_bits = property(lambda self: self._counter_bits)

    @property
    def codec(self) -> "LinearCodec":
        """Payload encoders for this engine's streams (:class:`LinearCodec`)."""
        return LinearCodec(p=self._p, s=self._s, max_k=self._k_all, max_n=self._max_n,
                           max_tokens=self._max_tokens, addr_width=self._addr_width, dual=self._dual)

    def expected_cycles(self, n: int, k: int, n_out: int, bits_per_cycle: float, latency: int, **kw):
        """:func:`bebert.golden.linear.expected_cycles` with this engine's parameters."""
        return _golden.expected_cycles(n, k, n_out, self._p, self._s, bits_per_cycle, latency,
                                       word_bits=self._word_bits, pe_latency=self.pe.latency,
                                       fetch_depth=self._fetch_depth, raw=self._raw, **kw)

    def elaborate(self, platform):
        m = Module()
        p, s, f_max = self._p, self._s, self._f_max
        m.submodules.pe = pe = self.pe
        raw, dual = self._raw, self._dual
        if not raw:
            m.submodules.thr = thr = self.thr
        m.submodules.fetch = fetch = self.fetch
        wiring.connect(m, fetch.req_stream, wiring.flipped(self.req_stream))
        wiring.connect(m, wiring.flipped(self.rsp_stream), fetch.rsp_stream)

        # Buffers: activations (S bits x n*F), the double-buffered group weights (P*S bits x 2*F),
        # the threshold table (one entry per group).
        m.submodules.xbuf = xbuf = Memory(shape=unsigned(s), depth=self._max_tokens * self._f_sign, init=[])
        m.submodules.wbuf = wbuf = Memory(shape=unsigned(p * s), depth=2 * f_max, init=[])
        x_wr, x_rd = xbuf.write_port(), xbuf.read_port()
        w_wr, w_rd = wbuf.write_port(), wbuf.read_port()
        if dual:   # the raw commands' activations
            m.submodules.xrbuf = xrbuf = Memory(shape=unsigned(s), depth=self._max_tokens * self._f_raw, init=[])
            xr_wr, xr_rd = xrbuf.write_port(), xrbuf.read_port()
        if not raw:
            entry = ThresholdEntry(p, self._t_width)
            m.submodules.tbuf = tbuf = Memory(shape=entry, depth=self._g_max, init=[])
            t_wr, t_rd = tbuf.write_port(), tbuf.read_port()

        running = Signal()
        setup = Signal()
        m.d.comb += self.running.eq(running)

        cmd = Signal(LinearCommand(self._max_tokens, self._k_all, self._max_n, self._addr_width, raw=dual))
        is_raw = cmd.raw if dual else Const(int(raw), 1)

        # ---- loads (only between commands; a dual engine's sign-side loads also during a raw command and its
        # raw-side load during a sign command)
        sign_free = (~running | is_raw) if dual else ~running
        x_ptr = Signal(range(self._max_tokens * self._f_sign))
        m.d.comb += [
            self.x_stream.ready.eq(sign_free),
            x_wr.addr.eq(x_ptr),
            x_wr.data.eq(self.x_stream.payload.data),
            x_wr.en.eq(self.x_stream.valid & self.x_stream.ready),
        ]
        if dual:
            xr_ptr = Signal(range(self._max_tokens * self._f_raw))
            m.d.comb += [
                self.xr_stream.ready.eq(~running | ~is_raw),
                xr_wr.addr.eq(xr_ptr),
                xr_wr.data.eq(self.xr_stream.payload.data),
                xr_wr.en.eq(self.xr_stream.valid & self.xr_stream.ready),
            ]
            with m.If(xr_wr.en):
                m.d.sync += xr_ptr.eq(Mux(self.xr_stream.payload.last, 0, xr_ptr + 1))
        if not raw:
            m.d.comb += [
                self.t_stream.ready.eq(sign_free),
                t_wr.addr.eq(self.t_stream.payload.addr),
                t_wr.data.t.eq(self.t_stream.payload.t),
                t_wr.data.pol.eq(self.t_stream.payload.pol),
                t_wr.en.eq(self.t_stream.valid & self.t_stream.ready),
            ]
        with m.If(x_wr.en):
            m.d.sync += x_ptr.eq(Mux(self.x_stream.payload.last, 0, x_ptr + 1))

        # ---- command and setup: F = ceil(K/S), the last fold's bits, words per group (no divider:
        # one cycle per fold)
        f_last_idx = Signal(range(f_max))        # F - 1
        k_left = Signal(bits_for(self._k_all))   # during setup: bits from fold f_last_idx on
        rem_mask = Signal(s)                     # valid bits of the last fold
        rem = Signal(range(s + 1))
        wpt = self.fetch.words_per_tile
        wpg = Signal(bits_for(f_max * wpt))      # words per group
        start = Signal()                         # one cycle: setup done, run
        accept = self.c_stream.valid & self.c_stream.ready
        m.d.comb += self.c_stream.ready.eq(~running)
        with m.If(accept):
            m.d.sync += [
                cmd.eq(self.c_stream.payload),
                running.eq(1), setup.eq(1),
                k_left.eq(self.c_stream.payload.k),
                f_last_idx.eq(0), wpg.eq(wpt),
            ]
        with m.If(setup):
            with m.If(k_left > s):
                m.d.sync += [k_left.eq(k_left - s), f_last_idx.eq(f_last_idx + 1), wpg.eq(wpg + wpt)]
            with m.Else():
                m.d.sync += [setup.eq(0), rem.eq(k_left),
                             rem_mask.eq(((Const(1, s + 1) << k_left) - 1)[:s])]
                m.d.comb += start.eq(1)

        last_group_of = lambda c0: c0 + p >= cmd.channels  # noqa: E731

        # ---- fetch commands: one per group (base, F tiles)
        fc_active = Signal()
        fc_c0 = Signal(bits_for(self._max_n + p))
        fc_base = Signal(self._addr_width)
        m.d.comb += [
            fetch.c_stream.valid.eq(fc_active),
            fetch.c_stream.payload.base.eq(fc_base),
            fetch.c_stream.payload.tiles.eq(f_last_idx + 1),
        ]
        with m.If(start):
            m.d.sync += [fc_active.eq(1), fc_c0.eq(0), fc_base.eq(cmd.base)]
        with m.Elif(fetch.c_stream.valid & fetch.c_stream.ready):
            m.d.sync += [fc_c0.eq(fc_c0 + p), fc_base.eq(fc_base + wpg)]
            with m.If(last_group_of(fc_c0)):
                m.d.sync += fc_active.eq(0)

        # ---- weight writer: tiles into bank wb; a group's last tile marks the bank full
        full = Signal(2)
        wb = Signal()
        wf = Signal(range(f_max))
        bank_base = lambda b: Mux(b, f_max, 0)  # noqa: E731
        take_tile = fetch.o_stream.valid & fetch.o_stream.ready
        m.d.comb += [
            fetch.o_stream.ready.eq(~full.bit_select(wb, 1)),
            w_wr.addr.eq(bank_base(wb) + wf),
            w_wr.data.eq(fetch.o_stream.payload.tile),
            w_wr.en.eq(take_tile),
        ]
        set_full = Signal(2)
        clr_full = Signal(2)
        with m.If(take_tile):
            with m.If(fetch.o_stream.payload.last):
                m.d.sync += [wf.eq(0), wb.eq(~wb)]
                m.d.comb += set_full.eq(Mux(wb, 2, 1))
            with m.Else():
                m.d.sync += wf.eq(wf + 1)

        # ---- reader: (group, token, fold) -> one PE-array beat; stage B holds the read data
        rd_active = Signal()
        rb = Signal()
        rg_c0 = Signal(bits_for(self._max_n + p))
        t = Signal(range(self._max_tokens))
        f = Signal(range(f_max))
        x_base = Signal(range(self._max_tokens * f_max + f_max))
        b_valid = Signal()
        b_ctl = Signal(data.StructLayout({"last": 1, "n": range(s + 1), "mask": unsigned(s)}))
        advance = Signal()
        weights_in = Signal()
        issue = Signal()
        f_is_last = f == f_last_idx
        m.d.comb += [
            weights_in.eq(full.bit_select(rb, 1)),
            advance.eq(~b_valid | pe.i_stream.ready),
            issue.eq(advance & rd_active & weights_in),
            x_rd.addr.eq(x_base + f),
            x_rd.en.eq(advance),
            *([xr_rd.addr.eq(x_base + f), xr_rd.en.eq(advance)] if dual else []),
            w_rd.addr.eq(bank_base(rb) + f),
            w_rd.en.eq(advance),
            pe.i_stream.valid.eq(b_valid),
            pe.i_stream.payload.a.eq((Mux(is_raw, xr_rd.data, x_rd.data) if dual else x_rd.data) & b_ctl.mask),
            pe.i_stream.payload.w.eq(w_rd.data),
            pe.i_stream.payload.n.eq(b_ctl.n),
            pe.i_stream.payload.mode.eq(Mode.XNOR),
            pe.i_stream.payload.last.eq(b_ctl.last),
        ]
        with m.If(advance):
            m.d.sync += [
                b_valid.eq(issue),
                b_ctl.last.eq(f_is_last),
                b_ctl.n.eq(Mux(f_is_last, rem, s)),
                b_ctl.mask.eq(Mux(f_is_last, rem_mask, (1 << s) - 1)),
            ]
        with m.If(start):
            m.d.sync += [rd_active.eq(1), rb.eq(0), rg_c0.eq(0), t.eq(0), f.eq(0), x_base.eq(0)]
        with m.Elif(issue):
            with m.If(f_is_last):
                m.d.sync += f.eq(0)
                with m.If(t == cmd.tokens - 1):
                    m.d.sync += [t.eq(0), x_base.eq(0), rb.eq(~rb), rg_c0.eq(rg_c0 + p)]
                    m.d.comb += clr_full.eq(Mux(rb, 2, 1))
                    with m.If(last_group_of(rg_c0)):
                        m.d.sync += rd_active.eq(0)
                with m.Else():
                    m.d.sync += [t.eq(t + 1), x_base.eq(x_base + f_last_idx + 1)]
            with m.Else():
                m.d.sync += f.eq(f + 1)
        with m.If(accept):
            m.d.sync += [full.eq(0), wb.eq(0), wf.eq(0)]
        with m.Else():
            m.d.sync += full.eq((full | set_full) & ~clr_full)

        # a raw command's results go straight out (a raw engine's o_stream, a dual engine's r_stream)
        r_out = self.o_stream if raw else (self.r_stream if dual else None)
        if raw:
            m.d.comb += pe.o_stream.ready.eq(self.o_stream.ready)
        else:
            # ---- threshold side: before each group, its table entry goes into the threshold unit
            # (a one-group vector); then the group's n results pass from the PE array.
            th_state = Signal(2)   # 0 idle, 1 read (first group), 2 write entry, 3 pass
            th_g = Signal(range(self._g_max + 1))    # table address being read
            th_c0 = Signal(bits_for(self._max_n + p))
            th_t = Signal(range(self._max_tokens))
            m.d.comb += [t_rd.addr.eq(th_g), t_rd.en.eq(1)]
            m.d.comb += [
                thr.t_stream.valid.eq(th_state == 2),
                thr.t_stream.payload.addr.eq(0),
                *(thr.t_stream.payload.t[i].eq(t_rd.data.t[i]) for i in range(p)),   # sign-extended
                thr.t_stream.payload.pol.eq(t_rd.data.pol),
                thr.t_stream.payload.last.eq(1),
                thr.i_stream.payload.eq(pe.o_stream.payload),
                thr.i_stream.valid.eq(pe.o_stream.valid & (th_state == 3)),
                pe.o_stream.ready.eq(Mux(is_raw, r_out.ready, thr.i_stream.ready & (th_state == 3)) if dual
                                     else thr.i_stream.ready & (th_state == 3)),
            ]
            with m.If(start):
                m.d.sync += [th_state.eq(Mux(is_raw, 0, 1)), th_g.eq(0), th_c0.eq(0), th_t.eq(0)]
            with m.Elif(th_state == 1):
                m.d.sync += th_state.eq(2)
            with m.Elif(th_state == 2):
                m.d.sync += [th_state.eq(3), th_g.eq(th_g + 1)]
            with m.Elif((th_state == 3) & thr.i_stream.valid & thr.i_stream.ready):
                with m.If(th_t == cmd.tokens - 1):
                    m.d.sync += [th_t.eq(0), th_c0.eq(th_c0 + p)]
                    m.d.sync += th_state.eq(Mux(last_group_of(th_c0), 0, 2))
                with m.Else():
                    m.d.sync += th_t.eq(th_t + 1)

        # ---- output: channels past N masked, the command's last beat flagged
        o_c0 = Signal(bits_for(self._max_n + p))
        o_t = Signal(range(self._max_tokens))
        o_left = Signal(bits_for(self._max_n + p) + 1)
        m.d.comb += o_left.eq(cmd.channels - o_c0)
        o_mask = Cat(*(o_left > i for i in range(p)))
        o_final = (o_t == cmd.tokens - 1) & last_group_of(o_c0)
        m.d.comb += self.o_stream.payload.last.eq(o_final)
        if r_out is not None:
            m.d.comb += [r_out.valid.eq(pe.o_stream.valid & is_raw), r_out.payload.last.eq(o_final)]
            for i in range(p):
                m.d.comb += r_out.payload.acc[i].eq(Mux(o_mask[i], pe.o_stream.payload[i], 0))
        if not raw:
            m.d.comb += [
                self.o_stream.valid.eq(thr.o_stream.valid),
                thr.o_stream.ready.eq(self.o_stream.ready),
                self.o_stream.payload.bits.eq(thr.o_stream.payload.bits[:p] & o_mask),
            ]
        o_take = self.o_stream.valid & self.o_stream.ready
        if dual:
            o_take = o_take | r_out.valid & r_out.ready
        with m.If(start):
            m.d.sync += [o_c0.eq(0), o_t.eq(0)]
        with m.Elif(o_take):
            with m.If(o_t == cmd.tokens - 1):
                m.d.sync += [o_t.eq(0), o_c0.eq(o_c0 + p)]
            with m.Else():
                m.d.sync += o_t.eq(o_t + 1)
            with m.If(o_final):
                m.d.sync += running.eq(0)

        # ---- performance counters
        ctr = self.counters
        with m.If(accept):
            m.d.sync += [ctr.cycles.eq(0), ctr.busy.eq(0), ctr.stall_weights.eq(0), ctr.stall_output.eq(0)]
        with m.Elif(running):
            m.d.sync += ctr.cycles.eq(ctr.cycles + 1)
            with m.If(pe.i_stream.valid & pe.i_stream.ready):
                m.d.sync += ctr.busy.eq(ctr.busy + 1)
            with m.If(b_valid & ~pe.i_stream.ready):
                m.d.sync += ctr.stall_output.eq(ctr.stall_output + 1)
            with m.If(~b_valid & rd_active & ~weights_in):
                m.d.sync += ctr.stall_weights.eq(ctr.stall_weights + 1)
        return m


# ---- plain-integer encoders for testbenches (Amaranth simulator and cocotb alike)

class LinearCodec:
    """Payload encoders/decoders of a :class:`LinearEngine`'s streams, from its parameters alone
    (a cocotb testbench builds one without the component)."""

    def __init__(self, *, p: int, s: int, max_k: int, max_n: int, max_tokens: int, addr_width: int = 24,
                 dual: bool = False):
        self.p, self.s, self.max_k, self.max_n, self.max_tokens = p, s, max_k, max_n, max_tokens
        self.dual = dual
        self.command_layout = LinearCommand(max_tokens, max_k, max_n, addr_width, raw=dual)
        self.x_layout = ActivationLoad(s)
        self.o_layout = LinearOutput(p)

    @staticmethod
    def _field(lay, name, value) -> int:
        width = Shape.cast(lay[name].shape).width
        if not 0 <= int(value) < (1 << width):
            raise ValueError(f"{name}={value} does not fit {width} bits")
        return int(value) << lay[name].offset

    def command(self, tokens: int, k: int, channels: int, base: int, raw: bool = False) -> int:
        """A ``c_stream`` payload (``raw``: a dual engine's raw command); raises ``ValueError`` for values
        outside the engine's limits."""
        if raw and not self.dual:
            raise ValueError("only a dual engine takes raw commands")
        for name, v, hi in (("tokens", tokens, self.max_tokens), ("k", k, self.max_k),
                            ("channels", channels, self.max_n)):
            if not 1 <= v <= hi:
                raise ValueError(f"{name}={v} is outside 1..{hi} of this engine")
        lay, f = self.command_layout, self._field
        word = f(lay, "tokens", tokens) | f(lay, "k", k) | f(lay, "channels", channels) | f(lay, "base", base)
        return word | f(lay, "raw", int(raw)) if self.dual else word

    def activations(self, beats: list[int]) -> list[int]:
        """``x_stream`` payloads for :func:`bebert.golden.linear.activation_beats`, the last one flagged."""
        if len(beats) > self.max_tokens * -(-self.max_k // self.s):
            raise ValueError(f"{len(beats)} activation beats overflow the buffer")
        lay, f = self.x_layout, self._field
        return [f(lay, "data", b) | f(lay, "last", int(i == len(beats) - 1)) for i, b in enumerate(beats)]

    def output(self, payload: int) -> tuple[int, int]:
        """``o_stream`` payload -> ``(bits, last)``."""
        lay = self.o_layout
        return (payload >> lay["bits"].offset) & ((1 << self.p) - 1), (payload >> lay["last"].offset) & 1

    def raw_output(self, payload: int, acc_width: int) -> tuple[list[int], int]:
        """A raw-mode ``o_stream`` payload (:class:`LinearRawOutput`) -> ``([P popcounts], last)``."""
        lay = LinearRawOutput(self.p, acc_width)
        off = lay["acc"].offset
        mask = (1 << acc_width) - 1
        accs = [(payload >> (off + i * acc_width)) & mask for i in range(self.p)]
        accs = [a - (1 << acc_width) if a >> (acc_width - 1) else a for a in accs]
        return accs, (payload >> lay["last"].offset) & 1

    def counters(self, value: int, width: int = 32) -> dict[str, int]:
        """The ``counters`` port's bits -> a dict of the four counters."""
        lay = PerfCounters(width)
        return {name: (value >> lay[name].offset) & ((1 << width) - 1)
                for name in ("cycles", "busy", "stall_weights", "stall_output")}
