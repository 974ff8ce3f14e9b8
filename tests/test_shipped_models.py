"""The deployment files shipped for the presets: present, valid, sized for their part, and as accurate as the
Pareto report says (golden model on the full SST-2 dev set)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bebert.golden.evaluate import evaluate_int_model
from bebert.golden.format import load_int_model
from bebert.golden.pareto import memory_bits
from bebert.hw.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2-sentences"
PARETO = ROOT / "docs" / "results" / "pareto.json"


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.model])
def test_shipped_model_fits_its_preset(name):
    pr = PRESETS[name]
    path = ROOT / pr.model
    assert path.is_file(), f"{pr.model} (the model of preset {name}) is not in the repository"
    model = load_int_model(path)
    assert model.meta.get("task") == "sst2-sentences"
    assert path.stat().st_size < 10 * 2**20, "shipped models stay small"
    if pr.onchip_kbit:
        mem = memory_bits(model, pr.max_tokens, pr.p, pr.s, pr.word_bits)
        assert mem["onchip"] <= pr.onchip_kbit * 1024, f"{pr.model} needs {mem['onchip'] / 1024:.0f} Kbit on chip"


@pytest.mark.skipif(not SST2.is_dir(), reason="needs ../shared/data/sst2-sentences")
@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.model and p.onchip_kbit])
def test_shipped_narrow_model_scores_what_the_report_says(name):
    pr = PRESETS[name]
    rows = [r for r in json.loads(PARETO.read_text())["rows"] if r["source"] == pr.model]
    assert len(rows) == 1, f"docs/results/pareto.json has no row for {pr.model}"
    got = evaluate_int_model(ROOT / pr.model, None, str(SST2))
    assert got["examples"] == rows[0]["dev_rows"] == 872
    assert got["metrics"]["acc"] == rows[0]["dev_metric"]
    assert rows[0]["presets"][name]["fits"] is True
