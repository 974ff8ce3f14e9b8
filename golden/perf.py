"""``bebert perf``: the performance model of the accelerator for a model and hardware parameters."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .schedule import PRESETS, HwParams, performance

__all__ = ["add_perf_parser", "run_perf", "markdown"]

_EPILOG = """\
examples:
  bebert perf                                    MiniLM-L6-H384, 2 members, 64 and 128 tokens
  bebert perf --model checkpoints/sst2-bebert-w1a1-m2.safetensors --tokens 64
  bebert perf --model bert-tiny --lanes 2 --vector-lanes 4 --bits-per-cycle 64
  bebert perf --json perf.json --md perf.md

The figures are an analytic model (golden/schedule.py), not a simulation: 'ideal' is binary MACs
over P*S per cycle, 'weight floor' the weight bits over the memory bandwidth; the estimate runs
the schedule op by op. Verilator cycle counts are the measurement it must be checked against.
For a W1A1 deployment file the table adds 'RTL model': golden.accelerator.expected_cycles, the
cycle model of the accelerator as built (hw/accelerator.py, with --lanes, --prefetch, --word-bits
and --latency), checked against Verilator to within a few percent (docs/results-hw.md).
"""


def add_perf_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``perf`` to the ``bebert`` subcommands."""
    p = subparsers.add_parser(
        "perf", help="cycle estimate of an inference: ideal, weight floor, per op",
        description="Cycle counts of one BEBERT inference on the accelerator, from the layer schedule.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm-l6-h384",
                   help=f"a preset ({', '.join(PRESETS)}) or a deployment file (default: %(default)s)")
    p.add_argument("--members", type=int, default=None, help="ensemble members (default: the file's, or 2)")
    p.add_argument("--tokens", type=int, nargs="+", default=[64, 128], help="sequence lengths (default: 64 128)")
    d = HwParams()
    g = p.add_argument_group("hardware")
    g.add_argument("--p", type=int, default=d.p, help="PE array output channels (default: %(default)s)")
    g.add_argument("--s", type=int, default=d.s, help="PE array input bits per cycle (default: %(default)s)")
    g.add_argument("--lanes", type=int, default=d.lanes, help="ensemble-parallel lanes (default: %(default)s)")
    g.add_argument("--bits-per-cycle", type=float, default=d.bits_per_cycle,
                   help="weight bandwidth, bits per cycle (default: %(default)s, ULX3S SDRAM)")
    g.add_argument("--batch", type=int, default=d.batch, help="sequences sharing a weight fetch (default: %(default)s)")
    g.add_argument("--attn-kb", type=int, default=d.attn_kb, help="Bi-Attention keys per cycle (default: %(default)s)")
    g.add_argument("--vector-lanes", type=int, default=d.vector_lanes, help="vector units (default: %(default)s)")
    g.add_argument("--fmax", type=float, default=d.fmax_mhz, help="clock in MHz for the time column (default: %(default)s)")
    r = p.add_argument_group("the RTL model (W1A1 deployment files)")
    r.add_argument("--prefetch", type=int, default=4096, help="weight prefetch words per lane, 0 for none "
                                                                "(default: %(default)s)")
    r.add_argument("--word-bits", type=int, default=16, help="memory word width (default: %(default)s)")
    r.add_argument("--latency", type=int, default=8, help="memory read latency in cycles (default: %(default)s)")
    r.add_argument("--kb", type=int, default=4, help="the RTL's Bi-Attention keys per cycle (default: %(default)s; "
                                                     "--attn-kb is the analytic model's)")
    r.add_argument("--vw", type=int, default=1, help="the RTL's vector-unit channels per cycle (default: %(default)s)")
    p.add_argument("--json", type=Path, help="write the full results (every op) as JSON")
    p.add_argument("--md", type=Path, help="write the summary as a Markdown table")
    p.set_defaults(func=run_perf)
    return p


