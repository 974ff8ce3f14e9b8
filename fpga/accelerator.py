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

__all__ = ["AccelTop", "synth_accelerator", "breakdown", "block_category", "markdown", "add_arguments", "run"]

#: TRELLIS_COMB slots of one cell as nextpnr-ecp5 packs it: a CCU2C is two LUT4s with their carry; a
#: TRELLIS_DPR16X4 (16 x 4 distributed RAM) takes four LUT4s as RAM and the two of its write slice
#: (measured: the shipped design's 26,157 LUT4 + 4,041 CCU2C + 2,368 DPR16X4 placed as 50,829 slots).
COMB_SLOTS = {"LUT4": 1, "$lut": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 6}

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


def build_top(model_path, *, p: int = 2, s: int = 32, lanes: int = 2, prefetch: int = 4096, word_bits: int = 16,
              max_tokens: int = 16, kb: int = 4, vw: int = 1):
    """``(model, AccelTop, Accelerator)`` of the W1A1 deployment file ``model_path`` in a configuration."""
    from ..golden.accelerator import AccelSpec, model_layout
    from ..hw.accelerator import Accelerator
    from ..sim.sim_cli import load_model

    model = load_model(model_path)
    spec = AccelSpec.from_int_model(model, p, s, word_bits)
    aw = max(16, (model_layout(spec)["words"] - 1).bit_length())
    acc = Accelerator(spec, lanes=lanes, prefetch=prefetch, max_tokens=min(max_tokens, spec.max_len),
                      addr_width=aw, impl="ecp5", kb=kb, vw=vw)
    return model, AccelTop(acc), acc


def synth_accelerator(model_path, *, p: int = 2, s: int = 32, lanes: int = 2, prefetch: int = 4096,
                      word_bits: int = 16, max_tokens: int = 16, device: str = "LFE5U-85F",
                      target_mhz: float = GOAL_MHZ, workdir: Path | None = None, seed: int = 1,
                      per_block: bool = False, pnr: bool = True, router: str = "router1",
                      bitstream: bool = False, kb: int = 4, vw: int = 1) -> dict:
    """Synthesise the accelerator of the W1A1 deployment file ``model_path``; the JSON row.

    ``per_block`` adds the per-block breakdown (:func:`breakdown`, native yosys); ``pnr=False`` skips the
    flat synthesis and the place and route (no Fmax, no paths); ``bitstream`` packs the routed design
    (``accel_top.bit`` in ``workdir/flat``; out of context, its pins where nextpnr put them)."""
    import tempfile

    if device not in DEVICES:
        raise ValueError(f"unknown ECP5 device {device!r}; known: {', '.join(DEVICES)}")
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bebert-synth-"))
    model, top, acc = build_top(model_path, p=p, s=s, lanes=lanes, prefetch=prefetch, word_bits=word_bits,
                                max_tokens=max_tokens, kb=kb, vw=vw)
    d = model.dims
    row = dict(model=str(model_path), device=device, target_mhz=float(target_mhz),
               dims=dict(hidden=d["hidden_size"], layers=d["num_layers"], heads=d["num_heads"], ffn=d["ffn_size"],
                         members=int(model.members)),
               P=p, S=s, lanes=lanes, prefetch=prefetch, word_bits=word_bits, max_tokens=acc.max_tokens,
               addr_width=acc._addr_width, kb=kb, vw=vw)
    dev = DEVICES[device]
    if per_block:
        bd = breakdown(top, "accel_top", work / "breakdown")
        row["blocks"], row["categories"], row["breakdown_total"] = bd["blocks"], bd["categories"], bd["total"]
        row["breakdown_seconds"] = bd["seconds"]
        pe = bd["categories"].get("pe_array", {}).get("lut4", 0)
        row["pe_lut4"] = pe
        row["pe_share"] = round(pe / max(bd["total"]["lut4"], 1), 4)
    if pnr:
        res = synth_ecp5(top, device=device, target_mhz=target_mhz, workdir=work / "flat", seed=seed,
                         name="accel_top", router=router, bitstream=bitstream)
        row.update(res.as_dict())
        row["mult18"] = res.yosys_cells.get("MULT18X18D", 0)
    else:
        row.update(lut4=row["breakdown_total"]["lut4"] if per_block else None, fmax_mhz=None, worst_paths=[],
                   ebr=row["breakdown_total"]["ebr"] if per_block else None,
                   ff=row["breakdown_total"]["ff"] if per_block else None,
                   mult18=row["breakdown_total"]["dsp"] if per_block else None)
    if row["lut4"] is not None:
        row["lut4_share"] = round(row["lut4"] / dev["lut4"], 3)
        row["ebr_share"] = round(row["ebr"] / dev["ebr"], 3)
    return row


