"""Bi-Attention unit in Verilator through cocotb, against the golden function (marker: verilator)."""

import pytest

from bebert.hw.attention import BiAttention
from bebert.sim.runner import SimulationFailed, build_block, run_testbench

pytestmark = pytest.mark.verilator

# The head size of MiniLM-L6-H384 (d = 32), a shorter max_len and chunk than the synthesised
# default to keep the run short; impl="ecp5" is the synthesised netlist (counters as LUT4
# primitives with computed INITs, replicated registers as TRELLIS_FF).
D, MAX_LEN, KB, IMPL = 32, 40, 8, "ecp5"


def _build():
    dut = BiAttention(d=D, max_len=MAX_LEN, kb=KB, impl=IMPL)
    return build_block(dut, f"attention__D{D}_L{MAX_LEN}_KB{KB}_{IMPL}", toplevel="attention",
                       cell_models=IMPL == "ecp5")


def test_attention_verilator():
    build = _build()
    cases = ["random_with_backpressure", "edge_heads", "throughput"]
    cfg = dict(d=D, max_len=MAX_LEN, kb=KB, heads=6, seed=2, idle=0.3, stall=0.4)
    results = run_testbench(build, "bebert.sim.tb_attention", cases, cfg)
    assert [name for name, ok, _ in results if ok] == cases


def test_checker_catches_a_wrong_result():
    """The scoreboard must fail when one expected context row has one bit flipped."""
    build = _build()
    cfg = dict(d=D, max_len=MAX_LEN, kb=KB, heads=2, seed=5, corrupt_expected=7)
    with pytest.raises(SimulationFailed, match="random_with_backpressure FAILED.*mismatches"):
        run_testbench(build, "bebert.sim.tb_attention", "random_with_backpressure", cfg)
