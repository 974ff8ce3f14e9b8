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

import cocotb
import numpy as np

from .tb_common import ScoreboardTB, load_config, stalls
from .threshold_jobs import KINDS, decode_output, encode_beats, encode_loads, expected_words, make_job

DEFAULTS = {"word_bits": 64, "jobs": 8, "vectors": 3}


class TB(ScoreboardTB):
    """The threshold unit's scoreboard: a table source, a vector source, expected words from golden."""

    def __init__(self, dut, idle=None, backpressure=None):
        cfg = load_config(**DEFAULTS)
        self.p, self.width, self.word_bits = cfg["p"], cfg["width"], cfg["word_bits"]
        self.groups = -(-cfg["max_channels"] // self.p)
        self.rng = np.random.default_rng(cfg["seed"] + 99)
        self._loads = 0
        self._beats = 0
        kw = {k: v for k, v in (("idle", idle), ("backpressure", backpressure)) if v is not None}
        super().__init__(dut, cfg, lambda word: decode_output(word, self.word_bits),
                         inputs=("t_stream", "i_stream"), **kw)
        self.tsrc = self.sources["t_stream"]
        self.source = self.sources["i_stream"]

    def corrupt(self, word):
        return (word[0] ^ 1, word[1])

    async def load_table(self, job) -> None:
        """Load a job's table; it changes only between vectors, after the last beat was taken."""
        loads = encode_loads(job, self.p, self.width, self.groups)
        self._loads += len(loads)
        self.tsrc.send(loads)
        await self.until(lambda: self.tsrc.sent == self._loads)

    async def run_job(self, job) -> int:
        """Load the job's table, then stream its vectors; returns the number of words expected."""
        n = self.expect(expected_words(job, self.p, self.word_bits))
        await self.load_table(job)
        beats = encode_beats(job, self.p, self.width, self.rng)
        self._beats += len(beats)
        self.source.send(beats)
        await self.until(lambda: self.source.sent == self._beats)
        return n


def random_jobs(cfg, rng, kinds=("random", "extremes")):
    cs = rng.integers(1, cfg["max_channels"] + 1, size=cfg["jobs"])
    cs[0] = cfg["max_channels"]
    return [make_job(rng, int(c), cfg["width"], cfg["vectors"], kinds[i % len(kinds)]) for i, c in enumerate(cs)]


@cocotb.test()
async def random_with_backpressure(dut):
    """Random tables and vectors of random length, random idle cycles and random backpressure."""
    cfg = load_config(**DEFAULTS)
    tb = TB(dut, *stalls(cfg))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"])
    words = 0
    for job in random_jobs(cfg, rng):
        words += await tb.run_job(job)
    await tb.finish(words, words * 20 + 500)


@cocotb.test()
async def edge_tables(dut):
    """Every kind (extremes, constant and masked channels, the attention rule) at boundary lengths."""
    cfg = load_config(**DEFAULTS)
    tb = TB(dut, *stalls(cfg, fixed=0.2, offset=2))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 4)
    p, cmax = cfg["p"], cfg["max_channels"]
    cs = sorted({c for c in (1, p - 1, p, p + 1, 63, 64, 65, cmax - 1, cmax) if 1 <= c <= cmax})
    words = 0
    for kind in KINDS:
        for c in cs:
            words += await tb.run_job(make_job(rng, c, cfg["width"], 2, kind))
    await tb.finish(words, words * 20 + 500)


@cocotb.test()
async def throughput(dut):
    """No stalls: one accumulator beat per cycle (the table load is counted apart)."""
    tb = TB(dut)
    cfg = tb.cfg
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 5)
    c = cfg["max_channels"]
    job = make_job(rng, c, cfg["width"], 12, "random")
    await tb.load_table(job)
    words = tb.expect(expected_words(job, tb.p, tb.word_bits))
    beats = encode_beats(job, tb.p, tb.width)
    tb.source.send(beats)
    await tb.finish(words, len(beats) * 4 + 500)
    cycles = tb.measured_cycles()
    report = {"p": tb.p, "width": tb.width, "channels": c, "vectors": 12, "beats": len(beats),
              "ideal_cycles": len(beats), "cycles": cycles, "words": words, "checked": tb.checked}
    tb.write_report(report)
    assert cycles <= len(beats) + 8, report
