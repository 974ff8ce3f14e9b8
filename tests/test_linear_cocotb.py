"""Binary linear-layer engine in Verilator through cocotb with the memory model (marker: verilator)."""

import pytest

from bebert.hw.linear import LinearEngine
from bebert.sim.runner import SimulationFailed, build_block, run_testbench

pytestmark = pytest.mark.verilator

# One small engine: K % S != 0, N % P != 0, n = 1 among the layers; a tile is 4 memory words.
P, S, WORD, MAX_K, MAX_N, MAX_TOKENS = 4, 16, 16, 40, 10, 5
LAYERS = [[3, 40, 10], [1, 16, 4], [5, 33, 9], [2, 1, 1]]


@pytest.fixture(scope="module")
def build():
    dut = LinearEngine(p=P, s=S, max_k=MAX_K, max_n=MAX_N, max_tokens=MAX_TOKENS, word_bits=WORD, addr_width=16)
    return build_block(dut, f"linear__P{P}_S{S}_W{WORD}_K{MAX_K}_N{MAX_N}_T{MAX_TOKENS}", toplevel="linear"), dut


def _cfg(dut, **kw):
    return dict(p=P, s=S, word_bits=WORD, addr_width=16, max_k=MAX_K, max_n=MAX_N, max_tokens=MAX_TOKENS,
                layers=LAYERS, pe_latency=dut.pe.latency, **kw)


def test_linear_verilator(build, tmp_path):
    sim, dut = build
    cfg = _cfg(dut, latency=9, bits_per_cycle=5.5, seed=3, idle=0.3, stall=0.4)
    results = run_testbench(sim, "bebert.sim.tb_linear", "layers_with_backpressure", cfg)
    assert [ok for _, ok, _ in results] == [True]
    cfg = _cfg(dut, latency=6, bits_per_cycle=12.8, seed=4, report=str(tmp_path / "cycles.json"))
    results = run_testbench(sim, "bebert.sim.tb_linear", "cycles", cfg)
    assert [ok for _, ok, _ in results] == [True]


def test_checker_catches_a_wrong_bit(build):
    sim, dut = build
    cfg = _cfg(dut, latency=4, bits_per_cycle=16, seed=5, corrupt_expected=6)
    with pytest.raises(SimulationFailed, match="layers_with_backpressure FAILED.*mismatches"):
        run_testbench(sim, "bebert.sim.tb_linear", "layers_with_backpressure", cfg)
