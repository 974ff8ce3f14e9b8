"""Rows of ``docs/results/model.json`` from finished training runs.

::

    python -m bebert.model.results RUN_DIR --command "bebert train ..." [--model-name NAME]
                                   [--update docs/results/model.json] [--table]

Reads the run folder's ``bebert.json`` (backbone, members, KD, task), ``metrics.json`` (dev
metric per member and per ensemble prefix) and ``timing.json`` (wall-clock seconds, written by
``bebert train`` since it records them) -- or, for a run still going, its resume state (the
members it has finished are final) -- and adds or replaces the rows for that run:
member 0 alone (a single binary student), and the ensemble after every member from the second
on. Rows are keyed by ``(command, members, model)``, so re-running replaces. ``--table`` prints
the Markdown table of the whole file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bebert.atomic import write_json_atomic

from .data import get_task

__all__ = ["rows_for_run", "merge_rows", "markdown_table", "main"]

_METRIC_NAMES = {"acc": "accuracy", "f1": "f1", "mcc": "matthews_corrcoef"}
_BACKBONE = {"w1a1": "BiBERT W1A1", "w1a4": "BinaryBERT W1A4", "w2a4": "ternary W2A4"}


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} has no {path.name} ({what}); is it a finished 'bebert train' run?")
    return json.loads(path.read_text())


def rows_for_run(run_dir: str | Path, command: str, model_name: str | None = None) -> list[dict[str, Any]]:
    """The results rows of one finished student/ensemble run (see the module docstring)."""
    run = Path(run_dir)
    state = run / "state" / "state.json"
    if not (run / "bebert.json").is_file() and state.is_file():
        # a run still going: the members it has finished are final; their times are in the state
        info = json.loads(state.read_text())
        tc = info["run_config"]
        if tc.get("kind") != "student":
            raise ValueError(f"{run} is a {tc.get('kind')!r} run; rows are made for student/ensemble runs")
        task = tc["task"]
        timing = {"member_end_seconds": info.get("member_seconds", [])}
    else:
        meta = _load(run / "bebert.json", "checkpoint metadata")
        if meta.get("kind") != "student":
            raise ValueError(f"{run} is a {meta.get('kind')!r} checkpoint; rows are made for student/ensemble runs")
        timing = json.loads((run / "timing.json").read_text()) if (run / "timing.json").is_file() else None
        tc = meta["train_config"]
        task = meta["task"]
    metrics = _load(run / "metrics.json", "per-epoch metrics")
    backbone = tc.get("backbone", "w1a1")
    kd = tc.get("kd", "none")
    metric = get_task(task).primary_metric
    key = f"dev_{metric}"
    last_member_row = {}
    for r in metrics:
        if r["type"] == "member":
            last_member_row[r["member"]] = r
    name = model_name or (_BACKBONE.get(backbone, backbone) + (" + TWS" if tc.get("tws") else ""))
    ends = (timing or {}).get("member_end_seconds", [])
    rows = []
    if 0 in last_member_row:
        rows.append({"model": f"single binary student ({name}, member 0)", "members": 1,
                     "dev_metric": round(last_member_row[0][key], 4), "train_seconds": ends[0] if ends else None})
    for r in metrics:
        if r["type"] == "ensemble" and r["members"] >= 2:
            m = r["members"]
            rows.append({"model": f"BEBERT ({tc.get('ensemble', 'boost')}, {name})", "members": m,
                         "dev_metric": round(r[key], 4), "train_seconds": ends[m - 1] if len(ends) >= m else None})
    for row in rows:
        row.update(task=task, backbone=backbone, kd=kd, metric_name=_METRIC_NAMES.get(metric, metric),
                   command=command)
    order = ("task", "model", "backbone", "members", "kd", "dev_metric", "metric_name", "train_seconds", "command")
    return [{k: row[k] for k in order} for row in rows]


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with every row of ``new`` added, replacing rows of the same command, size and model."""
    key = lambda r: (r.get("command"), r.get("members"), r.get("model"))  # noqa: E731
    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + list(new)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (model, backbone, members, KD, dev metric, train time)."""
    lines = ["| task | model | backbone | members | KD | dev metric | train time |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        t = f"{r['train_seconds']:,.0f} s" if r.get("train_seconds") is not None else "not measured"
        v = r["dev_metric"]
        val = f"{100 * v:.2f}%" if r["metric_name"] == "accuracy" else f"{v:.4f} ({r['metric_name']})"
        lines.append(f"| {r['task']} | {r['model']} | {r['backbone']} | {r['members']} | {r['kd']} | {val} | {t} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bebert.model.results", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="finished run folder")
    ap.add_argument("--command", help="the training command that made the run (recorded in the rows)")
    ap.add_argument("--model-name", help="name of the backbone in the rows (default from the run)")
    ap.add_argument("--update", type=Path, help="results file to add the rows to (written atomically)")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --update's rows")
    args = ap.parse_args(argv)
    try:
        rows = []
        if args.run:
            if not args.command:
                ap.error("--command is required with a run folder")
            rows = rows_for_run(args.run, args.command, args.model_name)
        if args.update:
            old = json.loads(args.update.read_text()) if args.update.exists() else []
            rows = merge_rows(old, rows)
            write_json_atomic(args.update, rows)
        if args.table:
            print(markdown_table(rows), end="")
        else:
            print(json.dumps(rows, indent=2))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
