"""cocotb testbench for the threshold unit (run it through :mod:`bebert.sim.runner`).

The configuration comes from the ``BEBERT_TB`` environment variable (JSON):
``p``, ``width``, ``max_channels``, ``word_bits``, ``seed``, ``jobs`` (tables),
``vectors`` (per table), ``idle`` and ``stall`` probabilities, ``report`` (path
for a JSON summary), ``corrupt_expected`` (index of one expected word to
falsify, to show that the checker fails). Each job loads a table through
``t_stream``, then streams its vectors through ``i_stream``; a monitor on
``o_stream`` feeds an in-order checker whose expected words come from
:func:`bebert.golden.threshold.threshold_words`.
"""

from __future__ import annotations

import json
import os
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from .cocotb_streams import StreamSink, StreamSource, never, random_gen
from .threshold_jobs import KINDS, decode_output, encode_beats, encode_loads, expected_words, make_job

PERIOD_NS = 10


def load_config() -> dict:
    cfg = json.loads(os.environ.get("BEBERT_TB", "{}"))
    cfg.setdefault("word_bits", 64)
    cfg.setdefault("seed", 1)
    cfg.setdefault("jobs", 8)
    cfg.setdefault("vectors", 3)
    cfg.setdefault("idle", 0.0)
    cfg.setdefault("stall", 0.0)
    return cfg


class TB:
    """Owns the clock, reset, the two sources, the sink and the in-order scoreboard."""

    def __init__(self, dut, cfg: dict, idle=never, backpressure=never):
        self.dut = dut
        self.cfg = cfg
        self.p, self.width, self.word_bits = cfg["p"], cfg["width"], cfg["word_bits"]
        self.groups = -(-cfg["max_channels"] // self.p)
        self.expected: deque[tuple[int, int]] = deque()
        self.mismatches: list[tuple[int, tuple, tuple]] = []
        self.checked = 0
        self._words = 0
        self._loads = 0
        self._beats = 0
        self.rng = np.random.default_rng(cfg["seed"] + 99)
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        self.tsrc = StreamSource(dut, "t_stream", dut.clk, idle)
        self.source = StreamSource(dut, "i_stream", dut.clk, idle)
        self.sink = StreamSink(dut, "o_stream", dut.clk, self._check, backpressure)

    def _check(self, word: int) -> None:
        got = decode_output(word, self.word_bits)
        if not self.expected:
            self.mismatches.append((self.checked, (), got))
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

    async def _until(self, cond) -> None:
        while not cond():
            await RisingEdge(self.dut.clk)

    async def run_job(self, job) -> int:
        """Load the job's table, then stream its vectors; returns the number of words expected."""
        want = expected_words(job, self.p, self.word_bits)
        for w in want:
            # Self-check of the checker: flip a bit of the n-th expected word on request.
            if self.cfg.get("corrupt_expected") == self._words:
                w = (w[0] ^ 1, w[1])
            self._words += 1
            self.expected.append(w)
        loads = encode_loads(job, self.p, self.width, self.groups)
        beats = encode_beats(job, self.p, self.width, self.rng)
        # The table changes only between vectors: after the previous job's last beat was taken.
        self._loads += len(loads)
        self.tsrc.send(loads)
        await self._until(lambda: self.tsrc.sent == self._loads)
        self._beats += len(beats)
        self.source.send(beats)
        await self._until(lambda: self.source.sent == self._beats)
        return len(want)

    async def drain(self, n_words: int, timeout_cycles: int) -> None:
        await with_timeout(self._until(lambda: self.sink.received >= n_words), timeout_cycles * PERIOD_NS, "ns")

    def assert_clean(self) -> None:
        assert not self.mismatches, (
            f"{len(self.mismatches)} mismatches; first (index, want, got): {self.mismatches[0]}")
        assert not self.expected, f"{len(self.expected)} words never came out"


def random_jobs(cfg, rng, kinds=("random", "extremes")):
    cs = rng.integers(1, cfg["max_channels"] + 1, size=cfg["jobs"])
    cs[0] = cfg["max_channels"]
    return [make_job(rng, int(c), cfg["width"], cfg["vectors"], kinds[i % len(kinds)]) for i, c in enumerate(cs)]


@cocotb.test()
async def random_with_backpressure(dut):
    """Random tables and vectors of random length, random idle cycles and random backpressure."""
    cfg = load_config()
    tb = TB(dut, cfg, random_gen(cfg["idle"] or 0.3, cfg["seed"]), random_gen(cfg["stall"] or 0.3, cfg["seed"] + 1))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"])
    words = 0
    for job in random_jobs(cfg, rng):
        words += await tb.run_job(job)
    await tb.drain(words, words * 20 + 500)
    tb.assert_clean()
    assert tb.checked == words


@cocotb.test()
async def edge_tables(dut):
    """Every kind (extremes, constant and masked channels, the attention rule) at boundary lengths."""
    cfg = load_config()
    tb = TB(dut, cfg, random_gen(0.2, cfg["seed"] + 2), random_gen(0.2, cfg["seed"] + 3))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 4)
    p, cmax = cfg["p"], cfg["max_channels"]
    cs = sorted({c for c in (1, p - 1, p, p + 1, 63, 64, 65, cmax - 1, cmax) if 1 <= c <= cmax})
    words = 0
    for kind in KINDS:
        for c in cs:
            words += await tb.run_job(make_job(rng, c, cfg["width"], 2, kind))
    await tb.drain(words, words * 20 + 500)
    tb.assert_clean()
    assert tb.checked == words


@cocotb.test()
async def throughput(dut):
    """No stalls: one accumulator beat per cycle (the table load is counted apart)."""
    cfg = load_config()
    tb = TB(dut, cfg)
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 5)
    c = cfg["max_channels"]
    job = make_job(rng, c, cfg["width"], 12, "random")
    loads = encode_loads(job, tb.p, tb.width, tb.groups)
    tb.tsrc.send(loads)
    tb._loads += len(loads)
    await tb._until(lambda: tb.tsrc.sent == len(loads))
    for w in expected_words(job, tb.p, tb.word_bits):
        tb.expected.append(w)
    beats = encode_beats(job, tb.p, tb.width)
    tb.source.send(beats)
    words = len(tb.expected)
    await tb.drain(words, len(beats) * 4 + 500)
    tb.assert_clean()
    cycles = round((tb.sink.last_time - tb.source.first_time) / PERIOD_NS) + 1
    report = {"p": tb.p, "width": tb.width, "channels": c, "vectors": 12, "beats": len(beats),
              "ideal_cycles": len(beats), "cycles": cycles, "words": words, "checked": tb.checked}
    dut._log.info("throughput: %s", report)
    if cfg.get("report"):
        with open(cfg["report"], "w") as f:
            json.dump(report, f)
    assert cycles <= len(beats) + 8, report
