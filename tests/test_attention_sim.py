"""Bi-Attention unit in the Amaranth simulator against the golden function, exact equality."""

import numpy as np
import pytest

from bebert.hw.attention import BiAttention
from bebert.sim.attention_jobs import KINDS, decode_output, encode_beats, expected_rows, make_head
from bebert.sim.streams import run_streams


def run_heads(d, max_len, kb, heads, *, idle=0.0, stall=0.0, seed=0):
    """Stream every head (K/V loads, then queries) through a fresh BiAttention.

    Returns (got, want, cycles, dut); cycles counts clock edges until the last row was taken.
    """
    dut = BiAttention(d=d, max_len=max_len, kb=kb)
    beats = [b for h in heads for b in encode_beats(h, max_len)]
    want = [r for h in heads for r in expected_rows(h)]
    work = sum(h.n + h.m * -(-h.n // kb) for h in heads)
    words, cycles = run_streams(dut, [(dut.i_stream, beats)], len(want), idle=idle, stall=stall, seed=seed,
                                max_cycles=work * 6 + 100 * len(heads) + 200)
    return [decode_output(w, d) for w in words], want, cycles, dut


@pytest.mark.parametrize("d,max_len,kb,ns", [
    (8, 20, 4, [1, 3, 4, 5, 19, 20]),   # n around the chunk width, up to max_len
    (5, 12, 3, [1, 2, 7, 12]),          # odd head size, a chunk width that divides nothing
    (16, 9, 1, [1, 9]),                 # one key per cycle
    (4, 6, 8, [1, 6]),                  # all keys in one chunk (kb > max_len)
])
def test_random_heads_with_stalls(d, max_len, kb, ns):
    """Back-to-back heads of varying n (each loads over the previous head's K/V), random stalls."""
    rng = np.random.default_rng(d * 100 + kb)
    heads = [make_head(rng, d, n, m=max(1, (n * 2) // 3 + 1)) for n in ns]
    got, want, _, _ = run_heads(d, max_len, kb, heads, idle=0.3, stall=0.4, seed=d + kb)
    assert got == want


@pytest.mark.parametrize("kind", KINDS)
def test_edge_heads(kind):
    rng = np.random.default_rng(len(kind))
    d, max_len, kb = 6, 13, 4
    heads = [make_head(rng, d, n, kind=kind) for n in (1, 4, 5, 13)]
    got, want, _, _ = run_heads(d, max_len, kb, heads, idle=0.2, stall=0.2, seed=7)
    assert got == want
    if kind in ("balanced", "all_masked"):
        assert {bits for bits, _ in got} == {(1 << d) - 1}  # C = 0 or nothing attended: sign(0) = +1


def test_ties_at_even_head_size_give_no_attention():
    """Even d: every key has a score of exactly 0 with the one query: nothing attended, all ones."""
    d, n = 8, 7
    q = np.zeros((1, d), np.uint8)
    k = np.zeros((n, d), np.uint8)
    k[:, : d // 2] = 1                       # agree on d/2 bits: score 0
    v = np.zeros((n, d), np.uint8)           # any attended key would make C negative
    from bebert.sim.attention_jobs import Head
    head = Head(q, k, v, np.ones(n, np.uint8))
    got, want, _, _ = run_heads(d, 8, 4, [head])
    assert got == want == [((1 << d) - 1, 1)]


def test_throughput_one_chunk_per_cycle():
    """Unstalled: n loads plus m * ceil(n / kb) chunk cycles per head."""
    rng = np.random.default_rng(11)
    d, max_len, kb, n = 8, 24, 4, 22
    heads = [make_head(rng, d, n) for _ in range(2)]
    got, want, cycles, dut = run_heads(d, max_len, kb, heads)
    assert got == want
    ideal = sum(dut.cycles_per_head(h.n, h.m) for h in heads)
    assert ideal == 2 * (22 + 22 * 6)
    # the second head's loads wait for the first head's pipeline to read its last V rows
    assert ideal <= cycles <= ideal + 2 * (dut.latency + 4)


def test_queries_before_any_head_give_all_ones():
    from bebert.hw.attention import AttentionInput, AttentionKind
    d = 4
    dut = BiAttention(d=d, max_len=4, kb=2)
    lay = AttentionInput(d)
    q = (AttentionKind.Q.value << lay["kind"].offset) | (0b1010 << lay["qk"].offset) | (1 << lay["last"].offset)
    got, _ = run_streams(dut, [(dut.i_stream, [q])], 1, max_cycles=100)
    assert [decode_output(w, d) for w in got] == [(0b1111, 1)]


@pytest.mark.parametrize("bad", [dict(d=0, max_len=8, kb=2), dict(d=8, max_len=-1, kb=2),
                                 dict(d=8, max_len=8, kb=1.0)])
def test_bad_parameters(bad):
    with pytest.raises(TypeError, match="must be a positive integer"):
        BiAttention(**bad)


def test_bad_impl():
    with pytest.raises(ValueError, match="impl must be one of"):
        BiAttention(d=4, max_len=4, kb=2, impl="asic")
