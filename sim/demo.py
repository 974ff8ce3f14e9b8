"""``bebert demo``: a binary matrix times binary vectors through the Verilator-simulated PE array.

Builds the PE array RTL (Amaranth -> Verilog -> Verilator, cached), streams
``N`` random binary vectors against a random binary ``M x K`` matrix through it
with cocotb, checks every result against the golden NumPy function (exact
equality) and prints the measured cycle count beside the ideal.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..golden.pe_array import Mode


def run(args) -> int:
    from ..hw.pe_array import PEArray
    from .runner import build_block, run_testbench

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
        "demo", help="PE array in Verilator vs golden, with cycle counts",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--p", type=int, default=8, help="output channels of the array (default 8)")
    p.add_argument("--s", type=int, default=64, help="input bits per cycle (default 64)")
    p.add_argument("--m", type=int, default=64, help="rows of the binary matrix W (default 64)")
    p.add_argument("--k", type=int, default=384, help="bits per row and vector (default 384, MiniLM hidden)")
    p.add_argument("--n", type=int, default=16, help="number of binary vectors (default 16)")
    p.add_argument("--mode", choices=[m.name for m in Mode], default="XNOR",
                   help="XNOR: popcount(~(a^w)); AND: 2*popcount(a&w) - popcount(w)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--wave", action="store_true", help="dump an FST waveform in the build folder")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=run)
