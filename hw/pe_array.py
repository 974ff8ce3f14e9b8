"""XNOR/AND-popcount processing-element array.

The arithmetic contract is :func:`bebert.golden.pe_array.popcount_dot`; this
block computes it one fold of ``S`` bits per cycle for ``P`` output channels.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ..golden import pe_array as _golden
from ._params import check_positive
from .cells import IMPLS, register_copies
from .popcount import Term, pipeline_stages, popcount_pipeline

__all__ = ["Mode", "PEArrayInput", "PEArray"]


class Mode(enum.Enum, shape=1):
    """Per-bit operation; values shared with :class:`bebert.golden.pe_array.Mode`."""

    XNOR = int(_golden.Mode.XNOR)
    AND = int(_golden.Mode.AND)


class PEArrayInput(data.StructLayout):
    """One fold: ``S`` activation bits, ``P`` rows of ``S`` weight bits.

    Fields
    ------
    a : ``S`` activation bits, bit ``i`` is vector bit ``fold*S + i``.
    w : ``P`` x ``S`` weight bits, ``w[p]`` for output channel ``p``.
    n : number of valid bits in this fold (``0..S``); bits ``i >= n`` of ``a`` and
        of every ``w[p]`` must be 0 (zero padding, as packed words have it).
    mode : :class:`Mode` (XNOR or AND) for this fold.
    last : this fold ends the dot product; its count is emitted.
    shift : (only when ``max_shift > 0``) the fold's count is added shifted left by
        this many bits: bit-plane ``b`` of a multi-bit activation (W1A4) uses ``shift = b``.
    """

    def __init__(self, p: int, s: int, max_shift: int = 0):
        fields = {
            "a": unsigned(s),
            "w": data.ArrayLayout(unsigned(s), p),
            "n": unsigned(bits_for(s)),
            "mode": Mode,
            "last": unsigned(1),
        }
        if max_shift:
            fields["shift"] = unsigned(bits_for(max_shift))
        super().__init__(fields)


def _xnor(a, w):
    return ~(a ^ w)


class PEArray(wiring.Component):
    """``P`` output channels x ``S`` input bits per cycle popcount dot products.

    Each beat on ``i_stream`` is one fold; a beat with ``last`` set ends the dot
    product and emits the ``P`` results on ``o_stream``:

    - XNOR mode: ``y[p] = popcount(~(a ^ w[p]))`` over the valid bits;
    - AND mode: ``y[p] = 2*popcount(a & w[p]) - popcount(w[p])``

    exactly :func:`bebert.golden.pe_array.popcount_dot`. Bits past ``n`` in a
    fold must be zero in ``a`` and ``w``.

    How: every cell computes only ``~(a ^ w)`` (a 2-input function, which rides
    in a full adder of the popcount for free, see :mod:`bebert.hw.popcount`);
    both modes and the padding are a correction shared by all channels, added
    once per fold:
    ``XNOR: n - S`` (zero padding agrees with itself) and
    ``AND: popcount(a) - S``, from ``2(a&w) - w = ~(a^w) + a - 1`` per bit.

    The datapath is a free-running pipeline (no clock enables on the ``P*S``
    wide registers, which keeps the fabric fast); backpressure works by credit:
    a beat is accepted only while the output FIFO is sure to have room for
    every result still in flight. One beat per cycle is sustained while
    ``o_stream`` is ready.

    Parameters
    ----------
    p : int
        Output channels (rows of the weight tile).
    s : int
        Input bits per cycle (fold width).
    max_k : int
        Longest dot product in bits; results are
        ``signed(bits_for(max_k * (2**(max_shift+1) - 1)) + 1)`` and wrap (two's
        complement) beyond that.
    max_shift : int
        Largest per-fold shift (default 0: no shift hardware). ``max_shift = 3``
        gives the bit-serial W1A4 mode: a 4-bit activation is sent as 4 bit-planes
        over the same weights, plane ``b`` with ``shift = b``, and the result is
        ``sum_b 2**b * popcount(~(x_b ^ w))``
        (:func:`bebert.golden.pe_array.bitserial_dot`).
    levels_per_stage : int
        Adder-tree levels between pipeline registers (default 1: a register
        after every level also stops yosys from merging the tree into a
        multi-operand adder that maps to LUTs instead of carry chains).
    impl : str
        ``"behavioral"`` (default; simulation and any FPGA) or ``"ecp5"``
        (the popcount counters as ECP5 ``LUT4`` primitives, for synthesis).

    The activation register is replicated per channel, so each copy drives one
    channel's cells only (the broadcast is what limits Fmax in a wide array).

    Attributes
    ----------
    i_stream : In(stream.Signature(PEArrayInput(p, s)))
    o_stream : Out(stream.Signature(ArrayLayout(signed(acc_width), p)))
    latency : int
        Cycles from an accepted ``last`` beat to its result at the FIFO input.

    Raises
    ------
    TypeError
        If a parameter is not a positive integer.
    """

    def __init__(self, *, p: int, s: int, max_k: int, max_shift: int = 0, levels_per_stage: int = 1,
                 impl: str = "behavioral"):
        if impl not in IMPLS:
            self._MustUse__used = True
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
        self._impl = impl
        self._p = check_positive(self, "P (output channels)", p)
        self._s = check_positive(self, "S (input bits per cycle)", s)
        self._max_k = check_positive(self, "max_k", max_k)
        self._levels_per_stage = check_positive(self, "levels_per_stage", levels_per_stage)
        if not isinstance(max_shift, int) or isinstance(max_shift, bool) or not 0 <= max_shift <= 7:
            self._MustUse__used = True
            raise TypeError(f"max_shift must be an integer from 0 to 7, not {max_shift!r}")
        self._max_shift = max_shift
        self._acc_width = bits_for(max_k * ((2 << max_shift) - 1)) + 1
        # input register, popcount stages, accumulator, FIFO write strobe
        self._latency = 1 + pipeline_stages(s, levels_per_stage) + 2 + (1 if max_shift else 0)
        self._fifo_depth = self._latency + 2
        super().__init__({
            "i_stream": In(stream.Signature(PEArrayInput(p, s, max_shift))),
            "o_stream": Out(stream.Signature(data.ArrayLayout(signed(self._acc_width), p))),
        })

    p = property(lambda self: self._p)
    s = property(lambda self: self._s)
    max_k = property(lambda self: self._max_k)
    max_shift = property(lambda self: self._max_shift)
    acc_width = property(lambda self: self._acc_width)
    latency = property(lambda self: self._latency)

    def elaborate(self, platform):
        m = Module()
        p, s, lps = self._p, self._s, self._levels_per_stage
        ins = self.i_stream

        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(
            width=p * self._acc_width, depth=self._fifo_depth)

        # Credit: results accepted but not yet read out (in the pipe or the FIFO).
        outstanding = Signal(range(self._fifo_depth + 1))
        accept = Signal()
        m.d.comb += [
            ins.ready.eq(outstanding < self._fifo_depth),
            accept.eq(ins.valid & ins.ready),
        ]
        took_last = accept & ins.payload.last
        gave = self.o_stream.valid & self.o_stream.ready
        with m.If(took_last & ~gave):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~took_last & gave):
            m.d.sync += outstanding.eq(outstanding - 1)

        # Input register (free running): operands and the fold's control.
        # One copy of the activation register per channel (and one for popcount(a)):
        # a single copy fanned out to every channel was the critical path (long
        # routes across the array).
        a0 = register_copies(m, ins.payload.a, p + 1, self._impl, "a0")
        w0 = [Signal(s, name=f"w0_{i}") for i in range(p)]
        ctl_fields = {"valid": 1, "last": 1, "and_mode": 1, "n": unsigned(bits_for(s))}
        if self._max_shift:
            ctl_fields["shift"] = unsigned(bits_for(self._max_shift))
        ctl_layout = data.StructLayout(ctl_fields)
        ctl = Signal(ctl_layout)
        m.d.sync += [
            ctl.valid.eq(accept),
            ctl.last.eq(ins.payload.last),
            ctl.and_mode.eq(ins.payload.mode == Mode.AND),
            ctl.n.eq(ins.payload.n),
        ]
        if self._max_shift:
            m.d.sync += ctl.shift.eq(ins.payload.shift)
        for i in range(p):
            m.d.sync += w0[i].eq(ins.payload.w[i])

        # Per-channel XNOR popcounts and the shared popcount(a), same depth.
        sums = []
        for ch in range(p):
            terms = [Term((a0[ch][i], w0[ch][i]), _xnor) for i in range(s)]
            total, stages = popcount_pipeline(m, terms, lps, f"ch{ch}", self._impl)
            sums.append(total)
        pop_a, stages_a = popcount_pipeline(m, [a0[p][i] for i in range(s)], lps, "pop_a", self._impl)
        assert stages == stages_a == pipeline_stages(s, lps)
        for stage in range(stages):
            nxt = Signal(ctl_layout, name=f"ctl_{stage}")
            m.d.sync += nxt.eq(ctl)
            ctl = nxt

        # Shared correction: XNOR n - S, AND popcount(a) - S.
        corr = Signal(signed(bits_for(s) + 1))
        m.d.comb += corr.eq(Mux(ctl.and_mode, pop_a, ctl.n) - s)

        # Bit-plane b of a multi-bit activation weighs 2**b: the shifted count gets its
        # own register stage (mux + shift + add in one cycle missed 125 MHz: 103 MHz).
        if self._max_shift:
            shifted = []
            for ch in range(p):
                r = Signal(signed(bits_for(s) + 2 + self._max_shift), name=f"shifted_{ch}")
                m.d.sync += r.eq((sums[ch] + corr) << ctl.shift)
                shifted.append(r)
            nxt = Signal(ctl_layout, name="ctl_shift")
            m.d.sync += nxt.eq(ctl)
            ctl = nxt

        # Accumulate over folds; a fresh dot product starts from zero.
        fresh = Signal(init=1)
        accs = [Signal(signed(self._acc_width), name=f"acc_{ch}") for ch in range(p)]
        with m.If(ctl.valid):
            m.d.sync += fresh.eq(ctl.last)
            for ch in range(p):
                if self._max_shift:
                    m.d.sync += accs[ch].eq(Mux(fresh, 0, accs[ch]) + shifted[ch])
                else:
                    m.d.sync += accs[ch].eq(Mux(fresh, 0, accs[ch]) + sums[ch] + corr)
        # The FIFO takes the final sums one cycle later, from the accumulators.
        emit = Signal()
        m.d.sync += emit.eq(ctl.valid & ctl.last)
        m.d.comb += [
            out_fifo.w_en.eq(emit),
            out_fifo.w_data.eq(Cat(*accs)),
            self.o_stream.payload.eq(out_fifo.r_data),
            self.o_stream.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.o_stream.ready),
        ]
        return m
