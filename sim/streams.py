"""Stream helpers for Amaranth-simulator testbenches (async ``ctx`` API of Amaranth 0.5).

Payloads are passed as plain integers (the packed bits of the payload layout),
so the same encoders serve the Amaranth simulator and cocotb.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

__all__ = ["stream_put", "stream_get", "put_all", "get_n"]


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
