"""The whole W1A1 accelerator (embeddings, encoder layers, head, ensemble combine) in the Amaranth simulator,
exact against the golden model."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Fragment, Module
from amaranth.sim import Simulator

from bebert.golden.accelerator import (AccelSpec, expected_cycles, expected_outputs, model_image, model_layout,
                                       param_words)
from bebert.sim.memory import MemoryTiming
from bebert.sim.streams import put_all, stream_get, stream_put

HIDDEN, HEADS, FFN, LAYERS, MEMBERS, VOCAB, MAX_LEN = 32, 2, 64, 2, 2, 100, 8
P, S, WORD = 8, 16, 32


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("torch")
    return tiny_model()


def tiny_model():
    """A tiny exported W1A1 ensemble of two members (different seeds, weights 0.7 / 0.3)."""
    import torch

    from bebert.golden.export import export_members
    from bebert.golden.format import IntModel
    from bebert.model.config import ModelConfig
    from bebert.model.student import BinaryBertForSequenceClassification

    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, ffn_size=FFN,
                      max_len=MAX_LEN, hidden_dropout=0.0)
    members = []
    for seed in (21, 22):
        torch.manual_seed(seed)
        members.append(BinaryBertForSequenceClassification(cfg).eval())
    tensors, meta = export_members(members, [0.7, 0.3])
    model = IntModel(meta, tensors)
    spec = AccelSpec.from_int_model(model, P, S, WORD)
    words, layout = model_image(model, spec)
    return model, spec, words, layout


def random_sequence(rng, spec, pad=False):
    length = int(rng.integers(2, MAX_LEN + 1))
    n = int(rng.integers(length, MAX_LEN + 1)) if pad else length
    ids = rng.integers(0, spec.vocab, size=n).tolist()
    types = rng.integers(0, spec.types, size=n).tolist()
    return dict(ids=ids, types=types, length=length)


def run(dut, words, timing_args, jobs, *, reset_after=None, seed=0, limit=200_000):
    """Run ``jobs`` (dicts: ids, types, length, stall) back to back; with ``reset_after = (cycles, job)``, job
    ``jobs[0]`` is interrupted by a reset ``cycles`` cycles after its command and the remaining jobs follow.
    Returns per finished job the outputs, counters, measured cycles (acceptance to the last output) and the
    encoder layer inputs seen (per layer command)."""
    codec = dut.codec
    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.dut = dut
    results = [dict(out=[]) for _ in jobs]
    accepts, finals = [], []
    layer_in = [[[]] for _ in dut.encs]      # per lane, per input load (a member's first layer)
    layer_out = [[[]] for _ in dut.encs]     # per lane, per layer command: its output codes
    state = dict(cycle=0, done=False, reset=False)

    async def driver(ctx):
        prng = random.Random(seed)
        for j, (job, res) in enumerate(zip(jobs, results)):
            beats, c = codec.sequence(job["ids"], job["types"], job["length"])
            await put_all(ctx, dut.i_stream, beats, idle=0.2, rng=prng)
            await stream_put(ctx, dut.c_stream, c)
            if reset_after is not None and j == 0:
                await ctx.tick().repeat(reset_after)
                state["at_reset"] = (ctx.get(dut.running), ctx.get(dut.enc.running), ctx.get(dut.counters.cycles))
                ctx.set(cd.rst, 1)
                state["reset"] = True
                await ctx.delay(2e-8)      # two clock periods in reset (a tick would raise DomainReset)
                ctx.set(cd.rst, 0)
                state["reset"] = False
                await ctx.tick()
                continue
            want = MEMBERS * dut.spec.labels + dut.spec.labels
            while len(res["out"]) < want:
                while prng.random() < job.get("stall", 0.0):
                    await ctx.tick()
                res["out"].append(codec.output(await stream_get(ctx, dut.o_stream)))
            await ctx.tick().until(~dut.running)
            res["counters"] = codec.counters(ctx.get(dut.counters.as_value()))
            res["error"] = ctx.get(dut.error)
        state["done"] = True

    async def memory(ctx):
        timing = MemoryTiming(*timing_args)
        ctx.set(dut.req_stream.ready, 1)
        pending = deque()
        cycle, offered = 0, False
        async for _clk, rst, rv, ra, rr in ctx.tick().sample(dut.req_stream.valid, dut.req_stream.payload,
                                                            dut.rsp_stream.ready):
            cycle += 1
            if rst:                     # the memory controller is reset with the accelerator
                pending.clear()
                timing = MemoryTiming(*timing_args)
                offered = False
                ctx.set(dut.rsp_stream.valid, 0)
                continue
            if offered and rr:
                pending.popleft()
            if rv:
                assert 0 <= ra < len(words), f"read of word {ra} outside the image's {len(words)} words"
                pending.append((timing.schedule(cycle), int(words[ra])))
            offered = bool(pending) and pending[0][0] <= cycle
            ctx.set(dut.rsp_stream.valid, int(offered))
            if offered:
                ctx.set(dut.rsp_stream.payload, pending[0][1])

    async def watcher(ctx):
        cycle = 0
        lane_in = [(e.i_stream.valid, e.i_stream.ready, e.i_stream.payload.as_value(), e.o_stream.valid,
                    e.o_stream.ready, e.o_stream.payload.as_value()) for e in dut.encs]
        ecodec = dut.encs[0].codec
        async for (_, rst, cv, cr, ov, orr, op, *li) in ctx.tick().sample(
                dut.c_stream.valid, dut.c_stream.ready, dut.o_stream.valid, dut.o_stream.ready,
                dut.o_stream.payload.as_value(), *[s for t in lane_in for s in t]):
            cycle += 1
            assert cycle < limit, f"the jobs did not finish in {limit} cycles: {[len(r['out']) for r in results]}"
            if rst:
                continue
            if cv and cr:
                accepts.append(cycle)
            if ov and orr and codec.output(op)["last"]:
                finals.append(cycle)
            for lane, (iv, ir, ip, ov_, or_, op_) in enumerate(zip(*(li[k::6] for k in range(6)))):
                if iv and ir:
                    codes, last = ecodec.input_codes(ip)
                    layer_in[lane][-1] += codes
                    if last:
                        layer_in[lane].append([])
                if ov_ and or_:
                    chans = ecodec.channels(op_)
                    layer_out[lane][-1] += [y for y, _bit, _last, _final in chans]
                    if chans[-1][3]:
                        layer_out[lane].append([])

    sim = Simulator(top)
    sim.add_clock(1e-8, domain="sync")
    sim.add_testbench(driver)
    sim.add_testbench(memory, background=True)
    sim.add_testbench(watcher, background=True)
    sim.run()
    assert state["done"]
    first = 0 if reset_after is None else 1
    for j, res in enumerate(results[first:], first):
        k = j - first + (1 if reset_after is not None else 0)
        res["measured"] = finals[j - first] - accepts[k]
    if reset_after is not None:
        results = results[1:]
        results[0]["at_reset"] = state["at_reset"]
    return results, (layer_in, layer_out)


def check(dut, model, job, res):
    want = expected_outputs(model, job["ids"], job["types"], job["length"])
    L = dut.spec.labels
    got_m = [[o["logit"] for o in res["out"][mm * L:(mm + 1) * L]] for mm in range(MEMBERS)]
    assert [[o["member"], o["label"]] for o in res["out"]] == [[mm, c] for mm in range(MEMBERS + 1) for c in range(L)]
    assert got_m == want["member_logits"].tolist(), (got_m, want)
    comb = res["out"][MEMBERS * L:]
    assert [o["logit"] for o in comb] == want["logits"].tolist()
    assert all(o["pred"] == want["pred"] for o in comb)
    assert [o["last"] for o in res["out"]] == [0] * (MEMBERS * L + L - 1) + [1]
    return want


def check_counters(dut, res, n):
    c = res["counters"]
    assert res["error"] == 0, "a weight prefetch saw a request out of sequence"
    sp = dut.spec
    h, f, p, s = sp.hidden, sp.ffn, sp.p, sp.s
    assert c["cycles"] == res["measured"], (c, res["measured"])
    assert c["embed"] + sum(c[f"layer{i}"] for i in range(LAYERS)) + c["head"] == c["cycles"], c
    per_layer = n * (-(-3 * h // p) * -(-h // s) + -(-h // p) * -(-h // s) + -(-f // p) * -(-h // s)
                     + -(-h // p) * -(-f // s))
    assert c["busy"] == MEMBERS * LAYERS * per_layer, c
    assert c["vector_beats"] == MEMBERS * LAYERS * 2 * n * h // dut.vw, c
    assert c["busy"] + c["stall_weights"] + c["stall_output"] <= dut.lanes * c["cycles"], c
    lay = dut.layout
    words = param_words(sp, n)
    assert c["param_words"] == words, (c, words)


def check_cycles(dut, res, n, bw, latency):
    """Measured cycles against :func:`bebert.golden.accelerator.expected_cycles`: the reader-bound phases
    (embed, load, head) within 3% + 12 cycles; the layers and the total within 2% + 16 (the LayerNorm
    statistics engine takes the same cycles for every token, so the model is no longer a bound)."""
    want = dut.expected_cycles(n, bw, latency, detail=True)
    c = res["counters"]
    for k in ("embed", "load", "head"):
        assert abs(c[k] - want[k]) <= 0.03 * want[k] + 12, (k, c, want)
    for k in [f"layer{i}" for i in range(LAYERS)] + ["total"]:
        got = c["cycles"] if k == "total" else c[k]
        assert abs(got - want[k]) <= 0.02 * want[k] + 16, (k, c, want)
    return want


def _layer_inputs_ok(model, job, layer_in, layer_out, lanes=1):
    """The encoder layers' inputs and outputs (per lane: its members in turn, layer-major) against the golden
    model's taps: one input load per member (its first layer: the embedding LayerNorm; later layers run on
    the previous output in place) and every layer's output."""
    from bebert.golden.infer import GoldenModel

    n, length = len(job["ids"]), job["length"]
    taps = GoldenModel(model).forward(np.array([job["ids"][:length]]), None, np.array([job["types"][:length]]),
                                      taps=True).taps
    for mm in range(MEMBERS):
        for li in range(LAYERS):
            got = np.array(layer_out[mm % lanes][(mm // lanes) * LAYERS + li]).reshape(n, HIDDEN)[:length]
            assert (got == taps[f"m{mm}.l{li}.ffn_ln"][0]).all(), (mm, li)
        got = np.array(layer_in[mm % lanes][mm // lanes]).reshape(n, HIDDEN)[:length]
        assert (got == taps[f"m{mm}.emb.ln"][0]).all(), mm


@pytest.mark.parametrize("lanes, prefetch, kb, vw", [(1, 0, 4, 1), (2, 0, 4, 2), (2, 256, 8, 4)])
def test_inference_back_to_back(tiny, lanes, prefetch, kb, vw):
    """Three sequences back to back (random lengths and types; the second padded after its real tokens, with
    output backpressure) on a memory of random latency and bandwidth, with one lane (members in turn) and
    two (both members at once on the shared memory port), and two with the weight prefetch and 8 attention keys a cycle; 1, 2 and 4 channels a beat (vw): every member's
    logits, the combined logits and the prediction exact; every lane's layer inputs against the golden taps;
    counters; cycles against the estimate (jobs without backpressure)."""
    from bebert.hw.accelerator import Accelerator

    model, spec, words, _ = tiny
    rng = np.random.default_rng(2)
    latency, bw = int(rng.integers(3, 12)), float(rng.uniform(12.0, 32.0))
    dut = Accelerator(spec, lanes=lanes, prefetch=prefetch, max_tokens=MAX_LEN, addr_width=16, kb=kb, vw=vw)
    jobs = [random_sequence(rng, spec), dict(random_sequence(rng, spec, pad=True), stall=0.4),
            random_sequence(rng, spec)]
    results, (layer_in, layer_out) = run(dut, words, (latency, bw, WORD), jobs, seed=4)
    turns = -(-MEMBERS // lanes)
    per_lane = turns * LAYERS
    for lane in range(lanes):      # one input load per member, none for the later layers
        assert len(layer_in[lane]) - 1 == len(jobs) * turns, [len(x) for x in layer_in[lane]]
    for j, (job, res) in enumerate(zip(jobs, results)):
        n = len(job["ids"])
        check(dut, model, job, res)
        _layer_inputs_ok(model, job, [lane[j * turns:(j + 1) * turns] for lane in layer_in],
                         [lane[j * per_lane:(j + 1) * per_lane] for lane in layer_out], lanes)
        check_counters(dut, res, n)
        if job.get("stall"):
            assert res["counters"]["out_wait"] > 0
        else:
            assert res["counters"]["out_wait"] == 0
            check_cycles(dut, res, n, bw, latency)


def test_reset_in_the_middle(tiny):
    """A reset in the middle of an inference (inside member 0's second layer), then a correct inference."""
    from bebert.hw.accelerator import Accelerator

    model, spec, words, _ = tiny
    rng = np.random.default_rng(5)
    dut = Accelerator(spec, max_tokens=MAX_LEN, addr_width=16)
    jobs = [random_sequence(rng, spec), random_sequence(rng, spec)]
    jobs[0]["ids"], jobs[0]["types"], jobs[0]["length"] = jobs[0]["ids"][:4], jobs[0]["types"][:4], 4
    results, _ = run(dut, words, (7, 24.0, WORD), jobs, reset_after=2100, seed=6)
    running, layer_running, cycles = results[0]["at_reset"]
    assert running and layer_running and cycles > 1500, results[0]["at_reset"]   # reset inside a layer command
    check(dut, model, jobs[1], results[0])
    check_counters(dut, results[0], len(jobs[1]["ids"]))


def test_image_and_layout(tiny):
    model, spec, words, layout = tiny
    assert layout == model_layout(spec) and len(words) == layout["words"]
    t = model.member(1)
    base = layout["members"] + layout["member_words"]
    assert int(words[layout["ensemble"] + 1]) == int(model.tensors["ensemble.weight"][1]) & 0xFFFF
    row = int(words[base + layout["word"] + 5 * layout["wpr_word"]])
    bits = int(np.asarray(t["emb.word.bits"])[5, 0]) & 0xFFFFFFFF
    assert row == bits
    assert int(words[base + layout["classifier"] + HIDDEN + 3]) == int(t["classifier.weight"][1, 3]) & 0xFFFF
    # position row 3 and type row 1, emb_codes codes a word: channel j*c + i in bits i*b of word j
    c, b, hw = spec.emb_codes, spec.fmt["embedding"].bits, spec.emb_words
    assert c == 2 and hw == HIDDEN // 2
    for table, row, name in (("position", 3, "emb.position"), ("type", 1, "emb.token_type")):
        for ch in (0, 1, 7, HIDDEN - 1):
            w = int(words[base + layout[table] + row * hw + ch // c])
            assert (w >> (ch % c * b)) & ((1 << b) - 1) == int(np.asarray(t[name])[row, ch]) & ((1 << b) - 1)
    assert words.max() < (1 << WORD)
    assert expected_cycles(spec, 4, 16.0, 8) > 0


def test_bad_inputs(tiny):
    from bebert.hw.accelerator import AccelInputError, Accelerator

    model, spec, _, _ = tiny
    dut = Accelerator(spec, max_tokens=6, addr_width=16)
    Fragment.get(dut, None)
    codec = dut.codec
    with pytest.raises(AccelInputError, match="token id 100 at position 1 is outside 0..99"):
        codec.sequence([1, 100, 3])
    with pytest.raises(AccelInputError, match="token id -1"):
        codec.sequence([-1, 2])
    with pytest.raises(AccelInputError, match="token type 2 at position 0 is outside 0..1"):
        codec.sequence([1, 2], [2, 0])
    with pytest.raises(AccelInputError, match="empty input"):
        codec.sequence([])
    with pytest.raises(AccelInputError, match="length 0 is outside 1..2"):
        codec.sequence([1, 2], length=0)
    with pytest.raises(AccelInputError, match="length 3 is outside 1..2"):
        codec.sequence([1, 2], length=3)
    with pytest.raises(AccelInputError, match="7 tokens exceeds the accelerator's maximum 6"):
        codec.sequence(list(range(7)))
    with pytest.raises(AccelInputError, match="1 token types for 2"):
        codec.sequence([1, 2], [0])
    with pytest.raises(ValueError, match="max_tokens must be 1..8"):
        Accelerator(spec, max_tokens=9)
    with pytest.raises(TypeError, match="spec must be an AccelSpec"):
        Accelerator("tiny")
    with pytest.raises(ValueError, match=r"lanes must be 1..2 \(the ensemble's members\), not 3"):
        Accelerator(spec, lanes=3)
    with pytest.raises(ValueError, match="prefetch must be 0 \\(off\\) or at least 2 words, not 1"):
        Accelerator(spec, prefetch=1)
    with pytest.raises(ValueError, match="does not fit 8 address bits"):
        Accelerator(spec, addr_width=8)
    with pytest.raises(ValueError, match="narrower than a 16-bit code"):
        AccelSpec.from_int_model(model, P, S, 8)


@pytest.mark.parametrize("hidden, word_bits, vw, p, s", [
    (34, 64, 2, 2, 16),    # c = 4 codes a word: 9 pairs a row, the last one half full; u = vw = 2
    (36, 48, 4, 4, 8),     # 48-bit words: c = 2 (a power of two), u = 2, two unpack steps a vw = 4 beat
])
def test_embedding_rows_that_do_not_fill_words(tmp_path, hidden, word_bits, vw, p, s):
    """Hidden sizes and word widths away from the tested ones: the packed position/type rows end in a
    partly filled word or take several unpack steps a vector-unit beat; logits, counters and the embedding's
    cycles exact against golden and the model."""
    pytest.importorskip("torch")
    from random_models import export_random

    from bebert.golden.format import load_int_model
    from bebert.hw.accelerator import Accelerator

    dims = dict(vocab_size=60, hidden_size=hidden, num_layers=2, num_heads=2, ffn_size=2 * hidden, max_len=8)
    model = load_int_model(export_random(tmp_path / "m.safetensors", dims, MEMBERS, seed=hidden))
    spec = AccelSpec.from_int_model(model, p, s, word_bits)
    assert spec.emb_codes == {64: 4, 48: 2}[word_bits] and hidden % spec.emb_codes == (2 if hidden == 34 else 0)
    words, _ = model_image(model, spec)
    dut = Accelerator(spec, lanes=2, max_tokens=6, addr_width=16, vw=vw)
    rng = np.random.default_rng(hidden)
    job = dict(ids=rng.integers(0, 60, 6).tolist(), types=rng.integers(0, 2, 6).tolist(), length=5)
    (res,), _ = run(dut, words, (4, 20.0, word_bits), [job], seed=hidden)
    check(dut, model, job, res)
    assert res["counters"]["param_words"] == param_words(spec, 6)
    want = dut.expected_cycles(6, 20.0, 4, detail=True)
    assert abs(res["counters"]["embed"] - want["embed"]) <= 0.03 * want["embed"] + 12, (res["counters"], want)
