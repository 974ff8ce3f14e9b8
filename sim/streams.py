"""Stream helpers for Amaranth-simulator testbenches (async ``ctx`` API of Amaranth 0.5).

Payloads are passed as plain integers (the packed bits of the payload layout),
so the same encoders serve the Amaranth simulator and cocotb.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

__all__ = ["stream_put", "stream_get", "put_all", "get_n", "feeder", "run_streams"]


async def stream_put(ctx, stream, payload: int) -> None:
    """Offer one beat and wait until it is taken (valid never waits for ready)."""
    ctx.set(stream.payload.as_value(), payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream) -> int:
    """Be ready for one beat and return its payload bits."""
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload.as_value()).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def put_all(ctx, stream, beats: Iterable[int], *, idle: float = 0.0, rng: random.Random | None = None) -> None:
    """Send every beat, inserting an idle cycle before a beat with probability ``idle``."""
    rng = rng or random.Random(0)
    for beat in beats:
        while rng.random() < idle:
            await ctx.tick()
        await stream_put(ctx, stream, beat)


async def get_n(ctx, stream, n: int, *, stall: float = 0.0, rng: random.Random | None = None) -> list[int]:
    """Receive ``n`` beats, holding ready low for a cycle with probability ``stall``."""
    rng = rng or random.Random(1)
    out = []
    for _ in range(n):
        while rng.random() < stall:
            await ctx.tick()
        out.append(await stream_get(ctx, stream))
    return out


def feeder(feeds, *, idle: float = 0.0, seed: int = 0):
    """A testbench coroutine that sends ``feeds`` (``(stream, beats)`` pairs) in order.

    One producer for all streams, so a table load precedes the data that uses it; idle cycles
    with probability ``idle`` from a generator seeded with ``seed``.
    """
    async def producer(ctx):
        prng = random.Random(seed)
        for stream, beats in feeds:
            await put_all(ctx, stream, beats, idle=idle, rng=prng)

    return producer


def run_streams(dut, feeds, n_out: int, *, idle: float = 0.0, stall: float = 0.0, seed: int = 0,
                max_cycles: int = 100_000, out_stream=None) -> tuple[list[int], int]:
    """Drive a block in the Amaranth simulator and collect its output beats.

    ``feeds`` is a list of ``(input_stream, beats)`` sent in that order by one
    producer (so a table load can precede the vectors that use it), with idle
    cycles of probability ``idle``; the consumer takes ``n_out`` beats from
    ``out_stream`` (default ``dut.o_stream``) with stalls of probability ``stall``.
    Returns ``(payloads, cycles)``, ``cycles`` counting clock edges until the
    last output was taken. Raises ``AssertionError`` if fewer than ``n_out``
    beats came out within ``max_cycles``.
    """
    from amaranth.sim import Simulator

    out_stream = out_stream if out_stream is not None else dut.o_stream
    got: list[int] = []
    clock = [0]
    finished: list[int] = []

    producer = feeder(feeds, idle=idle, seed=seed)

    async def consumer(ctx):
        got.extend(await get_n(ctx, out_stream, n_out, stall=stall, rng=random.Random(seed + 1)))
        finished.append(clock[0])

    async def counter(ctx):
        async for _ in ctx.tick():
            clock[0] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_process(counter)
    sim.run_until(1e-8 * max_cycles)
    assert finished, f"only {len(got)} of {n_out} output beats came out in {max_cycles} cycles"
    return got, finished[0]
