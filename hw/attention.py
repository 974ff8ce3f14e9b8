"""Bi-Attention unit: one head's binary scores, attention bits and context signs.

The arithmetic contract is :func:`bebert.golden.attention.bi_attention`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ..golden.threshold import score_threshold
from ._params import check_positive
from .cells import IMPLS, register_copies
from .popcount import Term, pipeline_stages, popcount_pipeline

__all__ = ["AttentionKind", "AttentionInput", "AttentionOutput", "BiAttention"]

#: Values of ``BiAttention(kv_ram=...)``: the ``ram_style`` given to the K/V banks.
KV_RAMS = (None, "block", "distributed")

#: Context trees fed by one copy of the attention-bit register (bounds its fan-out).
A_FANOUT = 8


class AttentionKind(enum.Enum, shape=1):
    """What an ``i_stream`` beat carries."""

    #: key row ``k_j`` and value row ``v_j`` (and the key's mask bit) of the head.
    KV = 0
    #: query row ``q_i``: produces one context row on ``o_stream``.
    Q = 1


class AttentionInput(data.StructLayout):
    """An ``i_stream`` beat of the Bi-Attention unit.

    Fields
    ------
    kind : :class:`AttentionKind`.
    qk : ``d`` bits: the query row (``Q``) or the key row (``KV``); bit ``c`` = channel ``c``.
    v : ``d`` bits: the value row (``KV``; ignored for ``Q``).
    mask : the key's attention-mask bit (``KV``): 1 for a token, 0 for padding.
    last : ``KV``: the last key of the head (the number of ``KV`` beats up to and
        including it is ``n``); ``Q``: the last query, flagged again on its output row.
    """

    def __init__(self, d: int):
        super().__init__({
            "kind": AttentionKind,
            "qk": unsigned(d),
            "v": unsigned(d),
            "mask": unsigned(1),
            "last": unsigned(1),
        })


class AttentionOutput(data.StructLayout):
    """An ``o_stream`` beat: one context row of sign bits (bit ``c`` = ``C_ic >= 0``) and ``last``."""

    def __init__(self, d: int):
        super().__init__({"c": unsigned(d), "last": unsigned(1)})


def _xnor(q, k):
    return ~(q ^ k)


def _and(a, v):
    return a & v


class BiAttention(wiring.Component):
    """Binary attention of one head: ``sign(A . sign(V))`` with ``A_ij = (q_i . k_j > 0) & mask_j``.

    Load a head with ``n`` ``KV`` beats (``1 <= n <= max_len``; the one with
    ``last`` ends it), then send any number of ``Q`` beats; each gives one row on
    ``o_stream``, exactly :func:`bebert.golden.attention.bi_attention`. The next
    head's ``KV`` beats may follow the last ``Q`` beat at once (a ``Q`` beat in the
    middle of a ``KV`` load is a protocol error):

    - score ``y_ij = popcount(~(q_i ^ k_j))`` over ``d`` bits, attention bit
      ``A_ij = y_ij >= d // 2 + 1`` (that is ``2*y - d > 0``, ties give 0) and
      ``mask_j``;
    - context ``C_ic = 2*popcount(A_i & v_c) - popcount(A_i)`` (``v_c`` the value
      column ``c``), output bit ``C_ic >= 0`` (sign(0) = +1).

    Datapath (its own, not the PE array): the keys are processed ``kb`` per cycle
    in *chunks*. For chunk ``f`` of query ``i``, ``kb`` XNOR-popcount trees of ``d``
    bits give the scores of keys ``f*kb .. f*kb + kb - 1``; their attention bits
    go straight into ``d`` AND-popcount trees of ``kb`` bits (one per channel,
    over the same keys' value bits) and one popcount of the ``kb`` attention
    bits; per-channel accumulators sum both over the chunks, and the row's
    sign bits are ``2*sum(popcount(A & v_c)) >= sum(popcount(A))``. Because the
    chunk of attention bits that the scores produce is the chunk the context
    needs, no ``n x n`` attention buffer exists. The PE array could do both
    products (XNOR, then AND with ``A`` as the weights), but it would need that
    buffer and a second pass; here both run in one free-running pipeline.

    Cycles: a head takes ``n`` cycles to load and ``m * ceil(n / kb)`` cycles for
    ``m`` queries (one chunk per cycle, back to back while ``o_stream`` is
    ready), plus ``latency`` to drain. The trees use the PE array's full-adder
    counters (:mod:`bebert.hw.popcount`), with ``2 * kb * d`` product cells.

    K and V are held in ``kb`` banks (key ``j`` in bank ``j % kb``, row ``j // kb``),
    so a chunk is one read of every bank. A ``KV`` beat is taken only when no
    query is in progress and the pipeline has read its last value row, so a new
    head loads as soon as the previous head's queries have been issued. The
    mask bit lets padded keys be sent (``mask = 0``) or left out (a shorter
    ``n``); both give the same context.

    Backpressure is by credit, as in the PE array: a ``Q`` beat is taken only
    while the output FIFO is sure to have room for every row in flight.
    ``i_stream.ready`` depends on ``kind`` (a ``Q`` beat and a ``KV`` beat wait
    for different things), combinationally.

    Parameters
    ----------
    d : int
        Head size (bits per query, key, value and context row).
    max_len : int
        Longest sequence ``n`` (keys held); more ``KV`` beats in one head is a
        protocol error (the result is undefined; ``sim.attention_jobs.encode_beats``
        refuses such a head).
    kb : int
        Keys per cycle (chunk width).
    levels_per_stage : int
        Adder-tree levels between pipeline registers (as in the PE array).
    impl : str
        ``"behavioral"`` or ``"ecp5"`` (counters as ``LUT4`` primitives and the
        replicated query and attention registers as ``TRELLIS_FF``, for synthesis).
    kv_ram : str or None
        Where synthesis puts the K/V banks: ``"block"`` (EBR), ``"distributed"``
        (LUT RAM), or None (the tool's choice); the ``ram_style`` attribute. The
        banks must deliver ``kb * (2d + 1)`` bits per cycle: in LUT RAM that costs
        LUTs for the read bandwidth whatever the depth; in EBR, about
        ``kb * (2d + 1) / 36`` blocks.

    Attributes
    ----------
    i_stream : In(stream.Signature(AttentionInput(d)))
    o_stream : Out(stream.Signature(AttentionOutput(d)))
    latency : int
        Cycles from issuing a query's last chunk to its row at the FIFO input.

    Raises
    ------
    TypeError
        If a parameter is not a positive integer.
    ValueError
        For an unknown ``impl`` or ``kv_ram``.
    """

    def __init__(self, *, d: int, max_len: int, kb: int, levels_per_stage: int = 1, impl: str = "behavioral",
                 kv_ram: str | None = None):
        if impl not in IMPLS:
            self._MustUse__used = True
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
        if kv_ram not in KV_RAMS:
            self._MustUse__used = True
            raise ValueError(f"kv_ram must be one of {KV_RAMS}, not {kv_ram!r}")
        self._impl = impl
        self._kv_ram = kv_ram
        self._d = check_positive(self, "d (head size)", d)
        self._max_len = check_positive(self, "max_len", max_len)
        self._kb = check_positive(self, "kb (keys per cycle)", kb)
        self._lps = check_positive(self, "levels_per_stage", levels_per_stage)
        self._rows = -(-max_len // kb)
        self._score_stages = pipeline_stages(d, levels_per_stage)
        self._ctx_stages = pipeline_stages(kb, levels_per_stage)
        # K read, score trees, attention bits (+ V read), context trees, accumulate, FIFO write
        self._latency = 1 + self._score_stages + 1 + self._ctx_stages + 1 + 1
        self._fifo_depth = self._latency + 2
        super().__init__({
            "i_stream": In(stream.Signature(AttentionInput(d))),
            "o_stream": Out(stream.Signature(AttentionOutput(d))),
        })

    d = property(lambda self: self._d)
    max_len = property(lambda self: self._max_len)
    kb = property(lambda self: self._kb)
    latency = property(lambda self: self._latency)

    def cycles_per_head(self, n: int, m: int | None = None) -> int:
        """Cycles for one head: ``n`` loads plus ``m`` (default ``n``) queries of ``ceil(n / kb)`` chunks."""
        m = n if m is None else m
        return n + m * -(-n // self._kb)

    def elaborate(self, platform):
        m = Module()
        d, kb, rows, impl, lps = self._d, self._kb, self._rows, self._impl, self._lps
        ins = self.i_stream

        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(width=d + 1, depth=self._fifo_depth)

        # K (with the mask bit) and V banks: key j in bank j % kb, row j // kb.
        k_wr, k_rd, v_wr, v_rd = [], [], [], []
        attrs = {"ram_style": self._kv_ram} if self._kv_ram else {}
        for lane in range(kb):
            km = Memory(shape=d + 1, depth=rows, init=[], attrs=attrs)
            vm = Memory(shape=d, depth=rows, init=[], attrs=attrs)
            m.submodules[f"k_bank{lane}"] = km
            m.submodules[f"v_bank{lane}"] = vm
            k_wr.append(km.write_port())
            k_rd.append(km.read_port())
            v_wr.append(vm.write_port())
            v_rd.append(vm.read_port())

        # Head registers, set by the KV beat flagged last.
        last_row = Signal(range(rows))        # chunk index of the last chunk, ceil(n / kb) - 1
        last_lane = Signal(range(kb))         # lane of key n - 1 within it
        tail_mask = Signal(kb)                # lanes of the last chunk holding keys (j < n)
        m.d.comb += tail_mask.eq(Cat(last_lane >= x for x in range(kb)))
        # Before the first head is loaded these give one chunk whose keys all read
        # mask 0 (the banks power up zero): a query then gets all ones, as for n keys
        # all padding.

        # Query iterator: one chunk per cycle while busy.
        busy = Signal()
        q_reg = Signal(d)
        q_last = Signal()
        chunk = Signal(range(rows))
        last_chunk = Signal()
        m.d.comb += last_chunk.eq(chunk == last_row)

        ctl_layout = data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "row_last": 1, "chunk": range(rows), "keep": kb})
        ctls = []  # the control word of every stage, for the pending-read check

        # Credit: queries accepted but whose row is not yet read out.
        outstanding = Signal(range(self._fifo_depth + 1))
        is_q = Signal()
        q_ready = Signal()
        kv_ready = Signal()
        accept_q = Signal()
        accept_kv = Signal()
        reads_pending = Signal()
        m.d.comb += [
            is_q.eq(ins.payload.kind == AttentionKind.Q),
            q_ready.eq((outstanding < self._fifo_depth) & (~busy | last_chunk)),
            kv_ready.eq(~busy & ~reads_pending),
            ins.ready.eq(Mux(is_q, q_ready, kv_ready)),
            accept_q.eq(ins.valid & ins.ready & is_q),
            accept_kv.eq(ins.valid & ins.ready & ~is_q),
        ]
        gave = self.o_stream.valid & self.o_stream.ready
        with m.If(accept_q & ~gave):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~accept_q & gave):
            m.d.sync += outstanding.eq(outstanding - 1)

        # KV loads: write one bank per beat.
        w_lane = Signal(range(kb))
        w_row = Signal(range(rows))
        for lane in range(kb):
            m.d.comb += [
                k_wr[lane].addr.eq(w_row),
                k_wr[lane].data.eq(Cat(ins.payload.qk, ins.payload.mask)),
                k_wr[lane].en.eq(accept_kv & (w_lane == lane)),
                v_wr[lane].addr.eq(w_row),
                v_wr[lane].data.eq(ins.payload.v),
                v_wr[lane].en.eq(accept_kv & (w_lane == lane)),
            ]
        with m.If(accept_kv):
            with m.If(ins.payload.last):
                m.d.sync += [last_row.eq(w_row), last_lane.eq(w_lane), w_lane.eq(0), w_row.eq(0)]
            with m.Elif(w_lane == kb - 1):
                m.d.sync += [w_lane.eq(0), w_row.eq(w_row + 1)]
            with m.Else():
                m.d.sync += w_lane.eq(w_lane + 1)

        with m.If(accept_q):
            m.d.sync += [busy.eq(1), q_reg.eq(ins.payload.qk), q_last.eq(ins.payload.last), chunk.eq(0)]
        with m.Elif(busy & last_chunk):
            m.d.sync += busy.eq(0)
        with m.Elif(busy):
            m.d.sync += chunk.eq(chunk + 1)

        # Stage 0 (issue): read chunk `chunk` of every K bank.
        ctl = Signal(ctl_layout, name="ctl_issue")
        m.d.comb += [
            ctl.valid.eq(busy),
            ctl.first.eq(chunk == 0),
            ctl.last.eq(last_chunk),
            ctl.row_last.eq(q_last),
            ctl.chunk.eq(chunk),
            ctl.keep.eq(Mux(last_chunk, tail_mask, (1 << kb) - 1)),
        ]
        for lane in range(kb):
            m.d.comb += [k_rd[lane].addr.eq(chunk), k_rd[lane].en.eq(1)]
        q1 = register_copies(m, q_reg, kb, impl, "q1")  # one copy per score tree
        ctl1 = Signal(ctl_layout, name="ctl_k")
        m.d.sync += ctl1.eq(ctl)
        ctls.append(ctl1)

        # Stage 1..: scores; a padding key (mask 0) or a lane past n is dropped.
        keep = Signal(kb)
        m.d.comb += keep.eq(ctl1.keep & Cat(k_rd[lane].data[d] for lane in range(kb)))
        scores = []
        for lane in range(kb):
            terms = [Term((q1[lane][b], k_rd[lane].data[b]), _xnor) for b in range(d)]
            total, stages = popcount_pipeline(m, terms, lps, f"score{lane}", impl)
            scores.append(total)
        assert stages == self._score_stages
        ctl = Signal(ctl_layout, name="ctl_s0")
        m.d.comb += [ctl.eq(ctl1), ctl.keep.eq(keep)]
        for stage in range(stages):
            nxt = Signal(ctl_layout, name=f"ctl_s{stage + 1}")
            m.d.sync += nxt.eq(ctl)
            ctl = nxt
            ctls.append(ctl)

        # Attention bits (registered, in copies), and the V read of the same chunk.
        thr = score_threshold(d)
        a_bits = Signal(kb)
        m.d.comb += a_bits.eq(Cat((scores[lane] >= thr) & ctl.keep[lane] for lane in range(kb)))
        n_copies = -(-d // A_FANOUT) + 1
        a_reg = register_copies(m, a_bits, n_copies, impl, "attn")
        for lane in range(kb):
            m.d.comb += [v_rd[lane].addr.eq(ctl.chunk), v_rd[lane].en.eq(1)]
        ctl_a = Signal(ctl_layout, name="ctl_a")
        m.d.sync += ctl_a.eq(ctl)
        m.d.comb += reads_pending.eq(Cat(c.valid for c in ctls).any())

        # Context trees: popcount(A & v_c) per channel, popcount(A) once.
        ctx = []
        for c in range(d):
            a_copy = a_reg[c // A_FANOUT]
            terms = [Term((a_copy[lane], v_rd[lane].data[c]), _and) for lane in range(kb)]
            total, stages = popcount_pipeline(m, terms, lps, f"ctx{c}", impl)
            ctx.append(total)
        pop_a, stages_a = popcount_pipeline(m, [a_reg[-1][lane] for lane in range(kb)], lps, "pop_a", impl)
        assert stages == stages_a == self._ctx_stages
        ctl = ctl_a
        for stage in range(stages):
            nxt = Signal(ctl_layout, name=f"ctl_c{stage + 1}")
            m.d.sync += nxt.eq(ctl)
            ctl = nxt

        # Accumulate over the chunks of a query; its first chunk starts from zero.
        acc_w = bits_for(rows * kb)
        accs = [Signal(acc_w, name=f"acc{c}") for c in range(d)]
        acc_a = Signal(acc_w)
        with m.If(ctl.valid):
            for c in range(d):
                m.d.sync += accs[c].eq(Mux(ctl.first, 0, accs[c]) + ctx[c])
            m.d.sync += acc_a.eq(Mux(ctl.first, 0, acc_a) + pop_a)
        # One cycle later the row goes out: C = 2*acc - acc_a, sign bit C >= 0.
        emit = Signal()
        emit_last = Signal()
        m.d.sync += [emit.eq(ctl.valid & ctl.last), emit_last.eq(ctl.row_last)]
        row = Cat(*((accs[c] << 1) >= acc_a for c in range(d)))
        m.d.comb += [
            out_fifo.w_en.eq(emit),
            out_fifo.w_data.eq(Cat(row, emit_last)),
            self.o_stream.payload.eq(out_fifo.r_data),
            self.o_stream.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.o_stream.ready),
        ]
        return m
