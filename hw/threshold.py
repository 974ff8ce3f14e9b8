"""Threshold/sign unit: per-channel integer thresholds, output bits packed into words.

The arithmetic contract is :func:`bebert.golden.threshold.threshold_words`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ._params import check_positive

__all__ = ["ThresholdEntry", "ThresholdLoad", "ThresholdOutput", "ThresholdUnit"]


class ThresholdEntry(data.StructLayout):
    """One group of ``P`` channels of the threshold table (one memory word).

    Fields
    ------
    t : ``P`` thresholds, ``signed(width)``.
    pol : ``P`` polarity bits; bit ``i`` for channel ``i`` of the group.
    """

    def __init__(self, p: int, width: int):
        super().__init__({"t": data.ArrayLayout(signed(width), p), "pol": unsigned(p)})


class ThresholdLoad(data.StructLayout):
    """A ``t_stream`` beat: write one group of the threshold table.

    Fields
    ------
    addr : group index ``g`` (channels ``g*P .. g*P + P - 1``).
    t, pol : the group's thresholds and polarities (:class:`ThresholdEntry`).
    last : group ``addr`` is the last group of a vector (sets the vector length
        in groups to ``addr + 1``, and restarts the unit at group 0).
    """

    def __init__(self, p: int, width: int, groups: int):
        super().__init__({
            "addr": unsigned(bits_for(groups - 1)),
            "t": data.ArrayLayout(signed(width), p),
            "pol": unsigned(p),
            "last": unsigned(1),
        })


class ThresholdOutput(data.StructLayout):
    """An ``o_stream`` beat: ``word_bits`` output bits and the end-of-vector flag.

    Fields
    ------
    bits : bit ``b`` is vector bit ``w*word_bits + b`` of the ``w``-th word of a vector.
    last : the last word of the vector.
    """

    def __init__(self, word_bits: int):
        super().__init__({"bits": unsigned(word_bits), "last": unsigned(1)})


class ThresholdUnit(wiring.Component):
    """Per-channel threshold and polarity on ``P`` accumulators per cycle; bits packed into words.

    Each ``i_stream`` beat carries ``P`` signed accumulators (exactly the PE
    array's ``o_stream`` payload, so the two connect directly); beat ``g`` of a
    vector holds channels ``g*P .. g*P + P - 1``. Channel ``c`` gives

        ``bit_c = (y_c >= T_c)`` if ``pol_c == 1`` else ``(y_c < T_c)``

    exactly :func:`bebert.golden.threshold.threshold_bits` (``docs/arithmetic.md``
    section 4; :func:`bebert.golden.fold.fold_sign_threshold` gives ``(T, pol)`` of a
    layer). ``(T, pol) = (min, 0)`` (``min = -2**(width-1)``) gives a constant 0 and
    ``(min, 1)`` a constant 1: that is how padding channels,
    masked attention keys and the channels past the end of a vector are written
    (:func:`bebert.golden.threshold.attention_table` builds the table for the
    attention bool rule ``score > 0`` with a padding mask).

    Packing: vector bit ``k`` is bit ``k % word_bits`` of output word
    ``k // word_bits`` (for ``word_bits = 64``, :func:`bebert.golden.pe_array.pack_bits`);
    a vector of ``G`` groups gives ``ceil(G*P / word_bits)`` words, the last one
    flagged ``last`` and zero past the vector's bits.

    Threshold table: a memory of ``ceil(max_channels / P)`` groups, written one
    group per beat through ``t_stream`` (:class:`ThresholdLoad`, always ready).
    The load flagged ``last`` sets the vector length (``addr + 1`` groups) and
    restarts at group 0. A data beat is never taken in a cycle with a load
    offered (``i_stream.ready`` is low while ``t_stream.valid`` is high), so a beat
    sees every load accepted before it. Load a table while no vector is half
    done (between vectors); the same table then serves any number of vectors.

    Like the PE array the datapath is free running (no enables on the wide
    registers) and backpressure works by credit: a beat is taken only while the
    output FIFO is sure to have room for every word still in flight. One beat per
    cycle is sustained while ``o_stream`` is ready.

    Parameters
    ----------
    p : int
        Channels per beat (the PE array's ``P``); must divide ``word_bits``.
    width : int
        Accumulator and threshold width (``signed(width)``; the PE array's ``acc_width``).
    max_channels : int
        Longest vector in channels (table depth ``ceil(max_channels / p)`` groups).
    word_bits : int
        Output word width (default 64, the golden packing).

    Attributes
    ----------
    t_stream : In(stream.Signature(ThresholdLoad(p, width, groups)))
    i_stream : In(stream.Signature(ArrayLayout(signed(width), p)))
    o_stream : Out(stream.Signature(ThresholdOutput(word_bits)))
    latency : int
        Cycles from an accepted beat to its word at the FIFO input.

    Raises
    ------
    TypeError
        If a parameter is not a positive integer.
    ValueError
        If ``p`` does not divide ``word_bits`` or ``width < 2``.
    """

    def __init__(self, *, p: int, width: int, max_channels: int, word_bits: int = 64):
        self._p = check_positive(self, "P (channels per beat)", p)
        self._width = check_positive(self, "width", width)
        self._max_channels = check_positive(self, "max_channels", max_channels)
        self._word_bits = check_positive(self, "word_bits", word_bits)
        if word_bits % p or width < 2:
            self._MustUse__used = True
            raise ValueError(f"P ({p}) must divide word_bits ({word_bits}) and width ({width}) must be >= 2")
        self._groups = -(-max_channels // p)
        # accept -> read address; memory data register; compare register; FIFO write
        self._latency = 3
        self._fifo_depth = self._latency + 3
        super().__init__({
            "t_stream": In(stream.Signature(ThresholdLoad(p, width, self._groups))),
            "i_stream": In(stream.Signature(data.ArrayLayout(signed(width), p))),
            "o_stream": Out(stream.Signature(ThresholdOutput(word_bits))),
        })

    p = property(lambda self: self._p)
    width = property(lambda self: self._width)
    max_channels = property(lambda self: self._max_channels)
    word_bits = property(lambda self: self._word_bits)
    groups = property(lambda self: self._groups)
    latency = property(lambda self: self._latency)

    def elaborate(self, platform):
        m = Module()
        p, width, slots = self._p, self._width, self._word_bits // self._p
        ins, load = self.i_stream, self.t_stream

        m.submodules.table = table = Memory(shape=ThresholdEntry(p, width), depth=self._groups, init=[])
        wr = table.write_port()
        rd = table.read_port()
        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(
            width=self._word_bits + 1, depth=self._fifo_depth)

        # Loads: always ready; the last one sets the vector length and restarts.
        end = Signal(range(self._groups))      # group index of a vector's last group
        group = Signal(range(self._groups))    # group of the next data beat
        slot = Signal(range(slots))            # its P-bit slot in the output word
        m.d.comb += [
            load.ready.eq(1),
            wr.addr.eq(load.payload.addr),
            wr.data.t.eq(load.payload.t),
            wr.data.pol.eq(load.payload.pol),
            wr.en.eq(load.valid),
        ]

        # Credit: words that accepted beats will write, plus words in the FIFO.
        outstanding = Signal(range(self._fifo_depth + 1))
        accept = Signal()
        vec_last = Signal()
        emit = Signal()
        m.d.comb += [
            ins.ready.eq((outstanding < self._fifo_depth) & ~load.valid),
            accept.eq(ins.valid & ins.ready),
            vec_last.eq(group == end),
            emit.eq(vec_last | (slot == slots - 1)),
        ]
        took = accept & emit
        gave = self.o_stream.valid & self.o_stream.ready
        with m.If(took & ~gave):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~took & gave):
            m.d.sync += outstanding.eq(outstanding - 1)

        with m.If(load.valid & load.payload.last):
            m.d.sync += [end.eq(load.payload.addr), group.eq(0), slot.eq(0)]
        with m.Elif(accept):
            m.d.sync += [
                group.eq(Mux(vec_last, 0, group + 1)),
                slot.eq(Mux(emit, 0, slot + 1)),
            ]

        ctl_layout = data.StructLayout({"valid": 1, "emit": 1, "last": 1, "slot": range(slots)})
        # Stage 0 -> 1: the table read (address = group) and the input register.
        m.d.comb += [rd.addr.eq(group), rd.en.eq(1)]
        y0 = Signal(data.ArrayLayout(signed(width), p))
        ctl0 = Signal(ctl_layout)
        m.d.sync += [
            y0.eq(ins.payload),
            ctl0.valid.eq(accept),
            ctl0.emit.eq(emit),
            ctl0.last.eq(vec_last),
            ctl0.slot.eq(slot),
        ]
        # Stage 1: register the table word beside the data (keeps the memory's
        # clock-to-out out of the compare's carry chain).
        y1 = Signal.like(y0)
        t1 = Signal(ThresholdEntry(p, width))
        ctl1 = Signal(ctl_layout)
        m.d.sync += [y1.eq(y0), t1.eq(rd.data), ctl1.eq(ctl0)]
        # Stage 2: compare; bit = (y >= T) XNOR pol.
        bits2 = Signal(p)
        ctl2 = Signal(ctl_layout)
        m.d.sync += ctl2.eq(ctl1)
        for i in range(p):
            m.d.sync += bits2[i].eq((y1[i] >= t1.t[i]) == t1.pol[i])

        # Stage 3: place the P bits in their slot; a full word (or a vector's end) goes out.
        word = Signal(self._word_bits)
        full = Cat(*(Mux(ctl2.slot == k, bits2, word[k * p:(k + 1) * p]) for k in range(slots)))
        with m.If(ctl2.valid):
            with m.If(ctl2.emit):
                m.d.sync += word.eq(0)
            with m.Else():
                m.d.sync += word.eq(full)
        m.d.comb += [
            out_fifo.w_en.eq(ctl2.valid & ctl2.emit),
            out_fifo.w_data.eq(Cat(full, ctl2.last)),
            self.o_stream.payload.eq(out_fifo.r_data),
            self.o_stream.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.o_stream.ready),
        ]
        return m
