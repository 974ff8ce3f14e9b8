"""Fault injection in the golden model (``golden/faults.py``, ``bebert faults``): exactly the bits drawn are
flipped, reproducibly; a rate of zero changes nothing; the activation hook sees every buffer; the curve of the
shipped checkpoint on a few sentences, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bebert.cli import main
from bebert.golden.evaluate import evaluate_int_model, golden_logits, load_eval_data
from bebert.golden.faults import (FaultyGolden, _flip_thresholds, fault_curve, flip_packed, inject, threshold_sites,
                                  threshold_width, weight_sites)
from bebert.golden.format import load_int_model
from bebert.golden.infer import GoldenModel
from bebert.golden.pe_array import unpack_bits

SHIPPED = Path(__file__).parents[1] / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"
DATA = Path(__file__).parents[2] / "shared" / "data" / "sst2-sentences"


@pytest.fixture(scope="module")
def shipped():
    return load_int_model(SHIPPED)


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("torch")
    from test_robustness import _tiny_members

    from bebert.golden.export import export_members
    from bebert.golden.format import IntModel

    tensors, meta = export_members(_tiny_members(), [0.6, 0.4])
    return IntModel(meta, tensors)


def test_flip_packed_flips_exactly_the_positions():
    rng = np.random.default_rng(1)
    k = 70                                       # two words per row, 58 padding bits
    packed = rng.integers(0, 2**63, (5, 2), dtype=np.uint64)
    packed[:, 1] &= np.uint64((1 << 6) - 1)      # padding bits zero, as pack_rows leaves them
    pos = np.array([0, 63, 64, 69, 70 + 5, 4 * 70 + 69])
    out = flip_packed(packed, k, pos)
    want = unpack_bits(packed, k).copy()
    for p in pos:
        want[p // k, p % k] ^= 1
    assert np.array_equal(unpack_bits(out, k), want)
    assert np.array_equal(out[:, 1] >> np.uint64(6), np.zeros(5, np.uint64))   # padding untouched
    assert not np.array_equal(out, packed) and packed.flags.owndata           # a copy


def test_threshold_flips_are_bit_flips_of_the_two_complement_field():
    width = 7
    thr = np.array([0, 5, 33, 63], np.int32)
    pol = np.array([1, 0, 1, 1], np.uint8)
    per = width + 1
    pos = np.array([0 * per + 0, 1 * per + 6, 1 * per + 7, 2 * per + 2, 2 * per + 3, 3 * per + 6])
    t2, p2 = _flip_thresholds(thr, pol, width, pos)
    want_t, want_p = [int(x) for x in thr], [int(x) for x in pol]
    for p in pos:
        c, b = divmod(int(p), per)
        if b == width:
            want_p[c] ^= 1
        else:
            u = (want_t[c] & ((1 << width) - 1)) ^ (1 << b)
            want_t[c] = u - (1 << width) if u >> (width - 1) else u
    assert t2.tolist() == want_t == [1, -59, 45, -1]
    assert p2.tolist() == want_p == [1, 1, 1, 1]


def test_inject_is_reproducible_and_counts_its_flips(tiny):
    a, fa = inject(tiny, 1e-2, 3, ("weights", "thresholds"))
    b, fb = inject(tiny, 1e-2, 3, ("weights", "thresholds"))
    c, _ = inject(tiny, 1e-2, 4, ("weights",))
    assert fa == fb and fa["weights"] > 0 and fa["thresholds"] > 0
    flipped = 0
    for name, k in weight_sites(tiny).items():
        assert np.array_equal(a.tensors[name], b.tensors[name])
        diff = np.bitwise_xor(a.tensors[name], tiny.tensors[name])
        flipped += int(np.bitwise_count(diff).sum())
    assert flipped == fa["weights"]
    assert any(not np.array_equal(a.tensors[n], c.tensors[n]) for n in weight_sites(tiny))
    w = threshold_width(tiny)
    changed = sum(int(np.bitwise_count((a.tensors[n].astype(np.int64) ^ tiny.tensors[n]) & ((1 << w) - 1)).sum())
                  + int((a.tensors[n[:-4] + ".pol"] != tiny.tensors[n[:-4] + ".pol"]).sum())
                  for n in threshold_sites(tiny))
    assert changed == fa["thresholds"]
    # the model itself is untouched; tensors not targeted are shared, not copied
    ref = inject(tiny, 1e-2, 3, ())[0]
    assert all(ref.tensors[n] is tiny.tensors[n] for n in tiny.tensors)


def test_rate_zero_and_no_flips_change_nothing(tiny):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (4, 8))
    clean = GoldenModel(tiny).forward(ids)
    z, flips = inject(tiny, 0.0, 0, ("weights", "thresholds"))
    assert flips == {"weights": 0, "thresholds": 0}
    g = FaultyGolden(z, 0.0)
    out = g.forward(ids)
    assert g.flips == 0 and np.array_equal(out.logits, clean.logits)
    assert np.array_equal(out.member_logits, clean.member_logits)


def test_every_activation_buffer_goes_through_the_hook(tiny):
    """Per member and layer the input, Q, K, attention, V, context, FFN input and FFN1 bits; then the pooler's input."""
    calls = []

    class Count(FaultyGolden):
        def _pack_activations(self, bits):
            calls.append(np.asarray(bits).shape)
            return super()._pack_activations(bits)

    Count(tiny, 0.0).forward(np.array([[2, 5, 6, 3]]))
    assert len(calls) == tiny.members * (8 * tiny.dims["num_layers"] + 1), calls
    g = FaultyGolden(tiny, 0.05, np.random.default_rng(0))
    out = g.forward(np.random.default_rng(1).integers(0, 100, (6, 8)))
    assert g.flips > 0 and out.logits.shape == (6, 2)


