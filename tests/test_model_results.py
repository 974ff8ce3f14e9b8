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
    assert all(r["kd"] == "pred" and r["backbone"] == "w1a4" and r["metric_name"] == "accuracy" for r in rows)
    assert "TWS" in rows[1]["model"] and rows[1]["command"] == "bebert train ensemble ..."


def test_untimed_run_and_merge(tmp_path):
    rows = rows_for_run(_run(tmp_path, timing=False), "cmd")
    assert [r["train_seconds"] for r in rows] == [None, None]
    old = [{"command": "cmd", "members": 2, "model": rows[1]["model"], "dev_metric": 0.1}, {"command": "other"}]
    merged = merge_rows(old, rows)
    assert merged[0] == {"command": "other"} and merged[1:] == rows
    table = markdown_table(rows)
    assert "| 79.00% | not measured |" in table


def test_refusals(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no bebert.json"):
        rows_for_run(tmp_path, "cmd")
    with pytest.raises(ValueError, match="'teacher' checkpoint"):
        rows_for_run(_run(tmp_path, kind="teacher"), "cmd")
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
