"""PE array in the Amaranth simulator against the golden function, exact equality."""

import numpy as np
import pytest

from bebert.golden.pe_array import Mode
from bebert.hw.pe_array import PEArray
from bebert.sim.pe_jobs import decode_result, encode_beats, expected, make_job
from bebert.sim.streams import run_streams


def run_jobs(p, s, max_k, jobs, *, idle=0.0, stall=0.0, seed=0, max_shift=0):
    """Stream all jobs through a fresh PEArray; returns (results, expected, cycles, dut)."""
    dut = PEArray(p=p, s=s, max_k=max_k, max_shift=max_shift)
    beats = [b for job in jobs for b in encode_beats(job, s, max_shift)]
    words, cycles = run_streams(dut, [(dut.i_stream, beats)], len(jobs), idle=idle, stall=stall, seed=seed,
                                max_cycles=len(beats) * 8 + 200 + 20 * len(jobs))
    want = [expected(j, max_k, max_shift) for j in jobs]
    return [decode_result(w, p, dut.acc_width) for w in words], want, cycles, dut


def random_jobs(rng, p, ks, modes=(Mode.XNOR, Mode.AND)):
    return [make_job(rng, p, k, modes[i % len(modes)]) for i, k in enumerate(ks)]


@pytest.mark.parametrize("p,s", [(1, 8), (3, 16), (4, 64), (2, 100)])
def test_random_with_stalls(p, s):
    rng = np.random.default_rng(p * 1000 + s)
    ks = [1, s - 1 if s > 1 else 1, s, s + 1, 3 * s + 7, 64, 65, 200]
    jobs = random_jobs(rng, p, ks)
    got, want, _, _ = run_jobs(p, s, 400, jobs, idle=0.3, stall=0.4, seed=p + s)
    assert got == want


@pytest.mark.parametrize("kind", ["ones", "zeros", "alternating"])
@pytest.mark.parametrize("mode", [Mode.XNOR, Mode.AND])
def test_edge_patterns(kind, mode):
    rng = np.random.default_rng(0)
    p, s = 3, 32
    jobs = [make_job(rng, p, k, mode, kind) for k in (1, 31, 32, 33, 100, 128)]
    got, want, _, _ = run_jobs(p, s, 128, jobs, idle=0.2, stall=0.2)
    assert got == want
    ks = [1, 31, 32, 33, 100, 128]
    if kind == "ones":
        # all agree (XNOR counts every bit); w selects every +1 of a (AND sums to k)
        assert [g[0] for g in got] == ks
    if kind == "zeros":
        # all agree (XNOR); w selects nothing (AND)
        assert [g[0] for g in got] == ([0] * 6 if mode is Mode.AND else ks)


def test_s_equals_k_full_rate():
    """S = K: every beat is a whole dot product; with no stalls one result per cycle."""
    rng = np.random.default_rng(7)
    p, s = 4, 48
    jobs = random_jobs(rng, p, [s] * 40)
    got, want, cycles, dut = run_jobs(p, s, s, jobs)
    assert got == want
    # credit and FIFO never throttle an unstalled stream
    assert cycles <= len(jobs) + dut.latency + 3


def test_result_wraps_to_signed_width():
    rng = np.random.default_rng(3)
    p, s, max_k = 2, 16, 20  # signed 6-bit results; K = 40 > max_k wraps to 40 - 64
    jobs = [make_job(rng, p, 40, Mode.XNOR, "ones")]
    got, want, _, _ = run_jobs(p, s, max_k, jobs)
    assert got == want == [[40 - 64] * 2]


def test_throughput_one_beat_per_cycle():
    """Without stalls the array takes one fold per cycle: cycles ~= beats + latency."""
    rng = np.random.default_rng(11)
    p, s = 2, 32
    jobs = random_jobs(rng, p, [320] * 6)  # 10 folds each, 60 beats
    got, want, cycles, dut = run_jobs(p, s, 320, jobs)
    assert got == want
    assert 60 <= cycles <= 60 + dut.latency + 3


@pytest.mark.parametrize("p,s", [(1, 8), (3, 20)])
def test_bitserial_w1a4_with_stalls(p, s):
    """4-bit activations as 4 bit-planes (shift = plane), mixed with 1-bit XNOR and AND jobs."""
    rng = np.random.default_rng(40 + s)
    jobs = [make_job(rng, p, k, Mode.XNOR, kind, bits=4) for k in (1, s, s + 3, 50)
            for kind in ("random", "ones", "zeros")]
    jobs += random_jobs(rng, p, [s, 2 * s + 1])
    got, want, _, dut = run_jobs(p, s, 64, jobs, idle=0.3, stall=0.3, seed=s, max_shift=3)
    assert got == want
    # all-maximum activations against all-ones weights: every plane agrees on every bit
    assert got[4] == [15 * s] * p  # jobs[4]: K = s, kind 'ones'


def test_bitserial_needs_shift_hardware():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="max_shift >= 3"):
        encode_beats(make_job(rng, 2, 10, Mode.XNOR, "random", bits=4), 8)


@pytest.mark.parametrize("bad", [dict(p=0, s=8, max_k=8), dict(p=2, s=-1, max_k=8), dict(p=2, s=8, max_k=1.5),
                                 dict(p=True, s=8, max_k=8), dict(p=2, s=8, max_k=8, max_shift=8),
                                 dict(p=2, s=8, max_k=8, max_shift=-1)])
def test_bad_parameters(bad):
    with pytest.raises(TypeError, match="must be (a positive integer|an integer from 0 to 7)"):
        PEArray(**bad)