def test_curve_of_the_shipped_model_on_a_few_sentences(shipped):
    res = fault_curve(SHIPPED, data_dir=str(DATA), rates=(1e-3, 1e-2), seeds=(0, 1), limit=12)
    assert res["examples"] == 12 and res["rates"] == [1e-3, 1e-2] and res["seeds"] == [0, 1]
    assert len(res["ensemble"]) == 2 and len(res["members"]) == 2 and len(res["trials"]) == 4
    # the clean scores are bebert eval's
    ev = evaluate_int_model(SHIPPED, None, str(DATA), max_examples=12)
    assert res["clean"]["ensemble"] == ev["metrics"]["acc"]
    assert res["clean"]["members"] == [m["acc"] for m in ev["members"]]
    # a trial is its injection scored by the golden model
    t = res["trials"][3]
    spec, ds = load_eval_data(shipped, SHIPPED, None, str(DATA), max_examples=12)
    faulty, flips = inject(shipped, t["rate"], t["seed"])
    logits, member_logits = golden_logits(GoldenModel(faulty), ds, 5)
    assert flips == t["flips"] and flips["weights"] == res["trials"][3]["flips"]["weights"]
    assert t["ensemble"] == float(np.mean(logits.argmax(-1) == ds.labels.numpy()))
    assert t["members"] == [float(np.mean(member_logits[m].argmax(-1) == ds.labels.numpy())) for m in range(2)]
    assert res["ensemble"][1] == (res["trials"][2]["ensemble"] + res["trials"][3]["ensemble"]) / 2
    assert res["bits"]["weights"] == sum(shipped.tensors[k].shape[0] * kk for k, kk in weight_sites(shipped).items())


def test_cli_writes_table_json_plot_and_report(tmp_path, capsys):
    out, png, rep = tmp_path / "f.json", tmp_path / "f.png", tmp_path / "robustness.json"
    rep.write_text(json.dumps({"bad_inputs": [{"case": "x", "refused": True, "partial_files": 0}]}))
    assert main(["faults", str(SHIPPED), "--data-dir", str(DATA), "--limit", "6", "--seeds", "1", "--rates", "0.01",
                 "--targets", "weights", "thresholds", "activations", "--json", str(out), "--plot", str(png),
                 "--report", str(rep), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "6 sentences" in text and "ensemble" in text and "0.01" in text
    res = json.loads(out.read_text())
    assert res["targets"] == ["weights", "thresholds", "activations"]
    assert set(res["trials"][0]["flips"]) == {"weights", "thresholds", "activations"}
    assert res["command"].startswith("bebert faults ") and "--targets weights thresholds activations" in res["command"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(rep.read_text())
    assert report["bad_inputs"][0]["case"] == "x"                     # other sections kept
    curve = report["faults_weights_thresholds_activations"]         # "faults" is the weights-only curve
    assert curve["rates"] == [0.01] and len(curve["members"]) == 2 and curve["ensemble"] == res["ensemble"]
    assert report["soak"]["sequences"] == 0 and "not run" in report["soak"]["note"]
    assert report["command"] == res["command"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "f.png", "robustness.json"]


def test_report_sections_keep_their_own_commands(tmp_path):
    from bebert.golden.faults import update_report

    rep = tmp_path / "r.json"
    update_report(rep, {"faults": {"rates": [1]}}, "bebert faults A")
    update_report(rep, {"bad_inputs": []}, "pytest B")
    data = update_report(rep, {"faults": {"rates": [2]}}, "bebert faults C")
    assert data["command"] == "pytest B && bebert faults C"
    assert data["commands"] == {"bad_inputs": "pytest B", "faults": "bebert faults C"}
    assert data["faults"] == {"rates": [2]} and data["bad_inputs"] == [] and data["soak"]["mismatches"] == 0
    data["soak"] = {"sequences": 200, "mismatches": 0}
    rep.write_text(json.dumps(data))
    assert update_report(rep, {"bad_inputs": [1]}, "pytest B")["soak"] == {"sequences": 200, "mismatches": 0}
