"""``bebert export`` and ``bebert inspect``: parsers and handlers for the project CLI.

``bebert/cli.py`` wires these in::

    from bebert.golden.cli import add_export_parser, add_inspect_parser
    add_export_parser(subparsers)
    add_inspect_parser(subparsers)
    args = parser.parse_args()
    return args.func(args)

Each handler returns an exit code: 0 on success, 2 for a usage or file error (message on
stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

__all__ = ["add_export_parser", "add_inspect_parser", "run_export", "run_inspect"]


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand (handler :func:`run_export`) to argparse ``subparsers``."""
    p = subparsers.add_parser(
        "export",
        help="export a trained student/ensemble checkpoint to the integer deployment file",
        description=textwrap.fill(
            "Convert a student or ensemble checkpoint (a folder written by 'bebert train') into the integer "
            "deployment file that the golden model and the hardware read: packed sign bits of every binary "
            "weight, fixed-point codes of scales, biases, embeddings and LayerNorm parameters, per-channel "
            "integer thresholds and polarities of the sign-only layers, the pooler's tanh table and the ensemble "
            "weights, plus JSON metadata (model config, formats, LayerNorm method, format version). The file is "
            "written atomically (temporary file, fsync, rename). The arithmetic is docs/arithmetic.md.",
            width=88,
        ),
        epilog="example:\n  bebert export runs/sst2-bebert -o runs/sst2-bebert/int.safetensors\n"
               "  bebert inspect runs/sst2-bebert/int.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="student or ensemble checkpoint folder (bebert.json + model.safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.safetensors",
                   help="the integer model file to write")
    p.add_argument("--members", type=int, metavar="K",
                   help="export only the first K members (with their ensemble weights; default: all)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run_export)
    return p


def add_inspect_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``inspect`` subcommand (handler :func:`run_inspect`) to argparse ``subparsers``."""
    p = subparsers.add_parser(
        "inspect",
        help="check an integer model file and print a summary",
        description=textwrap.fill(
            "Read an integer model file written by 'bebert export', check it (format and version, the tensors "
            "against the config: names, shapes, dtypes, codes within their fixed-point formats, thresholds "
            "within range) and print a summary: backbone, dimensions, members, formats, LayerNorm method, "
            "weight bits and bytes. A corrupt file, another format version or a config that does not match "
            "the tensors is reported with a clear message and exit code 2.",
            width=88,
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="integer model file (.safetensors)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--tensors", action="store_true", help="also list every tensor with dtype, shape and range")
    p.set_defaults(func=run_inspect)
    return p


def _print_summary(s: dict, out=None) -> None:
    out = out or sys.stdout
    d = s["dims"]
    print(f"format       {s['format']} v{s['format_version']}", file=out)
    extra = ""
    if s.get("backbone") == "w1a4":
        extra = f" ({s.get('act_bits')}-bit activations{', TWS: two binary weights per layer' if s.get('tws') else ''})"
    print(f"backbone     {s['backbone']}{extra}, {s['members']} member(s)", file=out)
    print(f"dimensions   L={d['num_layers']} H={d['hidden_size']} A={d['num_heads']} F={d['ffn_size']} "
          f"vocab={d['vocab_size']} max_len={d['max_len']} labels={d['num_labels']}", file=out)
    print("formats      " + ", ".join(f"{k}={v}" for k, v in s["formats"].items()), file=out)
    ln = s["layernorm"]
    print(f"layernorm    mantissa {ln['mant_bits']} b, rsqrt 2^-{ln['rsqrt_frac']} ({ln['rsqrt_bits']} b, bit-serial), "
          f"normalized Q.{ln['norm_frac']}, eps code {ln['eps_code']}", file=out)
    print(f"weights      {s['weight_bits_per_member']} binary weight bits per member (embedding table included), {s['tensors']} tensors, "
          f"{s['bytes']} bytes", file=out)
    if s.get("task") or s.get("source"):
        print(f"source       {s.get('source')} (task {s.get('task')})", file=out)


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``bebert export``."""
    from .export import export_checkpoint
    from .format import IntModelError

    from bebert.atomic import check_output_file

    try:
        check_output_file(args.output, "--output")
        summary = export_checkpoint(args.checkpoint, args.output, args.members)
    except (IntModelError, ValueError, FileNotFoundError, KeyError) as e:
        return _error(str(e))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {args.output}")
        _print_summary(summary)
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    """Handler of ``bebert inspect``."""
    from .format import IntModelError, load_int_model

    try:
        model = load_int_model(args.model)
    except (IntModelError, FileNotFoundError) as e:
        return _error(str(e))
    summary = model.summary()
    if args.tensors:
        summary["tensor_list"] = {
            k: {"dtype": str(t.dtype), "shape": list(t.shape),
                "min": int(t.min()) if t.size and t.dtype.kind == "i" else None,
                "max": int(t.max()) if t.size and t.dtype.kind == "i" else None}
            for k, t in sorted(model.tensors.items())
        }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    _print_summary(summary)
    if args.tensors:
        for k, v in summary["tensor_list"].items():
            rng = f"  [{v['min']}, {v['max']}]" if v["min"] is not None else ""
            print(f"  {k:48s} {v['dtype']:7s} {tuple(v['shape'])}{rng}")
    return 0
