"""Vector unit in the Amaranth simulator against the golden function, exact equality."""

import numpy as np
import pytest

from bebert.golden.intops import Fmt
from bebert.golden.vector import VectorFormats
from bebert.hw.vector import VectorUnit
from bebert.sim.streams import run_streams
from bebert.sim.vector_jobs import (KINDS, decode_output, decode_outputs, encode_beats, encode_loads, expected_outputs,
                                    make_job)

FMTS = VectorFormats.default(384)


def run_jobs(max_h, max_k, jobs, *, fmts=FMTS, idle=0.0, stall=0.0, seed=0, banks=3, vw=1):
    """Load each job's table, stream its tokens, collect every output beat.

    Returns (got, want, cycles, dut); cycles counts clock edges until the last result was taken.
    """
    dut = VectorUnit(max_h=max_h, max_k=max_k, fmts=fmts, banks=banks, vw=vw)
    feeds, want = [], []
    for j in jobs:
        feeds += [(dut.p_stream, encode_loads(j, fmts, max_h, max_k)),
                  (dut.i_stream, encode_beats(j, fmts, dut.acc_width, vw))]
        want += expected_outputs(j, fmts)
    n_in = sum(j.h * (j.tokens + 1) for j in jobs)
    words, cycles = run_streams(dut, feeds, len(want) // vw, idle=idle, stall=stall, seed=seed,
                                max_cycles=n_in * 6 + sum(j.tokens for j in jobs) * 200 + 500)
    if vw == 1:
        return [decode_output(w, fmts) for w in words], want, cycles, dut
    return [o for w in words for o in decode_outputs(w, fmts, vw)], want, cycles, dut


@pytest.mark.parametrize("max_h,max_k,hs", [
    (24, 1536, [24, 7, 1, 2]),   # the FFN down-projection's K; one- and two-channel tokens
    (40, 384, [40, 33]),
])
def test_random_with_stalls(max_h, max_k, hs):
    rng = np.random.default_rng(max_h)
    jobs = [make_job(rng, h, int(rng.integers(1, max_k + 1)), 3, FMTS, kind) for h in hs for kind in KINDS]
    got, want, _, _ = run_jobs(max_h, max_k, jobs, idle=0.3, stall=0.4, seed=max_h)
    assert got == want


@pytest.mark.parametrize("kind", KINDS)
def test_edge_kinds(kind):
    """Saturation at every stage, zero and tiny variance, extreme codes; K = max_k and K = 1."""
    rng = np.random.default_rng(len(kind))
    jobs = [make_job(rng, h, k, 3, FMTS, kind) for h, k in ((16, 64), (9, 1), (3, 64))]
    got, want, _, _ = run_jobs(16, 64, jobs, idle=0.2, stall=0.2, seed=3)
    assert got == want
    if kind == "saturate":
        ys = np.array([y for y, _, _ in want])
        assert (ys == FMTS.layernorm.qmax).any() and (ys == FMTS.layernorm.qmin).any()


def test_other_formats():
    """Narrow residual (saturating like tests/test_golden_model.py) and finer fractions."""
    fmts = VectorFormats(Fmt(12, 10), Fmt(10, 4), Fmt(10, 6), Fmt(14, 9), Fmt(16, 13), Fmt(12, 7),
                         FMTS.ln, eps_code=5)
    rng = np.random.default_rng(11)
    jobs = [make_job(rng, 12, 50, 3, fmts, kind) for kind in KINDS]
    got, want, _, _ = run_jobs(12, 50, jobs, fmts=fmts, idle=0.2, stall=0.3, seed=5)
    assert got == want


