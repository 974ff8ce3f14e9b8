"""Weight and embedding fetch: tiles of packed bits from external memory, prefetched.

The contract is :func:`bebert.golden.fetch.fetch_tiles`: a command ``(base, tiles)``
produces ``tiles`` consecutive tiles of ``tile_bits`` bits each, tile ``t`` made of
memory words ``base + t*wpt .. base + (t+1)*wpt - 1`` (``wpt = ceil(tile_bits /
word_bits)``), word ``i`` of a tile in bits ``i*word_bits ..`` of the tile (the
packing order of ``docs/arithmetic.md`` section 1 when the words are the file's
``uint64`` words or slices of them). Extra bits of the last word are dropped.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ._params import check_positive
from .cells import IMPLS, lut_cell, register_copies

__all__ = ["FetchCommand", "TileOut", "WeightFetch"]


class FetchCommand(data.StructLayout):
    """``base``: first word address; ``tiles``: number of tiles to fetch (1 or more)."""

    def __init__(self, addr_width: int, max_tiles: int):
        super().__init__({"base": unsigned(addr_width), "tiles": unsigned(bits_for(max_tiles))})


class TileOut(data.StructLayout):
    """``tile``: ``tile_bits`` bits; ``last``: the command's final tile."""

    def __init__(self, tile_bits: int):
        super().__init__({"tile": unsigned(tile_bits), "last": unsigned(1)})


