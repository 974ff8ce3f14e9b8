"""``bebert sim``: argument and input errors (readable, exit status 1), and one tiny-model run through the
CLI in Verilator (marker: verilator)."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest

from bebert.cli import main


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    pytest.importorskip("torch")
    from test_accelerator_cocotb import make_model

    return make_model("tiny", tmp_path_factory.mktemp("simcli") / "tiny.safetensors")


@pytest.fixture(scope="module")
def w1a4_file(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from bebert.golden.export import export_members
    from bebert.golden.format import save_int_model
    from bebert.model.config import ModelConfig
    from bebert.model.student import BinaryBertForSequenceClassification

    cfg = ModelConfig(vocab_size=50, hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, max_len=8,
                      hidden_dropout=0.0, backbone="w1a4", center_weights=False)
    torch.manual_seed(0)
    m = BinaryBertForSequenceClassification(cfg)
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, 50, (2, 8)))
    with torch.no_grad():
        m.train()(ids, torch.ones_like(ids), torch.zeros_like(ids))     # initializes the LSQ steps
    tensors, meta = export_members([m.eval()], [1.0])
    path = tmp_path_factory.mktemp("w1a4") / "w1a4.safetensors"
    save_int_model(path, tensors, meta)
    return str(path)


def _err(capsys, argv):
    assert main(["sim"] + argv) == 1
    return capsys.readouterr().err


def test_missing_file(capsys, tmp_path):
    err = _err(capsys, [str(tmp_path / "nope.safetensors"), "--text", "hi"])
    assert "bebert sim: error: model file" in err and "nope.safetensors not found" in err


def test_bad_arguments(capsys, tiny_file):
    assert "give at least one sentence with --text" in _err(capsys, [tiny_file])
    assert "--text number 2 is empty" in _err(capsys, [tiny_file, "--text", "ok", "--text", "  "])
    assert "--p must be a positive integer, not 0" in _err(capsys, [tiny_file, "--text", "x", "--p", "0"])
    assert "--bits-per-cycle must be positive" in _err(capsys, [tiny_file, "--text", "x", "--bits-per-cycle", "0"])
    assert "--max-tokens must be a positive integer" in _err(capsys, [tiny_file, "--text", "x", "--max-tokens", "0"])
    assert "narrower than a 16-bit code" in _err(capsys, [tiny_file, "--text", "x", "--word-bits", "8"])
    with pytest.raises(SystemExit):
        main(["sim", tiny_file, "--p", "many"])


def test_w1a4_refused(capsys, w1a4_file):
    err = _err(capsys, [w1a4_file, "--text", "a fine movie"])
    assert "W1A4 model" in err and "W1A1 models only" in err


def test_vocabulary_and_length(capsys, tiny_file, tmp_path):
    # the tiny model's vocabulary (100) is not MiniLM's: a readable refusal, and with a matching vocab.txt
    # a sentence over --max-tokens is refused (no --truncate)
    assert "pass the training run's vocab.txt with --vocab" in _err(capsys, [tiny_file, "--text", "a movie"])
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "movie", "good", "bad"]
                               + [f"w{i}" for i in range(91)]) + "\n")
    err = _err(capsys, [tiny_file, "--vocab", str(vocab), "--text", "a good movie a bad movie a good movie"])
    assert "has 11 tokens, more than --max-tokens 8" in err and "--truncate" in err


def test_tokenize_truncates_with_a_notice(tiny_file, tmp_path):
    from bebert.sim.sim_cli import load_model, tokenize

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "good", "movie"]
                               + [f"w{i}" for i in range(93)]) + "\n")
    model = load_model(tiny_file)
    [(tokens, ids, types, notice)] = tokenize(model, ["a good movie a good movie a good"], 6, True, vocab)
    assert tokens == ["[CLS]", "a", "good", "movie", "a", "[SEP]"] and ids == [2, 4, 5, 6, 4, 3]
    assert types == [0] * 6 and notice == "truncated from 10 to 6 tokens"


@pytest.mark.verilator
def _vocab(tmp_path):
    """A 100-word vocabulary for the tiny model."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "good", "bad", "movie"]
                               + [f"w{i}" for i in range(92)]) + "\n")
    return vocab


