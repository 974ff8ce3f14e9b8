"""Rows of ``docs/results/model.json`` from finished training runs.

::

    python -m bebert.model.results RUN_DIR --command "bebert train ..." [--model-name NAME]
                                   [--update docs/results/model.json] [--table]

Reads the run folder's ``bebert.json`` (kind, backbone, members, KD, task, shape),
``metrics.json`` (metrics per epoch, per member and per ensemble prefix) and ``timing.json``
(wall-clock seconds) -- or, for a run still going, its resume state (the members it has finished
are final) -- and adds or replaces the rows for that run. A teacher run gives one row (its last
epoch); a student/ensemble run gives member 0 alone (a single binary student) and the ensemble
after every member from the second on.

Every row has ``task``, ``model``, ``backbone`` (``fp32`` for a teacher), ``members``, ``shape``
(hidden, layers, ffn), ``kd``, ``metric`` (the task's primary metric: accuracy, f1 or
matthews_corrcoef), ``split`` (``dev``: the split ``dev_metric`` is measured on; no run selects
anything on it, as every run trains a fixed number of epochs and keeps the last), ``dev_metric``,
``holdout_metric`` (the same metric on the ``--holdout`` rows cut from train, or null) and
``holdout_rows``, ``metrics`` (every dev/holdout metric of the row: MRPC's accuracy beside its F1),
for ensembles the best member's metric, the gain over it and the members' diversity
(disagreement, error correlation) on both splits, ``train_seconds`` and ``command``. Rows are keyed
by ``(command, members, model)``, so re-running replaces. ``--table`` prints the Markdown table of
the whole file.
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
_ENSEMBLE_KEYS = ("best_member", "gain", "disagreement", "error_corr")
ORDER = ("task", "model", "backbone", "members", "shape", "kd", "metric", "split", "dev_metric", "holdout_metric",
         "holdout_rows", "metrics", "ensemble", "train_seconds", "command")


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} has no {path.name} ({what}); is it a finished 'bebert train' run?")
    return json.loads(path.read_text())


def _r(v):
    return None if v is None else round(float(v), 4)


def _shape(run: Path, meta: dict[str, Any] | None) -> dict[str, int] | None:
    """(hidden, layers, ffn) of the run's model, from the checkpoint (student) or config.json (teacher)."""
    m = (meta or {}).get("model")
    if isinstance(m, dict) and "hidden_size" in m:
        return {"hidden": m["hidden_size"], "layers": m["num_layers"], "ffn": m["ffn_size"]}
    if (run / "config.json").is_file():
        c = json.loads((run / "config.json").read_text())
        if "hidden_size" in c:
            return {"hidden": c["hidden_size"], "layers": c["num_hidden_layers"], "ffn": c["intermediate_size"]}
    return None


def _split_values(r: dict[str, Any], key: str) -> dict[str, Any]:
    """The row's dev/holdout metrics (not the ensemble extras) and, for an ensemble row, those extras."""
    metrics = {k: _r(v) for k, v in sorted(r.items())
               if k.startswith(("dev_", "holdout_")) and not k.endswith(_ENSEMBLE_KEYS) and v is not None}
    out = {"dev_metric": _r(r[key]), "holdout_metric": _r(r.get("holdout_" + key.removeprefix("dev_"))),
           "metrics": metrics}
    if r.get("type") == "ensemble":
        out["ensemble"] = {f"{s}_{k}": _r(r.get(f"{s}_{k}")) for s in ("dev", "holdout") for k in _ENSEMBLE_KEYS
                           if f"{s}_{k}" in r}
    else:
        out["ensemble"] = None
    return out


def rows_for_run(run_dir: str | Path, command: str, model_name: str | None = None) -> list[dict[str, Any]]:
    """The results rows of one finished (or, for students, partly finished) run (see the module docstring)."""
    run = Path(run_dir)
    state = run / "state" / "state.json"
    meta = None
    if not (run / "bebert.json").is_file() and state.is_file():
        # a run still going: the members it has finished are final; their times are in the state
        info = json.loads(state.read_text())
        tc = info["run_config"]
        if tc.get("kind") != "student":
            raise ValueError(f"{run} is a {tc.get('kind')!r} run still going; a teacher's row needs the finished run")
        task = tc["task"]
        timing = {"member_end_seconds": info.get("member_seconds", [])}
        kind = "student"
    else:
        meta = _load(run / "bebert.json", "checkpoint metadata")
        kind = meta.get("kind")
        if kind not in ("student", "teacher"):
            raise ValueError(f"{run} is a {kind!r} checkpoint; rows are made for teacher, student and ensemble runs")
        timing = json.loads((run / "timing.json").read_text()) if (run / "timing.json").is_file() else None
        tc = meta.get("train_config", {})
        task = meta["task"]
    metrics = _load(run / "metrics.json", "per-epoch metrics")
    metric = get_task(task).primary_metric
    key = f"dev_{metric}"
    for i, r in enumerate(metrics):
        if key not in r:
            raise ValueError(f"{run}/metrics.json row {i} has no {key} (the {task} primary metric)")
    kd = tc.get("kd", "none")
    rows = []
    if kind == "teacher":
        base = tc.get("model") or "MiniLM-L6-H384"
        last = [r for r in metrics if r.get("type", "member") == "member"][-1]
        rows.append({"model": model_name or f"FP teacher ({base})", "backbone": "fp32", "members": 1, "kd": "none",
                     "train_seconds": (timing or {}).get("train_seconds"), **_split_values(last, key)})
    else:
        backbone = tc.get("backbone", "w1a1")
        name = model_name or (_BACKBONE.get(backbone, backbone) + (" + TWS" if tc.get("tws") else ""))
        ends = (timing or {}).get("member_end_seconds", [])
        last_member_row = {}
        for r in metrics:
            if r["type"] == "member":
                last_member_row[r["member"]] = r
        if 0 in last_member_row:
            rows.append({"model": f"single binary student ({name}, member 0)", "members": 1,
                         "train_seconds": ends[0] if ends else None, **_split_values(last_member_row[0], key)})
        for r in metrics:
            if r["type"] == "ensemble" and r["members"] >= 2:
                m = r["members"]
                rows.append({"model": f"BEBERT ({tc.get('ensemble', 'boost')}, {name})", "members": m,
                             "train_seconds": ends[m - 1] if len(ends) >= m else None, **_split_values(r, key)})
        for row in rows:
            row.update(backbone=backbone, kd=kd)
    shape = _shape(run, meta)
    for row in rows:
        row.update(task=task, shape=shape, metric=_METRIC_NAMES.get(metric, metric), split="dev",
                   holdout_rows=tc.get("holdout") or 0, command=command)
        if row["holdout_metric"] is None:
            row["holdout_rows"] = 0
    return [{k: row.get(k) for k in ORDER} for row in rows]


