"""cocotb testbench for the Bi-Attention unit (run it through :mod:`bebert.sim.runner`).

The configuration comes from the ``BEBERT_TB`` environment variable (JSON):
``d``, ``max_len``, ``kb``, ``seed``, ``heads`` (count), ``idle`` and ``stall``
probabilities, ``report`` (path for a JSON summary), ``corrupt_expected``
(index of one expected row to falsify, to show that the checker fails). A
monitor on ``o_stream`` feeds an in-order checker whose expected rows come from
:func:`bebert.golden.attention.bi_attention`.
"""

from __future__ import annotations

import json
import os
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from .attention_jobs import KINDS, decode_output, encode_beats, expected_rows, make_head
from .cocotb_streams import StreamSink, StreamSource, never, random_gen

PERIOD_NS = 10


def load_config() -> dict:
    cfg = json.loads(os.environ.get("BEBERT_TB", "{}"))
    cfg.setdefault("seed", 1)
    cfg.setdefault("heads", 6)
    cfg.setdefault("idle", 0.0)
    cfg.setdefault("stall", 0.0)
    return cfg


def head_cycles(n: int, m: int, kb: int) -> int:
    """Ideal cycles of a head: ``n`` K/V loads plus ``m * ceil(n / kb)`` chunks."""
    return n + m * -(-n // kb)


class TB:
    """Owns the clock, reset, the stream models and the in-order scoreboard."""

    def __init__(self, dut, cfg: dict, idle=never, backpressure=never):
        self.dut = dut
        self.cfg = cfg
        self.d, self.max_len, self.kb = cfg["d"], cfg["max_len"], cfg["kb"]
        self.expected: deque[tuple[int, int]] = deque()
        self.mismatches: list[tuple[int, tuple, tuple]] = []
        self.checked = 0
        self._submitted = 0
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        self.source = StreamSource(dut, "i_stream", dut.clk, idle)
        self.sink = StreamSink(dut, "o_stream", dut.clk, self._check, backpressure)

    def _check(self, word: int) -> None:
        got = decode_output(word, self.d)
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

    def submit(self, head) -> int:
        """Queue a head's beats and expected rows; returns its ideal cycle count."""
        for row in expected_rows(head):
            # Self-check of the checker: flip one context bit of the n-th expected row on request.
            if self.cfg.get("corrupt_expected") == self._submitted:
                row = (row[0] ^ 1, row[1])
            self._submitted += 1
            self.expected.append(row)
        self.source.send(encode_beats(head, self.max_len))
        return head_cycles(head.n, head.m, self.kb)

    async def drain(self, n_rows: int, timeout_cycles: int) -> None:
        async def wait():
            while self.sink.received < n_rows:
                await RisingEdge(self.dut.clk)
        await with_timeout(wait(), timeout_cycles * PERIOD_NS, "ns")

    def assert_clean(self) -> None:
        assert not self.mismatches, (
            f"{len(self.mismatches)} mismatches; first (index, want, got): {self.mismatches[0]}")
        assert not self.expected, f"{len(self.expected)} rows never came out"


@cocotb.test()
async def random_with_backpressure(dut):
    """Heads of random length n <= max_len and random query counts, random idle cycles and backpressure."""
    cfg = load_config()
    tb = TB(dut, cfg, random_gen(cfg["idle"] or 0.3, cfg["seed"]), random_gen(cfg["stall"] or 0.3, cfg["seed"] + 1))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"])
    ns = rng.integers(1, tb.max_len + 1, size=cfg["heads"])
    ns[0] = tb.max_len
    kinds = ("random", "padded", "ties")
    cycles = 0
    for i, n in enumerate(ns):
        m = int(rng.integers(1, tb.max_len + 1))
        cycles += tb.submit(make_head(rng, tb.d, int(n), m, kinds[i % len(kinds)]))
    await tb.drain(tb._submitted, cycles * 10 + 1000)
    tb.assert_clean()
    assert tb.checked == tb._submitted


@cocotb.test()
async def edge_heads(dut):
    """Every head kind at boundary lengths (1, kb - 1, kb, kb + 1, max_len)."""
    cfg = load_config()
    tb = TB(dut, cfg, random_gen(0.2, cfg["seed"] + 2), random_gen(0.2, cfg["seed"] + 3))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 4)
    kb, nmax = tb.kb, tb.max_len
    ns = sorted({n for n in (1, kb - 1, kb, kb + 1, nmax) if 1 <= n <= nmax})
    cycles = sum(tb.submit(make_head(rng, tb.d, n, min(n, 8), kind)) for kind in KINDS for n in ns)
    await tb.drain(tb._submitted, cycles * 10 + 1000)
    tb.assert_clean()
    assert tb.checked == tb._submitted


@cocotb.test()
async def throughput(dut):
    """No stalls, full-length heads back to back: measured cycles per head against the ideal."""
    cfg = load_config()
    tb = TB(dut, cfg)
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 5)
    heads = 3
    ideal = sum(tb.submit(make_head(rng, tb.d, tb.max_len)) for _ in range(heads))
    await tb.drain(tb._submitted, ideal * 4 + 500)
    tb.assert_clean()
    cycles = round((tb.sink.last_time - tb.source.first_time) / PERIOD_NS) + 1
    report = {"d": tb.d, "max_len": tb.max_len, "kb": tb.kb, "heads": heads, "n": tb.max_len,
              "ideal_cycles": ideal, "cycles": cycles, "cycles_per_head": cycles / heads,
              "binary_macs": 2 * heads * tb.max_len ** 2 * tb.d, "checked": tb.checked}
    dut._log.info("throughput: %s", report)
    if cfg.get("report"):
        with open(cfg["report"], "w") as f:
            json.dump(report, f)
    # the pipeline drains once per head before the next head's K/V may load (plus the final drain)
    assert cycles <= ideal + heads * 30, report
