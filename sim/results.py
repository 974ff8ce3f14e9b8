"""``python -m bebert.sim.results``: ``docs/results/hw_inference.json`` from ``bebert sim --json`` runs.

The first run is the headline (its first sentence gives ``cycles``, ``ideal_cycles``,
``weight_floor_cycles``, ``gemm_utilization`` and ``sim_seconds``; all its sentences count in
``sequences_checked`` and ``mismatches``); further runs go under ``other_runs``. Each run keeps the
``bebert sim`` command that produced it. ``--md`` prints the runs as a Markdown table (the one in
``docs/results-hw.md``), ``--plot`` draws their cycles by phase.

    python -m bebert.sim.results demo.json other.json --out docs/results/hw_inference.json --md \\
        --plot docs/results/hw_inference.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..atomic import atomic_path

__all__ = ["summarize", "build", "markdown", "plot"]


def _load(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"run file {p} not found (write it with bebert sim ... --json {p})")
    run = json.loads(p.read_text())
    for key in ("command", "config", "sentences"):
        if key not in run:
            raise ValueError(f"{p} is not a bebert sim --json report (no {key!r})")
    if not run["sentences"]:
        raise ValueError(f"{p} holds no sentences")
    return run


def summarize(run: dict) -> dict:
    """One run: its configuration, command and per-sentence figures."""
    rows = []
    for s in run["sentences"]:
        c = s["counters"]
        bound = max(s["ideal_cycles"], s["weight_floor_cycles"])
        rows.append(dict(text=s["text"], tokens=len(s["tokens"]), pred=s["pred"], label=s.get("label"),
                         agree=s["agree"], cycles=c["cycles"], ideal_cycles=round(s["ideal_cycles"]),
                         weight_floor_cycles=round(s["weight_floor_cycles"]),
                         ratio_to_bound=round(c["cycles"] / bound, 3), gemm_utilization=s["gemm_utilization"],
                         sim_seconds=s["sim_seconds"], cycles_per_second=round(c["cycles"] / max(s["sim_seconds"], 1e-9)),
                         counters=c))
    return dict(model=run["model"], command=run["command"], config=run["config"],
                build_seconds=run.get("build_seconds"), sentences=rows,
                sequences_checked=len(rows), mismatches=sum(not r["agree"] for r in rows) + len(run.get("failures", [])))


def build(main: dict, others=()) -> dict:
    """The ``hw_inference.json`` object: the issue's keys from the headline run's first sentence."""
    m = summarize(main)
    first = m["sentences"][0]
    out = dict(config=dict(m["config"], model=m["model"], tokens=[r["tokens"] for r in m["sentences"]]),
               cycles=first["cycles"], ideal_cycles=first["ideal_cycles"],
               weight_floor_cycles=first["weight_floor_cycles"], gemm_utilization=first["gemm_utilization"],
               sim_seconds=first["sim_seconds"], sequences_checked=m["sequences_checked"],
               mismatches=m["mismatches"], command=m["command"], ratio_to_bound=first["ratio_to_bound"],
               build_seconds=m["build_seconds"], sentences=m["sentences"])
    out["other_runs"] = [summarize(o) for o in others]
    return out


def markdown(runs) -> str:
    """A table row per sentence of each run summary."""
    lines = ["| P x S | lanes | prefetch | tokens | cycles | ideal | weight floor | cycles / max | PE busy in linear ops "
             "| sim s | cycles/s | golden |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        cfg = r["config"]
        for s in r["sentences"]:
            lines.append(f"| {cfg['p']} x {cfg['s']} | {cfg['lanes']} | {cfg['prefetch']} | {s['tokens']} "
                         f"| {s['cycles']:,} | {s['ideal_cycles']:,} | {s['weight_floor_cycles']:,} "
                         f"| {s['ratio_to_bound']:.3f}x | {s['gemm_utilization']:.1%} | {s['sim_seconds']:.1f} "
                         f"| {s['cycles_per_second']:,} | {'exact' if s['agree'] else 'MISMATCH'} |")
    return "\n".join(lines)


def plot(runs, path) -> None:
    """A PNG: per run and sentence, the cycles split into embedding, layer parameter loads, layer runs and
    head (stacked bars), beside the compute ideal and the weight-stream floor (markers)."""
    import io

    from matplotlib.figure import Figure  # no pyplot: no global backend or window state

    bars = []
    for r in runs:
        cfg = r["config"]
        for s in r["sentences"]:
            c = s["counters"]
            layers = sum(v for k, v in c.items() if k.startswith("layer"))
            bars.append((f"{cfg['p']}x{cfg['s']}, E={cfg['lanes']}\npf {cfg['prefetch']}, n={s['tokens']}",
                         [c["embed"], c["load"], layers - c["load"], c["head"]], s["ideal_cycles"],
                         s["weight_floor_cycles"]))
    fig = Figure(figsize=(max(6.0, 1.1 * len(bars) + 2), 4.4), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(bars)))
    bottom = [0.0] * len(bars)
    for i, (name, color) in enumerate((("embedding", "#8da0cb"), ("layer parameter loads", "#e78ac3"),
                                       ("layers", "#66c2a5"), ("head", "#fc8d62"))):
        vals = [b[1][i] / 1e6 for b in bars]
        ax.bar(xs, vals, bottom=bottom, color=color, label=name, width=0.6)
        bottom = [u + v for u, v in zip(bottom, vals)]
    ax.scatter(xs, [b[3] / 1e6 for b in bars], marker="_", s=900, color="black", label="weight-stream floor",
               zorder=3)
    ax.scatter(xs, [b[2] / 1e6 for b in bars], marker="x", color="black", label="compute ideal", zorder=3)
    ax.set_xticks(xs)
    ax.set_xticklabels([b[0] for b in bars], fontsize="x-small")
    ax.set_ylabel("cycles per inference (millions)")
    ax.set_title("Accelerator cycles by phase (Verilator)", fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="x-small", ncol=5, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bebert.sim.results", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="bebert sim --json files; the first is the headline")
    ap.add_argument("--out", help="write the JSON here (atomically)")
    ap.add_argument("--md", action="store_true", help="print the runs as a Markdown table")
    ap.add_argument("--plot", metavar="PNG", help="draw the cycles by phase of every run and sentence")
    args = ap.parse_args(argv)
    try:
        runs = [_load(p) for p in args.runs]
    except (OSError, ValueError) as exc:
        print(f"python -m bebert.sim.results: error: {exc}", file=sys.stderr)
        return 1
    out = build(runs[0], runs[1:])
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(out, indent=1) + "\n")
    if args.md:
        print(markdown([summarize(r) for r in runs]))
    if args.plot:
        plot([summarize(r) for r in runs], args.plot)
    if not args.out and not args.md and not args.plot:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
