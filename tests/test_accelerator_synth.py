"""``bebert synth accelerator``'s top level and report, without running the tools (a place and route of even
the tiny two-lane accelerator takes over 15 minutes here; ``docs/results-hw.md`` has the measured run)."""

import pytest
from amaranth.back import verilog


def test_accel_top_observes_everything(tmp_path):
    """The registered wrapper drives and observes every stream of the accelerator, and its status pins carry
    ``running``, ``error`` and the counters' parity, so synthesis keeps the whole design."""
    pytest.importorskip("torch")
    from test_accelerator_cocotb import make_model

    from bebert.fpga.accelerator import AccelTop, markdown
    from bebert.golden.accelerator import AccelSpec
    from bebert.golden.format import load_int_model
    from bebert.hw.accelerator import Accelerator

    model = load_int_model(make_model("tiny", tmp_path / "tiny.safetensors"))
    acc = Accelerator(AccelSpec.from_int_model(model, 8, 16, 32), lanes=2, prefetch=64, max_tokens=8,
                      addr_width=16, impl="ecp5")
    top = AccelTop(acc)
    assert set(top.signature.members) == {"din", "in_valid", "in_ready", "out_ready", "out_valid", "dout", "status"}
    assert len(top.in_valid) == 3 and len(top.out_valid) == 2 and len(top.status) == 3
    text = verilog.convert(top, name="accel_top")
    assert "module accel_top" in text and "output [2:0] status" in text
    row = dict(device="LFE5U-85F", command="bebert synth accelerator", dims=dict(hidden=32, layers=2, members=2),
               P=8, S=16, lanes=2, prefetch=64, lut4=100, lut4_share=0.01, ff=10, ebr=1, ebr_share=0.005, mult18=4,
               fmax_mhz=99.0, target_mhz=125.0, synth_seconds=1.0, pnr_seconds=2.0)
    md = markdown(row)
    assert "| H32 L2 M2 | 8 x 16 | 2 | 64 |" in md and "**missed** (nextpnr" in md
