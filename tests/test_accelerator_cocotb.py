"""The whole W1A1 accelerator in Verilator through cocotb (marker: verilator): a tiny exported model and a
random model of another shape on two ensemble lanes (3 members: a full round, then one lane alone), random
sentences (lengths, token types, padding after the real tokens), output backpressure, back-to-back sequences,
a reset during an inference, counters, the checker self-test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bebert.sim.runner import SimulationFailed, run_testbench

pytestmark = pytest.mark.verilator

#: name -> (model config, member seeds and weights, P, S, word bits, max_tokens)
MODELS = {
    "tiny": (dict(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, max_len=8),
             ((21, 0.7), (22, 0.3)), 8, 16, 32, 8),
    "other": (dict(vocab_size=60, hidden_size=48, num_layers=1, num_heads=3, ffn_size=80, max_len=6, num_labels=3),
              ((31, 0.5), (32, 0.3), (33, 0.2)), 4, 32, 16, 6),
}
#: ensemble-parallel lanes and weight-prefetch words per model (default 1, 0)
LANES = {"other": 2, "shipped": 2}
PREFETCH = {"other": 1024, "shipped": 4096}
#: the shipped checkpoint in the demo configuration (docs/results-hw.md): P x S = 2 x 32, 16-bit words, 16 tokens
SHIPPED = ("checkpoints/sst2-bebert-w1a1-m2.safetensors", 2, 32, 16, 16)


def make_model(kind: str, path) -> str:
    """Export a random (untrained) W1A1 ensemble of ``MODELS[kind]`` to a deployment file."""
    import torch

    from bebert.golden.export import export_members
    from bebert.golden.format import save_int_model
    from bebert.model.config import ModelConfig
    from bebert.model.student import BinaryBertForSequenceClassification

    dims, members, *_ = MODELS[kind]
    cfg = ModelConfig(hidden_dropout=0.0, **dims)
    nets = []
    for seed, _w in members:
        torch.manual_seed(seed)
        nets.append(BinaryBertForSequenceClassification(cfg).eval())
    tensors, meta = export_members(nets, [w for _, w in members])
    save_int_model(path, tensors, meta)
    return str(path)


class Bench:
    """A built accelerator for one model: ``run(jobs, **cfg) -> report``."""

    def __init__(self, kind, folder):
        from bebert.golden.accelerator import AccelSpec, model_layout
        from bebert.golden.format import load_int_model
        from bebert.hw.accelerator import Accelerator
        from bebert.sim.tb_accelerator import build_accelerator, image_file

        self.kind, self.folder = kind, folder
        if kind == "shipped":
            path, p, s, wb, mt = SHIPPED
            self.path = str(Path(__file__).resolve().parents[1] / path)
        else:
            _, _, p, s, wb, mt = MODELS[kind]
            self.path = make_model(kind, folder / f"{kind}.safetensors")
        self.model = load_int_model(self.path)
        self.spec = AccelSpec.from_int_model(self.model, p, s, wb)
        self.max_tokens = mt
        self.lanes, self.prefetch = LANES.get(kind, 1), PREFETCH.get(kind, 0)
        self.addr_width = max(16, (model_layout(self.spec)["words"] - 1).bit_length())
        self.dut = Accelerator(self.spec, lanes=self.lanes, prefetch=self.prefetch, max_tokens=mt,
                               addr_width=self.addr_width)
        self.sim = build_accelerator(self.dut)
        self.image = str(image_file(self.model, self.spec, None if kind == "shipped" else folder))

    def run(self, jobs, name="r", **kw):
        report = self.folder / f"{name}.json"
        cfg = dict(model=self.path, p=self.spec.p, s=self.spec.s, word_bits=self.spec.word_bits,
                   max_tokens=self.max_tokens, addr_width=self.addr_width, lanes=self.lanes, prefetch=self.prefetch,
                   image=self.image, jobs=jobs, report=str(report), **kw)
        try:
            run_testbench(self.sim, "bebert.sim.tb_accelerator", "inference", cfg)
        finally:
            self.last = json.loads(report.read_text()) if report.exists() else None
            for j in (self.last or {}).get("jobs", []):
                if not j.get("reset"):       # visible with pytest -s
                    print(f"{self.kind}/{name} job {j['job']}: n={j['n']} length={j['length']} agree={j['agree']} "
                          f"cycles={j['counters']['cycles']} estimate={j.get('estimate', {}).get('total')} "
                          f"busy={j['counters']['busy']} out_wait={j['counters']['out_wait']} "
                          f"sim={j['sim_seconds']}s ({j['cycles_per_second']} cycles/s)")
        return self.last

    def jobs(self, rng, count, pad=True, **extra):
        out = []
        for i in range(count):
            if pad and i % 2 == 0:      # padding after the real tokens (masked keys)
                length = int(rng.integers(1, self.max_tokens))
                n = int(rng.integers(length + 1, self.max_tokens + 1))
            else:
                n = length = int(rng.integers(1, self.max_tokens + 1))
            out.append(dict(ids=rng.integers(0, self.spec.vocab, n).tolist(),
                            types=rng.integers(0, self.spec.types, n).tolist(), length=length, **extra))
        return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    return Bench("tiny", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    return Bench("shipped", tmp_path_factory.mktemp("shipped"))


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    pytest.importorskip("torch")
    return Bench("other", tmp_path_factory.mktemp("other"))


def _ok(rep):
    assert not rep["failures"], rep["failures"]
    for job in rep["jobs"]:
        if not job.get("reset"):
            assert job["agree"] and job["mismatches"] == 0 and not job["counter_failures"], job
    return [j for j in rep["jobs"] if not j.get("reset")]


def test_tiny_back_to_back(tiny):
    """Six random sentences back to back (random lengths, token types, padding after the real tokens), half
    of them with random output backpressure and input bubbles, on a memory of random latency and bandwidth:
    member and combined logits exact, counters consistent, the unstalled jobs' cycles against the estimate."""
    rng = np.random.default_rng(11)
    jobs = tiny.jobs(rng, 6)
    for i, job in enumerate(jobs):
        if i % 2:
            job.update(stall=0.4, idle=0.3)
    latency, bw = int(rng.integers(3, 12)), float(rng.uniform(12.0, 32.0))
    done = _ok(tiny.run(jobs, "b2b", latency=latency, bits_per_cycle=bw, check_cycles=True, seed=3))
    assert len(done) == 6
    assert any(j["length"] < j["n"] for j in done)                     # padding masked
    assert all(j["counters"]["out_wait"] > 0 for j in done if jobs[j["job"]].get("stall"))
    assert all("estimate" in j for j in done if not jobs[j["job"]].get("stall"))
    speed = sum(j["measured"] for j in done) / sum(j["sim_seconds"] for j in done)
    print(f"tiny: {sum(j['measured'] for j in done)} cycles, {speed:.0f} cycles/s")