class WeightFetch(wiring.Component):
    """Fetch tiles of packed weights from a word-addressed memory, ahead of their use.

    Requests (one word address per beat on ``req_stream``) run ahead of the
    consumer by up to ``depth`` tiles: the unit holds a credit of
    ``depth * wpt`` word slots, spends one per request and gets a tile's worth
    back when a tile leaves on ``o_stream``. Responses (``rsp_stream``, in request
    order, any latency) therefore always find room, so ``rsp_stream.ready`` is
    constant 1, and with ``depth >= 2`` the memory streams the next tiles while
    the consumer works on the current one (double buffering). Commands queue in a
    small FIFO; the next command's requests start as soon as the previous
    command's requests are issued.

    Parameters
    ----------
    word_bits : int
        Memory word width (bits per response beat).
    tile_bits : int
        Bits per output tile (e.g. ``P*S`` for the PE array's weight port).
    addr_width : int
        Word address width.
    max_tiles : int
        Largest ``tiles`` of one command.
    depth : int
        Tiles of buffering after the assembly register (default 2: double buffering; 1 is
        correct but the memory waits for the consumer).
    cmd_depth : int
        Commands queued.
    chunk_bits : int
        Bits per copy of a wide register's enable (fan-out of each copy).
    impl : str
        ``"behavioral"`` or ``"ecp5"`` (enable copies as kept primitives; see
        :mod:`bebert.hw.cells`).

    Raises
    ------
    TypeError
        If a parameter is not a positive integer.
    ValueError
        If ``impl`` is unknown.
    """

    def __init__(self, *, word_bits: int, tile_bits: int, addr_width: int = 24, max_tiles: int = 4096,
                 depth: int = 2, cmd_depth: int = 4, chunk_bits: int = 64, impl: str = "behavioral"):
        self._word_bits = check_positive(self, "word_bits", word_bits)
        self._tile_bits = check_positive(self, "tile_bits", tile_bits)
        self._addr_width = check_positive(self, "addr_width", addr_width)
        self._max_tiles = check_positive(self, "max_tiles", max_tiles)
        self._depth = check_positive(self, "depth", depth)
        self._cmd_depth = check_positive(self, "cmd_depth", cmd_depth)
        self._chunk_bits = check_positive(self, "chunk_bits", chunk_bits)
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
        self._impl = impl
        self._wpt = -(-tile_bits // word_bits)
        super().__init__({
            "c_stream": In(stream.Signature(FetchCommand(addr_width, max_tiles))),
            "req_stream": Out(stream.Signature(unsigned(addr_width))),
            "rsp_stream": In(stream.Signature(unsigned(word_bits))),
            "o_stream": Out(stream.Signature(TileOut(tile_bits))),
        })

    words_per_tile = property(lambda self: self._wpt)
    depth = property(lambda self: self._depth)

    def elaborate(self, platform):
        m = Module()
        wpt, depth = self._wpt, self._depth

        # Commands: one queue for the request side, one (tile counts) for the assembly side.
        m.submodules.cmd_req = cmd_req = fifo.SyncFIFOBuffered(width=len(self.c_stream.payload.as_value()),
                                                               depth=self._cmd_depth)
        m.submodules.cmd_asm = cmd_asm = fifo.SyncFIFOBuffered(width=bits_for(self._max_tiles),
                                                               depth=self._cmd_depth + depth + 2)
        m.d.comb += [
            self.c_stream.ready.eq(cmd_req.w_rdy & cmd_asm.w_rdy),
            cmd_req.w_en.eq(self.c_stream.valid & self.c_stream.ready),
            cmd_req.w_data.eq(self.c_stream.payload.as_value()),
            # a command of zero tiles produces nothing, so the assembly side never sees it
            cmd_asm.w_en.eq(self.c_stream.valid & self.c_stream.ready & (self.c_stream.payload.tiles != 0)),
            cmd_asm.w_data.eq(self.c_stream.payload.tiles),
        ]

        # Request side.
        credit = Signal(range(depth * wpt + 1), init=depth * wpt)
        addr = Signal(self._addr_width)
        words_left = Signal(bits_for(self._max_tiles * wpt))
        active = Signal()
        cmd = Signal(FetchCommand(self._addr_width, self._max_tiles))
        m.d.comb += cmd.eq(cmd_req.r_data)
        req_fire = self.req_stream.valid & self.req_stream.ready
        m.d.comb += [
            self.req_stream.valid.eq(active & (credit != 0)),
            self.req_stream.payload.eq(addr),
            cmd_req.r_en.eq(~active),
        ]
        with m.If(~active & cmd_req.r_rdy):
            m.d.sync += [
                active.eq(cmd.tiles != 0),
                addr.eq(cmd.base),
                words_left.eq(cmd.tiles * wpt),
            ]
        with m.If(req_fire):
            m.d.sync += [addr.eq(addr + 1), words_left.eq(words_left - 1)]
            with m.If(words_left == 1):
                m.d.sync += active.eq(0)

        tile_out = self.o_stream.valid & self.o_stream.ready
        with m.If(req_fire & ~tile_out):
            m.d.sync += credit.eq(credit - 1)
        with m.Elif(~req_fire & tile_out):
            m.d.sync += credit.eq(credit + wpt)
        with m.Elif(req_fire & tile_out):
            m.d.sync += credit.eq(credit + wpt - 1)

        # Assembly side. Every wide register is split into chunks of about ``chunk_bits`` bits, each
        # with its own copy of the enable, so that no single net drives thousands of flip-flops
        # (one 4096-bit enable net held the first version of this unit to 52 MHz).
        width = wpt * self._word_bits
        chunk = self._chunk_bits
        bounds = [(lo, min(lo + chunk, width)) for lo in range(0, width, chunk)]
        n_chunks = len(bounds)
        impl = self._impl

        # Stage 1: the response, registered (data once; valid once per chunk of the shift register).
        m.d.comb += self.rsp_stream.ready.eq(1)
        rsp_valid = Signal()
        rsp_data = Signal(self._word_bits)
        m.d.sync += [rsp_valid.eq(self.rsp_stream.valid), rsp_data.eq(self.rsp_stream.payload)]
        valid_copies = register_copies(m, self.rsp_stream.valid, n_chunks, impl, "rsp_valid")

        # Stage 2: a shift register assembles a tile, word 0 ending at the bottom.
        shift = Signal(width)
        shifted = Cat(shift[self._word_bits:], rsp_data)
        for c, (lo, hi) in enumerate(bounds):
            with m.If(valid_copies[c]):
                m.d.sync += shift[lo:hi].eq(shifted[lo:hi])
        count = Signal(range(wpt + 1))
        tile_no = Signal(bits_for(self._max_tiles))
        complete = rsp_valid & (count == wpt - 1)
        is_last = complete & (tile_no + 1 == cmd_asm.r_data)
        m.d.comb += cmd_asm.r_en.eq(is_last)
        with m.If(rsp_valid):
            with m.If(complete):
                m.d.sync += [count.eq(0), tile_no.eq(Mux(is_last, 0, tile_no + 1))]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        # The cycle after the last word, the shift register holds the whole tile; a registered
        # strobe (one copy per chunk) moves it into the tile queue as the next word shifts in.
        # Each copy is made from that chunk's copy of the valid and a copy of "the next word
        # completes a tile" (a register per 8 chunks), so no net spans the whole tile.
        next_count = Mux(rsp_valid, Mux(complete, 0, count + 1), count)
        at_last = register_copies(m, next_count == wpt - 1, -(-n_chunks // 8), impl, "at_last")
        complete_copies = []
        for c in range(n_chunks):
            d = lut_cell(m, [valid_copies[c], at_last[c // 8]], lambda v, a: v & a, impl, f"complete_d{c}", keep=True)
            complete_copies += register_copies(m, d, 1, impl, f"complete{c}")
        complete_q = Signal()
        last_q = Signal()
        m.d.sync += [complete_q.eq(complete), last_q.eq(is_last)]

        # Stage 3: a queue of ``depth`` tile registers; stage 0 is the output. A tile moves
        # forward when the stage ahead is empty or moving; the credit guarantees that the entry
        # stage is free (or moving) whenever a tile completes.
        stages = [Signal(width, name=f"stage{k}") for k in range(depth)]
        full = [Signal(name=f"full{k}") for k in range(depth)]
        last = [Signal(name=f"last{k}") for k in range(depth)]
        moves = [Signal(name=f"moves{k}") for k in range(depth)]
        m.d.comb += moves[0].eq(full[0] & self.o_stream.ready)
        for k in range(1, depth):
            m.d.comb += moves[k].eq(full[k] & (~full[k - 1] | moves[k - 1]))
        for k in range(depth):
            entry = k == depth - 1
            load = complete_q if entry else moves[k + 1]
            src = shift if entry else stages[k + 1]
            m.d.sync += full[k].eq(load | (full[k] & ~moves[k]))
            with m.If(load):
                m.d.sync += last[k].eq(last_q if entry else last[k + 1])
            if entry:
                copies = complete_copies
            else:
                copies = [lut_cell(m, [load], lambda x: x, impl, f"load{k}_{c}", keep=True)
                          for c in range(n_chunks)]
            for c, (lo, hi) in enumerate(bounds):
                with m.If(copies[c]):
                    m.d.sync += stages[k][lo:hi].eq(src[lo:hi])

        m.d.comb += [
            self.o_stream.payload.tile.eq(stages[0][:self._tile_bits]),
            self.o_stream.payload.last.eq(last[0]),
            self.o_stream.valid.eq(full[0]),
        ]
        return m

