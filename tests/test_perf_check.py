"""The cycle model against Verilator (bebert.sim.perf_check) on small random models, and the bench's preset
clock read from an area report."""

from __future__ import annotations

import json

import pytest

from bebert.golden.bench_cli import CLOCK_MHZ, PRESETS, preset_clock
from random_models import export_random

#: a random model big enough that the LayerNorm statistics' worst case the model assumes is a small share
DIMS = dict(vocab_size=120, hidden_size=64, num_layers=2, num_heads=2, ffn_size=128, max_len=16)


def _model(path, members=2):
    return export_random(path, DIMS, members, seed=10, weights=[0.6, 0.4][:members])


@pytest.mark.verilator
@pytest.mark.parametrize("cfg", [
    dict(p=4, s=16, lanes=2, prefetch=1024, word_bits=16, bits_per_cycle=12.8, latency=8, n=12),
    dict(p=8, s=32, lanes=1, prefetch=0, word_bits=32, bits_per_cycle=24.0, latency=3, n=16),
])
def test_cycle_model_within_two_percent(tmp_path, cfg):
    pytest.importorskip("torch")
    from bebert.sim.perf_check import GOAL_PCT, check_config

    path = _model(tmp_path / "m.safetensors")
    ids = [1] + [(7 * i + 3) % DIMS["vocab_size"] for i in range(cfg["n"] - 2)] + [2]
    row = check_config(path, ids, cfg)
    assert row["agree"], "logits equal golden's"
    assert row["verilator_cycles"] > 0 and row["model_cycles"] > 0
    assert abs(row["error_pct"]) <= GOAL_PCT, row


def test_check_config_refuses_a_long_sequence(tmp_path):
    pytest.importorskip("torch")
    from bebert.sim.perf_check import check_config

    path = _model(tmp_path / "m.safetensors", members=1)
    with pytest.raises(ValueError, match="longer than the model's 16"):
        check_config(path, list(range(17)), dict(p=4, s=16, lanes=1, prefetch=0, word_bits=16, bits_per_cycle=16.0,
                                                  latency=4, n=17))


def test_preset_clock_from_the_area_report(tmp_path):
    pr = PRESETS["demo"]
    report = tmp_path / "area.json"
    cfg = {"name": "demo", "fmax_mhz": 57.3, "params": {"P": pr["p"], "S": pr["s"], "lanes": pr["lanes"],
                                                         "prefetch": 4096, "word_bits": pr["word_bits"]}}
    report.write_text(json.dumps({"configs": [cfg]}))
    mhz, source = preset_clock("demo", report)
    assert mhz == 57.3 and "post-route" in source and '"demo"' in source
    # another configuration, an unplaced one, a missing or broken file: the assumed clock, said so
    other = dict(cfg, params=dict(cfg["params"], P=pr["p"] * 2))
    unplaced = dict(cfg, fmax_mhz=None)
    for doc in ({"configs": [other]}, {"configs": [unplaced]}):
        report.write_text(json.dumps(doc))
        assert preset_clock("demo", report) == (CLOCK_MHZ, "assumed")
    report.write_text("{not json")
    assert preset_clock("demo", report) == (CLOCK_MHZ, "assumed")
    assert preset_clock("demo", tmp_path / "missing.json") == (CLOCK_MHZ, "assumed")