@pytest.mark.parametrize("h, banks", [(24, 3), (96, 3), (96, 2), (200, 3)])
def test_rate_and_latency(h, banks):
    """No stalls: the documented latency of a lone token and the sustained rate.

    H = 24 is bound by the statistics engine; with two banks H = 96 is bound by the banks (two tokens per
    2H + 10 + stats cycles, as H = 384 was); with three, 96 is just bank bound and 200 runs one channel per
    cycle (H >= 10 + stats)."""
    rng = np.random.default_rng(5)
    tokens = 6
    job = make_job(rng, h, 100, 1, FMTS, "random")
    _, _, cycles1, dut = run_jobs(h, 100, [job], banks=banks)
    # the load (h beats) then one token; token_cycles is a bound (the normalization steps vary)
    first = h + dut.token_cycles(h)
    assert first - dut.norm_steps <= cycles1 <= first + 3, (cycles1, first)
    job = make_job(rng, h, 100, tokens, FMTS, "random")
    got, want, cycles, dut = run_jobs(h, 100, [job], banks=banks)
    assert got == want
    period = dut.token_period(h)
    if banks == 3 and h >= 10 + dut.stats_cycles:
        assert period == h, period
    steady = (cycles - h - dut.token_cycles(h)) / (tokens - 1)
    assert period - 20 <= steady <= period + 1, (steady, period)


@pytest.mark.parametrize("vw", [2, 4])
def test_wide_beats_random_and_edges(vw):
    """``vw`` channels a beat: random tokens of several lengths (multiples of vw, down to one beat), every
    edge kind, random input gaps and output stalls; exact against golden."""
    rng = np.random.default_rng(40 + vw)
    jobs = [make_job(rng, h, int(rng.integers(1, 385)), 3, FMTS, kind) for h in (32, vw, 3 * vw) for kind in KINDS]
    got, want, _, _ = run_jobs(32, 384, jobs, idle=0.3, stall=0.4, seed=vw, vw=vw)
    assert got == want


@pytest.mark.parametrize("h, vw", [(384, 4), (200, 2)])
def test_wide_beats_rate(h, vw):
    """No stalls: ``vw`` channels a cycle sustained where the banks allow (the documented period with
    ``H / vw`` beats a pass), and the lone token's latency."""
    rng = np.random.default_rng(9)
    job = make_job(rng, h, 100, 1, FMTS, "random")
    _, _, cycles1, dut = run_jobs(h, 100, [job], vw=vw)
    first = h + dut.token_cycles(h)
    assert first - dut.norm_steps <= cycles1 <= first + 3, (cycles1, first)
    tokens = 6
    job = make_job(rng, h, 100, tokens, FMTS, "random")
    got, want, cycles, dut = run_jobs(h, 100, [job], vw=vw)
    assert got == want
    period = dut.token_period(h)
    steady = (cycles - h - dut.token_cycles(h)) / (tokens - 1)
    assert period - 20 <= steady <= period + 1, (steady, period)
    assert period < h / 1.5, period       # faster than one channel a cycle


@pytest.mark.parametrize("vw", [3, 0, 64])
def test_bad_vw(vw):
    with pytest.raises(ValueError, match="vw .* must be a power of two dividing max_h"):
        VectorUnit(max_h=32, max_k=8, fmts=FMTS, vw=vw)


@pytest.mark.parametrize("bad", [dict(max_h=0, max_k=8), dict(max_h=8, max_k=True)])
def test_bad_parameters(bad):
    with pytest.raises(TypeError, match="must be a positive integer"):
        VectorUnit(fmts=FMTS, **bad)


@pytest.mark.parametrize("banks", [1, 2.5, True])
def test_bad_banks(banks):
    with pytest.raises(ValueError, match="banks must be an integer >= 2"):
        VectorUnit(max_h=8, max_k=8, fmts=FMTS, banks=banks)


def test_unsigned_format_refused():
    fmts = VectorFormats(FMTS.scale, FMTS.bias, Fmt(16, 8, signed=False), FMTS.layernorm, FMTS.ln_weight,
                         FMTS.ln_bias, FMTS.ln, 1)
    with pytest.raises(ValueError, match="signed formats"):
        VectorUnit(max_h=8, max_k=8, fmts=fmts)
