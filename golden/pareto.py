"""``bebert pareto``: accuracy against accelerator cycles for trained students (narrow and full width).

For every run folder (a ``bebert train`` student/ensemble checkpoint) or deployment file given:

1. export it to the integer deployment format (``bebert export``; into ``--export-dir``),
2. score it with the golden model (the accelerator's arithmetic, bit for bit) on dev and, where the run
   held training rows out (``bebert train --holdout N``), on those held-out rows: data no run trained on
   or selected with,
3. count the weight memory it needs: binary weights and the small integer vectors that must sit on chip,
   and the embedding tables (word and position: one row of each read per token, they can stay off chip,
   in SPI flash or SDRAM),
4. run the accelerator's cycle model (:func:`bebert.golden.accelerator.expected_cycles`, within 2% of
   Verilator on the built configurations) at each preset (``bebert presets``) for a sequence of ``--n``
   tokens, times the preset's clock (post-route Fmax where ``docs/results/area.json`` has it, else the
   preset's assumed clock: said in the row),

then marks, per preset, the Pareto-optimal rows (no other row that fits the chip is both faster and at
least as accurate) and writes JSON, Markdown and a plot (accuracy against latency, log scale).
W1A4 models have no accelerator schedule yet (issue 15): they are scored, not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["memory_bits", "pareto_flags", "evaluate_run", "run_pareto", "add_pareto_parser", "markdown"]

DEFAULT_PRESETS = ("edge-ecp5", "tiny-ice40")

_EPILOG = """\
examples:
  bebert pareto runs/sst2-w1a1-h128-l2 runs/sst2-w1a1-h256-l2 runs/sst2-w1a1-h384-l6
  bebert pareto runs/sst2-w1a1-h* -o docs/results/pareto.json --md docs/results-pareto.md
  bebert pareto checkpoints/sst2-bebert-w1a1-m2.safetensors --presets demo-ecp5 --n 32

