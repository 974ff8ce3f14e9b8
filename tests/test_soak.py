"""The whole accelerator in Verilator on random models (marker verilator):

- a bit flip in a weight word of the memory image gives the golden model's faulty logits bit for bit (the
  flip made in the deployment file's packed weights lands on exactly one bit of one image word);
- a soak: random small models (random shapes, members, lanes, prefetch, P x S, word width), random
  sentences (lengths, types, padding), random output stalls, resets in the middle of an inference, random
  memory latency and bandwidth: every member logit, the combined logits and every layer's output equal
  golden's. The default run takes 20 sequences; ``-m soak`` runs the 200-sequence version
  (``BEBERT_SOAK_SEQUENCES`` overrides either count; ``BEBERT_SOAK_REPORT=docs/results/robustness.json``
  writes the counts into the robustness report).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bebert.sim.tb_accelerator import run_inference
from random_models import export_random as _export

pytest.importorskip("torch")


def _run(path, image, spec, lanes, prefetch, mt, jobs, name, **kw):
    return run_inference(path, spec, jobs, lanes=lanes, prefetch=prefetch, max_tokens=mt, image=image,
                         report_name=name, **kw)


@pytest.mark.verilator
def test_a_weight_bit_flip_in_the_image_gives_goldens_faulty_logits(tmp_path):
    from bebert.golden.accelerator import AccelSpec, expected_outputs, model_image
    from bebert.golden.faults import flip_packed, weight_sites
    from bebert.golden.format import load_int_model, save_int_model
    from bebert.sim.tb_accelerator import image_file

    dims = dict(vocab_size=90, hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, max_len=8)
    clean_path = _export(tmp_path / "clean.safetensors", dims, 2, seed=5)
    clean = load_int_model(clean_path)
    spec = AccelSpec.from_int_model(clean, 8, 16, 32)
    rng = np.random.default_rng(11)
    ids, types = rng.integers(0, 90, 7).tolist(), [0] * 7
    want_clean = expected_outputs(clean, ids, types, 7)
    clean_words, _ = model_image(clean, spec)
    sites = list(weight_sites(clean).items())
    for _ in range(50):      # a flip that changes the logits of this sentence
        name, k = sites[int(rng.integers(len(sites)))]
        pos = np.array([int(rng.integers(clean.tensors[name].shape[0] * k))])
        tensors = dict(clean.tensors)
        tensors[name] = flip_packed(clean.tensors[name], k, pos)
        faulty_path = tmp_path / "faulty.safetensors"
        save_int_model(faulty_path, tensors, clean.meta)
        faulty = load_int_model(faulty_path)
        want = expected_outputs(faulty, ids, types, 7)
        if not np.array_equal(want["member_logits"], want_clean["member_logits"]):
            break
    else:
        pytest.fail("no single weight flip among 50 changed the logits")
    words, _ = model_image(faulty, spec)
    diff = np.flatnonzero(words != clean_words)
    assert diff.size == 1, "the flip lands in exactly one image word"
    flipped = int(words[diff[0]] ^ clean_words[diff[0]])
    assert flipped & (flipped - 1) == 0, "... on exactly one bit of it"
    rep = _run(faulty_path, image_file(faulty, spec, tmp_path), spec, 2, 64, 8,
               [dict(ids=ids, types=types, length=7)], "fault")
    (job,) = rep["jobs"]
    assert job["agree"] and job["mismatches"] == 0, rep["failures"]
    assert job["member_logits"] == want["member_logits"].tolist()
    assert job["member_logits"] != want_clean["member_logits"].tolist()


def _soak_count(request) -> int:
    env = os.environ.get("BEBERT_SOAK_SEQUENCES")
    if env:
        return int(env)
    return 200 if "soak" in (request.config.getoption("-m") or "") else 20


#: random shapes: (hidden, heads, ffn) with heads dividing hidden; P and S from the divisors below
SHAPES = [(32, 2, 64), (48, 3, 96), (64, 4, 128), (32, 4, 48)]


@pytest.mark.verilator
@pytest.mark.soak
def test_soak_random_models_stalls_and_resets(tmp_path, request):
    from bebert.golden.accelerator import AccelSpec
    from bebert.golden.format import load_int_model
    from bebert.sim.tb_accelerator import image_file

    total = _soak_count(request)
    rng = np.random.default_rng(2026)
    done = mismatches = model_i = 0
    while done < total:
        h, a, f = SHAPES[model_i % len(SHAPES)]
        members = int(rng.integers(1, 4))
        mt = int(rng.integers(4, 10))
        dims = dict(vocab_size=int(rng.integers(40, 120)), hidden_size=h, num_layers=int(rng.integers(1, 3)),
                    num_heads=a, ffn_size=f, max_len=mt, num_labels=int(rng.integers(2, 4)))
        path = _export(tmp_path / f"m{model_i}.safetensors", dims, members, seed=100 + model_i)
        model = load_int_model(path)
        p = int(rng.choice([d for d in (2, 4, 8, 16) if h % d == 0 and f % d == 0]))
        s = int(rng.choice([d for d in (8, 16, 32) if h % d == 0 and f % d == 0]))
        wb = int(rng.choice([16, 32]))
        spec = AccelSpec.from_int_model(model, p, s, wb)
        lanes = int(rng.integers(1, members + 1))
        prefetch = int(rng.choice([0, 64, 256]))
        count = min(int(rng.integers(8, 15)), total - done)
        jobs = []
        for _ in range(count):
            n = int(rng.integers(1, mt + 1))
            length = int(rng.integers(1, n + 1)) if rng.random() < 0.3 else n
            jobs.append(dict(ids=rng.integers(0, spec.vocab, n).tolist(), types=rng.integers(0, spec.types, n).tolist(),
                             length=length, stall=float(rng.choice([0.0, 0.2, 0.5]))))
        kw = dict(latency=int(rng.integers(2, 12)), bits_per_cycle=float(rng.uniform(8.0, 48.0)), seed=model_i)
        if rng.random() < 0.5:
            kw["reset_after"] = int(rng.integers(50, 2000))       # job 0 is cut short by a reset, then dropped
        rep = _run(path, image_file(model, spec, tmp_path), spec, lanes, prefetch, mt, jobs, f"soak{model_i}", **kw)
        kept = [j for j in rep["jobs"] if not j.get("reset")]
        assert not rep["failures"], (model_i, dims, p, s, wb, lanes, prefetch, kw, rep["failures"])
        for j in kept:
            mismatches += j["mismatches"] + (0 if j["agree"] else 1)
        done += len(kept)
        model_i += 1
    print(f"soak: {done} sequences on {model_i} random models, {mismatches} mismatches")
    report = os.environ.get("BEBERT_SOAK_REPORT")
    if report:      # BEBERT_SOAK_REPORT=docs/results/robustness.json pytest -m soak tests/test_soak.py
        from bebert.golden.faults import update_report

        update_report(report, {"soak": {"sequences": done, "mismatches": mismatches, "models": model_i}},
                      f"BEBERT_SOAK_REPORT={report} python -m pytest -m soak tests/test_soak.py")
    assert mismatches == 0 and done >= total
