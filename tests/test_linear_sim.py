"""Binary linear-layer engine in the Amaranth simulator with the memory model, against golden."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from bebert.golden.fetch import fetch_tiles
from bebert.golden.linear import (activation_beats, expected_cycles, layers_memory, linear_popcounts, linear_sign,
                                  output_beats, random_layer, raw_output_beats, weight_tiles)
from bebert.golden.pe_array import pack_bits
from bebert.hw.linear import LinearCodec, LinearEngine
from bebert.sim.memory import MemoryTiming, amaranth_memory
from bebert.sim.streams import feeder, stream_get
from bebert.sim.tb_linear import layer_feeds


def dirty_padding(codec, beats, k, rng):
    """Set random bits past ``K`` in each token's last fold (the engine must mask them)."""
    s = codec.s
    f_count, rem = -(-k // s), k - (-(-k // s) - 1) * s
    off = codec.x_layout["data"].offset
    junk_mask = ((1 << s) - 1) ^ ((1 << rem) - 1)
    return [b | ((int(rng.integers(0, 1 << 62)) & junk_mask) << off) if i % f_count == f_count - 1 else b
            for i, b in enumerate(beats)]


def run_layers(dut, layers, *, latency=4, bw=None, stall=0.0, idle=0.0, seed=0, base=5, dirty=False, raw=None):
    """Load and run every layer on ``dut`` in turn; returns a list of per-layer dicts.

    ``dirty``: activation bits past ``K`` are random instead of zero. ``raw``: per layer, a raw command (a
    dual engine's: ``xr_stream`` load, popcounts on ``r_stream``; default: the engine's kind for all).

    Each dict: ``got`` (output (bits, last) pairs), ``want``, ``counters`` (read after the
    last beat), ``measured`` (cycles from the command's acceptance to its last output transfer).
    """
    p, s, wb = dut.p, dut.s, dut.word_bits
    codec = dut.codec
    rng = np.random.default_rng(seed)
    words, bases = layers_memory(layers, p, s, wb, rng, base)
    for layer, b in zip(layers, bases):
        tiles = weight_tiles(pack_bits(layer.w), layer.k, layer.n_out, p, s)
        assert fetch_tiles(words, wb, p * s, b, len(tiles)) == tiles  # the layout is the fetch order
    timing = MemoryTiming(latency, bw or wb, wb)

    raw = [dut.raw] * len(layers) if raw is None else list(raw)
    feeds = []
    wants = []
    for layer, b, is_raw in zip(layers, bases, raw):
        (xb, tl, cmd), want = layer_feeds(codec, layer, b, dut.t_width, dut.groups)
        if dirty:
            xb = dirty_padding(codec, xb, layer.k, rng)
        if is_raw:   # no thresholds; popcount beats
            if dut.dual:
                feeds += [(dut.xr_stream, xb), (dut.c_stream, [codec.command(layer.n, layer.k, layer.n_out, b,
                                                                             raw=True)])]
            else:
                feeds += [(dut.x_stream, xb), (dut.c_stream, cmd)]
            beats = raw_output_beats(linear_popcounts(pack_bits(layer.x), pack_bits(layer.w), layer.k), p)
            want = [(v, int(i == len(beats) - 1)) for i, v in enumerate(beats)]
        else:
            feeds += [(dut.x_stream, xb), (dut.t_stream, tl), (dut.c_stream, cmd)]
        wants.append(want)
    decode_raw = lambda w: codec.raw_output(w, dut.acc_width)  # noqa: E731
    results = [dict(want=w, got=[], stream=(dut.r_stream if dut.dual else dut.o_stream) if r else dut.o_stream,
                    decode=decode_raw if r else codec.output) for w, r in zip(wants, raw)]
    accepts, finals = [], []
    done = []

    producer = feeder(feeds, idle=idle, seed=seed)

    async def memory(ctx):
        await amaranth_memory(ctx, dut.req_stream, dut.rsp_stream, words, timing)

    async def consumer(ctx):
        prng = random.Random(seed + 1)
        for res in results:
            while len(res["got"]) < len(res["want"]):
                while prng.random() < stall:
                    await ctx.tick()
                res["got"].append(res["decode"](await stream_get(ctx, res["stream"])))
                if res["got"][-1][1]:
                    break
            # the edge that took the last beat ended the command: the counters are final now
            res["counters"] = {k: ctx.get(getattr(dut.counters, k))
                               for k in ("cycles", "busy", "stall_weights", "stall_output")}
            assert ctx.get(dut.running) == 0
        done.append(True)

    outs = [dut.o_stream] + ([dut.r_stream] if dut.dual else [])

    async def watcher(ctx):
        cycle = 0
        async for _, _, cv, cr, *beats in ctx.tick().sample(
                dut.c_stream.valid, dut.c_stream.ready,
                *(v for o in outs for v in (o.valid, o.ready, o.payload.last))):
            cycle += 1
            if cv and cr:
                accepts.append(cycle)
            if any(beats[i] and beats[i + 1] and beats[i + 2] for i in range(0, len(beats), 3)):
                finals.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(memory, background=True)
    sim.add_testbench(consumer)
    sim.add_process(watcher)
    limit = 2000 + sum(20 * (ly.n + 4) * -(-ly.k // s) * -(-ly.n_out // p) * (1 + stall * 3)
                       + 4 * ly.k * ly.n_out / min(bw or wb, wb) for ly in layers)
    sim.run_until(1e-8 * int(limit))
    assert done, f"outputs did not all come out in {int(limit)} cycles: {[len(r['got']) for r in results]}"
    for res, a, fin in zip(results, accepts, finals):
        res["measured"] = fin - a
    return results


def check_counters(res, layer, p, s):
    c = res["counters"]
    beats = -(-layer.n_out // p) * layer.n * -(-layer.k // s)
    assert c["cycles"] == res["measured"], (c, res["measured"])
    assert c["busy"] == beats, (c, beats)
    assert c["busy"] + c["stall_weights"] + c["stall_output"] <= c["cycles"], c


SHAPES = [
    # (p, s, word_bits, [(n, K, N), ...]) run back to back on one engine
    (4, 16, 16, [(3, 40, 10), (1, 16, 4), (2, 1, 1), (5, 33, 9)]),   # K % S, N % P, n = 1, K = 1, N = 1
    (3, 8, 8, [(4, 20, 7), (1, 64, 3)]),                             # P not a power of two, tile = 3 words
    (8, 32, 64, [(6, 100, 20), (1, 31, 8)]),                         # a tile is 4 words of 64 bits
    (2, 7, 16, [(3, 15, 5)]),                                       # odd S: tile 14 bits in one word
]


@pytest.mark.parametrize("p,s,word_bits,shapes", SHAPES)
def test_layers_match_golden_with_stalls(p, s, word_bits, shapes):
    rng = np.random.default_rng(p * 100 + s)
    max_k = max(k for _, k, _ in shapes)
    max_n = max(n_out for _, _, n_out in shapes)
    max_tokens = max(n for n, _, _ in shapes)
    dut = LinearEngine(p=p, s=s, max_k=max_k, max_n=max_n, max_tokens=max_tokens, word_bits=word_bits,
                       addr_width=12)
    layers = [random_layer(rng, n, k, n_out, p, dut.acc_width) for n, k, n_out in shapes]
    assert sum(ly.ties() for ly in layers) > 0  # the thresholds include exact ties
    results = run_layers(dut, layers, latency=7, bw=word_bits / 3, stall=0.4, idle=0.3, seed=p + s, dirty=True)
    for res, layer in zip(results, layers):
        assert res["got"] == res["want"]
        check_counters(res, layer, p, s)


@pytest.mark.parametrize("p,s,word_bits,shapes", [SHAPES[0], SHAPES[3]])
def test_raw_mode_popcounts_with_stalls(p, s, word_bits, shapes):
    """Raw mode: the PE array's popcounts come out (channels past N zero), same order and counters."""
    rng = np.random.default_rng(p * 10 + s)
    dut = LinearEngine(p=p, s=s, max_k=max(k for _, k, _ in shapes), max_n=max(c for _, _, c in shapes),
                       max_tokens=max(n for n, _, _ in shapes), word_bits=word_bits, addr_width=12, raw=True)
    assert dut.thr is None and "t_stream" not in dut.signature.members
    layers = [random_layer(rng, n, k, n_out, p, dut.acc_width) for n, k, n_out in shapes]
    results = run_layers(dut, layers, latency=5, bw=word_bits / 2, stall=0.4, idle=0.3, seed=p, dirty=True)
    for res, layer in zip(results, layers):
        assert res["got"] == res["want"]
        check_counters(res, layer, p, s)


@pytest.mark.parametrize("p,s,word_bits,max_k,max_k_raw,shapes", [
    # (n, K, N, raw) in order on one dual engine: raw K past the sign commands' max_k, N % P, n = 1
    (4, 16, 16, 40, 100, [(3, 40, 10, 0), (3, 100, 8, 1), (1, 17, 5, 1), (2, 33, 9, 0), (5, 64, 7, 1), (1, 1, 1, 0)]),
    (3, 8, 8, 20, 20, [(4, 20, 7, 1), (4, 20, 7, 0), (2, 9, 3, 1)]),          # max_k_raw = max_k, P odd
])
def test_dual_engine_sign_and_raw_commands_with_stalls(p, s, word_bits, max_k, max_k_raw, shapes):
    """A dual engine: sign and raw commands interleaved, each exact (bits on o_stream, popcounts on r_stream),
    the next layer's load given while the current one runs, counters as a single-kind engine's."""
    rng = np.random.default_rng(p * 7 + s)
    dut = LinearEngine(p=p, s=s, max_k=max_k, max_n=max(c for _, _, c, _ in shapes),
                       max_tokens=max(n for n, *_ in shapes), word_bits=word_bits, addr_width=12, dual=True,
                       max_k_raw=max_k_raw)
    assert dut.t_width == max_k.bit_length() + 1 and dut.acc_width == max(max_k, max_k_raw).bit_length() + 1
    layers = [random_layer(rng, n, k, n_out, p, dut.t_width) for n, k, n_out, _ in shapes]
    results = run_layers(dut, layers, latency=5, bw=word_bits / 2, stall=0.4, idle=0.3, seed=p + 1, dirty=True,
                         raw=[r for *_, r in shapes])
    for res, layer in zip(results, layers):
        assert res["got"] == res["want"]
        check_counters(res, layer, p, s)


def test_dual_engine_loads_during_the_other_kind():
    """While a raw command runs, the sign side's activation and threshold loads are ready and the raw side's
    is not; while a sign command runs, the other way round (the memory never answers: the command stays)."""
    def readies(raw):
        dut = LinearEngine(p=2, s=8, max_k=16, max_n=8, max_tokens=4, word_bits=8, addr_width=12, dual=True,
                           max_k_raw=32)
        seen = []

        async def bench(ctx):
            ctx.set(dut.c_stream.payload.as_value(), dut.codec.command(2, 16, 4, 0, raw=raw))
            ctx.set(dut.c_stream.valid, 1)
            await ctx.tick()
            ctx.set(dut.c_stream.valid, 0)
            await ctx.tick().repeat(3)
            seen.append((ctx.get(dut.running), ctx.get(dut.x_stream.ready), ctx.get(dut.t_stream.ready),
                         ctx.get(dut.xr_stream.ready), ctx.get(dut.c_stream.ready)))

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        return seen[0]

    assert readies(True) == (1, 1, 1, 0, 0)
    assert readies(False) == (1, 0, 0, 1, 0)


def test_dual_engine_bad_parameters():
    kw = dict(p=2, s=8, max_k=16, max_n=8, max_tokens=4, word_bits=8)
    with pytest.raises(ValueError, match="raw or dual"):
        LinearEngine(**kw, raw=True, dual=True)
    with pytest.raises(ValueError, match="max_k_raw is a dual"):
        LinearEngine(**kw, max_k_raw=32)
    with pytest.raises(TypeError, match="max_k_raw"):
        LinearEngine(**kw, dual=True, max_k_raw=0)
    with pytest.raises(ValueError, match="only a dual engine"):
        LinearCodec(p=2, s=8, max_k=16, max_n=8, max_tokens=4).command(1, 8, 2, 0, raw=True)


@pytest.mark.parametrize("p,s,word_bits,n,k,n_out,latency,bw", [(4, 16, 16, 8, 64, 16, 6, 16.0),
                                                               (2, 8, 8, 3, 20, 5, 12, 8.0)])
def test_raw_mode_cycles_match_model(p, s, word_bits, n, k, n_out, latency, bw):
    rng = np.random.default_rng(n * k)
    dut = LinearEngine(p=p, s=s, max_k=k, max_n=n_out, max_tokens=n, word_bits=word_bits, addr_width=12, raw=True)
    layer = random_layer(rng, n, k, n_out, p, dut.acc_width)
    (res,) = run_layers(dut, [layer], latency=latency, bw=bw)
    assert res["got"] == res["want"]
    model = dut.expected_cycles(n, k, n_out, bw, latency)
    assert abs(res["measured"] - model) <= 0.01 * model + 4, (res["measured"], model, res["counters"])


def test_output_backpressure_is_counted():
    """Compute bound with a slow consumer: stalls show up as stall_output, the bits stay exact."""
    p, s, wb, n, k, n_out = 4, 16, 16, 12, 32, 8
    rng = np.random.default_rng(4)
    dut = LinearEngine(p=p, s=s, max_k=k, max_n=n_out, max_tokens=n, word_bits=wb, addr_width=12)
    layer = random_layer(rng, n, k, n_out, p, dut.acc_width)
    (res,) = run_layers(dut, [layer], latency=3, stall=0.7, seed=9)
    assert res["got"] == res["want"]
    check_counters(res, layer, p, s)
    assert res["counters"]["stall_output"] > 0
    assert res["measured"] > dut.expected_cycles(n, k, n_out, wb, 3)


# Timing: no output backpressure; the measured count against the analytic model.
TIMING = [
    # (p, s, word_bits, n, K, N, latency, bits_per_cycle)
    (4, 16, 16, 8, 64, 16, 6, 16.0),     # compute bound: 4 groups x 8 tokens x 4 folds
    (4, 16, 16, 1, 64, 16, 6, 4.0),      # weight bound (n = 1)
    (4, 32, 16, 4, 96, 12, 10, 12.8),    # SDRAM-like bandwidth, near balance
    (8, 16, 16, 16, 48, 24, 4, 16.0),    # compute bound, many tokens
    (2, 8, 8, 3, 20, 5, 12, 8.0),        # long latency, tiny tiles (credit-limited fetch)
]


@pytest.mark.parametrize("p,s,word_bits,n,k,n_out,latency,bw", TIMING)
def test_cycles_match_model(p, s, word_bits, n, k, n_out, latency, bw):
    rng = np.random.default_rng(n * k + n_out)
    dut = LinearEngine(p=p, s=s, max_k=k, max_n=n_out, max_tokens=n, word_bits=word_bits, addr_width=12)
    layer = random_layer(rng, n, k, n_out, p, dut.acc_width)
    (res,) = run_layers(dut, [layer], latency=latency, bw=bw)
    assert res["got"] == res["want"]
    check_counters(res, layer, p, s)
    model = dut.expected_cycles(n, k, n_out, bw, latency, detail=True)
    measured = res["measured"]
    assert abs(measured - model["total"]) <= 0.01 * model["total"] + 4, (measured, model, res["counters"])
    # never faster than either floor
    assert measured >= max(model["compute"], model["weight_stream"])
    # with an always-ready output the PE array waits only on a threshold-unit reload (one cycle per group)
    assert res["counters"]["stall_output"] <= -(-n_out // p)


def test_double_buffering_overlaps_fetch_and_compute():
    """Balanced compute and weight stream: total well under their sum (the next group loads during compute)."""
    p, s, wb, n, k, n_out = 8, 32, 16, 16, 128, 64   # 8 groups; 64 beats and 64 words per group
    rng = np.random.default_rng(1)
    dut = LinearEngine(p=p, s=s, max_k=k, max_n=n_out, max_tokens=n, word_bits=wb, addr_width=12)
    layer = random_layer(rng, n, k, n_out, p, dut.acc_width)
    (res,) = run_layers(dut, [layer], latency=4, bw=16.0)
    assert res["got"] == res["want"]
    model = dut.expected_cycles(n, k, n_out, 16.0, 4, detail=True)
    assert res["measured"] < 0.7 * (model["compute"] + model["weight_stream"])
    assert abs(res["measured"] - model["total"]) <= 0.01 * model["total"] + 4, (res["measured"], model)


def test_golden_layouts():
    rng = np.random.default_rng(2)
    k, n_out, p, s = 21, 5, 2, 8
    w = rng.integers(0, 2, (n_out, k), dtype=np.uint8)
    tiles = weight_tiles(pack_bits(w), k, n_out, p, s)
    assert len(tiles) == 3 * 3
    for g in range(3):
        for f in range(3):
            tile = tiles[g * 3 + f]
            for r in range(p):
                for i in range(s):
                    c, kk = g * p + r, f * s + i
                    want = int(w[c, kk]) if c < n_out and kk < k else 0
                    assert (tile >> (r * s + i)) & 1 == want
    x = rng.integers(0, 2, (2, k), dtype=np.uint8)
    beats = activation_beats(pack_bits(x), k, s)
    assert beats[3 + 2] == sum(int(x[1, 16 + i]) << i for i in range(5))
    out = np.array([[1, 0, 1], [0, 1, 1]], np.uint8)
    assert output_beats(out, 2) == [0b01, 0b10, 0b1, 0b1]
    assert expected_cycles(1, 64, 16, 4, 16, 16.0, 4) > 0


@pytest.mark.parametrize("bad,err,match", [
    (dict(p=0), TypeError, "P .* must be a positive integer"),
    (dict(s=-1), TypeError, "S .* must be a positive integer"),
    (dict(max_k=2.5), TypeError, "max_k must be a positive integer"),
    (dict(max_tokens=0), TypeError, "max_tokens must be a positive integer"),
    (dict(word_bits=True), TypeError, "word_bits must be a positive integer"),
    (dict(counter_bits=4), ValueError, "counter_bits must be at least 8"),
    (dict(impl="asic"), ValueError, "impl must be one of"),
])
def test_bad_parameters(bad, err, match):
    params = dict(p=4, s=16, max_k=64, max_n=16, max_tokens=4, word_bits=16) | bad
    with pytest.raises(err, match=match):
        LinearEngine(**params)


def test_bad_commands_and_golden_inputs():
    dut = LinearEngine(p=4, s=16, max_k=64, max_n=16, max_tokens=4, word_bits=16)
    Fragment.get(dut, None)  # elaborated (no unused-elaboratable warning)
    for kw in (dict(tokens=5), dict(tokens=0), dict(k=65), dict(channels=0)):
        args = dict(tokens=1, k=8, channels=4, base=0) | kw
        with pytest.raises(ValueError, match="outside"):
            dut.codec.command(**args)
    with pytest.raises(ValueError, match="does not fit"):
        dut.codec.command(1, 8, 4, 1 << 24)
    with pytest.raises(ValueError, match="K=70 needs 2 words"):
        weight_tiles(np.zeros((4, 1), np.uint64), 70, 4, 4, 16)
    with pytest.raises(ValueError, match="N must be a positive integer"):
        weight_tiles(np.zeros((4, 1), np.uint64), 8, 0, 4, 16)
    with pytest.raises(ValueError, match="packed uint64"):
        linear_sign(np.zeros((1, 1), np.int64), np.zeros((1, 1), np.uint64), 8, [0], [1])
