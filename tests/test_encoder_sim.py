"""A whole W1A1 encoder layer (sequencer + ops) in the Amaranth simulator against golden, exact."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from bebert.golden.encoder import (OPS, encoder_layer, expected_cycles, layer_image, layer_offsets,
                                   threshold_table, vector_tables)
from bebert.golden.linear import output_beats
from bebert.golden.vector import VectorFormats
from bebert.hw.encoder import EncoderLayer
from bebert.hw.linear import LinearOutput
from bebert.sim.memory import MemoryTiming, amaranth_memory
from bebert.sim.streams import put_all, stream_get, stream_put

HIDDEN, HEADS, FFN, LAYERS = 32, 2, 64, 2


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("torch")
    return tiny_model()


def tiny_model():
    """A tiny exported W1A1 model and the golden model's taps for two sentences of different lengths."""
    import torch

    from bebert.golden.export import export_members
    from bebert.golden.format import IntModel
    from bebert.golden.infer import GoldenModel, pad_batch
    from bebert.model.config import ModelConfig
    from bebert.model.student import BinaryBertForSequenceClassification

    cfg = ModelConfig(vocab_size=200, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, ffn_size=FFN,
                      max_len=8, hidden_dropout=0.0)
    torch.manual_seed(11)
    tensors, meta = export_members([BinaryBertForSequenceClassification(cfg).eval()], [1.0])
    model = IntModel(meta, tensors)
    ids, mask = pad_batch([[2, 17, 45, 101, 7, 64], [3, 150, 9, 88]])
    taps = GoldenModel(model).forward(ids, mask, taps=True).taps
    return model, taps, mask.sum(1).tolist()


def _tap(taps, name, layer, b, n):
    return taps[f"m0.l{layer}.{name}"][b, :n]


def run_jobs(dut, tensors, jobs, words, bases, timing, *, idle=0.2, seed=0):
    """Run ``jobs`` (dicts: layer, x or src, keys, stall) on ``dut`` in turn, loading the layer's tables when the
    layer changes. A job's input is ``x`` or the hardware output of job ``src`` (loaded again, or with
    ``resume`` not loaded: ``src`` must be the job before, whose output the layer left in place). Returns per job: ``out`` (the
    o_stream beats), ``counters``, ``measured``, and the tapped op outputs ``eng`` (two commands' beats),
    ``att`` (context rows), ``lv`` (two commands' beats)."""
    codec = dut.codec
    lo_last = LinearOutput(dut.p)["last"].offset
    results = [dict(out=[]) for _ in jobs]
    eng_cmds, lv_cmds, att_rows = [[]], [[]], []
    accepts, finals = [], []
    done = []

    async def driver(ctx):
        prng = random.Random(seed)
        loaded = None
        for job, res in zip(jobs, results):
            if job["layer"] != loaded:
                t, pol = threshold_table(tensors, job["layer"], dut.p, dut.acc_width)
                await put_all(ctx, dut.t_stream, codec.thresholds(t, pol), idle=idle, rng=prng)
                await put_all(ctx, dut.p_stream, codec.params(vector_tables(tensors, job["layer"])), idle=idle,
                              rng=prng)
                loaded = job["layer"]
            x = job["x"] if "x" in job else np.array([o[0] for o in results[job["src"]]["out"]]).reshape(-1, dut.hidden)
            job["x_in"] = x
            if not job.get("resume"):      # resume: no load, the layer runs on job src's output in place
                await put_all(ctx, dut.i_stream, codec.inputs(x), idle=idle, rng=prng)
            await stream_put(ctx, dut.c_stream, codec.command(len(x), bases[job["layer"]], job.get("keys")))
            while len(res["out"]) < len(x) * dut.hidden:
                while prng.random() < job.get("stall", 0.0):
                    await ctx.tick()
                res["out"] += codec.channels(await stream_get(ctx, dut.o_stream))
                if res["out"][-1][3]:
                    break
            await ctx.tick().until(~dut.running)
            res["counters"] = {k: ctx.get(getattr(dut.counters, k)) for k in EncoderLayer.COUNTERS}
        done.append(True)

    async def memory(ctx):
        await amaranth_memory(ctx, dut.req_stream, dut.rsp_stream, words, timing)

    async def watcher(ctx):
        cycle = 0
        eo, ao, lo = dut.eng.o_stream, dut.att.o_stream, dut.lv.o_stream
        async for (_, _, cv, cr, ev, er, ep, av, ar, ap, lv, lr, lp, ov, orr, op) in ctx.tick().sample(
                dut.c_stream.valid, dut.c_stream.ready, eo.valid, eo.ready, eo.payload.as_value(),
                ao.valid, ao.ready, ao.payload.as_value(), lo.valid, lo.ready, lo.payload.as_value(),
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload.as_value()):
            cycle += 1
            if cv and cr:
                accepts.append(cycle)
            if ev and er:
                eng_cmds[-1].append((ep & ((1 << dut.p) - 1), (ep >> lo_last) & 1))
                if (ep >> lo_last) & 1:
                    eng_cmds.append([])
            if av and ar:
                att_rows.append(ap & ((1 << dut.att.d) - 1))
            if lv and lr:
                lv_cmds[-1] += codec.channels(lp)
                if lv_cmds[-1][-1][3]:
                    lv_cmds.append([])
            if ov and orr and codec.channels(op)[-1][3]:
                finals.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(memory, background=True)
    sim.add_process(watcher)
    limit = sum(6000 + 3000 * (1 + 3 * j.get("stall", 0.0)) for j in jobs)
    sim.run_until(1e-8 * limit)
    assert done, f"the jobs did not finish in {limit} cycles: {[len(r['out']) for r in results]}"
    at = 0
    for j, (job, res) in enumerate(zip(jobs, results)):
        n = len(job["x_in"])
        res["measured"] = finals[j] - accepts[j]
        res["eng"] = eng_cmds[2 * j: 2 * j + 2]
        res["lv"] = lv_cmds[2 * j: 2 * j + 2]
        res["att"] = att_rows[at: at + HEADS * n]
        at += HEADS * n
    return results


