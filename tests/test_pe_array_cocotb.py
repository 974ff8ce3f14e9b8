"""PE array in Verilator through cocotb, against the golden function (marker: verilator)."""

import pytest

from bebert.hw.pe_array import PEArray
from bebert.sim.runner import SimulationFailed, build_block, run_testbench

pytestmark = pytest.mark.verilator

# (P, S, max_k): a single channel, a non-power-of-two fold, a demo-sized fold.
PARAMS = [(1, 16, 100), (3, 24, 130), (8, 64, 384)]


def _build(p, s, max_k, impl="behavioral", max_shift=0):
    return build_block(PEArray(p=p, s=s, max_k=max_k, impl=impl, max_shift=max_shift),
                       f"pe_array__P{p}_S{s}_K{max_k}_{impl}_sh{max_shift}",
                       toplevel="pe_array", cell_models=impl == "ecp5")


@pytest.mark.parametrize("p,s,max_k,impl,max_shift",
                         [(*x, "behavioral", 0) for x in PARAMS] + [(4, 40, 200, "ecp5", 3)])
def test_pe_array_verilator(p, s, max_k, impl, max_shift):
    """impl="ecp5" is the synthesised netlist (counters as LUT4 primitives with computed INITs);
    max_shift=3 adds the bit-serial W1A4 mode, exercised with 4-bit jobs among the 1-bit ones."""
    build = _build(p, s, max_k, impl, max_shift)
    ks = sorted({1, s - 1, s, s + 1, 64, 65, max_k} - {0})
    cfg = dict(p=p, s=s, max_k=max_k, jobs=24, ks=ks, seed=p * 7 + s, idle=0.3, stall=0.4, max_shift=max_shift)
    cases = ["random_with_backpressure", "edge_patterns", "throughput"]
    results = run_testbench(build, "bebert.sim.tb_pe_array", cases, cfg)
    assert [name for name, ok, _ in results if ok] == cases


def test_checker_catches_a_wrong_result():
    """The scoreboard must fail when the expected values are off by one in one channel."""
    p, s, max_k = PARAMS[0]
    build = _build(p, s, max_k)
    cfg = dict(p=p, s=s, max_k=max_k, jobs=6, ks=[40], seed=5, corrupt_expected=3)
    with pytest.raises(SimulationFailed, match="random_with_backpressure FAILED.*mismatches"):
        run_testbench(build, "bebert.sim.tb_pe_array", "random_with_backpressure", cfg)
