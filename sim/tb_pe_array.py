"""cocotb testbench for the PE array (run it through :mod:`bebert.sim.runner`).

The configuration comes from the ``BEBERT_TB`` environment variable (JSON):
``p``, ``s``, ``max_k``, ``seed``, ``jobs`` (count), ``ks`` (dot-product lengths
to cycle through), ``idle`` and ``stall`` probabilities, ``report`` (path for a
JSON summary), ``corrupt_expected`` (index of one expected result to falsify,
to show that the checker fails). A monitor on ``o_stream`` feeds an in-order checker whose
expected values come from :func:`bebert.golden.pe_array.popcount_dot`.
"""

from __future__ import annotations

import cocotb
import numpy as np

from ..golden.pe_array import Mode, pack_bits, popcount_dot
from .pe_jobs import KINDS, Job, acc_width, decode_result, encode_beats, expected, make_job
from .tb_common import ScoreboardTB, load_config, stalls


DEFAULTS = {"jobs": 20}


class TB(ScoreboardTB):
    """The PE array's scoreboard: expected results from the golden function, in order."""

    def __init__(self, dut, idle=None, backpressure=None):
        cfg = load_config(**DEFAULTS)
        self.p, self.s, self.max_k = cfg["p"], cfg["s"], cfg["max_k"]
        self.max_shift = cfg.get("max_shift", 0)
        width = acc_width(self.max_k, self.max_shift)
        kw = {k: v for k, v in (("idle", idle), ("backpressure", backpressure)) if v is not None}
        super().__init__(dut, cfg, lambda word: decode_result(word, self.p, width), **kw)

    def corrupt(self, value):
        return [value[0] + 1] + value[1:]

    def submit(self, job) -> int:
        """Queue a job's folds and its golden result; returns the number of beats."""
        beats = encode_beats(job, self.s, self.max_shift)
        self.expect([expected(job, self.max_k, self.max_shift)])
        self.source.send(beats)
        return len(beats)


def random_jobs(cfg, rng):
    """XNOR and AND jobs in turn; with ``max_shift >= 3`` every third job is bit-serial 4-bit (W1A4)."""
    ks = cfg.get("ks") or [cfg["max_k"]]
    w1a4 = cfg.get("max_shift", 0) >= 3
    return [make_job(rng, cfg["p"], ks[i % len(ks)], (Mode.XNOR, Mode.AND)[i % 2], bits=4 if w1a4 and i % 3 == 2 else 1)
            for i in range(cfg["jobs"])]


@cocotb.test()
async def random_with_backpressure(dut):
    """Random jobs, random idle cycles on the input and random backpressure on the output."""
    cfg = load_config(**DEFAULTS)
    tb = TB(dut, *stalls(cfg))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"])
    beats = sum(tb.submit(job) for job in random_jobs(cfg, rng))
    await tb.finish(cfg["jobs"], beats * 10 + 500)


@cocotb.test()
async def edge_patterns(dut):
    """All ones, all zeros, alternating bits, lengths around the fold and word boundaries."""
    cfg = load_config(**DEFAULTS)
    tb = TB(dut, *stalls(cfg, fixed=0.2, offset=2))
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 4)
    s, kmax = cfg["s"], cfg["max_k"]
    ks = sorted({k for k in (1, s - 1, s, s + 1, 63, 64, 65, kmax - 1, kmax) if 1 <= k <= kmax})
    jobs = [make_job(rng, cfg["p"], k, mode, kind) for kind in KINDS for mode in Mode for k in ks]
    if cfg.get("max_shift", 0) >= 3:
        jobs += [make_job(rng, cfg["p"], k, Mode.XNOR, kind, bits=4) for kind in KINDS for k in ks]
    beats = sum(tb.submit(job) for job in jobs)
    await tb.finish(len(jobs), beats * 10 + 500)


@cocotb.test()
async def throughput(dut):
    """Back-to-back jobs with no stalls: measured cycles against the ideal (one fold per cycle)."""
    tb = TB(dut)
    cfg = tb.cfg
    await tb.reset()
    rng = np.random.default_rng(cfg["seed"] + 5)
    jobs = random_jobs(cfg, rng)
    beats = sum(tb.submit(job) for job in jobs)
    await tb.finish(len(jobs), beats * 4 + 500)
    cycles = tb.measured_cycles()
    report = {"p": tb.p, "s": tb.s, "jobs": len(jobs), "beats": beats, "ideal_cycles": beats,
              "cycles": cycles, "checked": tb.checked, "mismatches": len(tb.mismatches),
              "binary_macs": int(sum(j.k * j.p * j.bits for j in jobs))}
    tb.write_report(report)
    # one fold per cycle after the pipeline fills
    assert cycles <= beats + 16, report


@cocotb.test()
async def matmul(dut):
    """Y = X . W^T for a random binary M x K matrix W and N vectors X, tile by tile (the demo).

    Streams ceil(M/P) weight tiles for each vector with no stalls, compares every
    element of Y with the golden function and records cycles against the ideal
    ``N * ceil(M/P) * ceil(K/S)`` folds.
    """
    tb = TB(dut)
    cfg = tb.cfg
    await tb.reset()
    p, s = tb.p, tb.s
    m_rows, n_vec, k = cfg["m"], cfg["n"], cfg["k"]
    rng = np.random.default_rng(cfg["seed"])
    w = rng.integers(0, 2, size=(m_rows, k), dtype=np.uint8)
    x = rng.integers(0, 2, size=(n_vec, k), dtype=np.uint8)
    tiles = -(-m_rows // p)
    mode = Mode[cfg.get("mode", "XNOR")]
    beats = 0
    for i in range(n_vec):
        for t in range(tiles):
            rows = np.zeros((p, k), np.uint8)  # the last tile is padded with zero rows
            rows[: min(p, m_rows - t * p)] = w[t * p:(t + 1) * p]
            beats += tb.submit(Job(x[i], rows, mode))
    n_jobs = n_vec * tiles
    await tb.finish(n_jobs, beats * 4 + 1000)
    cycles = tb.measured_cycles()
    y = popcount_dot(pack_bits(x), pack_bits(w), k, mode)
    report = {"m": m_rows, "n": n_vec, "k": k, "p": p, "s": s, "mode": mode.name, "jobs": n_jobs,
              "beats": beats, "ideal_cycles": beats, "mac_ideal_cycles": m_rows * n_vec * k / (p * s),
              "cycles": cycles, "checked_values": tb.checked * p, "mismatches": len(tb.mismatches),
              "y_preview": y[:2, :8].tolist()}
    tb.write_report(report)
