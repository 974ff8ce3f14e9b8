"""The accelerator's per-block area report (``bebert synth accelerator --breakdown``) and its budget.

The budget test (marker ``synth``, native yosys) synthesises a small two-lane accelerator without flattening and
fails when the LUT4 slots outside the PE arrays grow by more than 5% over ``baselines/area_small.json``
(regenerate that file with the command in it when a change is meant to cost area, and say why in the commit).
"""

import json
from pathlib import Path

import pytest

from bebert.fpga.accelerator import area_config, area_markdown, block_category, save_area

BASELINE = Path(__file__).parent / "baselines" / "area_small.json"


@pytest.mark.parametrize("name, cat", [
    ("sequencer", "sequencer"), ("wrapper", "wrapper"), ("tags", "sequencer"), ("lane1.wq", "lane_control"),
    ("lane0", "lane_control"), ("lane1.tq", "lane_control"), ("lane0.enc", "encoder_control"),
    ("lane1.enc.lv.vu", "vector_unit"), ("lane0.pf.q", "prefetch"), ("lane0.enc.eng.pe", "pe_array"),
    ("enc0", "encoder_control"), ("enc1.eng", "linear_control"), ("enc0.lv", "linear_control"),
    ("enc0.lv.engine", "linear_control"), ("enc0.lv.engine.pe", "pe_array"), ("enc1.eng.pe.out_fifo", "pe_array"),
    ("enc0.eng.fetch.cmd_req", "fetch"), ("pf0", "prefetch"), ("pf1.q", "prefetch"), ("enc0.lv.vu", "vector_unit"),
    ("enc0.att", "attention"), ("enc0.att.out_fifo", "attention"), ("enc0.eng.thr", "threshold"),
])
def test_block_categories(name, cat):
    assert block_category(name) == cat


def _row(lut4=1000):
    blocks = {"sequencer": {"lut4": 600, "ff": 10, "ram": 2, "ebr": 1, "dsp": 0},
              "enc0.eng.pe": {"lut4": 400, "ff": 5, "ram": 0, "ebr": 0, "dsp": 0}}
    return dict(P=2, S=32, lanes=1, prefetch=0, word_bits=16, max_tokens=8, dims=dict(hidden=32), device="LFE5U-85F",
                lut4=lut4, lut4_share=0.01, fmax_mhz=None, target_mhz=125.0, pe_lut4=400, pe_share=0.4, blocks=blocks,
                categories={"sequencer": blocks["sequencer"], "pe_array": blocks["enc0.eng.pe"]},
                breakdown_total={"lut4": 1000, "ff": 15, "ram": 2, "ebr": 1, "dsp": 0}, ff=15, ebr=1, mult18=0,
                worst_paths=[{"delay_ns": 9.5, "logic_levels": 4, "blocks": ["enc0", "top"], "start": "a", "end": "b"}],
                command="bebert synth accelerator --breakdown")


def test_area_report_adds_and_replaces_configs(tmp_path):
    out = tmp_path / "area.json"
    save_area(out, area_config(_row(), "a"))
    save_area(out, area_config(_row(), "b"))
    save_area(out, area_config(_row(lut4=2000), "a"))          # same name: replaced, not duplicated
    doc = json.loads(out.read_text())
    assert [c["name"] for c in doc["configs"]] == ["b", "a"]
    assert doc["configs"][1]["lut4_total"] == 2000 and doc["configs"][1]["params"]["P"] == 2
    md = out.with_suffix(".md").read_text()
    assert "## a" in md and "| `sequencer` | 600 |" in md and "9.5 ns, 4 logic levels, through enc0 -> top" in md
    assert area_markdown(doc).count("## ") == 2
    assert "| a | 64 | 2000 |" in md, "the summary row: P*S and the LUT4 slots"
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![LUT4 slots" in md


def test_area_report_refuses_a_foreign_file(tmp_path):
    out = tmp_path / "area.json"
    out.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid area report"):
        save_area(out, area_config(_row(), "a"))
    assert out.read_text() == "{not json"           # left as it was
    out.write_text('{"rows": []}')
    with pytest.raises(ValueError, match="no 'configs' list"):
        save_area(out, area_config(_row(), "a"))


@pytest.mark.synth
def test_non_pe_area_within_budget(tmp_path):
    """A two-lane accelerator of a small random model, per block: the LUT4 slots outside the PE arrays may not
    grow by more than 5% over the baseline; the PE arrays must be there."""
    pytest.importorskip("pyosys")
    from test_accelerator_cocotb import make_model

    from bebert.fpga.accelerator import synth_accelerator

    base = json.loads(BASELINE.read_text())
    path = make_model("tiny", tmp_path / "tiny.safetensors")
    row = synth_accelerator(path, **base["params"], workdir=tmp_path / "w", per_block=True, pnr=False)
    non_pe = row["breakdown_total"]["lut4"] - row["pe_lut4"]
    assert row["pe_lut4"] > 0 and non_pe > 0
    assert non_pe <= 1.05 * base["non_pe_lut4"], (non_pe, base["non_pe_lut4"], row["categories"])


if __name__ == "__main__":      # python tests/test_area.py: rewrite the baseline from the current design
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from test_accelerator_cocotb import make_model

    from bebert.atomic import write_json_atomic
    from bebert.fpga.accelerator import synth_accelerator

    params = dict(p=8, s=16, lanes=2, prefetch=64, word_bits=32, max_tokens=8)
    with tempfile.TemporaryDirectory() as tmp:
        row = synth_accelerator(make_model("tiny", Path(tmp) / "tiny.safetensors"), **params,
                                workdir=Path(tmp) / "w", per_block=True, pnr=False)
    write_json_atomic(BASELINE, {"params": params, "non_pe_lut4": row["breakdown_total"]["lut4"] - row["pe_lut4"],
                                 "pe_lut4": row["pe_lut4"], "categories": row["categories"],
                                 "command": "python tests/test_area.py"})
    print(f"wrote {BASELINE}")
