"""Shared pieces of the cocotb testbenches: configuration and a scoreboard TB base class.

A testbench module reads its configuration from ``BEBERT_TB`` (JSON, set by
:func:`bebert.sim.runner.run_testbench`). :class:`ScoreboardTB` owns the clock,
reset, one :class:`~bebert.sim.cocotb_streams.StreamSource` per input stream,
the sink on ``o_stream`` and an in-order checker: a monitor decodes every output
beat and compares it with the next expected value. ``corrupt_expected: N`` in
the configuration falsifies the N-th expected value (through the subclass's
:meth:`ScoreboardTB.corrupt`), so a test can show that the checker fails.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterable

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from .cocotb_streams import StreamSink, StreamSource, never, random_gen

__all__ = ["PERIOD_NS", "load_config", "stalls", "ScoreboardTB"]

PERIOD_NS = 10


def load_config(**defaults) -> dict:
    """The testbench configuration from ``BEBERT_TB``, with ``defaults`` for missing keys."""
    cfg = {"seed": 1, "idle": 0.0, "stall": 0.0, **defaults}
    cfg.update(json.loads(os.environ.get("BEBERT_TB", "{}")))
    return cfg


def stalls(cfg: dict, default: float = 0.3, offset: int = 0, fixed: float | None = None):
    """``(idle, backpressure)`` generators seeded from ``cfg["seed"] + offset``.

    Probabilities come from ``cfg["idle"]`` / ``cfg["stall"]`` (or ``default`` when 0), or are
    ``fixed`` for both.
    """
    idle = fixed if fixed is not None else (cfg["idle"] or default)
    stall = fixed if fixed is not None else (cfg["stall"] or default)
    return random_gen(idle, cfg["seed"] + offset), random_gen(stall, cfg["seed"] + offset + 1)


class ScoreboardTB:
    """Clock, reset, stream models and the in-order scoreboard of one DUT.

    Parameters
    ----------
    dut : the cocotb handle of the toplevel.
    cfg : the configuration (see :func:`load_config`).
    decode : output payload (int) -> the value compared with the expectation.
    inputs : names of the input streams (each gets a source in ``self.sources``).
    idle, backpressure : generators for the sources and the sink.
    """

    def __init__(self, dut, cfg: dict, decode: Callable[[int], object], inputs: Iterable[str] = ("i_stream",),
                 idle=never, backpressure=never):
        self.dut = dut
        self.cfg = cfg
        self.decode = decode
        self.expected: deque = deque()
        self.mismatches: list[tuple[int, object, object]] = []
        self.checked = 0
        self._submitted = 0
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        self.sources = {name: StreamSource(dut, name, dut.clk, idle) for name in inputs}
        self.source = next(iter(self.sources.values()))
        self.sink = StreamSink(dut, "o_stream", dut.clk, self._check, backpressure)

    @property
    def submitted(self) -> int:
        """Expected values queued so far."""
        return self._submitted

    def corrupt(self, value):
        """A wrong version of an expected value (for the checker self-test)."""
        raise NotImplementedError

    def expect(self, values: Iterable) -> int:
        """Queue expected output values in order; returns how many."""
        n = 0
        for value in values:
            if self.cfg.get("corrupt_expected") == self._submitted:
                value = self.corrupt(value)
            self._submitted += 1
            self.expected.append(value)
            n += 1
        return n

    def _check(self, word: int) -> None:
        got = self.decode(word)
        if not self.expected:
            self.mismatches.append((self.checked, None, got))
            return
        want = self.expected.popleft()
        if got != want:
            self.mismatches.append((self.checked, want, got))
        self.checked += 1

    async def reset(self) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def until(self, cond: Callable[[], bool]) -> None:
        while not cond():
            await RisingEdge(self.dut.clk)

    async def drain(self, n_results: int, timeout_cycles: int) -> None:
        """Wait until ``n_results`` output beats were taken (or fail after ``timeout_cycles``)."""
        await with_timeout(self.until(lambda: self.sink.received >= n_results), timeout_cycles * PERIOD_NS, "ns")

    async def finish(self, n_results: int, timeout_cycles: int) -> None:
        """Drain ``n_results`` outputs, then require every one checked and none wrong or missing."""
        await self.drain(n_results, timeout_cycles)
        self.assert_clean()
        assert self.checked == n_results, f"checked {self.checked} results, expected {n_results}"

    def assert_clean(self) -> None:
        assert not self.mismatches, (
            f"{len(self.mismatches)} mismatches; first (index, want, got): {self.mismatches[0]}")
        assert not self.expected, f"{len(self.expected)} expected results never came out"

    def measured_cycles(self) -> int:
        """Cycles from the first input transfer to the last output transfer, both included."""
        return round((self.sink.last_time - self.source.first_time) / PERIOD_NS) + 1

    def write_report(self, report: dict) -> None:
        self.dut._log.info("report: %s", report)
        if self.cfg.get("report"):
            with open(self.cfg["report"], "w") as f:
                json.dump(report, f)
