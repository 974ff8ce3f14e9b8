"""cocotb testbench for the weight fetch unit with an external-memory model.

Configuration (``BEBERT_TB``): ``word_bits``, ``tile_bits``, ``max_tiles``,
``latency`` (cycles), ``bits_per_cycle`` (memory bandwidth, may be fractional),
``model`` (optional path of a ``bebert export`` file whose packed ``uint64``
tensors form the memory image; otherwise random words), ``seed``, ``stall``,
``compute`` (cycles the consumer spends per tile in the throughput test),
``report``, ``corrupt_expected``. The memory model answers in request order with
the timing of :class:`bebert.sim.memory.MemoryTiming`.
"""

from __future__ import annotations

from collections import deque

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from ..golden.fetch import fetch_tiles, memory_image
from .cocotb_streams import random_gen
from .memory import MemoryTiming
from .tb_common import ScoreboardTB, load_config

DEFAULTS = {"word_bits": 16, "tile_bits": 256, "max_tiles": 64, "latency": 8, "bits_per_cycle": 12.8,
            "compute": 1}


class MemoryModel:
    """Serves ``req_stream`` word reads on ``rsp_stream`` with latency and bandwidth limits."""

    def __init__(self, dut, clk, words: np.ndarray, timing: MemoryTiming):
        self.dut, self.clk, self.words, self.timing = dut, clk, words, timing
        self.reads = 0
        dut.req_stream__ready.value = 1
        dut.rsp_stream__valid.value = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        pending: deque[tuple[int, int]] = deque()
        cycle = 0
        while True:
            await RisingEdge(self.clk)
            cycle += 1
            offered_now = bool(pending) and pending[0][0] <= cycle
            self.dut.rsp_stream__valid.value = int(offered_now)
            if offered_now:
                self.dut.rsp_stream__payload.value = pending[0][1]
            await ReadOnly()
            if offered_now and self.dut.rsp_stream__ready.value == 1:
                pending.popleft()
            if self.dut.req_stream__valid.value == 1:
                addr = int(self.dut.req_stream__payload.value)
                assert 0 <= addr < len(self.words), f"read of word {addr} outside the memory"
                pending.append((self.timing.schedule(cycle), int(self.words[addr])))
                self.reads += 1


class TB(ScoreboardTB):
    """The fetch unit's scoreboard: tiles from :func:`bebert.golden.fetch.fetch_tiles`, in order."""

    def __init__(self, dut, backpressure=None):
        cfg = load_config(**DEFAULTS)
        self.word_bits, self.tile_bits = cfg["word_bits"], cfg["tile_bits"]
        self.wpt = -(-self.tile_bits // self.word_bits)
        if cfg.get("model"):
            from ..golden.format import load_int_model
            tensors = {k: v for k, v in load_int_model(cfg["model"]).tensors.items() if v.dtype == np.uint64}
        else:
            rng = np.random.default_rng(cfg["seed"])
            tensors = {"random": rng.integers(0, 2 ** 63, size=512, dtype=np.uint64)}
        self.words, self.layout = memory_image(tensors, self.word_bits)
        mask = (1 << self.tile_bits) - 1
        kw = {"backpressure": backpressure} if backpressure is not None else {}
        super().__init__(dut, cfg, lambda word: (word & mask, (word >> self.tile_bits) & 1),
                         inputs=("c_stream",), **kw)
        self.memory = MemoryModel(dut, dut.clk, self.words,
                                  MemoryTiming(cfg["latency"], cfg["bits_per_cycle"], self.word_bits))

    def corrupt(self, value):
        return (value[0] ^ 1, value[1])

    def command(self, base: int, tiles: int) -> int:
        """Queue a fetch command and its golden tiles; returns the number of tiles."""
        tiles_v = fetch_tiles(self.words, self.word_bits, self.tile_bits, base, tiles)
        self.expect((t, int(i == tiles - 1)) for i, t in enumerate(tiles_v))
        # FetchCommand layout: base (the address width), then tiles
        self.source.send([base | (tiles << len(self.dut.req_stream__payload))])
        return tiles

    def tensor_commands(self, limit: int | None = None) -> list[tuple[int, int]]:
        """One command per memory-image tensor: as many whole tiles as it holds (capped)."""
        cmds = []
        for base, n in self.layout.values():
            tiles = min(n // self.wpt, self.cfg["max_tiles"])
            if tiles:
                cmds.append((base, tiles))
        return cmds[:limit]


@cocotb.test()
async def tensors_with_backpressure(dut):
    """Every tensor of the image fetched as tiles, random backpressure on the tile output."""
    cfg = load_config(**DEFAULTS)
    tb = TB(dut, random_gen(cfg["stall"] or 0.4, cfg["seed"] + 1))
    await tb.reset()
    n = sum(tb.command(b, t) for b, t in tb.tensor_commands(limit=12))
    await tb.finish(n, n * tb.wpt * 40 + 2000)
    assert tb.memory.reads == n * tb.wpt, f"{tb.memory.reads} memory reads for {n} tiles of {tb.wpt} words"


@cocotb.test()
async def throughput(dut):
    """Consumer busy ``compute`` cycles per tile: the fetch of the next tiles overlaps its work."""
    cfg = load_config(**DEFAULTS)
    compute = cfg["compute"]
    taken = [0]

    def busy():
        # hold ready low for compute - 1 cycles after each tile
        busy.left = max(0, busy.left - 1)
        if tb.sink.received > taken[0]:
            taken[0] = tb.sink.received
            busy.left = compute - 1
        return busy.left > 0
    busy.left = 0
    tb = TB(dut, busy)
    await tb.reset()
    tiles = min(cfg["max_tiles"], len(tb.words) // tb.wpt)
    tb.command(0, tiles)
    # one word per cycle at most crosses the memory port, whatever the memory could deliver
    bw = min(cfg["bits_per_cycle"], tb.word_bits)
    fetch = tiles * tb.wpt * tb.word_bits / bw
    await tb.finish(tiles, int(fetch + tiles * compute) * 4 + 2000)
    cycles = tb.measured_cycles()
    bound = max(fetch, tiles * compute)
    report = {"word_bits": tb.word_bits, "tile_bits": tb.tile_bits, "tiles": tiles, "latency": cfg["latency"],
              "bits_per_cycle": cfg["bits_per_cycle"], "compute_per_tile": compute,
              "fetch_floor_cycles": round(fetch, 1), "compute_cycles": tiles * compute, "cycles": cycles,
              "no_prefetch_cycles": round(tiles * (cfg["latency"] + tb.wpt * tb.word_bits / bw + compute), 1)}
    tb.write_report(report)
    assert cycles <= bound + cfg["latency"] + 2 * tb.wpt * tb.word_bits / bw + compute + 8, report
