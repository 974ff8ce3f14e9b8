"""Synthesis of the PE array for ECP5 with yosys + nextpnr (marker: synth)."""

import json
from pathlib import Path

import pytest

from bebert.fpga.synth import _yosys_cells, synth_pe_array

BASELINE = Path(__file__).parent / "baselines" / "pe_array_synth_small.json"


def test_yosys_stat_parser():
    log = """
=== top ===
     1651 wires
     2313 cells
        2   $scopeinfo
      112   CCU2C
     1050   LUT4
      902   TRELLIS_FF
"""
    assert _yosys_cells(log) == {"CCU2C": 112, "LUT4": 1050, "TRELLIS_FF": 902}


def test_unknown_device():
    from bebert.fpga.synth import synth_ecp5
    with pytest.raises(ValueError, match="unknown ECP5 device"):
        synth_ecp5(None, device="LFE5U-12X")


@pytest.mark.synth
def test_small_array_synthesises_within_baseline(tmp_path):
    """A 4x64 array through yosys and nextpnr; figures within 15% of the stored baseline."""
    row = synth_pe_array(4, 64, 384, workdir=tmp_path)  # baseline: bebert synth pe-array --p 4 --s 64 --max-k 384
    for key in ("P", "S", "lut4", "ff", "fmax_mhz", "lut4_per_bit"):
        assert key in row
    assert row["lut4"] > 4 * 64 and row["ff"] > 4 * 64 + 64
    assert row["lut4_per_bit"] == round(row["lut4"] / 256, 3)
    base = json.loads(BASELINE.read_text())
    assert abs(row["lut4"] - base["lut4"]) <= 0.15 * base["lut4"], (row, base)
    assert abs(row["ff"] - base["ff"]) <= 0.15 * base["ff"], (row, base)
    assert row["fmax_mhz"] >= 0.85 * base["fmax_mhz"], (row, base)
