"""Weight fetch unit in the Amaranth simulator with a latency/bandwidth memory model, against golden."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from bebert.golden.fetch import fetch_tiles, memory_image, split_words
from bebert.hw.fetch import WeightFetch
from bebert.sim.memory import MemoryTiming, amaranth_memory
from bebert.sim.streams import put_all


def _cmd(dut, base, tiles):
    lay = dut.c_stream.payload.shape()
    return (base << lay["base"].offset) | (tiles << lay["tiles"].offset)


def run_fetch(word_bits, tile_bits, commands, *, latency=5, bw=None, depth=2, compute=1, stall=0.0, seed=0,
              n_words=600):
    """Fetch every command's tiles; the consumer takes one tile every ``compute`` cycles.

    Returns (got [(tile, last)], want, cycles_until_last_tile, dut).
    """
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << word_bits, size=n_words, dtype=np.uint64)
    dut = WeightFetch(word_bits=word_bits, tile_bits=tile_bits, addr_width=12, max_tiles=64, depth=depth)
    timing = MemoryTiming(latency, bw or word_bits, word_bits)
    want = []
    for base, tiles in commands:
        got_tiles = fetch_tiles(words, word_bits, tile_bits, base, tiles)
        want += [(t, int(i == tiles - 1)) for i, t in enumerate(got_tiles)]
    got, finished = [], []
    lay = dut.o_stream.payload.shape()

    async def commander(ctx):
        await put_all(ctx, dut.c_stream, [_cmd(dut, b, t) for b, t in commands], idle=0.3, rng=random.Random(seed))

    async def memory(ctx):
        await amaranth_memory(ctx, dut.req_stream, dut.rsp_stream, words, timing)

    async def consumer(ctx):
        prng = random.Random(seed + 1)
        cycle = 0
        wait = 0
        while len(got) < len(want):
            ready = wait == 0 and prng.random() >= stall
            ctx.set(dut.o_stream.ready, int(ready))
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload.as_value())
            cycle += 1
            wait = max(0, wait - 1)
            if ready and valid:
                tile = (payload >> lay["tile"].offset) & ((1 << tile_bits) - 1)
                got.append((tile, (payload >> lay["last"].offset) & 1))
                wait = compute - 1
        ctx.set(dut.o_stream.ready, 0)
        finished.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(commander)
    sim.add_testbench(memory, background=True)
    sim.add_testbench(consumer)
    sim.run_until(1e-8 * 20000)
    assert finished, f"only {len(got)} of {len(want)} tiles came out"
    return got, want, finished[0], dut


@pytest.mark.parametrize("word_bits,tile_bits", [(16, 16), (16, 100), (64, 256), (8, 7)])
def test_tiles_match_golden_with_stalls(word_bits, tile_bits):
    commands = [(0, 3), (37, 1), (5, 4), (100, 2)]
    got, want, _, _ = run_fetch(word_bits, tile_bits, commands, latency=7, bw=word_bits / 3, stall=0.4,
                                seed=word_bits + tile_bits)
    assert got == want


def test_zero_tile_command_is_skipped():
    got, want, _, _ = run_fetch(16, 32, [(4, 2), (9, 0), (11, 1)], seed=3)
    assert got == want and len(got) == 3


@pytest.mark.parametrize("bw,compute", [(16.0, 12), (4.0, 2)])
def test_prefetch_overlaps_fetch_and_compute(bw, compute):
    """Prefetch: total ~ max(fetch, compute) + latency, well under fetching each tile after its use."""
    word_bits, tile_bits, tiles = 16, 64, 16  # 4 words per tile
    fetch_cycles = tiles * tile_bits / bw
    compute_cycles = tiles * compute
    _, _, overlapped, _ = run_fetch(word_bits, tile_bits, [(0, tiles)], latency=6, bw=bw, compute=compute)
    got, want, single, _ = run_fetch(word_bits, tile_bits, [(0, tiles)], latency=6, bw=bw, compute=compute,
                                     depth=1)
    assert got == want  # one tile of buffering is still correct
    bound = max(fetch_cycles, compute_cycles)
    assert overlapped <= bound + 6 + 2 * tile_bits / bw + compute + 4
    no_prefetch = tiles * (6 + tile_bits / bw + compute)  # request each tile only after the last was used
    assert overlapped < 0.8 * no_prefetch


def test_memory_image_layout_and_words():
    a = np.array([0x0123_4567_89AB_CDEF], np.uint64)
    b = np.array([1, 2], np.uint64)
    words, layout = memory_image({"a": a, "b": b}, 16)
    assert layout == {"a": (0, 4), "b": (4, 8)}
    assert words[:4].tolist() == [0xCDEF, 0x89AB, 0x4567, 0x0123]
    assert split_words(b, 32).tolist() == [1, 0, 2, 0]
    # a tile of 64 bits from 16-bit words is the original uint64 again
    assert fetch_tiles(words, 16, 64, 0, 1) == [0x0123_4567_89AB_CDEF]


@pytest.mark.parametrize("call,match", [
    (lambda: memory_image({"x": np.zeros(2, np.int32)}, 16), "not packed uint64"),
    (lambda: memory_image({}, 12), "must divide 64"),
    (lambda: fetch_tiles(np.zeros(10, np.uint64), 16, 64, 8, 1), "past the image"),
    (lambda: MemoryTiming(0, 1.0, 16), "latency >= 1"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("bad", [dict(word_bits=0, tile_bits=8), dict(word_bits=8, tile_bits=8, depth=0)])
def test_bad_parameters(bad):
    with pytest.raises(TypeError, match="must be a positive integer"):
        WeightFetch(**bad)