def check_job(dut, res, want):
    """Every intermediate the hardware produces against the golden ``encoder_layer`` dict, exact."""
    n, h, d = want["qkv_bits"].shape[0], dut.hidden, dut.att.d
    beats = output_beats(want["qkv_bits"], dut.p)
    assert res["eng"][0] == [(b, int(i == len(beats) - 1)) for i, b in enumerate(beats)], "Q/K/V bits"
    rows = [sum(int(want["ctx_bits"][i, hh * d + c]) << c for c in range(d)) for hh in range(HEADS) for i in range(n)]
    assert res["att"] == rows, "context bits"

    def lv_beats(y):
        return [(int(y[t, c]), int(y[t, c] >= 0), int(c == h - 1), int(t == n - 1 and c == h - 1))
                for t in range(n) for c in range(h)]

    assert res["lv"][0] == lv_beats(want["attn_ln"]), "attn_ln codes"
    beats = output_beats(want["ffn_bits"], dut.p)
    assert res["eng"][1] == [(b, int(i == len(beats) - 1)) for i, b in enumerate(beats)], "FFN1 bits"
    assert res["lv"][1] == lv_beats(want["ffn_ln"]), "ffn_ln codes (tapped)"
    assert res["out"] == lv_beats(want["ffn_ln"]), "layer output"


