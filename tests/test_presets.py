"""Named accelerator configurations: the registry, ``bebert presets``, ``--preset`` on sim and synth."""

from __future__ import annotations

import argparse
import json

import pytest

from bebert.cli import main
from bebert.hw import presets
from bebert.hw.presets import HW_OPTIONS, PRESETS, apply, get


def test_presets_command_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name, p in PRESETS.items():
        assert f"| {name} | {p.device} | {p.p} x {p.s} |" in out
    assert main(["presets", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == set(PRESETS) and doc["demo-ecp5"]["built"] is True and doc["edge-ecp5"]["built"] is False


def test_apply_fills_unset_options_and_keeps_given_ones():
    ns = argparse.Namespace(preset="edge-ecp5", device=None, **{k: None for k in HW_OPTIONS})
    ns.s = 64
    pr = apply(ns)
    assert pr is PRESETS["edge-ecp5"] and ns.s == 64 and ns.p == pr.p and ns.word_bits == pr.word_bits
    assert ns.device == pr.device
    # no preset named: the demo configuration's values, and no preset returned
    ns = argparse.Namespace(**{k: None for k in HW_OPTIONS})
    assert apply(ns) is None and ns.p == PRESETS["demo-ecp5"].p and ns.bits_per_cycle == 12.8


def test_unknown_and_unbuilt_presets_are_refused(capsys):
    with pytest.raises(ValueError, match="unknown preset 'nope'; known: demo-ecp5"):
        get("nope")
    with pytest.raises(ValueError, match="edge-ecp5: bebert sim needs its memory system in RTL"):
        apply(argparse.Namespace(preset="edge-ecp5"), need_built="bebert sim")
    assert main(["synth", "accelerator", "--preset", "edge-ecp5", "--breakdown", "--no-pnr"]) == 1
    err = capsys.readouterr().err
    assert "preset edge-ecp5" in err and "not built" in err and "Traceback" not in err
    assert main(["sim", "checkpoints/sst2-bebert-w1a1-m2.safetensors", "--preset", "nope", "--text", "x"]) == 1
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_bench_presets_follow_the_registry():
    from bebert.golden.bench_cli import PRESETS as BENCH

    for key, name in (("demo", "demo-ecp5"), ("edge", "edge-ecp5")):
        hw = presets.PRESETS[name]
        b = BENCH[key]
        assert (b["p"], b["s"], b["lanes"], b["word_bits"], b["bits_per_cycle"], b["latency"]) == \
            (hw.p, hw.s, hw.lanes, hw.word_bits, hw.bits_per_cycle, hw.latency)
