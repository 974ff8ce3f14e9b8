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
        Tiles of buffering (default 2: double buffering).

    Raises
    ------
    TypeError
        If a parameter is not a positive integer.
    """

    def __init__(self, *, word_bits: int, tile_bits: int, addr_width: int = 24, max_tiles: int = 4096,
                 depth: int = 2, cmd_depth: int = 4):
        self._word_bits = check_positive(self, "word_bits", word_bits)
        self._tile_bits = check_positive(self, "tile_bits", tile_bits)
        self._addr_width = check_positive(self, "addr_width", addr_width)
        self._max_tiles = check_positive(self, "max_tiles", max_tiles)
        self._depth = check_positive(self, "depth", depth)
        self._cmd_depth = check_positive(self, "cmd_depth", cmd_depth)
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

        # Assembly side: words in request order into tiles; the credit guarantees room.
        m.submodules.tiles = tiles = fifo.SyncFIFOBuffered(width=self._tile_bits + 1, depth=depth)
        m.d.comb += self.rsp_stream.ready.eq(1)
        shift = Signal(wpt * self._word_bits)
        count = Signal(range(wpt + 1))
        tile_no = Signal(bits_for(self._max_tiles))
        rsp_fire = self.rsp_stream.valid
        assembled = Cat(shift[self._word_bits:], self.rsp_stream.payload)
        done = rsp_fire & (count == wpt - 1)
        is_last = done & (tile_no + 1 == cmd_asm.r_data)
        m.d.comb += [
            tiles.w_en.eq(done),
            tiles.w_data.eq(Cat(assembled[:self._tile_bits], is_last)),
            cmd_asm.r_en.eq(is_last),
        ]
        with m.If(rsp_fire):
            m.d.sync += shift.eq(assembled)
            with m.If(done):
                m.d.sync += [count.eq(0), tile_no.eq(Mux(is_last, 0, tile_no + 1))]
            with m.Else():
                m.d.sync += count.eq(count + 1)

        m.d.comb += [
            self.o_stream.payload.as_value().eq(tiles.r_data),
            self.o_stream.valid.eq(tiles.r_rdy),
            tiles.r_en.eq(self.o_stream.ready),
        ]
        return m