def area_config(row: dict, name: str) -> dict:
    """One ``configs`` entry of ``docs/results/area.json`` from a :func:`synth_accelerator` row."""
    return {"name": name, "params": {k: row[k] for k in ("P", "S", "lanes", "prefetch", "word_bits", "max_tokens")},
            "dims": row["dims"], "device": row["device"], "lut4_total": row["lut4"],
            "lut4_share": row.get("lut4_share"), "fmax_mhz": row.get("fmax_mhz"), "target_mhz": row["target_mhz"],
            "pe_lut4": row.get("pe_lut4"), "pe_share": row.get("pe_share"), "blocks": row.get("blocks", {}),
            "categories": row.get("categories", {}), "breakdown_total": row.get("breakdown_total"),
            "ff": row.get("ff"), "ebr": row.get("ebr"), "mult18": row.get("mult18"),
            "worst_paths": row.get("worst_paths", []), "yosys": row.get("yosys", "native"),
            "bitstream_bytes": row.get("bitstream_bytes"),
            "seconds": {k: row[k] for k in ("synth_seconds", "pnr_seconds", "breakdown_seconds", "pack_seconds")
                        if row.get(k) is not None},
            "command": row["command"]}


def area_markdown(doc: dict) -> str:
    """``docs/results/area.md``: every configuration's totals, its categories and its largest blocks."""
    lines = ["# Area and timing of the integrated accelerator (LFE5U-85F)", "",
             "`lut4` counts nextpnr TRELLIS_COMB slots: LUT4 + 2 per CCU2C (carry) + 6 per TRELLIS_DPR16X4 "
             "(distributed RAM: 4 LUTs as RAM and 2 of the write slice). The per-block figures come from a "
             "`synth_ecp5 -noflatten` run mapped with `abc -lut 4` (each module alone, no optimization across "
             "module boundaries), so their sum differs a little from the flat run's total.", ""]
    lines += ["A lane has one linear engine of P x S (a dual engine: Q/K/V and FFN-in as sign commands, attention "
              "output and FFN-out as the linear + vector op's raw commands), so a lane computes P*S XNOR-popcount "
              "bits a cycle on one PE array.", "",
              "| configuration | P*S (bits a cycle per lane) | LUT4 slots | of the part | PE share | "
              "EBR | Fmax (MHz, post-route) |", "|---|---|---|---|---|---|---|"]
    for c in sorted(doc["configs"], key=lambda c: c["params"]["P"] * c["params"]["S"]):
        pr = c["params"]
        lines.append(f"| {c['name']} | {pr['P'] * pr['S']} | {c['lut4_total']} | {(c['lut4_share'] or 0):.0%} | "
                     f"{(c['pe_share'] or 0):.1%} | {c['ebr']} | {c['fmax_mhz'] if c['fmax_mhz'] else 'not placed'} |")
    if len(doc["configs"]) > 1:
        lines += ["", "![LUT4 slots and PE share against P*S](area.png)"]
    lines.append("")
    for c in doc["configs"]:
        pr = c["params"]
        lines += [f"## {c['name']}", "", f"Produced by `{c['command']}`.", "",
                  "| P x S | lanes | prefetch | LUT4 slots (flat, placed) | per-block sum | PE arrays | PE share | EBR | MULT18 | Fmax (MHz) |",
                  "|---|---|---|---|---|---|---|---|---|---|",
                  f"| {pr['P']} x {pr['S']} | {pr['lanes']} | {pr['prefetch']} | {c['lut4_total']} "
                  f"({(c['lut4_share'] or 0):.0%}) | {(c['breakdown_total'] or {}).get('lut4', '-')} | {c['pe_lut4']} | "
                  f"{(c['pe_share'] or 0):.1%} | {c['ebr']} | {c['mult18']} | {c['fmax_mhz'] if c['fmax_mhz'] else 'not placed'} |",
                  "", "| category | LUT4 slots | FF | LUT RAM (DPR16X4) | EBR | MULT18 |", "|---|---|---|---|---|---|"]
        for k, v in c["categories"].items():
            lines.append(f"| {k} | {v['lut4']} | {v['ff']} | {v['ram']} | {v['ebr']} | {v['dsp']} |")
        lines += ["", "Largest blocks (own cells):", "", "| block | LUT4 slots | FF | LUT RAM | EBR | MULT18 |",
                  "|---|---|---|---|---|---|"]
        for k, v in sorted(c["blocks"].items(), key=lambda kv: -kv[1]["lut4"])[:12]:
            lines.append(f"| `{k}` | {v['lut4']} | {v['ff']} | {v['ram']} | {v['ebr']} | {v['dsp']} |")
        if c["worst_paths"]:
            lines += ["", "Worst paths (nextpnr, post-route):", ""]
            for wp in c["worst_paths"]:
                lines.append(f"- {wp['delay_ns']} ns, {wp['logic_levels']} logic levels, through "
                             f"{' -> '.join(wp['blocks'])} (`{wp['start']}` -> `{wp['end']}`)")
        lines.append("")
    return "\n".join(lines)