def test_tiny_reset_in_the_middle(tiny):
    """A reset 2100 cycles into an inference (inside member 0's layers), then two correct inferences."""
    rng = np.random.default_rng(12)
    jobs = [dict(ids=[5, 17, 3, 99], types=[0, 1, 0, 1], length=4)] + tiny.jobs(rng, 2)
    rep = tiny.run(jobs, "reset", latency=7, bits_per_cycle=24.0, reset_after=2100, seed=4)
    first = rep["jobs"][0]
    assert first["reset"] and first["at_reset"]["running"] == 1 and first["at_reset"]["cycles"] > 1500, first
    assert len(_ok(rep)) == 2


def test_other_shape(other):
    """A random model of another shape (H=48, 3 heads, F=80, one layer, three members, three labels, P x S =
    4 x 32, 16-bit words) on two lanes sharing the memory port (members 0 and 1 together, then member 2
    alone): back to back with backpressure, counters, cycles against the estimate."""
    rng = np.random.default_rng(13)
    jobs = other.jobs(rng, 4)
    jobs[1].update(stall=0.5)
    done = _ok(other.run(jobs, "other", latency=5, bits_per_cycle=12.8, check_cycles=True, seed=5))
    assert len(done) == 4 and all(len(j["logits"]) == 3 and len(j["member_logits"]) == 3 for j in done)


def test_checker_catches_a_wrong_logit(tiny):
    """Checker self-test: one expected logit off by one must fail the run."""
    rng = np.random.default_rng(14)
    with pytest.raises(SimulationFailed, match="inference FAILED.*1 mismatches"):
        tiny.run(tiny.jobs(rng, 2), "corrupt", latency=4, bits_per_cycle=32.0, corrupt_expected=7, seed=6)
    job = tiny.last["jobs"][1]
    assert not job["agree"] and job["mismatches"] == 1
    assert tiny.last["jobs"][0]["agree"]


@pytest.mark.slow
def test_shipped_checkpoint(shipped):
    """The shipped checkpoint (H=384, 6 layers, 12 heads, F=1536, two members) in the demo configuration (two
    lanes, P x S = 2 x 32, weight prefetch, ULX3S SDRAM bandwidth): random sentences back to back (one padded
    after its real tokens, one with output backpressure), every member logit and the combined logits exact,
    counters consistent, cycles against the estimate."""
    rng = np.random.default_rng(15)
    jobs = shipped.jobs(rng, 3)
    jobs[1].update(stall=0.5)
    done = _ok(shipped.run(jobs, "shipped", latency=8, bits_per_cycle=12.8, check_cycles=True, seed=7))
    assert len(done) == 3
    assert any(j["length"] < j["n"] for j in done) and all(j["taps_checked"] == 14 for j in done)


@pytest.mark.slow
def test_shipped_checkpoint_reset_in_the_middle(shipped):
    """A reset 700,000 cycles into an inference of the shipped checkpoint (inside layer 1 or 2), then a correct
    inference: every layer tap and logit exact."""
    rng = np.random.default_rng(16)
    jobs = shipped.jobs(rng, 2, pad=False)
    rep = shipped.run(jobs, "shipped_reset", latency=8, bits_per_cycle=12.8, reset_after=700_000, seed=8)
    first = rep["jobs"][0]
    assert first["reset"] and first["at_reset"]["running"] == 1 and first["at_reset"]["cycles"] > 600_000, first
    assert len(_ok(rep)) == 1
