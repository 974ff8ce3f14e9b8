"""External-memory models that serve word reads with a latency and a bandwidth.

:class:`MemoryTiming` is the one timing rule, shared by the Amaranth-simulator
driver here and the cocotb driver in :mod:`bebert.sim.tb_fetch`: a read requested
at cycle ``t`` is answered at ``max(t + latency, previous answer + word_bits /
bits_per_cycle)``, in request order. ``bits_per_cycle`` may be fractional (the
ULX3S SDRAM sustains about 12.8 bits per cycle at 100 MHz).
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["MemoryTiming", "amaranth_memory"]


class MemoryTiming:
    """Response cycles for in-order word reads (see the module docstring)."""

    def __init__(self, latency: int, bits_per_cycle: float, word_bits: int):
        if latency < 1 or bits_per_cycle <= 0 or word_bits < 1:
            raise ValueError(f"memory needs latency >= 1, bits_per_cycle > 0 and word_bits >= 1, not "
                             f"{latency}, {bits_per_cycle}, {word_bits}")
        self.latency = latency
        self.interval = word_bits / bits_per_cycle
        self._last = -math.inf

    def schedule(self, request_cycle: int) -> int:
        due = max(request_cycle + self.latency, self._last + self.interval)
        self._last = due
        return math.ceil(due)


async def amaranth_memory(ctx, req_stream, rsp_stream, words, timing: MemoryTiming) -> None:
    """Serve ``req_stream`` word addresses from ``words`` on ``rsp_stream`` (an Amaranth testbench).

    Always ready for requests; run it with ``add_testbench(..., background=True)``.
    Raises ``IndexError`` naming the address on a read outside ``words``.
    """
    ctx.set(req_stream.ready, 1)
    pending: deque[tuple[int, int]] = deque()
    cycle = 0
    offered = False
    async for _clk, _rst, req_valid, req_addr, rsp_ready in ctx.tick().sample(
            req_stream.valid, req_stream.payload, rsp_stream.ready):
        cycle += 1
        if offered and rsp_ready:
            pending.popleft()
        if req_valid:
            if not 0 <= req_addr < len(words):
                raise IndexError(f"read of word {req_addr} outside the memory's {len(words)} words")
            pending.append((timing.schedule(cycle), int(words[req_addr])))
        offered = bool(pending) and pending[0][0] <= cycle
        ctx.set(rsp_stream.valid, int(offered))
        if offered:
            ctx.set(rsp_stream.payload, pending[0][1])
