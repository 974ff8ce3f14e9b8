"""``bebert pareto``: golden accuracy (dev and holdout) against accelerator cycles, memory counts, Pareto flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bebert.cli import main
from bebert.golden.format import load_int_model
from bebert.golden.pareto import memory_bits, pareto_flags
from bebert.hw.presets import PRESETS
from bebert.model.train import Trainer
from random_models import export_random
from test_model_train import _student, base_model, teacher  # noqa: F401  (fixtures)


def test_pareto_flags():
    pts = [(10, 0.70), (20, 0.80), (15, 0.65), (20, 0.80), (30, 0.79), (5, 0.60)]
    assert pareto_flags(pts) == [True, True, False, True, False, True]
    assert pareto_flags([]) == [] and pareto_flags([(1, 0.5)]) == [True]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_memory_bits_count_every_parameter(tmp_path, seed):
    rng = np.random.default_rng(seed)
    heads = int(rng.integers(1, 3))
    h = heads * 32
    f, layers, members = int(rng.choice([64, 96])), int(rng.integers(1, 3)), int(rng.integers(1, 4))
    dims = dict(vocab_size=int(rng.integers(40, 90)), hidden_size=h, num_layers=layers, num_heads=heads, ffn_size=f,
                max_len=int(rng.integers(20, 40)), num_labels=2)
    model = load_int_model(export_random(tmp_path / "m.safetensors", dims, members, seed))
    p = int(rng.choice([2, 4, 8]))
    for max_tokens in (8, 1000):
        mem = memory_bits(model, max_tokens, p, 32, 16)
        # binary: Q, K, V, attention output (H x H), FFN in (F x H) and out (H x F) per layer, the pooler (H x H)
        assert mem["binary"] == members * (layers * (4 * h * h + 2 * h * f) + h * h)
        positions = min(max_tokens, dims["max_len"])  # only the position rows a sequence can use
        assert mem["tables"] == members * (dims["vocab_size"] * (h + 16) + positions * h * 16)
        assert mem["onchip"] == mem["binary"] + mem["vectors"]
    assert memory_bits(model, 1000, p)["vectors"] == memory_bits(model, 8, p)["vectors"] > 0
    # vectors: per layer a threshold (acc_width bits) and a polarity bit per channel of Q, K, V and FFN in, and
    # scale, bias, gamma, beta (16 bits each) per channel of the attention and FFN outputs; the pooler's scale and
    # bias, the classifier (2 x H weights, 2 biases), the embedding LayerNorm and the 2 token-type rows; the tanh
    # table and one ensemble weight per member
    acc = h.bit_length() + 1
    per_member = (layers * ((3 * h + f) * (acc + 1) + 2 * h * 64) + h * 32 + 2 * h * 16 + 2 * 16 + h * 32
                  + 2 * h * 16)
    tanh = np.asarray(model.tensors["tanh.table"]).size
    assert memory_bits(model, 8, p)["vectors"] == members * per_member + tanh * 16 + members * 16


def test_tiny_preset_is_registered_for_the_cycle_model():
    from bebert.golden.bench_cli import PRESETS as BENCH
    from bebert.golden.bench_cli import preset_clock

    tiny = PRESETS["tiny-ice40"]
    assert tiny.device == "iCE40UP5K" and not tiny.built and tiny.onchip_kbit == 1024
    assert preset_clock("tiny", None) == (40.0, "assumed")
    assert BENCH["tiny"]["name"] == "tiny-ice40" and BENCH["tiny"]["bits_per_cycle"] == tiny.bits_per_cycle


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, teacher):  # noqa: F811
    out = tmp_path_factory.mktemp("pareto") / "run"
    cfg = _student(out, teacher, members=2, epochs=1, kd="pred", holdout=12, student_hidden=16, student_layers=1,
                   student_ffn=32)
    assert Trainer(cfg, log=lambda s: None).run()["done"]
    return out


def test_pareto_on_a_trained_run(tmp_path, tiny_run, capsys):
    out, md, png = tmp_path / "p.json", tmp_path / "p.md", tmp_path / "p.png"
    assert main(["pareto", str(tiny_run), "--n", "24", "--presets", "edge-ecp5", "tiny-ice40", "-o", str(out),
                 "--md", str(md), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert doc["n"] == 24 and doc["presets"] == ["edge-ecp5", "tiny-ice40"]
    rows = doc["rows"]
    assert [r["members"] for r in rows] == [1, 2]
    # the golden model scores exactly what training's fixed-point model scored, on dev and on the held-out rows
    trained = json.loads((tiny_run / "metrics.json").read_text())
    member0 = [r for r in trained if r["type"] == "member" and r["member"] == 0][-1]
    ens = [r for r in trained if r["type"] == "ensemble"][-1]
    for row, ref in zip(rows, (member0, ens)):
        assert row["dev_metric"] == ref["dev_acc"] and row["holdout_metric"] == ref["holdout_acc"]
        assert row["holdout_rows"] == 12 and row["dev_rows"] == 32 and row["shape"]["hidden"] == 16
        for name in doc["presets"]:
            e = row["presets"][name]
            assert e["cycles"] >= max(e["ideal_cycles"], e["weight_floor_cycles"]) > 0
            assert e["ms"] == pytest.approx(e["cycles"] / (e["clock_mhz"] * 1e3), rel=1e-3) and e["fits"] is True
    # two lanes on the edge preset: the second member costs little; one lane on the tiny preset: about double
    edge = [r["presets"]["edge-ecp5"]["cycles"] for r in rows]
    tiny = [r["presets"]["tiny-ice40"]["cycles"] for r in rows]
    assert edge[1] < 1.5 * edge[0] and tiny[1] > 1.8 * tiny[0]
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    text = md.read_text()
    assert "| run (first 2) | SST-2 | w1a1 | 2 | 16/1/32 |" in text and "(p.png)" in text
    assert doc["command"].startswith("bebert pareto ") and "--n 24" in doc["command"]
    assert "run (first 1)" in capsys.readouterr().out


def test_pareto_scores_from_an_earlier_report(tmp_path, tiny_run, capsys):
    """--scores-from: the golden scores come from an earlier report, the memory and cycle figures are computed
    again (the same here); a report without the run, or not a report, is refused by name."""
    first, again = tmp_path / "p.json", tmp_path / "q.json"
    assert main(["pareto", str(tiny_run), "--n", "16", "--presets", "tiny-ice40", "-o", str(first), "--no-progress"]) == 0
    assert main(["pareto", str(tiny_run), "--n", "16", "--presets", "tiny-ice40", "-o", str(again),
                 "--scores-from", str(first), "--no-progress"]) == 0
    a, b = json.loads(first.read_text()), json.loads(again.read_text())
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        for k in ("dev", "dev_metric", "holdout", "holdout_metric", "holdout_rows", "dev_rows", "presets"):
            assert ra[k] == rb[k], k
    assert "--scores-from" in b["command"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(a, rows=[dict(r, source="elsewhere") for r in a["rows"]])))
    capsys.readouterr()
    assert main(["pareto", str(tiny_run), "--n", "16", "--presets", "tiny-ice40", "--scores-from", str(other),
                 "--no-progress"]) == 1
    assert "has no row for" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["pareto", str(tiny_run), "--scores-from", str(tmp_path / "bad.json"), "--no-progress"]) == 1
    assert "is not a bebert pareto report" in capsys.readouterr().err


def test_pareto_refuses_bad_input(tmp_path, tiny_run, teacher, capsys):  # noqa: F811
    assert main(["pareto", str(tmp_path / "nowhere")]) == 1
    assert "no such run folder" in capsys.readouterr().err
    assert main(["pareto", str(teacher), "--no-progress"]) == 1
    assert "'teacher' checkpoint" in capsys.readouterr().err
    assert main(["pareto", str(tiny_run), "--n", "0"]) == 1
    assert "--n must be a positive" in capsys.readouterr().err
    assert main(["pareto", str(tiny_run), "-o", str(tmp_path / "no" / "p.json")]) == 1
    assert "does not exist" in capsys.readouterr().err
    # longer than the preset holds: scored, not timed, and said why
    out = tmp_path / "long.json"
    assert main(["pareto", str(tiny_run), "--whole", "--n", "100", "--presets", "tiny-ice40", "-o", str(out),
                 "--no-progress"]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    e = row["presets"]["tiny-ice40"]
    assert e["cycles"] is None and "exceeds the preset's 64 tokens" in e["why"] and not e["pareto"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_first_members(tmp_path, tiny_run, capsys):
    assert main(["export", str(tiny_run), "-o", str(tmp_path / "m1.safetensors"), "--members", "1"]) == 0
    assert load_int_model(tmp_path / "m1.safetensors").members == 1
    assert main(["export", str(tiny_run), "-o", str(tmp_path / "m3.safetensors"), "--members", "3"]) == 2
    assert "has 2 member(s); cannot export the first 3" in capsys.readouterr().err
    assert not (tmp_path / "m3.safetensors").exists()


def test_pareto_on_deployment_files(tmp_path, tiny_run, capsys):
    # exported from a run that is still here: scored on its dev rows and holdout; a file without one: dev only,
    # and it needs --data-dir
    f = tmp_path / "m.safetensors"
    assert main(["export", str(tiny_run), "-o", str(f), "--members", "1"]) == 0
    out = tmp_path / "p.json"
    assert main(["pareto", str(f), "--n", "16", "--presets", "tiny-ice40", "-o", str(out), "--no-progress"]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    member0 = [r for r in json.loads((tiny_run / "metrics.json").read_text())
               if r["type"] == "member" and r["member"] == 0][-1]
    assert row["holdout_rows"] == 12 and row["holdout_metric"] == member0["holdout_acc"]
    assert row["source"] == str(f) and row["members"] == 1
    lone = tmp_path / "lone.safetensors"
    export_random(lone, dict(vocab_size=30522, hidden_size=32, num_layers=1, num_heads=1, ffn_size=64, max_len=32,
                             num_labels=2), 1, 0)
    assert main(["pareto", str(lone), "--no-progress"]) == 1
    assert "does not record its task" in capsys.readouterr().err