def save_area(path, config: dict) -> None:
    """Add (or replace, by name) ``config`` in the area report ``path`` and rewrite its Markdown beside it."""
    import json

    from ..atomic import write_json_atomic, write_text_atomic

    out = Path(path)
    doc = {"configs": []}
    if out.exists():
        try:
            doc = json.loads(out.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{out} is not a valid area report ({exc}); move it away or fix it") from None
        if not isinstance(doc.get("configs"), list):
            raise ValueError(f"{out} has no 'configs' list; it is not an area report")
    doc["configs"] = [c for c in doc["configs"] if c.get("name") != config["name"]] + [config]
    write_json_atomic(out, doc)
    write_text_atomic(out.with_suffix(".md"), area_markdown(doc))
    if len(doc["configs"]) > 1:
        area_plot(doc, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.md')}" + (f" and {out.with_suffix('.png')}" if len(doc["configs"]) > 1
                                                          else ""))


def area_plot(doc: dict, path) -> None:
    """LUT4 slots (split into PE arrays and the rest) and the PE share against P*S; the
    post-route Fmax beside the configurations that were placed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_path

    cs = sorted(doc["configs"], key=lambda c: c["params"]["P"] * c["params"]["S"])
    x = [c["params"]["P"] * c["params"]["S"] for c in cs]
    total = [c["lut4_total"] or 0 for c in cs]
    pe = [c["pe_lut4"] or 0 for c in cs]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    ax.plot(x, total, "o-", label="LUT4 slots, whole accelerator")
    ax.plot(x, pe, "s--", label="of which PE arrays")
    dev = DEVICES.get(cs[0].get("device", "LFE5U-85F"), {}).get("lut4")
    if dev:
        ax.axhline(dev, color="k", lw=0.8)
        ax.axhline(0.65 * dev, color="k", lw=0.8, ls=":")
        ax.text(x[0], dev * 1.01, f"{cs[0].get('device')}: {dev} slots", fontsize=8)
        ax.text(x[0], 0.65 * dev * 1.01, "65% (the edge preset's goal)", fontsize=8)
    for xi, c in zip(x, cs):
        ax.annotate(f"{(c['pe_share'] or 0):.0%} PE" + (f", {c['fmax_mhz']:g} MHz" if c.get("fmax_mhz") else ""),
                    (xi, c["lut4_total"] or 0), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("P*S: XNOR-popcount bits a cycle per lane (each lane holds two engines of P x S)")
    ax.set_ylabel("LUT4 slots (TRELLIS_COMB)")
    ax.set_title("bebert synth accelerator --breakdown: area against array size", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def block_category(name: str) -> str:
    """The kind of block a module of the accelerator's hierarchy is (``enc0.lv.vu`` -> ``vector_unit``)."""
    import re

    parts = name.split(".")
    if name in ("wrapper",):
        return "wrapper"
    if name == "sequencer" or parts[0] == "tags":
        return "sequencer"
    if re.fullmatch(r"lane\d+", parts[0]):          # lane e's own logic: parameter reader, embedding, head
        parts = parts[1:]
        if not parts or re.fullmatch(r"[wt]q\d*", parts[0]):
            return "lane_control"
    if "pe" in parts:
        return "pe_array"
    if "fetch" in parts:
        return "fetch"
    if re.fullmatch(r"pf\d*", parts[0]):
        return "prefetch"
    if "vu" in parts or re.fullmatch(r"vu\d*", parts[0]):
        return "vector_unit"
    if "att" in parts:
        return "attention"
    if "thr" in parts:
        return "threshold"
    if re.fullmatch(r"enc\d*", parts[0]) and len(parts) == 1:
        return "encoder_control"
    return "linear_control"


