"""Named accelerator configurations (``bebert presets``; ``--preset NAME`` on ``bebert sim`` and ``bebert synth
accelerator``; the configuration of ``bebert demo``; the accelerator rows of ``bebert bench``).

A preset is one config object: the array shape and lanes, the weight memory it assumes (word width, bits per
cycle, read latency, prefetch), the longest sequence and the FPGA part. ``built`` says whether the RTL of
the preset's memory system exists: ``demo-ecp5`` streams its weights from a memory port (the ULX3S SDRAM's
rate) and is built, simulated and placed; the others are targets of the silicon issue whose memory system
(on-chip weight store, SDRAM controller, iCE40 top) is not built yet, so only the cycle model runs them and
the synthesis refuses them by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Preset", "PRESETS", "get", "HW_OPTIONS", "apply"]


@dataclass(frozen=True)
class Preset:
    name: str
    device: str
    p: int                 # PE array output channels per lane
    s: int                 # PE array input bits per cycle
    lanes: int             # ensemble-parallel lanes
    prefetch: int          # weight prefetch words per lane (0: none)
    word_bits: int         # memory word width
    bits_per_cycle: float  # weight-stream bandwidth per cycle
    latency: int           # memory read latency (cycles)
    max_tokens: int        # longest sequence the buffers hold
    weights: str           # where the weights live
    built: bool            # the preset's memory system exists in RTL (sim and synth run it)
    what: str
    clock_mhz: float = 125.0   # clock assumed where no post-route Fmax is measured (the preset's goal)
    onchip_kbit: int = 0       # on-chip memory left for weights (Kbit; 0: weights off chip): see the presets' text
    model: str = ""            # the shipped deployment file sized for the preset (relative to the repository)
    kb: int = 4                # Bi-Attention keys per cycle (its 2 * kb * d product cells)
    vw: int = 1                # channels a beat through the vector unit (LayerNorm) and the layer outputs

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("demo-ecp5", "LFE5U-85F", p=2, s=32, lanes=2, prefetch=4096, word_bits=16, bits_per_cycle=12.8, latency=8,
           max_tokens=16, weights="streamed from a memory port at the ULX3S SDRAM's rate", built=True,
           what="the shipped demo configuration: 2 lanes of P x S = 2 x 32, 4096-word weight prefetch per lane, "
                "16-bit words at 12.8 bits/cycle (the ULX3S SDRAM), read latency 8",
           model="checkpoints/sst2-bebert-w1a1-m2.safetensors"),
    Preset("edge-ecp5", "LFE5U-85F", p=32, s=128, lanes=2, prefetch=4096, word_bits=4096, bits_per_cycle=8192.0,
           latency=2, max_tokens=128, weights="on chip (EBR), one 4096-bit tile per lane per cycle", built=False,
           what="target: 2 lanes of P x S = 32 x 128 (4096 XNOR-popcount bits per lane), 16 attention keys and 4 "
                "LayerNorm channels a cycle (kb, vw), weights on chip: not built "
                "(no on-chip weight store yet). Weights get the LFE5U-85F's 208 EBR (3,744 Kbit) less the 92 EBR that "
                "the built design's buffers take (demo-ecp5, placed: 1,656 Kbit; at 128 tokens they can only grow): "
                "2,088 Kbit, which holds a 256/2 student or a pair of 128/2 or 128/4 students but not the 256/2 pair "
                "(3,511 Kbit) nor the full-width ensemble (21.6 Mbit); the word and position tables are read per "
                "token from off-chip memory (bebert pareto). Logic: with one dual linear engine a lane the 32 x 128 "
                "pair synthesizes to 110% of the part's LUT4 slots at 16 tokens (92,131; 16 x 256, the same P*S, "
                "87%), so it does not fit yet either (docs/results/area.md)",
           clock_mhz=125.0, onchip_kbit=(208 - 92) * 18, model="checkpoints/sst2-w1a1-h256-l2-m1.safetensors",
           kb=16, vw=4),
    Preset("tiny-ice40", "iCE40UP5K", p=2, s=32, lanes=1, prefetch=0, word_bits=64, bits_per_cycle=64.0,
           latency=2, max_tokens=64, weights="on chip (SPRAM), 64 bits per cycle from the four 16-bit SPRAMs",
           built=False, clock_mhz=40.0, onchip_kbit=4 * 256, model="checkpoints/sst2-w1a1-h128-l2-m2.safetensors",
           what="target: one lane of P x S = 2 x 32 fed at 64 bits/cycle by the UP5K's four SPRAMs, which hold the "
                "weights (1,024 Kbit: a pair of 128/2 students, members in turn; the 120 Kbit of EBR left for "
                "buffers), 40 MHz assumed: not built (no iCE40 top, and the design's logic is several times the "
                "UP5K's 5,280 LUT4)"),
)}

#: The hardware options a preset sets (argparse ``dest`` names); where no preset is named, :func:`apply` takes
#: the demo configuration's.
HW_OPTIONS = ("p", "s", "lanes", "prefetch", "word_bits", "bits_per_cycle", "latency", "max_tokens", "kb", "vw")


def get(name: str) -> Preset:
    """The preset ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)} (bebert presets lists them)")
    return PRESETS[name]


def apply(args, options=HW_OPTIONS, *, need_built: str | None = None) -> Preset | None:
    """Fill the hardware options of ``args`` that the user left unset (``None``) from ``args.preset``, or from
    ``demo-ecp5`` where no preset is named; options the user gave win. ``need_built``: the command's name, to
    refuse a preset whose memory system is not built. Returns the preset named (or ``None``)."""
    name = getattr(args, "preset", None)
    pr = get(name) if name else PRESETS["demo-ecp5"]
    if name and need_built and not pr.built:
        raise ValueError(f"preset {name}: {need_built} needs its memory system in RTL, which is not built "
                         f"({pr.weights}); bebert perf and bebert bench model it")
    for opt in options:
        if getattr(args, opt, None) is None and hasattr(pr, opt):
            setattr(args, opt, getattr(pr, opt))
    if name and hasattr(args, "device") and getattr(args, "device", None) is None:
        args.device = pr.device
    return pr if name else None


def table() -> str:
    """The presets as a Markdown table (``bebert presets``)."""
    lines = ["| preset | device | P x S | lanes | keys/cycle | vector channels/cycle | prefetch | word bits | bits/cycle | "
             "latency | max tokens | clock (assumed) | on-chip weight memory | RTL | weights |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in PRESETS.values():
        lines.append(f"| {p.name} | {p.device} | {p.p} x {p.s} | {p.lanes} | {p.kb} | {p.vw} | {p.prefetch} | {p.word_bits} | "
                     f"{p.bits_per_cycle:g} | {p.latency} | {p.max_tokens} | {p.clock_mhz:g} MHz | "
                     f"{f'{p.onchip_kbit:,} Kbit' if p.onchip_kbit else 'off chip'} | {'built' if p.built else 'not built'} | "
                     f"{p.weights} |")
    return "\n".join(lines)


def add_parser(sub) -> None:
    """``bebert presets``."""
    import argparse

    p = sub.add_parser("presets", help="the named accelerator configurations (--preset NAME elsewhere)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import json

    if args.json:
        print(json.dumps({k: v.as_dict() for k, v in PRESETS.items()}, indent=2))
        return 0
    print(table())
    print()
    for p in PRESETS.values():
        print(f"{p.name}: {p.what}." + (f" Model sized for it: {p.model}." if p.model else ""))
    return 0
