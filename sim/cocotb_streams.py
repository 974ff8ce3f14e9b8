"""cocotb 2.x stream bus models for Amaranth ``stream`` ports (``<name>__valid/ready/payload``).

Sources and sinks take an *idle* / *backpressure* generator: a zero-argument
callable returning True on cycles where the source inserts a bubble or the sink
holds ``ready`` low. Each model samples transfers in the ``ReadOnly`` phase, so
what it sees is exactly what the registers take at the next edge.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

__all__ = ["StreamSource", "StreamSink", "never", "random_gen"]


def never() -> bool:
    return False


def random_gen(prob: float, seed: int) -> Callable[[], bool]:
    """True with probability ``prob`` on each call, from its own seeded stream."""
    rng = random.Random(seed)
    return lambda: rng.random() < prob


class StreamSource:
    """Drives ``<name>__payload`` and ``__valid``; holds a beat until ``__ready`` takes it."""

    def __init__(self, dut, name: str, clk, idle: Callable[[], bool] = never):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk = clk
        self.idle = idle
        self.queue: deque[int] = deque()
        self.sent = 0
        self.first_time = None
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send(self, beats) -> None:
        self.queue.extend(beats)

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self):
        cur = None
        while True:
            await RisingEdge(self.clk)
            if cur is None and self.queue and not self.idle():
                cur = self.queue.popleft()
                self.payload.value = cur
            self.valid.value = int(cur is not None)
            await ReadOnly()
            if cur is not None and self.ready.value == 1:
                if self.first_time is None:
                    self.first_time = get_sim_time("ns")
                cur = None
                self.sent += 1


class StreamSink:
    """Drives ``<name>__ready`` from a backpressure generator; calls ``on_beat(int)`` per transfer."""

    def __init__(self, dut, name: str, clk, on_beat: Callable[[int], None],
                 backpressure: Callable[[], bool] = never):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk = clk
        self.on_beat = on_beat
        self.backpressure = backpressure
        self.received = 0
        self.last_time = None
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            rdy = not self.backpressure()
            self.ready.value = int(rdy)
            await ReadOnly()
            if rdy and self.valid.value == 1:
                self.received += 1
                self.last_time = get_sim_time("ns")
                self.on_beat(int(self.payload.value))