def breakdown(top, name: str, workdir: Path) -> dict:
    """Per-block resources of ``top``: yosys ``synth_ecp5 -noflatten`` up to the LUT mapping, then ``abc -lut 4``
    per module (``abc9`` and ``synth_ecp5 -noflatten`` to the end hit a yosys assertion on this design), and
    each module's own cells. ``{"blocks": {module: {lut4, ff, ram, ebr, dsp}}, "categories": {...},
    "total": {...}, "seconds"}``; ``lut4`` counts TRELLIS_COMB slots (:data:`COMB_SLOTS`, RAM included), ``ram``
    the DPR16X4 cells. Module names drop the wrapper's prefix: ``sequencer`` is the accelerator's own logic,
    ``lane0`` lane 0's own (parameter reader, embedding, head), ``lane0.enc.lv.vu`` the vector unit of lane 0's
    linear + vector op."""
    from . import yosys as ys

    log, secs = ys.run_script(top, name, Path(workdir), [f"synth_ecp5 -top {name} -noflatten -run begin:map_luts",
                                                          "abc -lut 4", "opt_clean", "stat"],
                              flavour="native", log="breakdown.log")
    blocks = {}
    for mod, cells in ys.parse_stat_modules(log).items():
        if mod in (name, f"{name}.wrap"):
            key = "wrapper"
        elif mod == f"{name}.wrap.block":
            key = "sequencer"
        else:
            key = mod.removeprefix(f"{name}.wrap.block.")
        row = blocks.setdefault(key, {"lut4": 0, "ff": 0, "ram": 0, "ebr": 0, "dsp": 0})
        row["lut4"] += sum(n * COMB_SLOTS.get(c, 0) for c, n in cells.items())
        row["ff"] += cells.get("TRELLIS_FF", 0)
        row["ram"] += cells.get("TRELLIS_DPR16X4", 0)
        row["ebr"] += cells.get("DP16KD", 0)
        row["dsp"] += cells.get("MULT18X18D", 0)
    cats, total = {}, {"lut4": 0, "ff": 0, "ram": 0, "ebr": 0, "dsp": 0}
    for key, row in blocks.items():
        c = cats.setdefault(block_category(key), {"lut4": 0, "ff": 0, "ram": 0, "ebr": 0, "dsp": 0})
        for k, v in row.items():
            c[k] += v
            total[k] += v
    return {"blocks": dict(sorted(blocks.items())), "categories": dict(sorted(cats.items(), key=lambda kv: -kv[1]["lut4"])),
            "total": total, "seconds": round(secs, 1)}


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
    ap.add_argument("--preset", help="a named configuration (bebert presets; default: demo-ecp5's parameters); "
                                     "the options below override it")
    ap.add_argument("--p", type=int, help="PE array output channels per lane (demo-ecp5: 2)")
    ap.add_argument("--s", type=int, help="PE array input bits per cycle (demo-ecp5: 32)")
    ap.add_argument("--lanes", type=int, help="ensemble-parallel lanes (demo-ecp5: 2)")
    ap.add_argument("--prefetch", type=int, help="weight prefetch words per lane (demo-ecp5: 4096)")
    ap.add_argument("--word-bits", type=int, help="memory word width (demo-ecp5: 16)")
    ap.add_argument("--max-tokens", type=int, help="longest sequence (demo-ecp5: 16)")
    ap.add_argument("--kb", type=int, help="Bi-Attention keys per cycle (demo-ecp5: 4)")
    ap.add_argument("--vw", type=int, help="vector-unit channels a cycle (demo-ecp5: 1)")
    ap.add_argument("--device", choices=sorted(DEVICES), help="ECP5 part (default: the preset's, LFE5U-85F)")
    ap.add_argument("--freq", type=float, default=GOAL_MHZ, help="clock constraint in MHz (default 125)")
    ap.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    ap.add_argument("--workdir", type=Path, help="keep the tool files here (default: a temp folder)")
    ap.add_argument("--router", choices=("router1", "router2"), default="router1", help="nextpnr router (default router1)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also synthesise without flattening and report LUT4, FF, LUT RAM, EBR and MULT18 per block "
                         "(native yosys); with -o the JSON is an area report (docs/results/area.json format)")
    ap.add_argument("--no-pnr", action="store_true", help="skip the flat synthesis and place and route (with --breakdown)")
    ap.add_argument("--bitstream", action="store_true",
                    help="pack the routed design into a bitstream with ecppack (accel_top.bit in WORKDIR/flat; out of "
                         "context: no board pins, for size and to show the design packs)")
    ap.add_argument("--name", help="configuration name in the area report (default P{p}xS{s}-E{lanes})")
    ap.add_argument("-o", "--output", help="write the report to this JSON file (and a .md beside it); with "
                                           "--breakdown, add this configuration to an area report")


