"""cocotb testbench for the vector unit (run it through :mod:`bebert.sim.runner`).

The configuration comes from the ``BEBERT_TB`` environment variable (JSON): ``max_h``,
``max_k``, ``seed``, ``jobs`` (parameter tables), ``tokens`` (per table), ``idle`` and
``stall`` probabilities, ``report`` (path for a JSON summary), ``corrupt_expected`` (index of
one expected result to falsify, to show that the checker fails). Each job loads a table
through ``p_stream``, then streams its tokens through ``i_stream``; a monitor on ``o_stream``
feeds an in-order checker whose expected results come from
:func:`bebert.golden.vector.vector_step`. The formats are the model defaults
(:meth:`bebert.golden.vector.VectorFormats.default`).
"""

from __future__ import annotations

import cocotb
import numpy as np

from ..golden.vector import VectorFormats
from .tb_common import ScoreboardTB, load_config, stalls
from .vector_jobs import KINDS, decode_output, encode_beats, encode_loads, expected_outputs, make_job

DEFAULTS = {"jobs": 6, "tokens": 2}


class TB(ScoreboardTB):
    """The vector unit's scoreboard: a table source, a token source, expected results from golden."""

    def __init__(self, dut, idle=None, backpressure=None):
        cfg = load_config(**DEFAULTS)
        self.max_h, self.max_k = cfg["max_h"], cfg["max_k"]
        self.fmts = VectorFormats.default(self.max_h)
        self.acc_width = self.max_k.bit_length() + 1
        self._loads = 0
        self._beats = 0
        kw = {k: v for k, v in (("idle", idle), ("backpressure", backpressure)) if v is not None}
        super().__init__(dut, cfg, lambda word: decode_output(word, self.fmts), inputs=("p_stream", "i_stream"), **kw)
        self.psrc = self.sources["p_stream"]
        self.source = self.sources["i_stream"]

    def corrupt(self, value):
        return (value[0] ^ 1, value[1], value[2])

    def job(self, rng, h, kind, tokens=None):
        k = int(rng.integers(1, self.max_k + 1))
        return make_job(rng, h, k, tokens or self.cfg["tokens"], self.fmts, kind)

    async def load_table(self, job) -> None:
        """Load a job's table (the unit takes it once every earlier token is through)."""
        loads = encode_loads(job, self.fmts, self.max_h, self.max_k)
        self._loads += len(loads)
        self.psrc.send(loads)
        await self.until(lambda: self.psrc.sent == self._loads)

    async def run_job(self, job) -> int:
        """Load the job's table, then stream its tokens; returns the number of results expected."""
        n = self.expect(expected_outputs(job, self.fmts))
        await self.load_table(job)
        beats = encode_beats(job, self.fmts, self.acc_width)
        self._beats += len(beats)
        self.source.send(beats)
        await self.until(lambda: self.source.sent == self._beats)
        return n


@cocotb.test()
async def random_with_backpressure(dut):
    """Random tables and tokens of random length and kind, random idle cycles and backpressure."""
    cfg = load_config(**DEFAULTS)
    tb = TB(dut, *stalls(cfg))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"])
    hs = rng.integers(1, cfg["max_h"] + 1, size=cfg["jobs"])
    hs[0] = cfg["max_h"]
    n = 0
    for i, h in enumerate(hs):
        n += await tb.run_job(tb.job(rng, int(h), KINDS[i % len(KINDS)]))
    await tb.finish(n, n * 30 + 2000)


@cocotb.test()
async def edge_tokens(dut):
    """Every kind (saturation, zero and tiny variance, extremes) at short and full lengths."""
    cfg = load_config(**DEFAULTS)
    tb = TB(dut, *stalls(cfg, fixed=0.2, offset=2))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 4)
    n = 0
    for kind in KINDS:
        for h in (1, 2, 17, cfg["max_h"]):
            n += await tb.run_job(tb.job(rng, h, kind, tokens=1))
    await tb.finish(n, n * 30 + 2000)


@cocotb.test()
async def throughput(dut):
    """No stalls: tokens of max_h channels back to back; the period against VectorUnit.token_period."""
    tb = TB(dut)
    cfg = tb.cfg
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 5)
    h, tokens = cfg["max_h"], cfg.get("throughput_tokens", 6)
    job = tb.job(rng, h, "random", tokens=tokens)
    await tb.load_table(job)
    n = tb.expect(expected_outputs(job, tb.fmts))
    tb.source.send(encode_beats(job, tb.fmts, tb.acc_width))
    await tb.finish(n, tokens * h * 4 + 2000)
    cycles = tb.measured_cycles()
    report = {"h": h, "tokens": tokens, "cycles": cycles, "cycles_per_token": round(cycles / tokens, 1),
              "channels_per_cycle": round(h * tokens / cycles, 3), "checked": tb.checked,
              "expected_first": cfg.get("token_cycles"), "expected_period": cfg.get("token_period")}
    tb.write_report(report)
    if cfg.get("token_cycles"):
        assert cycles <= cfg["token_cycles"] + (tokens - 1) * (cfg["token_period"] + 1) + 2, report
