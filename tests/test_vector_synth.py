"""Synthesis of the vector unit for ECP5 with yosys + nextpnr (marker: synth)."""

import json
from pathlib import Path

import pytest

from bebert.fpga.blocks import SMALL, synth_block

BASELINE = Path(__file__).parent / "baselines" / "hw_blocks_small.json"


@pytest.mark.synth
def test_small_vector_synthesises_within_baseline(tmp_path):
    """H = 32, K = 64 (tables and buffer in LUT RAM); figures within 15% of the stored baseline."""
    row = synth_block("vector", SMALL["vector"], workdir=tmp_path)
    # baseline: bebert synth blocks --small vector
    base = json.loads(BASELINE.read_text())["vector"]
    assert row["params"] == base["params"] == SMALL["vector"]
    # the multipliers survive (nothing optimised away): alpha*D, s^2, H*s, 2 for d*R, 2 for n*g
    assert row["mult18"] == base["mult18"] == 7
    assert abs(row["lut4"] - base["lut4"]) <= 0.15 * base["lut4"], (row, base)
    assert abs(row["ff"] - base["ff"]) <= 0.15 * base["ff"], (row, base)
    assert row["fmax_mhz"] >= 0.85 * base["fmax_mhz"], (row, base)
