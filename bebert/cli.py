"""The ``bebert`` command line: one entry point for the whole flow.

Subcommands are registered from the subpackages that implement them; each has
its own ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from . import __version__

DESCRIPTION = """\
BEBERT: binary ensemble BERT from PyTorch training to an FPGA accelerator.

  bebert doctor            check every tool the flow uses (versions, origins, what is missing)
  bebert demo              the shipped ensemble through the whole accelerator RTL in Verilator against golden,
                           then the same sentences on the CPU (torch FP32, bit-packed C) beside it
  bebert sim MODEL --text  sentences through the whole accelerator RTL in Verilator, checked against golden
  bebert presets           the named accelerator configurations (--preset NAME on sim and synth)
  bebert synth pe-array    yosys + nextpnr for ECP5: LUT4, FF, Fmax of the PE array (also: blocks)
  bebert synth accelerator the whole accelerator: LUT4, FF, EBR, Fmax, worst paths, per-block area, bitstream
  bebert train / eval      train and evaluate teachers, binary students and BEBERT ensembles
  bebert export / inspect  integer deployment file from a checkpoint, and its summary
  bebert perf              cycle estimate of an inference: ideal, weight-stream floor, per op
  bebert bench             accelerator cycles beside torch, onnxruntime, golden and bit-packed CPU latency
  bebert pareto RUN...     trained students' accuracy (golden, dev and holdout) against cycles per preset
  bebert faults MODEL      accuracy under random bit flips (weights, thresholds, activations), golden model
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
    from .sim import sim_cli
    sim_cli.add_parser(sub)
    from .hw import presets
    presets.add_parser(sub)
    from .fpga import cli as fpga_cli
    fpga_cli.add_parser(sub)
    # Subcommands of packages that provide them (import errors inside them are real errors).
    for module, adders in (("bebert.model.cli", ("add_train_parser", "add_eval_parser")),
                           ("bebert.golden.cli", ("add_export_parser", "add_inspect_parser")),
                           ("bebert.golden.perf", ("add_perf_parser",)),
                           ("bebert.golden.bench_cli", ("add_bench_parser",)),
                           ("bebert.golden.pareto", ("add_pareto_parser",)),
                           ("bebert.golden.faults", ("add_faults_parser",))):
        if importlib.util.find_spec(module) is None:
            continue
        mod = importlib.import_module(module)
        for adder in adders:
            getattr(mod, adder)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except KeyboardInterrupt:
        print(f"bebert {args.command}: interrupted (files being written are removed)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of the output went away (``bebert inspect x | head``): stop quietly, as Unix tools do
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except (ValueError, OSError, RuntimeError) as exc:  # OSError: FileNotFoundError, no space left, ...
        if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, FileNotFoundError):
            exc = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        print(f"bebert {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
