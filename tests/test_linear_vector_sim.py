"""Linear + vector op in the Amaranth simulator with the memory model, against golden (exact)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from bebert.golden.linear import activation_beats, layers_memory, weight_tiles
from bebert.golden.linear_vector import expected_cycles, linear_vector
from bebert.golden.pe_array import pack_bits
from bebert.golden.vector import VectorFormats
from bebert.hw.linear_vector import LinearVectorOp
from bebert.sim.memory import MemoryTiming, amaranth_memory
from bebert.sim.streams import feeder, stream_get
from bebert.sim.vector_jobs import make_job


class Job:
    """One command's data: bits ``x (n, K)``, ``w (H, K)``, the vector table, residual ``(n, H)``."""

    def __init__(self, x, w, scale, bias, gamma, beta, residual):
        self.x, self.w = np.asarray(x, np.uint8), np.asarray(w, np.uint8)
        self.scale, self.bias, self.gamma, self.beta = scale, bias, gamma, beta
        self.residual = np.asarray(residual, np.int64)

    n = property(lambda self: int(self.x.shape[0]))
    k = property(lambda self: int(self.x.shape[1]))
    h = property(lambda self: int(self.w.shape[0]))

    def golden(self, fmts):
        return linear_vector(pack_bits(self.x), pack_bits(self.w), self.k, self.scale, self.bias, self.gamma,
                             self.beta, self.residual, fmts)


def random_job(rng, n, k, h, fmts, kind="random"):
    vj = make_job(rng, h, k, n, fmts, kind)
    x = rng.integers(0, 2, (n, k), dtype=np.uint8)
    w = rng.integers(0, 2, (h, k), dtype=np.uint8)
    return Job(x, w, vj.scale, vj.bias, vj.gamma, vj.beta, vj.x)