def _normalized(row: dict[str, Any]) -> dict[str, Any]:
    """A row of an older results file in today's fields (``metric_name`` became ``metric``; ``split`` added)."""
    row = dict(row)
    if "metric_name" in row:
        row.setdefault("metric", row.pop("metric_name"))
    if "dev_metric" in row:
        row.setdefault("split", "dev")
        row.setdefault("holdout_metric", None)
        row.setdefault("holdout_rows", 0)
    return row


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with every row of ``new`` added, replacing rows of the same command, size and model."""
    key = lambda r: (r.get("command"), r.get("members"), r.get("model"))  # noqa: E731
    fresh = {key(r) for r in new}
    return [_normalized(r) for r in old if key(r) not in fresh] + list(new)


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}%" if metric == "accuracy" else f"{v:.4f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (model, backbone, members, shape, KD, dev and holdout metric, train time)."""
    lines = ["| task | model | backbone | members | shape (H/L/F) | KD | metric | dev | holdout | train time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        r = _normalized(r)
        t = f"{r['train_seconds']:,.0f} s" if r.get("train_seconds") is not None else "not measured"
        s = r.get("shape")
        shape = f"{s['hidden']}/{s['layers']}/{s['ffn']}" if s else "-"
        m = r["metric"]
        lines.append(f"| {r['task']} | {r['model']} | {r['backbone']} | {r['members']} | {shape} | {r['kd']} | {m} | "
                     f"{_fmt(r['dev_metric'], m)} | {_fmt(r.get('holdout_metric'), m)} | {t} |")
    return "\n".join(lines) + "\n"


def _curves(spec: list[str]) -> int:
    from .plot import plot_runs

    if len(spec) < 2:
        raise ValueError("--curves needs the PNG file and at least one run folder")
    png, runs = Path(spec[0]), [Path(r) for r in spec[1:]]
    if png.suffix.lower() != ".png":
        raise ValueError(f"--curves: the first argument is the PNG to write, not {png}")
    data, metrics = {}, set()
    for run in runs:
        meta = _load(run / "bebert.json", "checkpoint metadata")
        metrics.add(get_task(meta["task"]).primary_metric)
        data[run.name] = _load(run / "metrics.json", "per-epoch metrics")
    if len(metrics) > 1:
        raise ValueError(f"--curves: the runs have different metrics ({', '.join(sorted(metrics))}); plot each task alone")
    plot_runs(data, metrics.pop(), png)
    print(f"wrote {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bebert.model.results", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="finished run folder")
    ap.add_argument("--command", help="the training command that made the run (recorded in the rows)")
    ap.add_argument("--model-name", help="name of the model in the rows (default from the run)")
    ap.add_argument("--update", type=Path, help="results file to add the rows to (written atomically)")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --update's rows")
    ap.add_argument("--curves", nargs="+", metavar="PNG RUN",
                    help="plot the training curves (dev and holdout, per member and ensemble) of the runs after "
                         "PNG side by side into PNG, and exit")
    args = ap.parse_args(argv)
    try:
        if args.curves:
            return _curves(args.curves)
        rows = []
        if args.run:
            if not args.command:
                ap.error("--command is required with a run folder")
            rows = rows_for_run(args.run, args.command, args.model_name)
        if args.update:
            old = json.loads(args.update.read_text()) if args.update.exists() else []
            if not isinstance(old, list):
                raise ValueError(f"{args.update} is not a list of result rows")
            rows = merge_rows(old, rows)
            write_json_atomic(args.update, rows)
        if args.table:
            print(markdown_table(rows), end="")
        else:
            print(json.dumps(rows, indent=2))
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
