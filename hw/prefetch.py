"""Run-ahead word prefetch for a sequential read stream (a layer command's weight image).

The contract is :func:`bebert.golden.fetch.prefetch_reads`: after a command ``(base, count)``, the
consumer's ``i``-th request must be for word ``base + i`` (``i < count``) and its ``i``-th response is
``memory[base + i]``, exactly what the memory itself would answer. The difference is timing: the unit reads
``base, base+1, ..`` from the memory as fast as the memory answers, into a FIFO of ``depth`` words, without
waiting for the consumer's requests, so the memory keeps streaming while the consumer does something else
(a LayerNorm pass, the attention op, the hand-over between ops) and the consumer's later requests are
answered from the FIFO at one word per cycle.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ._params import check_positive

__all__ = ["PrefetchCommand", "WordPrefetch"]


class PrefetchCommand(data.StructLayout):
    """``base``: first word address; ``count``: words of the sequential stream."""

    def __init__(self, addr_width: int, max_count: int):
        super().__init__({"base": unsigned(addr_width), "count": unsigned(bits_for(max_count))})


class WordPrefetch(wiring.Component):
    """Read ``count`` words from ``base`` ahead of a consumer that asks for them in order.

    A command on ``c_stream`` (taken when idle: the previous command's words all delivered) starts the
    reads on ``mem_req``/``mem_rsp``: one per cycle while fewer than ``depth`` words are requested or held
    (each read owns a FIFO slot, so the memory's responses always find room and ``mem_rsp.ready`` is 1)
    and fewer than ``inflight`` reads are unanswered (what a memory controller queues).
    The consumer side (``req_stream``/``rsp_stream``) looks like a memory: requests are always taken, the
    ``i``-th is checked against ``base + i`` (``error`` rises and stays until reset if not, or if a request
    comes beyond ``count`` or without a command), and responses come from the FIFO in order, one per
    request.

    Ports
    -----
    c_stream : In(:class:`PrefetchCommand`)
    req_stream, rsp_stream : the consumer's memory port (addresses in, words out).
    mem_req, mem_rsp : the memory (addresses out, words back in request order, any latency).
    busy : Out(1) -- a command is in progress.
    error : Out(1) -- a request out of sequence (sticky).

    Parameters
    ----------
    word_bits, addr_width : int
    max_count : int -- largest ``count``.
    depth : int -- FIFO words (the run-ahead).
    inflight : int -- reads in flight at most.
    """

    def __init__(self, *, word_bits: int, addr_width: int, max_count: int, depth: int = 1024, inflight: int = 32):
        self.word_bits = check_positive(self, "word_bits", word_bits)
        self.addr_width = check_positive(self, "addr_width", addr_width)
        self.max_count = check_positive(self, "max_count", max_count)
        self.depth = check_positive(self, "depth", depth)
        self.inflight = check_positive(self, "inflight", inflight)
        if depth < 2:
            self._MustUse__used = True
            raise ValueError(f"depth must be at least 2 words, not {depth}")
        super().__init__({
            "c_stream": In(stream.Signature(PrefetchCommand(addr_width, max_count))),
            "req_stream": In(stream.Signature(unsigned(addr_width))),
            "rsp_stream": Out(stream.Signature(unsigned(word_bits))),
            "mem_req": Out(stream.Signature(unsigned(addr_width))),
            "mem_rsp": In(stream.Signature(unsigned(word_bits))),
            "busy": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.q = q = fifo.SyncFIFOBuffered(width=self.word_bits, depth=self.depth)
        cnt_shape = range(self.max_count + 1)
        base = Signal(self.addr_width)
        count = Signal(cnt_shape)
        issued = Signal(cnt_shape)      # reads sent to the memory
        asked = Signal(cnt_shape)       # consumer requests taken
        answered = Signal(cnt_shape)    # consumer responses delivered
        held = Signal(range(self.depth + 1))   # reads in flight or words in the FIFO
        pending = Signal(range(self.inflight + 1))   # reads in flight
        active = Signal()
        m.d.comb += self.busy.eq(active)

        # command
        m.d.comb += self.c_stream.ready.eq(~active)
        with m.If(self.c_stream.valid & self.c_stream.ready):
            m.d.sync += [base.eq(self.c_stream.payload.base), count.eq(self.c_stream.payload.count),
                         issued.eq(0), asked.eq(0), answered.eq(0),
                         active.eq(self.c_stream.payload.count != 0)]

        # reads to the memory
        read = self.mem_req.valid & self.mem_req.ready
        m.d.comb += [self.mem_req.valid.eq(active & (issued < count) & (held < self.depth)
                                           & (pending < self.inflight)),
                     self.mem_req.payload.eq(base + issued)]
        with m.If(read):
            m.d.sync += issued.eq(issued + 1)
        with m.If(read & ~self.mem_rsp.valid):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(self.mem_rsp.valid & ~read):
            m.d.sync += pending.eq(pending - 1)
        m.d.comb += [q.w_data.eq(self.mem_rsp.payload), q.w_en.eq(self.mem_rsp.valid), self.mem_rsp.ready.eq(1)]

        # the consumer: requests checked against the sequence, responses from the FIFO in order
        m.d.comb += self.req_stream.ready.eq(1)
        with m.If(self.req_stream.valid):
            with m.If(~active | (asked >= count) | (self.req_stream.payload != (base + asked)[:self.addr_width])):
                m.d.sync += self.error.eq(1)
            m.d.sync += asked.eq(asked + 1)
        deliver = self.rsp_stream.valid & self.rsp_stream.ready
        m.d.comb += [self.rsp_stream.valid.eq(q.r_rdy & (answered < asked)), self.rsp_stream.payload.eq(q.r_data),
                     q.r_en.eq(deliver)]
        with m.If(deliver):
            m.d.sync += answered.eq(answered + 1)
            with m.If(answered == count - 1):
                m.d.sync += active.eq(0)
        with m.If(read & ~deliver):
            m.d.sync += held.eq(held + 1)
        with m.Elif(deliver & ~read):
            m.d.sync += held.eq(held - 1)
        return m
