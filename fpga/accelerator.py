"""Synthesis of the whole accelerator (``bebert synth accelerator``): yosys + nextpnr-ecp5 on a model's
:class:`~bebert.hw.accelerator.Accelerator`, out of context.

Every stream port goes through :class:`~bebert.fpga.synth.RegisteredWrapper` (token input, command, memory
requests and responses, logits), and ``running``, ``error`` and the XOR of all the performance counters'
bits are registered onto pins, so nothing the design computes is optimized away; the memory itself (the
SDRAM) is outside. Reports LUT4, FF, EBR, MULT18 and post-route Fmax as JSON and Markdown.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .synth import DEVICES, RegisteredWrapper, save_report, synth_ecp5

__all__ = ["AccelTop", "synth_accelerator", "markdown", "add_arguments", "run"]

GOAL_MHZ = 125.0


class AccelTop(wiring.Component):
    """The accelerator in a registered wrapper, with its status on registered pins."""

    def __init__(self, acc, pins: int = 8):
        self._acc = acc
        self._wrap = RegisteredWrapper(acc, inputs=("i_stream", "c_stream", "rsp_stream"),
                                       outputs=("o_stream", "req_stream"), pins=pins)
        sig = self._wrap.signature.members
        super().__init__({**{name: sig[name] for name in sig}, "status": Out(3)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.wrap = w = self._wrap
        for name, member in w.signature.members.items():
            if member.flow == In:
                m.d.comb += getattr(w, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(w, name))
        acc = self._acc
        m.d.sync += self.status.eq(Cat(acc.running, acc.error, acc.counters.as_value().xor()))
        return m


def synth_accelerator(model_path, *, p: int = 2, s: int = 32, lanes: int = 2, prefetch: int = 4096,
                      word_bits: int = 16, max_tokens: int = 16, device: str = "LFE5U-85F",
                      target_mhz: float = GOAL_MHZ, workdir: Path | None = None, seed: int = 1) -> dict:
    """Synthesise the accelerator of the W1A1 deployment file ``model_path``; the JSON row."""
    from ..golden.accelerator import AccelSpec, model_layout
    from ..hw.accelerator import Accelerator
    from ..sim.sim_cli import load_model

    model = load_model(model_path)
    spec = AccelSpec.from_int_model(model, p, s, word_bits)
    aw = max(16, (model_layout(spec)["words"] - 1).bit_length())
    acc = Accelerator(spec, lanes=lanes, prefetch=prefetch, max_tokens=min(max_tokens, spec.max_len),
                      addr_width=aw, impl="ecp5")
    res = synth_ecp5(AccelTop(acc), device=device, target_mhz=target_mhz, workdir=workdir, seed=seed,
                     name="accel_top")
    d = model.dims
    row = dict(res.as_dict(), model=str(model_path),
               dims=dict(hidden=d["hidden_size"], layers=d["num_layers"], heads=d["num_heads"], ffn=d["ffn_size"],
                         members=int(model.members)),
               P=p, S=s, lanes=lanes, prefetch=prefetch, word_bits=word_bits, max_tokens=acc.max_tokens,
               addr_width=aw, mult18=res.yosys_cells.get("MULT18X18D", 0))
    dev = DEVICES[device]
    row["lut4_share"] = round(row["lut4"] / dev["lut4"], 3)
    row["ebr_share"] = round(row["ebr"] / dev["ebr"], 3)
    return row


def markdown(row: dict) -> str:
    ok = row["fmax_mhz"] >= GOAL_MHZ
    return f"""# Whole accelerator synthesis ({row['device']})

Produced by `{row['command']}`.

| model | P x S | lanes | prefetch | LUT4 (COMB) | FF | EBR | MULT18 | Fmax (MHz) |
|---|---|---|---|---|---|---|---|---|
| H{row['dims']['hidden']} L{row['dims']['layers']} M{row['dims']['members']} | {row['P']} x {row['S']} | {row['lanes']} | {row['prefetch']} | {row['lut4']} ({row['lut4_share']:.0%}) | {row['ff']} | {row['ebr']} ({row['ebr_share']:.0%}) | {row['mult18']} | {row['fmax_mhz']} |

- Fmax goal >= {GOAL_MHZ:g} MHz: **{'met' if ok else 'missed'}** (nextpnr post-route estimate, constraint
  {row['target_mhz']:g} MHz).
- Everything but the external memory, in a registered wrapper (serial loaders and unloaders on the
  streams), so LUT4 and FF slightly overstate the accelerator alone.
- Run time: synthesis {row['synth_seconds']} s, place and route {row['pnr_seconds']} s.
"""


def add_arguments(ap) -> None:
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "checkpoints" /
                                           "sst2-bebert-w1a1-m2.safetensors"),
                    help="W1A1 deployment file (default: the shipped checkpoint)")
    ap.add_argument("--p", type=int, default=2, help="PE array output channels per lane (default 2)")
    ap.add_argument("--s", type=int, default=32, help="PE array input bits per cycle (default 32)")
    ap.add_argument("--lanes", type=int, default=2, help="ensemble-parallel lanes (default 2)")
    ap.add_argument("--prefetch", type=int, default=4096, help="weight prefetch words per lane (default 4096)")
    ap.add_argument("--word-bits", type=int, default=16, help="memory word width (default 16)")
    ap.add_argument("--max-tokens", type=int, default=16, help="longest sequence (default 16)")
    ap.add_argument("--device", choices=sorted(DEVICES), default="LFE5U-85F", help="ECP5 part (default LFE5U-85F)")
    ap.add_argument("--freq", type=float, default=GOAL_MHZ, help="clock constraint in MHz (default 125)")
    ap.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    ap.add_argument("--workdir", type=Path, help="keep the tool files here (default: a temp folder)")
    ap.add_argument("-o", "--output", help="write the report to this JSON file (and a .md beside it)")


def run(args) -> int:
    print(f"synthesising the accelerator of {args.model} (P={args.p} x S={args.s}, {args.lanes} lane(s)) for "
          f"{args.device} at {args.freq:g} MHz (yosys, then nextpnr; tens of minutes) ...", flush=True)
    row = synth_accelerator(args.model, p=args.p, s=args.s, lanes=args.lanes, prefetch=args.prefetch,
                            word_bits=args.word_bits, max_tokens=args.max_tokens, device=args.device,
                            target_mhz=args.freq, workdir=args.workdir, seed=args.seed)
    row["command"] = "bebert " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"LUT4 {row['lut4']} ({row['lut4_share']:.0%})  FF {row['ff']}  EBR {row['ebr']}  MULT18 {row['mult18']}  "
          f"Fmax {row['fmax_mhz']} MHz")
    if args.output:
        save_report(args.output, row, markdown(row))
    return 0