def check_counters(dut, res, n):
    c = res["counters"]
    h, f, p, s = dut.hidden, dut.ffn, dut.p, dut.s
    assert c["cycles"] == res["measured"], (c, res["measured"])
    assert sum(c[op] for op in OPS) == c["cycles"], c
    busy = n * (-(-3 * h // p) * -(-h // s) + -(-h // p) * -(-h // s) + -(-f // p) * -(-h // s) + -(-h // p) * -(-f // s))
    assert c["busy"] == busy, c
    assert c["vector_beats"] == 2 * n * h // dut.vw, c
    assert c["attn_beats"] == 2 * HEADS * n, c
    assert c["busy"] + c["stall_weights"] + c["stall_output"] <= c["cycles"], c


@pytest.mark.parametrize("vw", [1, 4])
def test_tiny_model_two_layers(tiny, vw):
    """Layer 0 on the golden taps of two sentences (lengths 6 and 4), layer 1 on the hardware's own layer-0
    output, and sentence 2 padded to 6 tokens with a key mask, then its layer 1 with no input load (the
    layer-0 output left in place); one channel a beat and four (vw); every intermediate exact; counters; cycles
    against the model (jobs without output backpressure)."""
    model, taps, lens = tiny
    tensors = model.member(0)
    fmts = VectorFormats.from_int_model(model)
    rng = np.random.default_rng(7)
    latency, bw = int(rng.integers(3, 12)), float(rng.uniform(6.0, 16.0))   # a random memory
    dut = EncoderLayer(hidden=HIDDEN, heads=HEADS, ffn=FFN, max_tokens=8, p=4, s=8, word_bits=16, kb=4,
                       fmts=fmts, addr_width=12, vw=vw)
    pad = rng.integers(0, 1 << 16, size=5, dtype=np.uint64)
    imgs = [layer_image(tensors, li, dut.p, dut.s, dut.word_bits) for li in range(LAYERS)]
    words = np.concatenate([pad, *imgs, pad[:3]])
    bases = [5, 5 + len(imgs[0])]
    emb = taps["m0.emb.ln"]
    x_pad = emb[1, :lens[0]].copy()          # sentence 2 padded to 6 tokens (zero codes past its length)
    jobs = [dict(layer=0, x=emb[0, :lens[0]]), dict(layer=0, x=emb[1, :lens[1]]),
            dict(layer=1, src=0, stall=0.3), dict(layer=1, src=1, stall=0.3),
            dict(layer=0, x=x_pad, keys=lens[1], stall=0.1), dict(layer=1, src=4, keys=lens[1], resume=True)]
    results = run_jobs(dut, tensors, jobs, words, bases, MemoryTiming(latency, bw, dut.word_bits), seed=3)
    names = {"qkv_bits": "qkv.bits", "ctx_bits": "ctx.bits", "attn_ln": "attn_ln", "ffn_bits": "ffn_in.bits",
             "ffn_ln": "ffn_ln"}
    for j, (job, res) in enumerate(zip(jobs, results)):
        n = len(job["x_in"])
        keys = job.get("keys", n)
        b = 0 if j in (0, 2) else 1
        want = encoder_layer(tensors, job["layer"], HEADS, job["x_in"], fmts, keys)
        for key, tap in names.items():   # the golden composition = the golden model's taps (real tokens)
            assert (want[key][:keys] == _tap(taps, tap, job["layer"], b, keys)).all(), (j, key)
        check_job(dut, res, want)
        check_counters(dut, res, n)
        if not job.get("stall"):
            check_cycles(dut, res, n, bw, latency)


def check_cycles(dut, res, n, bw, latency):
    """Measured cycles against :func:`bebert.golden.encoder.expected_cycles`: the linear ops and attention
    within 1% + 4 cycles; the linear + vector ops (their model takes the statistics engine's worst case) up to
    ``n * norm_steps`` under; the total accordingly."""
    model_c = dut.expected_cycles(n, bw, latency, detail=True)
    c = res["counters"]
    for op in OPS:
        tol = 4 + 0.01 * model_c[op]
        under = n * dut.lv.vu.norm_steps if op in ("attn_out", "ffn_out") else 0
        assert model_c[op] - under - tol <= c[op] <= model_c[op] + tol, (op, model_c, c)
    slack = 2 * n * dut.lv.vu.norm_steps
    assert model_c["total"] - slack - 8 <= res["measured"] <= model_c["total"] + 8, (res["measured"], model_c, c)
    return model_c


def test_layer_offsets_and_image(tiny):
    model, _, _ = tiny
    t = model.member(0)
    off = layer_offsets(HIDDEN, FFN, 4, 8, 16)
    assert off == {"qkv": 0, "attn_out": 24 * 4 * 2, "ffn_in": 24 * 4 * 2 + 8 * 4 * 2,
                   "ffn_out": 24 * 4 * 2 + 8 * 4 * 2 + 16 * 4 * 2, "words": 24 * 4 * 2 + 8 * 4 * 2 + 16 * 4 * 2 + 8 * 8 * 2}
    assert len(layer_image(t, 1, 4, 8, 16)) == off["words"]
    tt, pol = threshold_table(t, 0, 4, 7)
    assert tt.shape == pol.shape == ((24 + 16) * 4,) and tt.min() >= -64 and tt.max() <= 63


@pytest.mark.parametrize("bad,err,match", [
    (dict(hidden=0), TypeError, "hidden must be a positive integer"),
    (dict(heads=3), ValueError, "3 heads do not divide hidden size 32"),
    (dict(ffn=2.5), TypeError, "ffn must be a positive integer"),
    (dict(kb=0), TypeError, "kb .* must be a positive integer"),
    (dict(fmts="default"), TypeError, "fmts must be a VectorFormats"),
    (dict(counter_bits=4), ValueError, "counter_bits must be at least 8"),
    (dict(impl="asic"), ValueError, "impl must be one of"),
])
def test_bad_parameters(bad, err, match):
    params = dict(hidden=32, heads=2, ffn=64, max_tokens=4, p=4, s=8, word_bits=16) | bad
    with pytest.raises(err, match=match):
        EncoderLayer(**params)


def test_bad_inputs(tiny):
    model, _, _ = tiny
    t = model.member(0)
    fmts = VectorFormats.from_int_model(model)
    dut = EncoderLayer(hidden=32, heads=2, ffn=64, max_tokens=4, p=4, s=8, word_bits=16, fmts=fmts)
    Fragment.get(dut, None)
    codec = dut.codec
    with pytest.raises(ValueError, match="tokens=5 is outside 1..4"):
        codec.command(5, 0)
    with pytest.raises(ValueError, match="keys=4 is outside 1..tokens=3"):
        codec.command(3, 0, keys=4)
    with pytest.raises(ValueError, match="must be \\(n, 32\\) codes"):
        codec.inputs(np.zeros((5, 32), np.int64))
    with pytest.raises(ValueError, match="must be \\(n, 32\\) codes"):
        codec.inputs(np.zeros((2, 31), np.int64))
    with pytest.raises(ValueError, match="does not fit"):
        codec.inputs([[1 << 20] * 32])
    with pytest.raises(ValueError, match="takes 160"):
        codec.thresholds(np.zeros(8, np.int64), np.zeros(8, np.int64))
    with pytest.raises(ValueError, match="does not fit signed"):
        codec.thresholds(np.full(160, 1000), np.zeros(160, np.int64))
    with pytest.raises(ValueError, match="residual must be integer codes of shape"):
        encoder_layer(t, 0, 2, np.zeros((3, 16), np.int64), fmts)
    with pytest.raises(ValueError, match="heads do not divide"):
        encoder_layer(t, 0, 3, np.zeros((3, 32), np.int64), fmts)
    with pytest.raises(ValueError, match="keys must be 1..3"):
        encoder_layer(t, 0, 2, np.zeros((3, 32), np.int64), fmts, keys=0)
    with pytest.raises(ValueError, match="no 'layer.5"):
        layer_image(t, 5, 4, 8, 16)
    with pytest.raises(ValueError, match="P must be a positive integer"):
        layer_offsets(32, 64, 0, 8, 16)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        expected_cycles(0, 32, 2, 64, 4, 8, 16.0, 4)


@pytest.mark.parametrize("vw", [1, 4])
def test_input_beats_carry_vw_codes(vw):
    """The layer input goes in vw codes a beat (the accelerator's replay rate): codes round-trip through the
    codec, the last beat flagged, a count that does not fill beats refused."""
    from bebert.golden.vector import VectorFormats
    from bebert.hw.encoder import EncoderCodec

    fmts = VectorFormats.default(32)
    codec = EncoderCodec(hidden=32, ffn=64, p=8, max_tokens=4, fmts=fmts, acc_width=7, vw=vw)
    x = np.random.default_rng(vw).integers(fmts.layernorm.qmin, fmts.layernorm.qmax + 1, (3, 32))
    beats = codec.inputs(x)
    assert len(beats) == 3 * 32 // vw
    got = [codec.input_codes(b) for b in beats]
    assert [c for codes, _ in got for c in codes] == x.reshape(-1).tolist()
    assert [last for _, last in got] == [0] * (len(beats) - 1) + [1]
    if vw > 1:
        from bebert.hw._params import code_beats
        with pytest.raises(ValueError, match="do not fill beats of 4"):
            code_beats(codec.i_layout, [0] * 6, fmts.layernorm.bits, 4)
