"""Vector unit in Verilator through cocotb, against the golden function (marker: verilator)."""

import json

import pytest

from bebert.golden.vector import VectorFormats
from bebert.hw.vector import VectorUnit
from bebert.sim.runner import SimulationFailed, build_block, run_testbench

pytestmark = pytest.mark.verilator

# The synthesised default: H = 384 (MiniLM-L6-H384), K up to 1536 (the FFN down-projection).
MAX_H, MAX_K = 384, 1536


def _build():
    # not "vector": Verilator builds an executable named after the toplevel, which <vector> would include
    dut = VectorUnit(max_h=MAX_H, max_k=MAX_K, fmts=VectorFormats.default(MAX_H))
    return dut, build_block(dut, f"vector_unit__H{MAX_H}_K{MAX_K}", toplevel="vector_unit")


def test_vector_verilator(tmp_path):
    dut, build = _build()
    cases = ["random_with_backpressure", "edge_tokens", "throughput"]
    report = tmp_path / "throughput.json"
    cfg = dict(max_h=MAX_H, max_k=MAX_K, jobs=6, tokens=2, seed=3, idle=0.3, stall=0.4, report=str(report),
               token_cycles=dut.token_cycles(MAX_H), token_period=dut.token_period(MAX_H))
    results = run_testbench(build, "bebert.sim.tb_vector", cases, cfg)
    assert [name for name, ok, _ in results if ok] == cases
    rep = json.loads(report.read_text())
    assert rep["checked"] == 6 * MAX_H


def test_checker_catches_a_wrong_result():
    """The scoreboard must fail when one expected result has its lowest bit flipped."""
    _, build = _build()
    with pytest.raises(SimulationFailed, match="random_with_backpressure FAILED.*mismatches"):
        run_testbench(build, "bebert.sim.tb_vector", "random_with_backpressure",
                      dict(max_h=MAX_H, max_k=MAX_K, jobs=2, tokens=1, seed=5, corrupt_expected=11))
