"""Synthesis of the compute blocks for ECP5 with yosys + nextpnr against JSON baselines (marker: synth).

Baselines: ``bebert synth blocks --small`` writes ``tests/baselines/hw_blocks_small.json``.
"""

import json
from pathlib import Path

import pytest

from bebert.fpga.blocks import SMALL, markdown, synth_block

BASELINE = Path(__file__).parent / "baselines" / "hw_blocks_small.json"


def _survives(block, row):
    """What must not be optimised away, per block (beyond the baseline figures)."""
    if block == "threshold":   # the P x width input and the 64-bit output registers
        return row["ff"] > 8 * 10 + 64
    if block == "attention":   # 2 x kb x d product cells
        return row["cells"] == 2 * 4 * 16 and row["lut4"] > row["cells"]
    if block == "vector":      # alpha*D, s^2, H*s, 2 for d*R, 2 for n*g
        return row["mult18"] == 7
    if block == "vector_vw4":  # the same for each of the four channel lanes (the tiny H = 32 fits some in LUTs)
        return row["mult18"] >= 4 * 5
    if block == "fetch":       # the tile assembler and the two-tile buffer
        return row["ff"] > 2 * 256
    raise AssertionError(f"no survival check for {block}")


@pytest.mark.synth
@pytest.mark.parametrize("block", sorted(SMALL))
def test_small_block_synthesises_within_baseline(block, tmp_path):
    """Each block's small configuration; LUT4 and FF within 15%, Fmax within 15% below the baseline."""
    row = synth_block(block, SMALL[block], workdir=tmp_path)
    base = json.loads(BASELINE.read_text())[block]
    assert row["params"] == base["params"] == SMALL[block]
    assert _survives(block, row), row
    assert abs(row["lut4"] - base["lut4"]) <= 0.15 * base["lut4"], (row, base)
    assert abs(row["ff"] - base["ff"]) <= 0.15 * base["ff"], (row, base)
    assert row["fmax_mhz"] >= 0.85 * base["fmax_mhz"], (row, base)


def test_unknown_block():
    with pytest.raises(ValueError, match="unknown block"):
        synth_block("vector-unit")


def test_report_page_flags_a_missed_goal():
    rows = json.loads(BASELINE.read_text())
    rows["attention"] = dict(rows["attention"], fmax_mhz=99.5)
    page = markdown(rows)
    assert "| attention |" in page and "**missed**" in page
    assert "| threshold |" in page and "| met |" in page