def markdown(results: list[dict], command: str) -> str:
    """Summary table: one row per sequence length."""
    lines = [f"Command: `{command}` (analytic model, `golden/schedule.py`)", "",
             "| model | tokens | members | lanes | ideal | weight floor | estimate | x floor | bound | us at fmax "
             "| RTL model | RTL x max(ideal, floor) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["model"]
        name = f"L{m['num_layers']}-H{m['hidden_size']}"
        rtl = r.get("rtl_cycles")
        rtl_cols = (f"{rtl:,.0f} | {rtl / max(r['ideal_cycles'], r['weight_floor_cycles']):.3f}" if rtl is not None
                    else "- | -")
        lines.append(f"| {name} | {r['tokens']} | {r['members']} | {r['hw']['lanes']} | {r['ideal_cycles']:,.0f} | "
                     f"{r['weight_floor_cycles']:,.0f} | {r['estimated_cycles']:,.0f} | {r['ratio_to_floor']:.2f} | "
                     f"{r['bound']} | {r['microseconds']:,.0f} | {rtl_cols} |")
    return "\n".join(lines) + "\n"


def _check_args(args: argparse.Namespace) -> None:
    """``ValueError`` naming the option for a hardware or model parameter out of range."""
    for name in ("p", "s", "lanes", "batch", "attn_kb", "vector_lanes", "word_bits", "latency"):
        v = getattr(args, name)
        if v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, not {v}")
    for name in ("bits_per_cycle", "fmax"):
        v = getattr(args, name)
        if not v > 0:  # NaN too
            raise ValueError(f"--{name.replace('_', '-')} must be positive, not {v}")
    if args.members is not None and args.members < 1:
        raise ValueError(f"--members must be a positive integer, not {args.members}")
    bad = [n for n in args.tokens if n < 1]
    if bad:
        raise ValueError(f"--tokens must be positive integers, not {bad[0]}")
    if args.prefetch < 0 or args.prefetch == 1:
        raise ValueError(f"--prefetch must be 0 (none) or at least 2 words, not {args.prefetch}")


def run_perf(args: argparse.Namespace) -> int:
    """Handler of ``bebert perf``."""
    from bebert.atomic import check_output_file, write_json_atomic, write_text_atomic

    _check_args(args)
    for option in ("json", "md"):
        if getattr(args, option) is not None:
            check_output_file(getattr(args, option), f"--{option}")
    config = args.model
    members = args.members
    model = None
    if args.model not in PRESETS:
        if not Path(args.model).is_file():
            raise ValueError(f"--model {args.model!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
        from .format import load_int_model

        model = load_int_model(args.model)
        config = model.meta["config"]
        members = members or int(model.meta["members"])
    members = members or 2
    hw = HwParams(p=args.p, s=args.s, lanes=args.lanes, bits_per_cycle=args.bits_per_cycle, batch=args.batch,
                  attn_kb=args.attn_kb, vector_lanes=args.vector_lanes, fmax_mhz=args.fmax)
    results = [performance(config, n, hw, members) for n in args.tokens]
    if model is not None and model.config.get("backbone", "w1a1") == "w1a1" and args.members is None:
        from .accelerator import AccelSpec, expected_cycles

        if args.prefetch < 0 or args.prefetch == 1 or args.latency < 1:
            raise ValueError("--prefetch must be 0 or at least 2 words and --latency at least 1")
        if args.kb < 1 or args.vw < 1 or args.vw & (args.vw - 1):
            raise ValueError(f"--kb must be at least 1 and --vw a power of two, not {args.kb} and {args.vw}")
        if not 1 <= args.lanes <= members:
            raise ValueError(f"--lanes must be 1..{members} (the file's members) for the RTL model")
        spec = AccelSpec.from_int_model(model, args.p, args.s, args.word_bits)
        for r in results:
            if r["tokens"] <= spec.max_len:
                r["rtl_cycles"] = expected_cycles(spec, r["tokens"], args.bits_per_cycle, args.latency - 1,
                                                  lanes=args.lanes, prefetch=args.prefetch > 0, kb=args.kb,
                                                  vw=args.vw)
    command = "bebert " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    table = markdown(results, command)
    print(table, end="")
    for r in results:
        kinds = ", ".join(f"{k} {v:,.0f}" for k, v in r["by_kind"].items())
        print(f"n={r['tokens']}: cycles per member round by op kind: {kinds}")
    if args.json:
        write_json_atomic(args.json, {"command": command, "results": results})
    if args.md:
        write_text_atomic(args.md, table)
    return 0
