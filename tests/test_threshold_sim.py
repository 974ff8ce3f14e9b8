"""Threshold unit in the Amaranth simulator against the golden function, exact equality."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bebert.golden.threshold import threshold_words
from bebert.hw.pe_array import PEArray
from bebert.hw.threshold import ThresholdUnit
from bebert.sim.streams import run_streams
from bebert.sim.threshold_jobs import (KINDS, decode_output, encode_beats, encode_loads, expected_words,
                                       make_job)


def run_jobs(p, width, max_channels, jobs, *, word_bits=64, idle=0.0, stall=0.0, seed=0):
    """Load each job's table, stream its vectors, collect every output word.

    Returns (got, want, cycles, dut); cycles counts clock edges until the last word was taken.
    """
    dut = ThresholdUnit(p=p, width=width, max_channels=max_channels, word_bits=word_bits)
    rng = np.random.default_rng(seed)
    plan = [(encode_loads(j, p, width, dut.groups), encode_beats(j, p, width, rng)) for j in jobs]
    want = [w for j in jobs for w in expected_words(j, p, word_bits)]
    feeds = [feed for loads, beats in plan for feed in ((dut.t_stream, loads), (dut.i_stream, beats))]
    n_beats = sum(len(b) + len(l) for l, b in plan)
    words, cycles = run_streams(dut, feeds, len(want), idle=idle, stall=stall, seed=seed,
                                max_cycles=n_beats * 8 + 200)
    return [decode_output(w, word_bits) for w in words], want, cycles, dut


@pytest.mark.parametrize("p,width,word_bits,cs", [
    (1, 4, 8, [1, 7, 8, 9, 20]),            # one channel per beat, narrow values, short words
    (4, 8, 64, [1, 3, 4, 5, 64, 65, 100]),  # vectors around the group and word boundaries
    (16, 12, 64, [16, 40, 64, 96, 130]),    # the PE array's default P with max_k = 1536 widths
    (8, 6, 8, [8, 9, 30]),                  # one group per word
])
def test_random_with_stalls(p, width, word_bits, cs):
    rng = np.random.default_rng(p * 100 + width)
    jobs = [make_job(rng, c, width, 3, kind) for c in cs for kind in ("random", "extremes")]
    got, want, _, _ = run_jobs(p, width, max(cs), jobs, word_bits=word_bits, idle=0.3, stall=0.4, seed=p)
    assert got == want


@pytest.mark.parametrize("kind", KINDS)
def test_edge_tables(kind):
    """Constant/masked channels, extreme values, and the attention bool rule with padding keys."""
    rng = np.random.default_rng(len(kind))
    jobs = [make_job(rng, c, 7, 4, kind) for c in (1, 5, 8, 33)]
    got, want, _, _ = run_jobs(8, 7, 40, jobs, idle=0.2, stall=0.2, seed=3)
    assert got == want


def test_golden_packing_is_the_word_order():
    """With 64-bit words the unit's words are the golden uint64 words, in order."""
    rng = np.random.default_rng(9)
    job = make_job(rng, 150, 10, 2, "random")
    got, want, _, _ = run_jobs(16, 10, 160, [job])
    assert got == want
    golden = threshold_words(job.y, job.t, job.pol)
    assert [bits for bits, _ in got] == [int(w) for w in golden.reshape(-1)]
    assert [last for _, last in got] == [0, 0, 1] * 2


def test_throughput_one_beat_per_cycle():
    """Unstalled: one accumulator beat per cycle (8 vectors x 12 beats = 96 beats)."""
    rng = np.random.default_rng(5)
    p = 8
    job = make_job(rng, 96, 9, 8, "random")
    got, want, cycles, dut = run_jobs(p, 9, 96, [job])
    assert got == want
    beats = 8 * 12 + 12  # data beats and the table loads
    assert beats <= cycles <= beats + dut.latency + 4


@pytest.mark.parametrize("bad", [dict(p=0, width=8, max_channels=8), dict(p=2, width=8, max_channels=-3),
                                 dict(p=True, width=8, max_channels=8)])
def test_bad_parameters(bad):
    with pytest.raises(TypeError, match="must be a positive integer"):
        ThresholdUnit(**bad)


def test_word_bits_must_be_a_multiple_of_p():
    with pytest.raises(ValueError, match="must divide word_bits"):
        ThresholdUnit(p=3, width=8, max_channels=8)


class _ScoresPipe(wiring.Component):
    """PE array (XNOR scores) -> threshold unit (the bool rule with a padding mask)."""

    def __init__(self, p, s, max_k, max_channels):
        self.pe = PEArray(p=p, s=s, max_k=max_k)
        self.thr = ThresholdUnit(p=p, width=self.pe.acc_width, max_channels=max_channels)
        super().__init__({
            "i_stream": In(self.pe.i_stream.signature.flip()),
            "t_stream": In(self.thr.t_stream.signature.flip()),
            "o_stream": Out(self.thr.o_stream.signature),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = self.pe
        m.submodules.thr = self.thr
        wiring.connect(m, wiring.flipped(self.i_stream), self.pe.i_stream)
        wiring.connect(m, wiring.flipped(self.t_stream), self.thr.t_stream)
        wiring.connect(m, self.pe.o_stream, self.thr.i_stream)
        wiring.connect(m, self.thr.o_stream, wiring.flipped(self.o_stream))
        return m


def test_pe_array_scores_into_threshold_unit():
    """The PE array's o_stream connects straight to the unit: query x keys scores -> attention rows.

    Each job is one query against P keys (S = d, one fold); the table is the bool rule
    score > 0 with padding keys masked, so the packed rows are golden.attention.attention_bits.
    """
    from bebert.golden.attention import attention_bits
    from bebert.golden.pe_array import Mode, pack_bits
    from bebert.golden.threshold import attention_table
    from bebert.sim.pe_jobs import Job, encode_beats as pe_beats
    from bebert.sim.threshold_jobs import ThresholdJob

    rng = np.random.default_rng(21)
    p, d, n, m_q = 8, 6, 21, 5
    q = rng.integers(0, 2, (m_q, d), dtype=np.uint8)
    k = rng.integers(0, 2, (n, d), dtype=np.uint8)
    mask = (rng.random(n) < 0.75).astype(np.uint8)
    dut = _ScoresPipe(p, d, d, 64)
    width = dut.pe.acc_width
    t, pol = attention_table(d, n, mask, width)
    loads = encode_loads(ThresholdJob(t, pol, np.zeros((0, n), np.int64)), p, width, dut.thr.groups)
    groups = -(-n // p)
    keys = np.zeros((groups * p, d), np.uint8)
    keys[:n] = k  # padded keys are zero rows; the table masks them
    beats = [b for i in range(m_q) for g in range(groups)
             for b in pe_beats(Job(q[i], keys[g * p:(g + 1) * p], Mode.XNOR), d)]
    want = attention_bits(pack_bits(q), pack_bits(k), d, mask)  # (m_q, 1) words
    words, _ = run_streams(dut, [(dut.t_stream, loads), (dut.i_stream, beats)], m_q, idle=0.2, stall=0.3,
                           seed=4, max_cycles=400)
    got = [decode_output(w, 64) for w in words]
    assert got == [(int(w), 1) for w in want[:, 0]]
