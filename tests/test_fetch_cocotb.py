"""Weight fetch unit in Verilator with the memory model serving a deployment file (marker: verilator)."""

import pytest
import torch

from bebert.golden.export import export_members
from bebert.golden.format import save_int_model
from bebert.hw.fetch import WeightFetch
from bebert.model.config import ModelConfig
from bebert.model.student import BinaryBertForSequenceClassification
from bebert.sim.runner import SimulationFailed, build_block, run_testbench

pytestmark = pytest.mark.verilator

WORD, TILE = 16, 256


@pytest.fixture(scope="module", params=["behavioral", "ecp5"])
def build(request):
    """Both netlists: plain Amaranth, and the ECP5 one with kept enable-copy primitives."""
    impl = request.param
    # chunk_bits=32: several enable copies per tile even at this small size
    return build_block(WeightFetch(word_bits=WORD, tile_bits=TILE, addr_width=20, max_tiles=64, chunk_bits=32,
                                   impl=impl),
                       f"fetch__W{WORD}_T{TILE}_{impl}", toplevel="fetch", cell_models=impl == "ecp5")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny W1A1 model exported to the integer deployment format (untrained weights)."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=300, hidden_size=64, num_layers=1, num_heads=2, ffn_size=128, max_len=32,
                      hidden_dropout=0.0)
    tensors, meta = export_members([BinaryBertForSequenceClassification(cfg).eval()], [1.0])
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_int_model(path, tensors, meta)
    return str(path)


def test_fetch_serves_the_deployment_file(build, model_file):
    cfg = dict(word_bits=WORD, tile_bits=TILE, max_tiles=64, latency=9, bits_per_cycle=5.5, stall=0.4,
               model=model_file, seed=2)
    results = run_testbench(build, "bebert.sim.tb_fetch", "tensors_with_backpressure", cfg)
    assert [ok for _, ok, _ in results] == [True]


@pytest.mark.parametrize("bw,compute", [(12.8, 40), (64.0, 4)])
def test_fetch_overlaps_compute(build, bw, compute):
    """SDRAM-like 12.8 bits/cycle with slow consumption, and a fast memory with fast consumption."""
    cfg = dict(word_bits=WORD, tile_bits=TILE, max_tiles=32, latency=12, bits_per_cycle=bw, compute=compute,
               seed=3)
    results = run_testbench(build, "bebert.sim.tb_fetch", "throughput", cfg)
    assert [ok for _, ok, _ in results] == [True]


def test_checker_catches_a_wrong_tile(build):
    cfg = dict(word_bits=WORD, tile_bits=TILE, max_tiles=64, latency=4, bits_per_cycle=16, seed=4,
               corrupt_expected=2)
    with pytest.raises(SimulationFailed, match="tensors_with_backpressure FAILED.*mismatches"):
        run_testbench(build, "bebert.sim.tb_fetch", "tensors_with_backpressure", cfg)
