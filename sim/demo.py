"""``bebert demo``: the whole accelerator on the shipped checkpoint, or the PE array alone.

By default: the shipped BEBERT ensemble (``checkpoints/sst2-bebert-w1a1-m2.safetensors``: two W1A1
members, MiniLM-L6-H384 shape) through the whole accelerator RTL in Verilator, in the demo
configuration of ``docs/results-hw.md`` (two ensemble lanes of ``P x S = 2 x 32``, weight prefetch, the
ULX3S SDRAM's 12.8 bits per cycle): each sentence's prediction, every member logit and the combined
logits checked against the golden model (exact equality), the cycles per phase beside the compute
ideal and the weight-stream floor, and the simulation time. It is ``bebert sim`` with these defaults
(use ``bebert sim`` for every hardware option), followed by the same sentences on the CPU: torch FP32 (the
MiniLM teacher, one thread) and the bit-packed C engine (one and two threads) beside the accelerator's
milliseconds at the demo configuration's post-route Fmax (``docs/results/area.json``; an assumed 125 MHz,
said so, where it has none). ``--no-compare`` skips that part.

With ``--pe-array``: the PE array alone. Builds its RTL (Amaranth -> Verilog -> Verilator, cached),
streams ``N`` random binary vectors against a random binary ``M x K`` matrix through it with cocotb,
checks every result against the golden NumPy function (exact equality) and prints the measured cycle
count beside the ideal.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ..golden.pe_array import Mode


#: The shipped deployment file and the demo sentences (SST-2 dev: one positive, one negative).
DEMO_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"
DEMO_TEXTS = ("a gorgeous , witty , seductive movie .", "unflinchingly bleak and desperate")


def run(args) -> int:
    if args.pe_array:
        return run_pe_array(args)
    if args.wave:
        raise ValueError("--wave goes with --pe-array; for the accelerator use bebert sim ... --wave FILE")
    from . import sim_cli

    if not DEMO_MODEL.is_file():
        raise FileNotFoundError(f"the shipped checkpoint {DEMO_MODEL} is missing (it comes with the repository)")
    # the demo-ecp5 preset (hw/presets.py), --p and --s over it
    ns = argparse.Namespace(model=str(DEMO_MODEL), text=list(args.text or DEMO_TEXTS), preset="demo-ecp5",
                            p=args.p, s=args.s, lanes=None, prefetch=None, word_bits=None, latency=None,
                            bits_per_cycle=None, max_tokens=None, truncate=True, vocab=None, wave=None, json=args.json)
    print("demo: the shipped BEBERT ensemble through the whole accelerator RTL in Verilator, against golden")
    with tempfile.TemporaryDirectory(prefix="bebert-demo-") as tmp:
        report = Path(args.json) if args.json else Path(tmp) / "demo.json"
        ns.json = str(report)
        code = sim_cli.run(ns)
        if args.no_compare or not report.is_file():
            return code
        from ..golden.bench_cli import compare_sentences, print_comparison

        sents = json.loads(report.read_text())["sentences"]
        print("\ntiming the same sentences on the CPU (torch FP32 teacher, bit-packed C engine) ...", flush=True)
        rows = compare_sentences(DEMO_MODEL, [dict(ids=s["ids"], cycles=s["counters"]["cycles"]) for s in sents])
        print_comparison(rows)
        if args.json:
            doc = json.loads(report.read_text())
            doc["cpu_comparison"] = rows
            from ..atomic import write_json_atomic

            write_json_atomic(report, doc)
    return code


def run_pe_array(args) -> int:
    from ..hw.pe_array import PEArray
    from .runner import build_block, run_testbench

    args.p = 8 if args.p is None else args.p
    args.s = 64 if args.s is None else args.s
    for name in ("p", "s", "m", "n", "k"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, not {getattr(args, name)}")
    print(f"PE array P={args.p} x S={args.s}; Y = X . W^T with W {args.m} x {args.k}, {args.n} vectors, "
          f"{args.mode} mode")
    t0 = time.monotonic()
    print("building RTL (Amaranth -> Verilog -> Verilator; cached after the first run) ...", flush=True)
    build = build_block(PEArray(p=args.p, s=args.s, max_k=args.k),
                        f"pe_array__P{args.p}_S{args.s}_K{args.k}{'_waves' if args.wave else ''}",
                        toplevel="pe_array", waves=args.wave)
    t_build = time.monotonic() - t0
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        cfg = dict(p=args.p, s=args.s, max_k=args.k, m=args.m, n=args.n, k=args.k, seed=args.seed,
                   mode=args.mode, report=str(report_path))
        print("simulating in Verilator (cocotb) ...", flush=True)
        t1 = time.monotonic()
        run_testbench(build, "bebert.sim.tb_pe_array", "matmul", cfg, waves=args.wave)
        t_sim = time.monotonic() - t1
        rep = json.loads(report_path.read_text())
    ok = rep["mismatches"] == 0
    print()
    print(f"  results checked   {rep['checked_values']} values of Y against golden: "
          f"{'exact match' if ok else str(rep['mismatches']) + ' MISMATCHES'}")
    print(f"  Y[0, :8]          {rep['y_preview'][0]}")
    print(f"  cycles measured   {rep['cycles']}")
    print(f"  cycles ideal      {rep['ideal_cycles']}  (one {args.s}-bit fold per cycle: "
          f"{rep['jobs']} tiles x ceil(K/S)); MAC-ideal {rep['mac_ideal_cycles']:.1f}")
    print(f"  efficiency        {rep['ideal_cycles'] / rep['cycles']:.1%} of the fold rate "
          f"(the difference is pipeline fill: latency of the array)")
    print(f"  wall time         build {t_build:.1f} s, simulation {t_sim:.1f} s")
    if args.wave:
        print(f"  waveform          {build.build_dir}")
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2) + "\n")
    return 0 if ok else 1


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="the shipped ensemble through the whole accelerator in Verilator vs golden (--pe-array: "
                     "the PE array alone)",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--text", action="append", help="a sentence (repeat for several; default: two SST-2 dev "
                                                    "sentences)")
    p.add_argument("--pe-array", action="store_true", help="run the PE array alone instead (options below)")
    p.add_argument("--p", type=int, default=None, help="PE array output channels (default 2 per lane; 8 with "
                                                       "--pe-array)")
    p.add_argument("--s", type=int, default=None, help="input bits per cycle (default 32; 64 with --pe-array)")
    p.add_argument("--m", type=int, default=64, help="--pe-array: rows of the binary matrix W (default 64)")
    p.add_argument("--k", type=int, default=384, help="--pe-array: bits per row and vector (default 384, "
                                                      "MiniLM hidden)")
    p.add_argument("--n", type=int, default=16, help="--pe-array: number of binary vectors (default 16)")
    p.add_argument("--mode", choices=[m.name for m in Mode], default="XNOR",
                   help="--pe-array: XNOR: popcount(~(a^w)); AND: 2*popcount(a&w) - popcount(w)")
    p.add_argument("--seed", type=int, default=0, help="--pe-array: random seed")
    p.add_argument("--wave", action="store_true", help="--pe-array: dump an FST waveform in the build folder")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--no-compare", action="store_true",
                   help="skip the CPU comparison at the end (torch FP32 and the bit-packed C engine, same sentences)")
    p.set_defaults(func=run)
