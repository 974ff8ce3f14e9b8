"""Run-ahead word prefetch (``hw/prefetch.py``) in the Amaranth simulator against
:func:`bebert.golden.fetch.prefetch_reads`: random memories, commands, memory latency and bandwidth, a
consumer with a bounded window and random stalls; out-of-sequence requests raise ``error``."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from bebert.golden.fetch import prefetch_reads
from bebert.hw._params import pack_fields
from bebert.hw.prefetch import WordPrefetch
from bebert.sim.memory import MemoryTiming, amaranth_memory
from bebert.sim.streams import stream_put


def run_prefetch(commands, *, word_bits=16, depth=8, latency=5, bw=16.0, window=4, stall=0.3, seed=0,
                 bad=None, n_words=400, pause=0):
    """Each command ``(base, count)``: the consumer asks for ``base + i`` in order (``bad = (command, i,
    address)`` replaces one request), keeping at most ``window`` requests unanswered, taking responses
    with random stalls; it waits ``pause`` cycles before its first request (the prefetch runs ahead
    meanwhile). Returns ``(responses per command, error, memory, cycles to the last response)``."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << word_bits, size=n_words, dtype=np.uint64)
    dut = WordPrefetch(word_bits=word_bits, addr_width=12, max_count=n_words, depth=depth)
    got = [[] for _ in commands]
    state = dict(cycle=0, last=0)

    async def consumer(ctx):
        prng = random.Random(seed)
        lay = dut.c_stream.payload.shape()
        for ci, (base, count) in enumerate(commands):
            await stream_put(ctx, dut.c_stream, pack_fields(lay, base=base, count=count))
            if pause:
                await ctx.tick().repeat(pause)
            sent = 0
            addrs = [base + i for i in range(count)]
            if bad is not None and bad[0] == ci:
                addrs[bad[1]] = bad[2]
            while len(got[ci]) < count:
                ctx.set(dut.req_stream.valid, int(sent < count and sent - len(got[ci]) < window))
                if sent < count:
                    ctx.set(dut.req_stream.payload, addrs[sent])
                take = prng.random() >= stall
                ctx.set(dut.rsp_stream.ready, int(take))
                _, _, rv, rp, qv = await ctx.tick().sample(dut.rsp_stream.valid, dut.rsp_stream.payload,
                                                           dut.req_stream.valid)
                if qv:
                    sent += 1
                if rv and take:
                    got[ci].append(int(rp))
                    state["last"] = state["cycle"]
            ctx.set(dut.req_stream.valid, 0)
            ctx.set(dut.rsp_stream.ready, 0)
        await ctx.tick().repeat(3)
        state["error"] = ctx.get(dut.error)
        state["busy"] = ctx.get(dut.busy)

    async def clock(ctx):
        async for _ in ctx.tick():
            state["cycle"] += 1

    async def memory(ctx):
        await amaranth_memory(ctx, dut.mem_req, dut.mem_rsp, words, MemoryTiming(latency, bw, word_bits))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(consumer)
    sim.add_testbench(clock, background=True)
    sim.add_testbench(memory, background=True)
    sim.run()
    return got, state["error"], words, state["last"], state["busy"]


@pytest.mark.parametrize("seed", range(4))
def test_random_commands(seed):
    """Random commands (lengths 1..60, one shorter than the FIFO, one much longer), memory latency 1..12 and
    bandwidth 4..16 bits per cycle, random consumer stalls and windows: every response equals golden."""
    r = random.Random(seed)
    commands = [(r.randrange(0, 300), r.randrange(1, 61)) for _ in range(4)] + [(5, 3), (100, 90)]
    depth = r.choice([2, 3, 8, 32])
    kw = dict(depth=depth, latency=r.randint(1, 12), bw=r.uniform(4.0, 16.0), window=r.randint(1, 9),
              stall=r.uniform(0.0, 0.6), seed=seed)
    got, error, words, _, busy = run_prefetch(commands, **kw)
    assert not error and not busy
    for (base, count), g in zip(commands, got):
        want, err = prefetch_reads(words, base, count, [base + i for i in range(count)])
        assert g == want and not err


def test_runs_ahead():
    """With the consumer idle for 200 cycles after the command, the FIFO fills meanwhile: 64 words then come
    at one per cycle (the last response about 64 cycles after the pause), where a plain memory at 4 bits
    per cycle would take 4 cycles a word."""
    got, error, words, last, _ = run_prefetch([(10, 64)], depth=64, latency=8, bw=4.0, window=16, stall=0.0,
                                              pause=200)
    assert not error and got[0] == prefetch_reads(words, 10, 64, range(10, 74))[0]
    assert last < 200 + 64 + 12, last
    # without the pause, the memory's pace (4 cycles a word) bounds it
    _, _, _, last0, _ = run_prefetch([(10, 64)], depth=64, latency=8, bw=4.0, window=16, stall=0.0)
    assert last0 >= 4 * 63, last0


@pytest.mark.parametrize("bad", [(0, 5, 999), (1, 0, 0)])
def test_out_of_sequence_request_raises_error(bad):
    """A request for another word than ``base + i`` sets ``error`` (golden agrees); the responses still come
    in sequence."""
    commands = [(20, 12), (50, 6)]
    got, error, words, _, _ = run_prefetch(commands, bad=bad, seed=3)
    base, count = commands[bad[0]]
    reqs = [base + i for i in range(count)]
    reqs[bad[1]] = bad[2]
    want, err = prefetch_reads(words, base, count, reqs)
    assert error and err
    assert got[bad[0]] == want


def test_bad_parameters():
    with pytest.raises(TypeError, match="depth must be a positive integer"):
        WordPrefetch(word_bits=16, addr_width=12, max_count=10, depth=0)
    with pytest.raises(ValueError, match="depth must be at least 2"):
        WordPrefetch(word_bits=16, addr_width=12, max_count=10, depth=1)
    with pytest.raises(ValueError, match="outside the memory"):
        prefetch_reads([1, 2, 3], 2, 5, [])