def test_tiny_run_through_the_cli(capsys, tiny_file, tmp_path):
    vocab = _vocab(tmp_path)
    out = tmp_path / "out.json"
    rc = main(["sim", tiny_file, "--vocab", str(vocab), "--text", "a good movie", "--text", "a bad bad movie",
               "--p", "8", "--s", "16", "--word-bits", "32", "--max-tokens", "8", "--latency", "5",
               "--bits-per-cycle", "20", "--lanes", "2", "--prefetch", "256", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.count("golden      yes") == 2 and "cycles      " in text and "2 lane(s)" in text
    rep = json.loads(out.read_text())
    assert rep["config"]["lanes"] == 2 and rep["config"]["prefetch"] == 256
    assert rep["command"].startswith("bebert sim ") and "--lanes 2 --prefetch 256" in rep["command"]
    # the results page's JSON from this run
    from bebert.sim.results import build, main as results_main

    res = build(rep)
    for key in ("config", "cycles", "ideal_cycles", "weight_floor_cycles", "gemm_utilization", "sim_seconds",
                "sequences_checked", "mismatches", "command"):
        assert key in res, key
    assert res["sequences_checked"] == 2 and res["mismatches"] == 0
    assert res["cycles"] == rep["sentences"][0]["counters"]["cycles"]
    assert results_main([str(out), "--out", str(tmp_path / "hw.json"), "--md", "--plot", str(tmp_path / "hw.png")]) == 0
    assert (tmp_path / "hw.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "hw.json").read_text())["command"] == rep["command"]
    assert "| 8 x 16 | 2 | 256 | 5 |" in capsys.readouterr().out
    assert [s["tokens"] for s in rep["sentences"]] == [["[CLS]", "a", "good", "movie", "[SEP]"],
                                                        ["[CLS]", "a", "bad", "bad", "movie", "[SEP]"]]
    assert all(s["agree"] and s["counters"]["cycles"] > 0 for s in rep["sentences"])


def test_fst_waveform(capsys, tiny_file, tmp_path):
    """``--wave x.fst`` writes an FST file (Verilator's FST writer linked with upstream LZ4 from the lz4 sdist)."""
    wave = tmp_path / "tiny.fst"
    rc = main(["sim", tiny_file, "--vocab", str(_vocab(tmp_path)), "--text", "a good movie", "--p", "8", "--s", "16",
               "--word-bits", "32", "--max-tokens", "8", "--wave", str(wave)])
    text = capsys.readouterr().out
    assert rc == 0, text
    data = wave.read_bytes()
    assert len(data) > 10_000 and data[0] == 0, len(data)      # block type 0: the FST header
    assert f"waveform    {wave}" in text


def test_results_bad_inputs(capsys, tmp_path):
    from bebert.sim.results import main as results_main

    assert results_main([str(tmp_path / "none.json")]) == 1
    assert "run file" in capsys.readouterr().err
    (tmp_path / "x.json").write_text('{"config": {}}')
    assert results_main([str(tmp_path / "x.json")]) == 1
    assert "is not a bebert sim --json report (no 'command')" in capsys.readouterr().err


def test_lanes_refused(capsys, tiny_file):
    assert "--lanes 3 is more than the model's 2 members" in _err(capsys, [tiny_file, "--text", "x", "--lanes", "3"])
    assert "--lanes must be a positive integer" in _err(capsys, [tiny_file, "--text", "x", "--lanes", "0"])


# the accelerators are only inspected here, never elaborated (their submodules would warn)
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_wrapper_memory_queue_holds_the_fetch_window(tiny_file):
    """The wrapper's memory queue covers the layer engines' fetch window (``fetch_depth`` tiles of ``P*S``
    bits) with a margin: at H=128, 8 x 128, a 64-entry queue overflowed (caught by ``mem_error``)."""
    from bebert.golden.accelerator import AccelSpec
    from bebert.hw.accelerator import Accelerator
    from bebert.sim.sim_cli import load_model
    from bebert.sim.tb_accelerator import queue_depth, wrapper_verilog

    model = load_model(tiny_file)
    for (p, s, wb), want in (((8, 16, 32), 64), ((8, 128, 16), 256), ((16, 256, 16), 1024)):
        dut = Accelerator(AccelSpec.from_int_model(model, p, s, wb), max_tokens=8, addr_width=16)
        assert queue_depth(dut) == want
        text = wrapper_verilog(dut)
        assert f"reg [31:0] q_due [0:{want - 1}];" in text and f"q_count == {want})" in text
        assert "module accel_tb" in text and "accelerator u_acc" in text and "$readmemh" in text
    # collect them here, where the filter applies (the warning is raised when an object is freed)
    del dut
    gc.collect()
