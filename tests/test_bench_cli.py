"""``bebert bench`` on tiny settings: the files it writes, their schema, and clear errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from bebert.cli import main
from bebert.golden.bench_cli import CLOCK_MHZ, sequences
from bebert.golden.format import load_int_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"
DATA = ROOT.parent / "shared" / "data" / "sst2-sentences"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"SST-2 sentences not present at {DATA}")


def test_bench_writes_table_json_page_and_plot(tmp_path, capsys, monkeypatch):
    import bebert.golden.bench_cli as bench_cli

    monkeypatch.setattr(bench_cli, "AREA_REPORT", tmp_path / "no-area.json")  # no post-route Fmax: assumed clocks
    out, md = tmp_path / "bench.json", tmp_path / "page.md"
    assert main(["bench", "--lengths", "128", "8", "--runs", "1", "--engines", "golden", "bitpacked", "torch-fp32",
                 "accel-demo", "accel-edge", "-o", str(out), "--md", str(md)]) == 0
    printed = capsys.readouterr().out
    assert "demo 125 MHz (ASSUMED)" in printed and "bitpacked-c 2t" in printed and "accelerator edge" in printed
    res = json.loads(out.read_text())
    assert set(res) >= {"machine", "command", "rows", "ratios", "perf_model"}
    assert res["perf_model"] == [] and res["lengths"] == [8, 128]
    assert res["machine"]["cores"] >= 1 and res["machine"]["cpu"]
    keys = {"engine", "preset", "n", "batch", "threads", "ms_median", "ms_min", "ms_max"}
    want = {("golden-numpy", None, 1), ("bitpacked-c", None, 1), ("bitpacked-c", None, 2),
            ("torch-fp32-teacher", None, 1), ("accelerator", "demo", None), ("accelerator", "edge", None)}
    got = {(r["engine"], r["preset"], r["threads"]) for r in res["rows"]}
    assert want <= got
    for r in res["rows"]:
        assert keys <= set(r) and r["batch"] == 1 and r["n"] in (8, 128)
        assert 0 < r["ms_min"] <= r["ms_median"] <= r["ms_max"]
        if r["engine"] == "accelerator":
            assert r["ms_median"] == pytest.approx(r["cycles"] / (CLOCK_MHZ * 1e3)) and r["clock_mhz"] == CLOCK_MHZ
    edge = next(r for r in res["rows"] if r["preset"] == "edge" and r["n"] == 128)
    torch1 = next(r for r in res["rows"] if r["engine"] == "torch-fp32-teacher" and r["threads"] == 1 and r["n"] == 128)
    assert res["ratios"]["edge_n128_vs_torch_fp32_1t"] == pytest.approx(torch1["ms_median"] / edge["ms_median"],
                                                                         rel=1e-3)
    assert res["ratios"]["edge_n128_vs_bitpacked_2t"] > 0
    assert res["bitpacked_bit_exact"] is True
    page = md.read_text()
    assert "assumed" in page and "| accelerator edge" in page and "![latency against n](bench_latency.png)" in page
    png = tmp_path / "bench_latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sequences_are_real_sst2_tokens_cut_to_length():
    model = load_int_model(SHIPPED)
    seqs = sequences(model, [4, 16, 64], DATA)
    for n, ids in seqs.items():
        assert ids.shape == (1, n) and ids.dtype == np.int64
        assert ids[0, 0] == 101 and ids[0, -1] == 102  # [CLS] ... [SEP]
        assert not np.isin(ids[0, 1:-1], (0, 101, 102)).any()  # real word pieces, no padding
    assert np.array_equal(seqs[16][0, 1:3], seqs[64][0, 1:3])  # the same stream, cut


@pytest.mark.parametrize("argv, msg", [
    (["--lengths", "0"], "--lengths must lie in 2..512"),
    (["--lengths", "600"], "--lengths must lie in 2..512"),
    (["--runs", "0"], "--runs must be a positive integer"),
    (["--model", "no-such.safetensors"], "no such file"),
    (["-o", "no-such-folder/bench.json"], "does not exist"),
])
def test_bad_arguments_give_one_line_errors(argv, msg, capsys):
    assert main(["bench", "--engines", "accel-demo", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert msg in err and err.startswith("bebert bench: error:") and "\n" not in err


def test_unknown_engine_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--engines", "tpu"])
    assert e.value.code == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_onnxruntime_and_student_engines(tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", "--lengths", "8", "--runs", "1", "--engines", "ort-fp32", "ort-int8", "student-fp32",
                 "-o", str(out)]) == 0
    engines = {(r["engine"], r["threads"]) for r in json.loads(out.read_text())["rows"]}
    assert {("onnxruntime-fp32-teacher", 1), ("onnxruntime-int8-teacher", 1), ("torch-fp32-student", 1)} <= engines


def test_bench_uses_the_post_route_fmax_of_the_area_report(tmp_path, capsys, monkeypatch):
    import bebert.golden.bench_cli as bench_cli

    pr = bench_cli.PRESETS["demo"]
    area = tmp_path / "area.json"
    area.write_text(json.dumps({"configs": [{"name": "demo", "fmax_mhz": 50.0, "params": {
        "P": pr["p"], "S": pr["s"], "lanes": pr["lanes"], "prefetch": 4096, "word_bits": pr["word_bits"]}}]}))
    monkeypatch.setattr(bench_cli, "AREA_REPORT", area)
    out = tmp_path / "bench.json"
    assert main(["bench", "--lengths", "16", "--runs", "1", "--engines", "accel-demo", "accel-edge", "-o", str(out),
                 "--md", str(tmp_path / "b.md")]) == 0
    printed = capsys.readouterr().out
    assert 'demo 50 MHz (post-route Fmax of "demo" (area.json))' in printed and "edge 125 MHz (ASSUMED)" in printed
    rows = {r["preset"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["demo"]["clock_mhz"] == 50.0 and rows["demo"]["ms_median"] == pytest.approx(rows["demo"]["cycles"] / 5e4)
    assert rows["edge"]["clock_source"] == "assumed"
    page = (tmp_path / "b.md").read_text()
    assert "| demo | 16 |" in page and "| 50 |" in page