A run folder is exported first (into --export-dir, default a temporary folder); a deployment file is
used as it is, with the training options of the run it was exported from where that folder is still
here (its data folder and holdout), else only dev is scored (--data-dir). With -o, the plot goes beside the JSON
(<stem>.png) unless --plot says where.
"""


# ------------------------------------------------------------------------------------------ memory
def memory_bits(model, max_tokens: int, p: int = 2, s: int = 32, word_bits: int = 16) -> dict[str, int]:
    """Bits of a W1A1 deployment file's parameters as the accelerator stores them
    (:func:`bebert.golden.accelerator.record_bits`, no padding to memory words), by where they must live.

    ``binary``: the binary weight matrices of every linear (encoder and pooler) of every member;
    ``vectors``: what the accelerator keeps beside them: the threshold records (``acc_width`` bits and a
    polarity per channel of the sign-output layers: Q, K, V, FFN in), the scale/bias/LayerNorm records of
    the attention-output and FFN-output layers, the pooler's scale and bias, the classifier, the
    embedding LayerNorm and token-type table, the tanh table and the ensemble weights; ``onchip`` =
    binary + vectors; ``tables``: the embedding tables an inference reads one row per token (the binary
    word embeddings with their row scales, and the position table's first ``max_tokens`` rows), which can
    stay off chip (SPI flash or SDRAM: ``n`` rows per sequence). ``p``, ``s``, ``word_bits``: the engine
    (the threshold records hold ``p`` channels each).
    """
    from .accelerator import AccelSpec, record_bits

    spec = AccelSpec.from_int_model(model, p, s, word_bits)
    rb = {k: sum(v) for k, v in record_bits(spec).items()}
    f, h, ff = spec.fmt, spec.hidden, spec.ffn
    emb = f["embedding"].bits
    binary = spec.layers * (4 * h * h + 2 * h * ff) + h * h
    vectors = (spec.layers * (spec.groups * rb["thr"] + 2 * h * rb["vec"])
               + h * (rb["pooler"] - h)
               + spec.labels * h * f["classifier_weight"].bits + spec.labels * f["bias"].bits
               + h * rb["emb_ln"] + spec.types * h * emb)
    tables = spec.vocab * rb["word"] + min(spec.max_len, max_tokens) * h * emb
    m = spec.members
    header = spec.tanh_len * f["pooler"].bits + m * f["ensemble_weight"].bits
    return {"binary": m * binary, "vectors": m * vectors + header, "onchip": m * (binary + vectors) + header,
            "tables": m * tables}


def pareto_flags(points: list[tuple[float, float]]) -> list[bool]:
    """For ``(cost, value)`` points, whether each is Pareto-optimal: no other point has cost <= and value >=
    with one of them strict. Equal points are all optimal."""
    out = []
    for i, (c, v) in enumerate(points):
        dominated = any((c2 <= c and v2 >= v) and (c2 < c or v2 > v) for j, (c2, v2) in enumerate(points) if j != i)
        out.append(not dominated)
    return out


# ----------------------------------------------------------------------------------------- scoring
def _run_info(run: Path) -> dict[str, Any]:
    meta = json.loads((run / "bebert.json").read_text())
    if meta.get("kind") != "student":
        raise ValueError(f"{run} is a {meta.get('kind')!r} checkpoint; bebert pareto scores binary students "
                         "(a teacher has no integer deployment form)")
    return meta


def _members_of(run: Path) -> int | None:
    try:
        return int(json.loads((run / "bebert.json").read_text())["ensemble"]["members"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # evaluate_run says what is wrong with the folder


def _score(golden, path, task, data_dir, split, rows=None, progress=False, max_examples=None) -> tuple[dict[str, float], int]:
    """``(metrics, rows scored)`` of one split by ``golden`` (a GoldenModel of the file at ``path``)."""
    from bebert.model.metrics import compute_metrics

    from .evaluate import golden_logits, load_eval_data

    spec, ds = load_eval_data(golden.model, path, task, data_dir, split, max_examples=max_examples, rows=rows)
    logits, _ = golden_logits(golden, ds, 64, progress)
    return compute_metrics(spec.metrics, logits.argmax(-1), ds.labels.numpy()), len(ds)


def evaluate_run(source: str | Path, export_dir: Path, presets: list[str], n: int, data_dir: str | None = None,
                 progress: bool = False, members: int | None = None,
                 scores: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of the table for a run folder (its first ``members`` members; default all) or a deployment
    file (see the module docstring). ``scores``: an earlier report's row for the same model, whose golden
    dev and holdout scores are taken instead of scoring again (the integer arithmetic they measure has not
    changed; the memory and cycle figures are computed anew)."""
    from bebert.hw.presets import get as get_preset
    from bebert.model.data import get_task, read_examples, split_path
    from bebert.model.ensemble import holdout_split

    from .bench_cli import PRESETS as BENCH
    from .bench_cli import _cycle_row
    from .export import export_checkpoint
    from .format import load_int_model
    from .infer import GoldenModel

    source = Path(source)
    tc: dict[str, Any] = {}
    if source.is_dir():
        if not (source / "bebert.json").is_file():
            raise FileNotFoundError(f"{source} has no bebert.json: not a finished 'bebert train' run")
        tc = _run_info(source).get("train_config", {})
        path = export_dir / (f"{source.name}.safetensors" if members is None else f"{source.name}-m{members}.safetensors")
        export_checkpoint(source, path, members)
    elif source.is_file():
        path = source
    else:
        raise FileNotFoundError(f"{source}: no such run folder or deployment file")
    model = load_int_model(path)
    meta = model.meta
    run = Path(str(meta.get("source", "")))
    if not tc and meta.get("source") and (run / "bebert.json").is_file():
        # a deployment file exported from a run that is still here: its data folder, dev rows and holdout
        tc = _run_info(run).get("train_config", {})
    if not (meta.get("task") or tc.get("task")):
        raise ValueError(f"{source} does not record its task (a deployment file exported from a training run does)")
    task = get_task(meta.get("task") or tc.get("task"))
    data_dir = data_dir or tc.get("data_dir")
    if not data_dir:
        raise ValueError(f"{source} does not record its data folder; pass --data-dir")
    d = model.dims
    backbone = meta["config"].get("backbone", "w1a1")
    key = task.primary_metric
    row: dict[str, Any] = {
        "name": source.name.removesuffix(".safetensors") + ("" if members is None else f" (first {members})"),
        "source": str(source), "task": task.name,
        "backbone": backbone, "members": int(model.members),
        "shape": {"hidden": d["hidden_size"], "layers": d["num_layers"], "ffn": d["ffn_size"], "heads": d["num_heads"]},
        "metric": key,
    }
    if scores is not None:
        if (scores.get("members"), scores.get("shape"), scores.get("task")) != (row["members"], row["shape"],
                                                                              row["task"]):
            raise ValueError(f"--scores-from: its row {scores.get('name')!r} is not this model (members, shape or "
                             f"task differ: {scores.get('members')}, {scores.get('shape')}, {scores.get('task')})")
        row.update({k: scores[k] for k in ("dev_rows", "dev", "dev_metric", "holdout", "holdout_metric",
                                           "holdout_rows")})
    else:
        golden = GoldenModel(model)  # one for both splits
        # the dev rows the run scored (all, unless it was trained with --max-eval-examples)
        dev, row["dev_rows"] = _score(golden, path, task.name, data_dir, "dev", progress=progress,
                                      max_examples=tc.get("max_eval_examples"))
        row["dev"] = dev
        row["dev_metric"] = dev[key]
        row["holdout"], row["holdout_metric"], row["holdout_rows"] = None, None, 0
    if scores is None and tc.get("holdout"):
        n_train = len(read_examples(task, split_path(task, data_dir, "train"), tc.get("max_train_examples")))
        _, held = holdout_split(n_train, int(tc["holdout"]))
        ho, row["holdout_rows"] = _score(golden, path, task.name, data_dir, "train", rows=held, progress=progress)
        row["holdout"], row["holdout_metric"] = ho, ho[key]
    row["presets"] = {}
    for name in presets:
        pr = get_preset(name)
        entry: dict[str, Any] = {"onchip_kbit": None, "binary_kbit": None, "tables_kbit": None,
                                 "budget_kbit": pr.onchip_kbit or None, "fits": None}
        if backbone == "w1a1":
            mem = memory_bits(model, pr.max_tokens, pr.p, pr.s, pr.word_bits)
            entry.update(onchip_kbit=round(mem["onchip"] / 1024, 1), binary_kbit=round(mem["binary"] / 1024, 1),
                         tables_kbit=round(mem["tables"] / 1024, 1),
                         fits=(mem["onchip"] <= pr.onchip_kbit * 1024) if pr.onchip_kbit else None)
        bench_key = next(k for k, v in BENCH.items() if v["name"] == name)
        if backbone != "w1a1":
            entry.update(cycles=None, ms=None, why="the accelerator runs W1A1 only (W1A4: issue 15)")
        elif n > pr.max_tokens:
            entry.update(cycles=None, ms=None, why=f"n = {n} exceeds the preset's {pr.max_tokens} tokens")
        else:
            c = _cycle_row(model, bench_key, n)
            entry.update(cycles=c["cycles"], ideal_cycles=c["ideal_cycles"],
                         weight_floor_cycles=c["weight_floor_cycles"], clock_mhz=c["clock_mhz"],
                         clock_source=c["clock_source"], ms=round(c["ms_median"], 4))
        row["presets"][name] = entry
    return row


def _mark_pareto(rows: list[dict[str, Any]], presets: list[str]) -> None:
    for name in presets:
        timed = [(i, r) for i, r in enumerate(rows) if r["presets"][name].get("cycles") is not None
                 and r["presets"][name]["fits"] is not False]
        by_task: dict[str, list] = {}
        for i, r in timed:
            by_task.setdefault(r["task"], []).append((i, r))
        for group in by_task.values():
            flags = pareto_flags([(r["presets"][name]["cycles"], r["dev_metric"]) for _, r in group])
            for (i, r), f in zip(group, flags):
                r["presets"][name]["pareto"] = f
        for r in rows:
            r["presets"][name].setdefault("pareto", False)


# ------------------------------------------------------------------------------------------- output
def _val(v: float | None, metric: str) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}" if metric == "acc" else f"{v:.4f}"