def run(args) -> int:
    steps = (["per-block breakdown"] if args.breakdown else []) + ([] if args.no_pnr else ["yosys", "nextpnr"])
    if not steps:
        raise ValueError("--no-pnr without --breakdown leaves nothing to do")
    if args.bitstream and args.no_pnr:
        raise ValueError("--bitstream needs the place and route (drop --no-pnr)")
    from ..hw.presets import apply

    preset = apply(args, ("p", "s", "lanes", "prefetch", "word_bits", "max_tokens", "kb", "vw"),
                   need_built="bebert synth accelerator")
    args.device = args.device or "LFE5U-85F"
    print(f"synthesising the accelerator of {args.model} (P={args.p} x S={args.s}, {args.lanes} lane(s)) for "
          f"{args.device} at {args.freq:g} MHz ({', then '.join(steps)}; minutes to tens of minutes) ...", flush=True)
    row = synth_accelerator(args.model, p=args.p, s=args.s, lanes=args.lanes, prefetch=args.prefetch,
                            word_bits=args.word_bits, max_tokens=args.max_tokens, device=args.device,
                            target_mhz=args.freq, workdir=args.workdir, seed=args.seed, per_block=args.breakdown,
                            pnr=not args.no_pnr, router=args.router, bitstream=args.bitstream, kb=args.kb,
                            vw=args.vw)
    row["command"] = "bebert " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if row["lut4"] is not None:
        print(f"LUT4 {row['lut4']} ({row['lut4_share']:.0%})  FF {row['ff']}  EBR {row['ebr']}  MULT18 {row['mult18']}  "
              f"Fmax {row['fmax_mhz'] if row['fmax_mhz'] else '(not placed)'} MHz")
    if args.breakdown:
        print(f"PE arrays {row['pe_lut4']} LUT4 slots, {row['pe_share']:.1%} of the per-block sum "
              f"{row['breakdown_total']['lut4']}")
        for k, v in row["categories"].items():
            print(f"  {k:16} {v['lut4']:7} LUT4  {v['ff']:7} FF  {v['ram']:5} LUTRAM  {v['ebr']:4} EBR  {v['dsp']:3} MULT18")
    if args.output:
        if args.breakdown:
            save_area(args.output, area_config(row, args.name or (preset.name if preset else
                                                                  f"P{args.p}xS{args.s}-E{args.lanes}")))
        else:
            save_report(args.output, row, markdown(row))
    return 0
