"""The ``bebert`` command line: one entry point for the whole flow.

Subcommands are registered from the subpackages that implement them; each has
its own ``--help``.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__

DESCRIPTION = """\
BEBERT: binary ensemble BERT from PyTorch training to an FPGA accelerator.

  bebert doctor            check every tool the flow uses (versions, origins, what is missing)
  bebert demo              PE array in Verilator: binary matrix x vectors, checked against golden
  bebert synth pe-array    yosys + nextpnr for ECP5: LUT4, FF, Fmax of the PE array
  bebert train / eval      train and evaluate BEBERT models (when the model package provides them)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bebert", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bebert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from . import doctor
    doctor.add_parser(sub)
    from .sim import demo
    demo.add_parser(sub)
    from .fpga import cli as fpga_cli
    fpga_cli.add_parser(sub)
    try:
        from .model import cli as model_cli
    except ImportError:
        model_cli = None
    if model_cli is not None and hasattr(model_cli, "add_train_parser"):
        model_cli.add_train_parser(sub)
        model_cli.add_eval_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"bebert {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