def markdown(result: dict[str, Any], plot_rel: str | None = None) -> str:
    presets = result["presets"]
    lines = ["# Accuracy against accelerator cycles (narrow and full-width students)", "",
             f"Made by `{result['command']}`. Accuracy is the golden model's (the accelerator's arithmetic, bit for "
             f"bit) on dev and on the training rows each run held out (never trained on or selected with). Cycles: "
             f"the accelerator's cycle model for one sequence of n = {result['n']} tokens. `fits`: the on-chip part "
             f"of the weights (binary matrices and the integer vectors beside them) within the on-chip memory the "
             f"preset leaves for weights (`bebert presets`: the part's block RAM less what the built design's "
             f"buffers take); the word and position embedding tables, one row of each read per token, stay off "
             f"chip. **P** marks the Pareto-optimal "
             f"rows of a preset (fitting rows of one task, cycles against dev).", ""]
    head = "| run | task | backbone | members | H/L/F | dev | holdout |"
    sep = "|---|---|---|---|---|---|---|"
    for name in presets:
        head += f" {name} on-chip Kbit | {name} cycles | {name} ms |"
        sep += "---|---|---|"
    lines += [head, sep]
    for r in result["rows"]:
        s = r["shape"]
        line = (f"| {r['name']} | {r['task']} | {r['backbone']} | {r['members']} | {s['hidden']}/{s['layers']}/{s['ffn']}"
                f" | {_val(r['dev_metric'], r['metric'])} | {_val(r['holdout_metric'], r['metric'])} |")
        for name in presets:
            e = r["presets"][name]
            fit = "" if e["fits"] is None else (" (fits)" if e["fits"] else " (**does not fit**)")
            mark = " **P**" if e.get("pareto") else ""
            cyc = f"{e['cycles']:,}{mark}" if e.get("cycles") is not None else f"- ({e.get('why')})"
            ms = f"{e['ms']:.3f}" if e.get("ms") is not None else "-"
            kbit = "-" if e["onchip_kbit"] is None else f"{e['onchip_kbit']:,.0f}{fit}"
            line += f" {kbit} | {cyc} | {ms} |"
        lines.append(line)
    lines += ["", "Clocks: " + "; ".join(
        f"`{name}` {e['clock_mhz']:g} MHz ({e['clock_source']})" for name in presets
        for e in [next((r["presets"][name] for r in result["rows"] if r["presets"][name].get("clock_mhz")), None)]
        if e) + ". An assumed clock is the preset's goal, not a measurement.", ""]
    budgets = {name: next((r["presets"][name]["budget_kbit"] for r in result["rows"]), None) for name in presets}
    lines += ["On-chip memory for weights: " + "; ".join(
        f"`{k}` {v:,} Kbit" if v else f"`{k}` weights off chip" for k, v in budgets.items()) + ".", ""]
    if plot_rel:
        lines += [f"![accuracy against latency]({plot_rel})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Dev metric against latency (log scale), one series per preset, the Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bebert.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(8, 5))
    markers = "osD^v"
    for k, name in enumerate(result["presets"]):
        pts = [(r["presets"][name]["ms"], r["dev_metric"], r) for r in result["rows"]
               if r["presets"][name].get("ms") is not None]
        if not pts:
            continue
        ok = [p for p in pts if p[2]["presets"][name]["fits"] is not False]
        bad = [p for p in pts if p[2]["presets"][name]["fits"] is False]
        line = ax.scatter([p[0] for p in ok], [p[1] for p in ok], marker=markers[k % len(markers)], label=name)
        if bad:
            ax.scatter([p[0] for p in bad], [p[1] for p in bad], marker=markers[k % len(markers)], facecolors="none",
                       edgecolors=line.get_facecolor(), label=f"{name}: does not fit on chip")
        front = sorted((p for p in ok if p[2]["presets"][name].get("pareto")), key=lambda p: p[0])
        if len(front) > 1:
            ax.plot([p[0] for p in front], [p[1] for p in front], "--", color=line.get_facecolor()[0], alpha=0.6)
        for x, y, r in pts:
            s = r["shape"]
            ax.annotate(f"{s['hidden']}/{s['layers']} x{r['members']}", (x, y), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"accelerator latency per sequence, n = {result['n']} (ms, cycle model x clock)")
    ax.set_ylabel("dev metric (golden model)")
    ax.set_title("bebert pareto: accuracy against latency (hollow: weights do not fit on chip)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- CLI
def add_pareto_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``pareto`` to the ``bebert`` subcommands."""
    from bebert.hw.presets import PRESETS

    p = subparsers.add_parser(
        "pareto", help="accuracy (golden, dev and holdout) against accelerator cycles per preset, for trained runs",
        description=__doc__, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (bebert train student/ensemble) or deployment files")
    p.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), choices=list(PRESETS), metavar="PRESET",
                   help=f"presets to time at (default: {' '.join(DEFAULT_PRESETS)}; known: {', '.join(PRESETS)})")
    p.add_argument("--n", type=int, default=64, help="tokens per sequence for the cycles (default: %(default)s)")
    p.add_argument("--data-dir", help="data folder (default: the one each run was trained on)")
    p.add_argument("--export-dir", type=Path, help="keep the exported deployment files here (default: a temporary "
                                                   "folder, removed)")
    p.add_argument("-o", "--output", type=Path, help="write the table as JSON (e.g. docs/results/pareto.json)")
    p.add_argument("--md", type=Path, help="write it as Markdown (e.g. docs/results-pareto.md)")
    p.add_argument("--plot", type=Path, help="plot (PNG; default with -o: <stem>.png beside it)")
    p.add_argument("--whole", action="store_true",
                   help="score each run's whole ensemble only (default: also every prefix of its members: member 0 "
                        "alone, the first two, ...: the smaller models a boosted run holds)")
    p.add_argument("--scores-from", type=Path, metavar="JSON",
                   help="take the golden dev and holdout scores from an earlier report of the same runs (-o of a "
                        "previous bebert pareto) and recompute only the memory and cycle figures: for a changed "
                        "accelerator, whose integer arithmetic is the same (minutes instead of hours)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_pareto)
    return p


def _command(args: argparse.Namespace) -> str:
    """The command line that makes this result (options in canonical form)."""
    parts = ["bebert", "pareto", *map(str, args.runs), "--presets", *args.presets, "--n", str(args.n)]
    for opt, v in (("--data-dir", args.data_dir), ("--export-dir", args.export_dir), ("-o", args.output),
                   ("--md", args.md), ("--plot", args.plot)):
        if v is not None:
            parts += [opt, str(v)]
    if args.whole:
        parts.append("--whole")
    if getattr(args, "scores_from", None) is not None:
        parts += ["--scores-from", str(args.scores_from)]
    return shlex.join(parts)


def run_pareto(args: argparse.Namespace) -> int:
    from bebert.atomic import check_output_file, write_json_atomic, write_text_atomic

    if args.n < 1:
        raise ValueError(f"--n must be a positive number of tokens, not {args.n}")
    for opt, path in (("-o", args.output), ("--md", args.md), ("--plot", args.plot)):
        if path is not None:
            check_output_file(path, opt)
    if args.export_dir is not None and not args.export_dir.is_dir():
        raise ValueError(f"--export-dir {args.export_dir} is not a folder (create it first)")
    for r in args.runs:
        if not Path(r).exists():
            raise FileNotFoundError(f"{r}: no such run folder or deployment file")
    plot_path = args.plot or (args.output.with_suffix(".png") if args.output else None)
    earlier = None
    if getattr(args, "scores_from", None) is not None:
        if not args.scores_from.is_file():
            raise FileNotFoundError(f"--scores-from {args.scores_from}: no such report")
        try:
            earlier = {(r["source"], r["members"]): r for r in json.loads(args.scores_from.read_text())["rows"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--scores-from {args.scores_from} is not a bebert pareto report ({exc})") from None
    rows = []
    progress = not args.no_progress and sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix="bebert-pareto-") as tmp:
        export_dir = args.export_dir or Path(tmp)
        from tqdm import tqdm

        jobs = []
        for src in args.runs:
            m = _members_of(Path(src)) if Path(src).is_dir() else None
            if m is None or args.whole:
                jobs.append((src, None))
            else:
                jobs += [(src, k) for k in range(1, m + 1)]
        for src, k in tqdm(jobs, desc="models", unit="model", disable=not progress):
            scores = None
            if earlier is not None:
                want = k if k is not None else _members_of(Path(src))
                scores = next((r for (s, mm), r in earlier.items() if s == str(src) and (want is None or mm == want)),
                              None)
                if scores is None:
                    raise ValueError(f"--scores-from {args.scores_from} has no row for {src}"
                                     + (f" (first {k})" if k is not None else ""))
            rows.append(evaluate_run(src, export_dir, args.presets, args.n, args.data_dir, progress, k, scores))
    _mark_pareto(rows, args.presets)
    result = {"command": _command(args),
              "n": args.n, "presets": list(args.presets), "rows": rows}
    rel = None
    if plot_path:
        rel = os.path.relpath(plot_path, args.md.parent) if args.md else str(plot_path)
    md = markdown(result, rel)
    print(md)
    if args.output:
        write_json_atomic(args.output, result)
    if args.md:
        write_text_atomic(args.md, md)
    if plot_path:
        plot(result, plot_path)
    return 0
