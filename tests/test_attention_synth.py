"""Synthesis of the Bi-Attention unit for ECP5 with yosys + nextpnr (marker: synth)."""

import json
from pathlib import Path

import pytest

from bebert.fpga.blocks import SMALL, markdown, synth_block

BASELINE = Path(__file__).parent / "baselines" / "hw_blocks_small.json"


@pytest.mark.synth
def test_small_attention_synthesises_within_baseline(tmp_path):
    """d = 16, max_len = 32, kb = 4 (ecp5 cells); figures within 15% of the stored baseline."""
    row = synth_block("attention", SMALL["attention"], workdir=tmp_path)
    # baseline: python -m bebert.fpga.blocks --small
    base = json.loads(BASELINE.read_text())["attention"]
    assert row["params"] == base["params"] == SMALL["attention"]
    assert row["cells"] == 2 * 4 * 16 and row["lut4"] > row["cells"]
    assert abs(row["lut4"] - base["lut4"]) <= 0.15 * base["lut4"], (row, base)
    assert abs(row["ff"] - base["ff"]) <= 0.15 * base["ff"], (row, base)
    assert row["fmax_mhz"] >= 0.85 * base["fmax_mhz"], (row, base)


def test_report_page_flags_a_missed_goal():
    rows = json.loads(BASELINE.read_text())
    rows["attention"] = dict(rows["attention"], fmax_mhz=99.5)
    page = markdown(rows)
    assert "| attention |" in page and "**missed**" in page
    assert "| threshold |" in page and "| met |" in page
