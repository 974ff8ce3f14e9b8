"""The schedule and performance model (golden/schedule.py) against closed forms and hand counts."""

import math

import pytest

from bebert.golden.schedule import PRESETS, HwParams, linear_cycles, model_dims, performance, schedule


def test_schedule_macs_and_weight_bits_match_closed_forms():
    d = PRESETS["minilm-l6-h384"]
    h, f, layers, n = d["hidden_size"], d["ffn_size"], d["num_layers"], 64
    ops = schedule("minilm-l6-h384", n)
    assert [o.name for o in ops[:6]] == ["embed", "qkv", "attention", "attn_out", "ffn_in", "ffn_out"]
    per_layer = n * (4 * h * h + 2 * h * f) + 2 * n * n * h
    assert sum(o.macs for o in ops) == layers * per_layer + h * h  # + pooler on one token
    # weights: 4H^2 + 2HF per layer, the pooler, and one embedding row per token
    assert sum(o.weight_bits for o in ops) == layers * (4 * h * h + 2 * h * f) + h * h + n * h
    # 10.8 Mbit per member for MiniLM-L6 (DESIGN.md): the layers and the pooler
    assert abs(layers * (4 * h * h + 2 * h * f) + h * h - 10.8e6) < 0.05e6


def test_linear_cycles_by_hand():
    hw = HwParams(p=4, s=8, bits_per_cycle=2.0, latency=3)
    # 10 channels -> 3 groups, 20 bits -> 3 folds, 5 tokens: 45 beats; weights 200 bits / 2 = 100 cycles
    c = linear_cycles(5, 20, 10, hw)
    assert c["compute"] == 3 * 5 * 3 and c["weights"] == 100 and c["bound"] == "weights"
    # first group fetch 4*20/2 = 40, then 2 groups at max(15, 40), the last group's 15 beats, latency 3
    assert c["estimate"] == 40 + 2 * 40 + 15 + 3
    fast = linear_cycles(5, 20, 10, HwParams(p=4, s=8, bits_per_cycle=1000.0, latency=3))
    assert fast["bound"] == "compute" and fast["estimate"] == pytest.approx(0.08 + 2 * 15 + 15 + 3)


def test_performance_floors_and_lanes():
    hw = HwParams()
    one = performance("bert-tiny", 32, hw, members=2)
    ops = schedule("bert-tiny", 32)
    macs = sum(o.macs for o in ops)
    assert one["ideal_cycles"] == pytest.approx(2 * macs / (hw.p * hw.s), abs=0.1)
    assert one["weight_floor_cycles"] == pytest.approx(2 * sum(o.weight_bits for o in ops) / hw.bits_per_cycle, abs=0.1)
    assert one["estimated_cycles"] >= max(one["ideal_cycles"], one["weight_floor_cycles"])
    two = performance("bert-tiny", 32, HwParams(lanes=2), members=2)
    assert two["ideal_cycles"] == pytest.approx(one["ideal_cycles"] / 2, abs=0.1)
    assert two["weight_floor_cycles"] == one["weight_floor_cycles"]  # one shared memory port
    assert two["estimated_cycles"] < one["estimated_cycles"]
    more_vec = performance("bert-tiny", 32, HwParams(vector_lanes=4), members=2)
    assert more_vec["by_kind"]["linear_vector"] < one["by_kind"]["linear_vector"]
    assert math.isclose(sum(one["by_kind"].values()), sum(o["cycles"] for o in one["ops"]), rel_tol=1e-9)


@pytest.mark.parametrize("call,match", [
    (lambda: model_dims("bert-huge"), "unknown model preset"),
    (lambda: model_dims({"hidden_size": 10}), "lacks num_layers"),
    (lambda: model_dims(dict(PRESETS["bert-tiny"], num_heads=3)), "do not divide"),
    (lambda: schedule("bert-tiny", 0), "tokens must be a positive integer"),
    (lambda: HwParams(p=0), "HwParams.p must be a positive number"),
    (lambda: performance("bert-tiny", 8, members=0), "members must be a positive integer"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_perf_cli(tmp_path, capsys):
    import json

    from bebert.cli import main

    js, md = tmp_path / "perf.json", tmp_path / "perf.md"
    assert main(["perf", "--model", "bert-tiny", "--tokens", "16", "32", "--lanes", "2", "--json", str(js),
                 "--md", str(md)]) == 0
    out = capsys.readouterr().out
    data = json.loads(js.read_text())
    assert [r["tokens"] for r in data["results"]] == [16, 32] and data["results"][0]["hw"]["lanes"] == 2
    assert md.read_text() in out and "| L2-H128 | 32 | 2 | 2 |" in out
    assert main(["perf", "--model", "no-such-model"]) == 1
    assert "neither a preset" in capsys.readouterr().err


def test_perf_cli_rtl_model(tmp_path, capsys):
    """For a W1A1 deployment file, ``bebert perf`` adds the accelerator's own cycle model (the one the
    Verilator runs are checked against), with its lanes and prefetch."""
    import json
    from pathlib import Path

    from bebert.cli import main
    from bebert.golden.accelerator import AccelSpec, expected_cycles
    from bebert.golden.format import load_int_model

    ckpt = Path(__file__).resolve().parents[1] / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"
    js = tmp_path / "perf.json"
    assert main(["perf", "--model", str(ckpt), "--tokens", "10", "--p", "2", "--s", "32", "--lanes", "2",
                 "--json", str(js)]) == 0
    r = json.loads(js.read_text())["results"][0]
    spec = AccelSpec.from_int_model(load_int_model(ckpt), 2, 32, 16)
    assert r["rtl_cycles"] == expected_cycles(spec, 10, 12.8, 7, lanes=2, prefetch=True)
    assert f"| {r['rtl_cycles']:,.0f} |" in capsys.readouterr().out
    assert main(["perf", "--model", str(ckpt), "--tokens", "10", "--lanes", "3"]) == 1
    assert "--lanes must be 1..2" in capsys.readouterr().err
