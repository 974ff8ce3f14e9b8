"""cocotb testbench for the Bi-Attention unit (run it through :mod:`bebert.sim.runner`).

The configuration comes from the ``BEBERT_TB`` environment variable (JSON):
``d``, ``max_len``, ``kb``, ``seed``, ``heads`` (count), ``idle`` and ``stall``
probabilities, ``report`` (path for a JSON summary), ``corrupt_expected``
(index of one expected row to falsify, to show that the checker fails). A
monitor on ``o_stream`` feeds an in-order checker whose expected rows come from
:func:`bebert.golden.attention.bi_attention`.
"""

from __future__ import annotations

import cocotb
import numpy as np

from .attention_jobs import KINDS, decode_output, encode_beats, expected_rows, make_head
from .tb_common import ScoreboardTB, load_config, stalls

DEFAULTS = {"heads": 6}


def head_cycles(n: int, m: int, kb: int) -> int:
    """Ideal cycles of a head: ``n`` K/V loads plus ``m * ceil(n / kb)`` chunks."""
    return n + m * -(-n // kb)


class TB(ScoreboardTB):
    """The Bi-Attention unit's scoreboard: expected context rows from the golden function."""

    def __init__(self, dut, idle=None, backpressure=None):
        cfg = load_config(**DEFAULTS)
        self.d, self.max_len, self.kb = cfg["d"], cfg["max_len"], cfg["kb"]
        kw = {k: v for k, v in (("idle", idle), ("backpressure", backpressure)) if v is not None}
        super().__init__(dut, cfg, lambda word: decode_output(word, self.d), **kw)

    def corrupt(self, row):
        return (row[0] ^ 1, row[1])

    def submit(self, head) -> int:
        """Queue a head's beats and expected rows; returns its ideal cycle count."""
        self.expect(expected_rows(head))
        self.source.send(encode_beats(head, self.max_len))
        return head_cycles(head.n, head.m, self.kb)


@cocotb.test()
async def random_with_backpressure(dut):
    """Heads of random length n <= max_len and random query counts, random idle cycles and backpressure."""
    cfg = load_config(**DEFAULTS)
    tb = TB(dut, *stalls(cfg))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"])
    ns = rng.integers(1, tb.max_len + 1, size=cfg["heads"])
    ns[0] = tb.max_len
    kinds = ("random", "padded", "ties")
    cycles = 0
    for i, n in enumerate(ns):
        m = int(rng.integers(1, tb.max_len + 1))
        cycles += tb.submit(make_head(rng, tb.d, int(n), m, kinds[i % len(kinds)]))
    await tb.finish(tb.submitted, cycles * 10 + 1000)


@cocotb.test()
async def edge_heads(dut):
    """Every head kind at boundary lengths (1, kb - 1, kb, kb + 1, max_len)."""
    cfg = load_config(**DEFAULTS)
    tb = TB(dut, *stalls(cfg, fixed=0.2, offset=2))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 4)
    kb, nmax = tb.kb, tb.max_len
    ns = sorted({n for n in (1, kb - 1, kb, kb + 1, nmax) if 1 <= n <= nmax})
    cycles = sum(tb.submit(make_head(rng, tb.d, n, min(n, 8), kind)) for kind in KINDS for n in ns)
    await tb.finish(tb.submitted, cycles * 10 + 1000)


@cocotb.test()
async def throughput(dut):
    """No stalls, full-length heads back to back: measured cycles per head against the ideal."""
    tb = TB(dut)
    cfg = tb.cfg
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 5)
    heads = 3
    ideal = sum(tb.submit(make_head(rng, tb.d, tb.max_len)) for _ in range(heads))
    await tb.finish(tb.submitted, ideal * 4 + 500)
    cycles = tb.measured_cycles()
    report = {"d": tb.d, "max_len": tb.max_len, "kb": tb.kb, "heads": heads, "n": tb.max_len,
              "ideal_cycles": ideal, "cycles": cycles, "cycles_per_head": cycles / heads,
              "binary_macs": 2 * heads * tb.max_len ** 2 * tb.d, "checked": tb.checked}
    tb.write_report(report)
    # the pipeline drains once per head before the next head's K/V may load (plus the final drain)
    assert cycles <= ideal + heads * 30, report
