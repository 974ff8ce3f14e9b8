"""Threshold unit in Verilator through cocotb, against the golden function (marker: verilator)."""

import pytest

from bebert.hw.threshold import ThresholdUnit
from bebert.sim.runner import SimulationFailed, build_block, run_testbench

pytestmark = pytest.mark.verilator

# P = 16 with 12-bit accumulators: the PE array's default P and its acc_width for max_k = 1536.
P, WIDTH, MAX_CHANNELS = 16, 12, 200


def _build():
    dut = ThresholdUnit(p=P, width=WIDTH, max_channels=MAX_CHANNELS)
    return build_block(dut, f"threshold__P{P}_W{WIDTH}_C{MAX_CHANNELS}", toplevel="threshold")


def _cfg(**kw):
    return dict(p=P, width=WIDTH, max_channels=MAX_CHANNELS, **kw)


def test_threshold_verilator():
    build = _build()
    cases = ["random_with_backpressure", "edge_tables", "throughput"]
    results = run_testbench(build, "bebert.sim.tb_threshold", cases, _cfg(jobs=10, seed=3, idle=0.3, stall=0.4))
    assert [name for name, ok, _ in results if ok] == cases


def test_checker_catches_a_wrong_result():
    """The scoreboard must fail when one expected word has one bit flipped."""
    build = _build()
    with pytest.raises(SimulationFailed, match="random_with_backpressure FAILED.*mismatches"):
        run_testbench(build, "bebert.sim.tb_threshold", "random_with_backpressure",
                      _cfg(jobs=3, seed=5, corrupt_expected=4))
