"""Synthesis of the threshold unit for ECP5 with yosys + nextpnr (marker: synth)."""

import json
from pathlib import Path

import pytest

from bebert.fpga.blocks import SMALL, synth_block

BASELINE = Path(__file__).parent / "baselines" / "hw_blocks_small.json"


@pytest.mark.synth
def test_small_threshold_synthesises_within_baseline(tmp_path):
    """P = 8, 10-bit thresholds, 16 groups; figures within 15% of the stored baseline."""
    row = synth_block("threshold", SMALL["threshold"], workdir=tmp_path)
    # baseline: python -m bebert.fpga.blocks --small
    base = json.loads(BASELINE.read_text())["threshold"]
    assert row["params"] == base["params"] == SMALL["threshold"]
    # the P x width input and 64-bit output registers survive (nothing optimised away)
    assert row["ff"] > 8 * 10 + 64
    assert abs(row["lut4"] - base["lut4"]) <= 0.15 * base["lut4"], (row, base)
    assert abs(row["ff"] - base["ff"]) <= 0.15 * base["ff"], (row, base)
    assert row["fmax_mhz"] >= 0.85 * base["fmax_mhz"], (row, base)


def test_unknown_block():
    with pytest.raises(ValueError, match="unknown block"):
        synth_block("vector-unit")
