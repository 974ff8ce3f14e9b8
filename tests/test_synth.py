"""Synthesis of the PE array for ECP5 with yosys + nextpnr (marker: synth)."""

import json
from pathlib import Path

import pytest

from bebert.fpga.synth import synth_pe_array, worst_paths
from bebert.fpga.yosys import parse_stat, parse_stat_modules

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
    assert parse_stat(log) == {"CCU2C": 112, "LUT4": 1050, "TRELLIS_FF": 902}


def test_yosys_stat_parser_per_module():
    """A ``-noflatten`` stat: each module's own cells (sub-module instances are left out)."""
    log = """
5. Printing statistics.

=== top.a ===

        +----------Local Count, excluding submodules.
        |
       46 wires
       15 cells
       15   $lut
       12   CCU2C
        2   TRELLIS_DPR16X4

=== top ===

        +----------Local Count, excluding submodules.
        |
        3 cells
        7   LUT4
        1   top.a

=== design hierarchy ===

        +----------Count including submodules.
        |
       18 top
"""
    mods = parse_stat_modules(log)
    assert mods == {"top.a": {"$lut": 15, "CCU2C": 12, "TRELLIS_DPR16X4": 2}, "top": {"LUT4": 7}}


def test_worst_paths_from_a_nextpnr_report():
    report = {"critical_paths": [{"from": "clk", "to": "clk", "path": [
        {"type": "clk-to-q", "net": "wrap.block.enc0.x", "delay": 0.5, "from": {"cell": "a"}, "to": {"cell": "b"}},
        {"type": "logic", "net": "wrap.block.enc0.y", "delay": 1.0},
        {"type": "routing", "net": "wrap.block.l0_pc", "delay": 2.25, "from": {"cell": "c"}, "to": {"cell": "d"}}]}]}
    (p,) = worst_paths(report)
    assert p["delay_ns"] == 3.75 and p["blocks"] == ["enc0", "top"] and p["start"] == "a" and p["end"] == "d"
    assert p["logic_levels"] == 1


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
