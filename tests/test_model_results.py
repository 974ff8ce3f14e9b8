"""``python -m bebert.model.results``: rows of docs/results/model.json from a run folder."""

import json

import pytest

from bebert.model.results import main, markdown_table, merge_rows, rows_for_run


def _run(tmp_path, timing=True, kind="student"):
    run = tmp_path / "run"
    run.mkdir()
    (run / "bebert.json").write_text(json.dumps({
        "kind": kind, "task": "sst2-sentences",
        "train_config": {"backbone": "w1a4", "tws": True, "kd": "pred", "ensemble": "boost"}}))
    rows = [{"type": "member", "member": 0, "epoch": 1, "dev_acc": 0.70},
            {"type": "member", "member": 0, "epoch": 2, "dev_acc": 0.75},
            {"type": "ensemble", "member": 0, "members": 1, "dev_acc": 0.75},
            {"type": "member", "member": 1, "epoch": 2, "dev_acc": 0.77},
            {"type": "ensemble", "member": 1, "members": 2, "dev_acc": 0.79}]
    (run / "metrics.json").write_text(json.dumps(rows))
    if timing:
        (run / "timing.json").write_text(json.dumps({"train_seconds": 130.0, "member_end_seconds": [60.0, 125.5]}))
    return run


def test_rows_of_a_run(tmp_path):
    rows = rows_for_run(_run(tmp_path), "bebert train ensemble ...")
    assert [(r["members"], r["dev_metric"], r["train_seconds"]) for r in rows] == [(1, 0.75, 60.0), (2, 0.79, 125.5)]
    assert all(r["kd"] == "pred" and r["backbone"] == "w1a4" and r["metric"] == "accuracy" and r["split"] == "dev" for r in rows)
    assert "TWS" in rows[1]["model"] and rows[1]["command"] == "bebert train ensemble ..."


def test_untimed_run_and_merge(tmp_path):
    rows = rows_for_run(_run(tmp_path, timing=False), "cmd")
    assert [r["train_seconds"] for r in rows] == [None, None]
    old = [{"command": "cmd", "members": 2, "model": rows[1]["model"], "dev_metric": 0.1}, {"command": "other"}]
    merged = merge_rows(old, rows)
    assert merged[0] == {"command": "other"} and merged[1:] == rows
    table = markdown_table(rows)
    assert "| 79.00% | - | not measured |" in table


def test_refusals(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no bebert.json"):
        rows_for_run(tmp_path, "cmd")
    with pytest.raises(ValueError, match="'export' checkpoint"):
        rows_for_run(_run(tmp_path, kind="export"), "cmd")
    assert main([str(tmp_path / "nowhere"), "--command", "c"]) == 2
    assert "no bebert.json" in capsys.readouterr().err


def test_update_file(tmp_path):
    out = tmp_path / "model.json"
    assert main([str(_run(tmp_path)), "--command", "c", "--update", str(out)]) == 0
    assert main([str(tmp_path / "run"), "--command", "c", "--update", str(out)]) == 0  # replaces, no duplicates
    assert len(json.loads(out.read_text())) == 2


def test_rows_of_a_run_still_going(tmp_path):
    run = _run(tmp_path, timing=False)
    (run / "bebert.json").unlink()
    (run / "state").mkdir()
    (run / "state" / "state.json").write_text(json.dumps({
        "run_config": {"kind": "student", "task": "sst2-sentences", "backbone": "w1a1", "kd": "none"},
        "member_seconds": [50.0, 99.0]}))
    rows = rows_for_run(run, "cmd")
    assert [(r["members"], r["train_seconds"], r["backbone"]) for r in rows] == [(1, 50.0, "w1a1"), (2, 99.0, "w1a1")]


def test_teacher_row_holdout_and_ensemble_extras(tmp_path):
    run = tmp_path / "t"
    run.mkdir()
    (run / "bebert.json").write_text(json.dumps({"kind": "teacher", "task": "MRPC",
                                                 "train_config": {"holdout": 50, "model": None}}))
    (run / "config.json").write_text(json.dumps({"hidden_size": 384, "num_hidden_layers": 6,
                                                 "intermediate_size": 1536}))
    (run / "metrics.json").write_text(json.dumps([
        {"type": "member", "epoch": 1, "dev_f1": 0.5, "dev_acc": 0.4, "holdout_f1": 0.45, "holdout_acc": 0.41},
        {"type": "member", "epoch": 2, "dev_f1": 0.85, "dev_acc": 0.78, "holdout_f1": 0.84, "holdout_acc": 0.77}]))
    (row,) = rows_for_run(run, "bebert train teacher --task MRPC")
    assert (row["backbone"], row["metric"], row["dev_metric"], row["holdout_metric"], row["holdout_rows"]) == \
        ("fp32", "f1", 0.85, 0.84, 50)
    assert row["metrics"]["dev_acc"] == 0.78 and row["shape"] == {"hidden": 384, "layers": 6, "ffn": 1536}
    assert row["ensemble"] is None and "MiniLM" in row["model"]

    run = _run(tmp_path)
    m = json.loads((run / "metrics.json").read_text())
    m[-1].update(holdout_acc=0.7, dev_best_member=0.77, dev_gain=0.02, dev_disagreement=0.2, dev_error_corr=0.5,
                 holdout_best_member=0.72, holdout_gain=-0.02, holdout_disagreement=None, holdout_error_corr=None)
    (run / "metrics.json").write_text(json.dumps(m))
    ens = rows_for_run(run, "c")[-1]
    assert ens["holdout_metric"] == 0.7 and ens["ensemble"]["dev_gain"] == 0.02
    assert ens["ensemble"]["holdout_gain"] == -0.02 and ens["ensemble"]["holdout_disagreement"] is None
    assert "dev_gain" not in ens["metrics"] and ens["holdout_rows"] == 0  # no holdout in train_config
    (run / "metrics.json").write_text(json.dumps([{"type": "member", "member": 0, "epoch": 1, "dev_f1": 0.3}]))
    with pytest.raises(ValueError, match="no dev_acc"):
        rows_for_run(run, "c")


def test_old_rows_are_normalized(tmp_path):
    old = [{"command": "x", "members": 1, "model": "m", "task": "sst2-sentences", "backbone": "w1a1", "kd": "none",
            "dev_metric": 0.7, "metric_name": "accuracy", "train_seconds": None}]
    (row,) = merge_rows(old, [])
    assert row["metric"] == "accuracy" and row["split"] == "dev" and "metric_name" not in row
    assert "| 70.00% | - |" in markdown_table(merge_rows(old, []))


def test_training_curves_plot(tmp_path, capsys):
    run = _run(tmp_path)
    png = tmp_path / "c.png"
    assert main(["--curves", str(png), str(run), str(run)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["--curves", str(png)]) == 2
    assert "at least one run folder" in capsys.readouterr().err
    assert main(["--curves", str(tmp_path / "c.txt"), str(run)]) == 2
    assert "the PNG to write" in capsys.readouterr().err
    other = tmp_path / "mrpc"
    other.mkdir()
    (other / "bebert.json").write_text(json.dumps({"kind": "student", "task": "MRPC", "train_config": {}}))
    (other / "metrics.json").write_text(json.dumps([{"type": "member", "member": 0, "epoch": 1, "dev_f1": 0.5}]))
    assert main(["--curves", str(png), str(run), str(other)]) == 2
    assert "different metrics" in capsys.readouterr().err
