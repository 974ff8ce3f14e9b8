"""``bebert synth``: out-of-context synthesis reports for hardware blocks."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from . import blocks as blocks_mod
from .synth import DEVICES, save_report, synth_pe_array

GOAL_MHZ = 125.0
GOAL_LUT4_PER_BIT = 3.7


def markdown(row: dict) -> str:
    fmax_ok = row["fmax_mhz"] >= GOAL_MHZ
    lut_ok = row["lut4_per_bit"] <= GOAL_LUT4_PER_BIT
    cells = ", ".join(f"{k} {v}" for k, v in row["yosys_cells"].items())
    return f"""# PE array synthesis ({row['device']})

Produced by `{row['command']}`.

| P | S | max_shift | bits/cycle | LUT4 (COMB) | FF | EBR | Fmax (MHz) | LUT4 per bit |
|---|---|---|---|---|---|---|---|---|
| {row['P']} | {row['S']} | {row.get('max_shift', 0)} | {row['P'] * row['S']} | {row['lut4']} | {row['ff']} | {row['ebr']} | {row['fmax_mhz']} | {row['lut4_per_bit']} |

- Fmax goal >= {GOAL_MHZ:g} MHz: **{'met' if fmax_ok else 'missed'}** ({row['fmax_mhz']} MHz, nextpnr post-route, constraint {row['target_mhz']:g} MHz).
- Area goal <= {GOAL_LUT4_PER_BIT} LUT4 per bit: **{'met' if lut_ok else 'missed'}** ({row['lut4_per_bit']}).
- LUT4 counts nextpnr's TRELLIS_COMB cells (LUT4s plus carry-chain and LUTRAM halves) for the
  whole registered wrapper (serial loader, output shift register, output FIFO), so it overstates the
  array alone slightly. yosys cells: {cells}.
- Run time: synthesis {row['synth_seconds']} s, place and route {row['pnr_seconds']} s.
"""


def run_pe_array(args) -> int:
    print(f"synthesising PEArray P={args.p} S={args.s} for {args.device} at {args.freq:g} MHz "
          "(yosys, then nextpnr; a 16x256 array takes several minutes) ...", flush=True)
    row = synth_pe_array(args.p, args.s, args.max_k, max_shift=args.max_shift, device=args.device, target_mhz=args.freq,
                         workdir=args.workdir, seed=args.seed)
    row["command"] = "bebert " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"LUT4 {row['lut4']}  FF {row['ff']}  EBR {row['ebr']}  Fmax {row['fmax_mhz']} MHz  "
          f"LUT4/bit {row['lut4_per_bit']}")
    if args.output:
        save_report(args.output, row, markdown(row))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("synth", help="synthesis + place and route reports (ECP5)",
                       description="Synthesise a hardware block in a registered wrapper with YoWASP yosys and "
                                   "nextpnr-ecp5 and report LUT4, FF, EBR and post-route Fmax.")
    blocks = p.add_subparsers(dest="block", metavar="BLOCK", required=True)
    q = blocks.add_parser("pe-array", help="the XNOR-popcount PE array",
                          description="Synthesise PEArray(P, S) for an ECP5 part; write JSON and Markdown reports.")
    q.add_argument("--p", type=int, default=16, help="output channels (default 16)")
    q.add_argument("--s", type=int, default=256, help="input bits per cycle (default 256)")
    q.add_argument("--max-k", type=int, default=1536, help="longest dot product, sets the accumulator (default 1536)")
    q.add_argument("--max-shift", type=int, default=0,
                   help="per-fold shift hardware: 3 adds the bit-serial W1A4 mode (default 0: none)")
    q.add_argument("--device", choices=sorted(DEVICES), default="LFE5U-85F", help="ECP5 part (default LFE5U-85F)")
    q.add_argument("--freq", type=float, default=125.0, help="clock constraint in MHz (default 125)")
    q.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    q.add_argument("--workdir", type=Path, help="keep the tool files here (default: a temp folder)")
    q.add_argument("-o", "--output", help="write the report to this JSON file (and a .md beside it)")
    q.set_defaults(func=run_pe_array)
    from . import accelerator as accel_mod

    a = blocks.add_parser("accelerator", help="the whole accelerator of a deployment file (default: the shipped one)",
                          description=accel_mod.__doc__.split("\n\n", 1)[0])
    accel_mod.add_arguments(a)
    a.set_defaults(func=accel_mod.run)
    b = blocks.add_parser("blocks", help="the threshold/sign, Bi-Attention, vector and weight-fetch units",
                          description=blocks_mod.DESCRIPTION)
    blocks_mod.add_arguments(b)
    b.set_defaults(func=lambda args: blocks_mod.run(args, "bebert " + " ".join(shlex.quote(a) for a in sys.argv[1:])))