def run_jobs(dut, jobs, *, latency=4, bw=None, stall=0.0, idle=0.0, seed=0):
    """Load and run every job on ``dut`` in turn. Returns per-job dicts: ``got`` ``(y, bit, last, final)``
    beats, ``want``, ``counters`` (after the final beat), ``measured`` (acceptance to final transfer)."""
    codec, fmts, wb = dut.codec, dut.fmts, dut.word_bits

    class _Layer:   # layers_memory needs w, k, n_out
        def __init__(self, j):
            self.w, self.k, self.n_out = j.w, j.k, j.h

    rng = np.random.default_rng(seed)
    words, bases = layers_memory([_Layer(j) for j in jobs], dut.p, dut.s, wb, rng)
    timing = MemoryTiming(latency, bw or wb, wb)
    feeds, results = [], []
    prev = None
    for j, base in zip(jobs, bases):
        if getattr(j, "resume", False):   # no residual load: the previous command's outputs are the residual
            j.residual = prev
        feeds += [(dut.x_stream, codec.activations(activation_beats(pack_bits(j.x), j.k, dut.s))),
                  (dut.p_stream, codec.params(j.k, j.scale, j.bias, j.gamma, j.beta))]
        if not getattr(j, "resume", False):
            feeds.append((dut.r_stream, codec.residuals(j.residual)))
        feeds.append((dut.c_stream, [codec.command(j.n, j.k, j.h, base)]))
        out, bits, _ = j.golden(fmts)
        prev = out
        want = [(int(out[t, c]), int(bits[t, c]), int(c == j.h - 1), int(t == j.n - 1 and c == j.h - 1))
                for t in range(j.n) for c in range(j.h)]
        results.append(dict(want=want, got=[]))
    accepts, finals, done = [], [], []

    producer = feeder(feeds, idle=idle, seed=seed)

    async def memory(ctx):
        await amaranth_memory(ctx, dut.req_stream, dut.rsp_stream, words, timing)

    async def consumer(ctx):
        prng = random.Random(seed + 1)
        for res in results:
            while len(res["got"]) < len(res["want"]):
                while prng.random() < stall:
                    await ctx.tick()
                res["got"] += codec.channels(await stream_get(ctx, dut.o_stream))
                if res["got"][-1][3]:
                    break
            res["counters"] = {k: ctx.get(getattr(dut.counters, k)) for k in LinearVectorOp.COUNTERS}
            assert ctx.get(dut.running) == 0
        done.append(True)

    async def watcher(ctx):
        cycle = 0
        async for _, _, cv, cr, ov, orr, payload in ctx.tick().sample(
                dut.c_stream.valid, dut.c_stream.ready, dut.o_stream.valid, dut.o_stream.ready,
                dut.o_stream.payload.as_value()):
            cycle += 1
            if cv and cr:
                accepts.append(cycle)
            if ov and orr and codec.channels(payload)[-1][3]:
                finals.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(memory, background=True)
    sim.add_testbench(consumer)
    sim.add_process(watcher)
    limit = 3000 + sum((j.n * (3 * j.h + dut.vu.stats_cycles + 40) + 20 * (j.n + 4) * -(-j.k // dut.s)
                        * -(-j.h // dut.p) + 4 * j.k * j.h / min(bw or wb, wb)) * (1 + 3 * max(stall, idle))
                       for j in jobs)
    sim.run_until(1e-8 * int(limit))
    assert done, f"outputs did not all come out in {int(limit)} cycles: {[len(r['got']) for r in results]}"
    for res, a, fin in zip(results, accepts, finals):
        res["measured"] = fin - a
    return results


def check(res, job, dut):
    assert res["got"] == res["want"]
    c = res["counters"]
    assert c["cycles"] == res["measured"], (c, res["measured"])
    assert c["busy"] == -(-job.h // dut.p) * job.n * -(-job.k // dut.s), c
    assert c["vector_beats"] == job.n * job.h // dut.vw, c
    assert c["busy"] + c["stall_weights"] + c["stall_output"] <= c["cycles"], c
    assert c["vector_beats"] + c["vector_wait"] + c["vector_stalls"] <= c["cycles"], c


SHAPES = [
    # (p, s, word_bits, [(n, K, H, kind), ...]) back to back on one op; K % S != 0
    (4, 8, 16, [(3, 21, 16, "random"), (1, 13, 24, "saturate"), (5, 30, 17, "extremes")]),
    (3, 5, 8, [(2, 23, 48, "random"), (4, 11, 31, "small_variance")]),
]


@pytest.mark.parametrize("p,s,word_bits,shapes", SHAPES)
def test_random_jobs_with_stalls(p, s, word_bits, shapes):
    rng = np.random.default_rng(p * 7 + s)
    max_h = max(h for _, _, h, _ in shapes)
    dut = LinearVectorOp(p=p, s=s, max_k=max(k for _, k, _, _ in shapes), max_h=max_h,
                         max_tokens=max(n for n, _, _, _ in shapes), word_bits=word_bits, addr_width=12)
    jobs = [random_job(rng, n, k, h, dut.fmts, kind) for n, k, h, kind in shapes]
    results = run_jobs(dut, jobs, latency=5, bw=word_bits / 2, stall=0.35, idle=0.3, seed=p + s)
    for res, job in zip(results, jobs):
        check(res, job, dut)


@pytest.mark.parametrize("vw", [2, 4])
def test_wide_beats_with_stalls_and_resume(vw):
    """``vw`` channels a beat through the op (feed, residual buffer, output): random jobs of several shapes
    back to back with stalls, then a command with no residual load (the outputs written back over the
    residual buffer are its residual); exact."""
    rng = np.random.default_rng(20 + vw)
    shapes = [(3, 21, 16, "random"), (1, 13, 24, "saturate"), (5, 30, 8, "extremes"), (5, 19, 8, "random")]
    dut = LinearVectorOp(p=4, s=8, max_k=30, max_h=24, max_tokens=5, word_bits=16, addr_width=12, vw=vw)
    jobs = [random_job(rng, n, k, h, dut.fmts, kind) for n, k, h, kind in shapes]
    jobs[-1].resume = True
    results = run_jobs(dut, jobs, latency=5, bw=8.0, stall=0.35, idle=0.3, seed=vw)
    for res, job in zip(results, jobs):
        check(res, job, dut)


@pytest.mark.parametrize("vw", [2, 4])
def test_wide_beats_cycles(vw):
    """Cycles against the model with ``vw`` channels a beat, vector bound (H / vw beats a token)."""
    n, k, h, p, s, latency, bw = 6, 30, 32, 4, 8, 6, 16.0
    rng = np.random.default_rng(vw)
    dut = LinearVectorOp(p=p, s=s, max_k=k, max_h=h, max_tokens=n, word_bits=16, addr_width=12, vw=vw)
    job = random_job(rng, n, k, h, dut.fmts)
    (res,) = run_jobs(dut, [job], latency=latency, bw=bw)
    check(res, job, dut)
    model = dut.expected_cycles(n, k, h, bw, latency, detail=True)
    slack = n * dut.vu.norm_steps
    assert model["total"] - slack - 4 <= res["measured"] <= model["total"] + 4, (res["measured"], model)


def test_wide_beats_bad_parameters():
    with pytest.raises(ValueError, match="must divide P"):
        LinearVectorOp(p=6, s=8, max_k=8, max_h=16, max_tokens=2, word_bits=16, vw=4)
    from bebert.hw.linear_vector import LinearVectorCodec

    codec = LinearVectorCodec(p=4, s=8, max_k=8, max_h=16, max_tokens=2, fmts=VectorFormats.default(16), vw=4)
    with pytest.raises(ValueError, match="multiple of the 4 channels a beat"):
        codec.params(8, *([[0] * 6] * 4))


@pytest.mark.parametrize("n,k,h,p,s,latency,bw", [
    (4, 30, 32, 4, 8, 6, 16.0),     # vector bound
    (1, 44, 24, 2, 8, 8, 8.0),      # one token: linear then one LayerNorm
    (5, 90, 16, 4, 16, 4, 16.0),    # linear bound (long K), short rows
    (3, 200, 16, 4, 8, 4, 16.0),    # linear bound: the rows arrive late
])
def test_cycles_match_model(n, k, h, p, s, latency, bw):
    rng = np.random.default_rng(n + k + h)
    dut = LinearVectorOp(p=p, s=s, max_k=k, max_h=h, max_tokens=n, word_bits=16, addr_width=12)
    job = random_job(rng, n, k, h, dut.fmts)
    (res,) = run_jobs(dut, [job], latency=latency, bw=bw)
    check(res, job, dut)
    model = dut.expected_cycles(n, k, h, bw, latency, detail=True)
    # the model takes the statistics engine's worst case: at most norm_steps cycles over per token
    slack = n * dut.vu.norm_steps
    assert model["total"] - slack - 4 <= res["measured"] <= model["total"] + 4, (res["measured"], model,
                                                                               res["counters"])
    assert res["measured"] >= max(res["counters"]["busy"], n * h)


@pytest.mark.parametrize("lin,ln,bits_tap,res_tap", [
    ("attn_out", "attn_ln", "l0.ctx.bits", "emb.ln"),          # attention output projection, K = H
    ("ffn_out", "ffn_ln", "l0.ffn_in.bits", "l0.attn_ln"),     # FFN down-projection, K = ffn_size
])
def test_tiny_exported_model(lin, ln, bits_tap, res_tap):
    """Layer 0's op of an exported W1A1 model on the golden model's taps: exact LN output codes."""
    pytest.importorskip("torch")
    import torch

    from bebert.golden.export import export_members
    from bebert.golden.format import IntModel
    from bebert.golden.infer import GoldenModel
    from bebert.golden.pe_array import unpack_bits
    from bebert.model.config import ModelConfig
    from bebert.model.student import BinaryBertForSequenceClassification

    cfg = ModelConfig(vocab_size=200, hidden_size=32, num_layers=1, num_heads=2, ffn_size=44, max_len=8,
                      hidden_dropout=0.0)
    torch.manual_seed(5)
    tensors, meta = export_members([BinaryBertForSequenceClassification(cfg).eval()], [1.0])
    model = IntModel(meta, tensors)
    taps = GoldenModel(model).forward(np.array([[2, 17, 45, 101, 7]]), np.ones((1, 5), np.int64), taps=True).taps
    fmts = VectorFormats.from_int_model(model)
    t, h = model.member(0), cfg.hidden_size
    x_bits = taps[f"m0.{bits_tap}"][0]                      # (n, K) bits into the layer
    k = x_bits.shape[1]
    want = taps[f"m0.l0.{ln}"][0]
    w = unpack_bits(np.asarray(t[f"layer.0.{lin}.bits"]), k)
    job = Job(x_bits, w, t[f"layer.0.{lin}.scale"], t[f"layer.0.{lin}.bias"], t[f"layer.0.{ln}.gamma"],
              t[f"layer.0.{ln}.beta"], taps[f"m0.{res_tap}"][0])
    out, bits, acc = job.golden(fmts)
    assert (acc == taps[f"m0.l0.{lin}.acc"][0]).all() and (out == want).all()   # golden = the model's taps
    dut = LinearVectorOp(p=4, s=8, max_k=k, max_h=h, max_tokens=5, word_bits=16, fmts=fmts, addr_width=12)
    (res,) = run_jobs(dut, [job], latency=4, stall=0.2, idle=0.2, seed=3)
    check(res, job, dut)
    got_y = np.array([g[0] for g in res["got"]]).reshape(want.shape)
    got_b = np.array([g[1] for g in res["got"]]).reshape(want.shape)
    assert (got_y == want).all() and (got_b == (want >= 0)).all()


@pytest.mark.parametrize("bad,err,match", [
    (dict(p=0), TypeError, "P .* must be a positive integer"),
    (dict(max_h=1.5), TypeError, "max_h must be a positive integer"),
    (dict(max_tokens=-2), TypeError, "max_tokens must be a positive integer"),
    (dict(fmts="default"), TypeError, "fmts must be a VectorFormats"),
    (dict(counter_bits=4), ValueError, "counter_bits must be at least 8"),
    (dict(impl="asic"), ValueError, "impl must be one of"),
])
def test_bad_parameters(bad, err, match):
    params = dict(p=4, s=8, max_k=64, max_h=32, max_tokens=4, word_bits=16) | bad
    with pytest.raises(err, match=match):
        LinearVectorOp(**params)


def test_bad_commands_and_golden_inputs():
    dut = LinearVectorOp(p=4, s=8, max_k=64, max_h=32, max_tokens=4, word_bits=16)
    Fragment.get(dut, None)
    codec = dut.codec
    with pytest.raises(ValueError, match="outside"):
        codec.command(5, 8, 32, 0)
    with pytest.raises(ValueError, match="does not fit"):
        codec.params(65, [0] * 32, [0] * 32, [0] * 32, [0] * 32)
    with pytest.raises(ValueError, match="does not fit"):
        codec.params(8, [0] * 4, [0] * 4, [0] * 3, [0] * 4)
    with pytest.raises(ValueError, match="overflow"):
        codec.residuals(np.zeros((5, 32), np.int64))
    with pytest.raises(ValueError, match="x=.* does not fit"):
        codec.residuals([[1 << 20]])
    rng = np.random.default_rng(0)
    job = random_job(rng, 2, 10, 8, dut.fmts)
    with pytest.raises(ValueError, match="residual has shape"):
        linear_vector(pack_bits(job.x), pack_bits(job.w), 10, job.scale, job.bias, job.gamma, job.beta,
                      job.residual[:, :4], dut.fmts)
    with pytest.raises(ValueError, match="gamma has shape"):
        linear_vector(pack_bits(job.x), pack_bits(job.w), 10, job.scale, job.bias, job.gamma[:3], job.beta,
                      job.residual, dut.fmts)
    with pytest.raises(ValueError, match="K=70 needs"):
        linear_vector(pack_bits(job.x), pack_bits(job.w), 70, job.scale, job.bias, job.gamma, job.beta,
                      job.residual, dut.fmts)
    with pytest.raises(ValueError, match="H must be"):
        expected_cycles(1, 8, 0, 4, 8, 16.0, 4)
    assert weight_tiles(pack_bits(job.w), 10, 8, 4, 8)   # the layout the op's engine reads
