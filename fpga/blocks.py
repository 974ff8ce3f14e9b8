"""ECP5 synthesis of the threshold/sign unit, the Bi-Attention unit and the vector unit.

Each block is synthesised out of context in a registered wrapper (as the PE
array in :mod:`bebert.fpga.synth`): every input payload is loaded from a few
pins through a shift register, every stream handshake is registered, and the
output payload leaves through a loadable shift register, so the figures are
register to register and nothing is optimised away. The wrapper's cost is
included.

``python -m bebert.fpga.blocks`` synthesises the blocks at their default
parameters and writes ``docs/results/hw_blocks.json``
(``{"block": {"lut4", "ff", "ebr", "fmax_mhz", "params", ...}}``) and
``docs/hw-blocks.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..atomic import write_json_atomic, write_text_atomic
from .synth import DEVICES, RegisteredWrapper, synth_ecp5

__all__ = ["DEFAULTS", "SMALL", "synth_threshold", "synth_attention", "synth_vector", "synth_block", "markdown",
           "main"]

GOAL_MHZ = 125.0

#: Default parameters: the PE array's P = 16 and acc_width for max_k = 1536 (the FFN width of
#: MiniLM-L6-H384); its head size d = 32 and the 128-token sequences of the demo.
DEFAULTS = {
    "threshold": {"p": 16, "width": 12, "max_channels": 1536, "word_bits": 64},
    "attention": {"d": 32, "max_len": 128, "kb": 16, "impl": "ecp5"},
    "vector": {"max_h": 384, "max_k": 1536},
    "vector_vw4": {"max_h": 384, "max_k": 1536, "vw": 4},
    "fetch": {"word_bits": 16, "tile_bits": 4096, "addr_width": 24, "max_tiles": 4096, "depth": 2,
              "chunk_bits": 64, "impl": "ecp5"},
}

#: Small configurations for the ``synth`` tests (seconds each; ``tests/baselines/hw_blocks_small.json``).
SMALL = {
    "threshold": {"p": 8, "width": 10, "max_channels": 128, "word_bits": 64},
    "attention": {"d": 16, "max_len": 32, "kb": 4, "impl": "ecp5"},
    "vector": {"max_h": 32, "max_k": 64},
    "vector_vw4": {"max_h": 32, "max_k": 64, "vw": 4},
    "fetch": {"word_bits": 16, "tile_bits": 256, "addr_width": 16, "max_tiles": 64, "depth": 2,
              "chunk_bits": 64, "impl": "ecp5"},
}


def _row(res, params: dict, extra: dict | None = None) -> dict:
    row = {"lut4": res.lut4, "ff": res.ff, "ebr": res.ebr, "fmax_mhz": res.fmax_mhz, "params": params}
    row.update(extra or {})
    row.update({"device": res.device, "target_mhz": res.target_mhz, "yosys_cells": res.yosys_cells,
                "synth_seconds": res.synth_seconds, "pnr_seconds": res.pnr_seconds})
    return row


def synth_threshold(p: int = 16, width: int = 12, max_channels: int = 1536, word_bits: int = 64, *,
                    device: str = "LFE5U-85F", target_mhz: float = GOAL_MHZ, workdir: Path | None = None,
                    seed: int = 1) -> dict:
    """Synthesise a :class:`~bebert.hw.threshold.ThresholdUnit` in its wrapper; the JSON report row."""
    from ..hw.threshold import ThresholdUnit

    block = ThresholdUnit(p=p, width=width, max_channels=max_channels, word_bits=word_bits)
    res = synth_ecp5(RegisteredWrapper(block, inputs=("t_stream", "i_stream")), device=device, target_mhz=target_mhz,
                     workdir=workdir, seed=seed, name="threshold_top")
    params = {"p": p, "width": width, "max_channels": max_channels, "word_bits": word_bits}
    return _row(res, params, {"channels_per_cycle": p})


def synth_attention(d: int = 32, max_len: int = 128, kb: int = 16, impl: str = "ecp5", kv_ram: str | None = None, *,
                    device: str = "LFE5U-85F", target_mhz: float = GOAL_MHZ, workdir: Path | None = None,
                    seed: int = 1) -> dict:
    """Synthesise a :class:`~bebert.hw.attention.BiAttention` in its wrapper; the JSON report row.

    ``impl="ecp5"`` (default) is the netlist with the popcount counters as
    ``LUT4`` primitives, the one ``tests/test_attention_cocotb.py`` runs in Verilator.
    """
    from ..hw.attention import BiAttention

    block = BiAttention(d=d, max_len=max_len, kb=kb, impl=impl, kv_ram=kv_ram)
    res = synth_ecp5(RegisteredWrapper(block), device=device, target_mhz=target_mhz, workdir=workdir, seed=seed,
                     name="attention_top")
    params = {"d": d, "max_len": max_len, "kb": kb, "impl": impl}
    if kv_ram:
        params["kv_ram"] = kv_ram
    return _row(res, params, {"cells": 2 * kb * d, "lut4_per_cell": round(res.lut4 / (2 * kb * d), 3),
                              "cycles_per_head_at_max_len": block.cycles_per_head(max_len),
                              "latency": block.latency})


def synth_vector(max_h: int = 384, max_k: int = 1536, vw: int = 1, *, device: str = "LFE5U-85F",
                 target_mhz: float = GOAL_MHZ, workdir: Path | None = None, seed: int = 1) -> dict:
    """Synthesise a :class:`~bebert.hw.vector.VectorUnit` (model-default formats, ``vw`` channels a beat) in its
    wrapper; the JSON row."""
    from ..golden.vector import VectorFormats
    from ..hw.vector import VectorUnit

    block = VectorUnit(max_h=max_h, max_k=max_k, fmts=VectorFormats.default(max_h), vw=vw)
    res = synth_ecp5(RegisteredWrapper(block, inputs=("p_stream", "i_stream")), device=device,
                     target_mhz=target_mhz, workdir=workdir, seed=seed, name="vector_top")
    return _row(res, {"max_h": max_h, "max_k": max_k, **({"vw": vw} if vw != 1 else {})},
                {"mult18": res.yosys_cells.get("MULT18X18D", 0), "latency": block.latency,
                 "stats_cycles": block.stats_cycles, "token_cycles_at_max_h": block.token_cycles(max_h),
                 "token_period_at_max_h": block.token_period(max_h)})


def synth_fetch(word_bits: int = 16, tile_bits: int = 4096, addr_width: int = 24, max_tiles: int = 4096,
                depth: int = 2, chunk_bits: int = 64, impl: str = "ecp5", *, device: str = "LFE5U-85F",
                target_mhz: float = GOAL_MHZ,
                workdir: Path | None = None, seed: int = 1) -> dict:
    """Synthesise a :class:`~bebert.hw.fetch.WeightFetch` in its wrapper; the JSON row.

    The defaults are the ULX3S SDRAM's 16-bit words and the 16 x 256 PE array's 4096-bit tiles.
    """
    from ..hw.fetch import WeightFetch

    block = WeightFetch(word_bits=word_bits, tile_bits=tile_bits, addr_width=addr_width, max_tiles=max_tiles,
                        depth=depth, chunk_bits=chunk_bits, impl=impl)
    res = synth_ecp5(RegisteredWrapper(block, inputs=("c_stream", "rsp_stream"), outputs=("o_stream", "req_stream")),
                     device=device,
                     target_mhz=target_mhz, workdir=workdir, seed=seed, name="fetch_top")
    return _row(res, {"word_bits": word_bits, "tile_bits": tile_bits, "addr_width": addr_width,
                      "max_tiles": max_tiles, "depth": depth, "chunk_bits": chunk_bits, "impl": impl},
                {"words_per_tile": block.words_per_tile})


SYNTH = {"threshold": synth_threshold, "attention": synth_attention, "vector": synth_vector, "fetch": synth_fetch,
         "vector_vw4": synth_vector}


def synth_block(block: str, params: dict | None = None, **kw) -> dict:
    """Synthesise ``block`` (a key of ``SYNTH``) with ``params`` over its defaults."""
    if block not in SYNTH:
        raise ValueError(f"unknown block {block!r}; choose from {', '.join(SYNTH)}")
    return SYNTH[block](**{**DEFAULTS[block], **(params or {})}, **kw)


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


NOTES = """## The blocks

**Threshold/sign unit** (`hw/threshold.py`, golden `golden/threshold.py`). `P` signed accumulators per
beat (the PE array's `o_stream` payload, so the two connect directly), one integer threshold `T` and
polarity per channel: `bit = y >= T` for `pol = 1`, `y < T` for `pol = 0` (`docs/arithmetic.md`
section 4); `(T, pol) = (min, 0)` is a constant 0 (padding channels, masked attention keys). The
table (`ceil(max_channels / P)` groups of `P` thresholds and polarities) is written through
`t_stream`, one group per beat; the load flagged `last` sets the vector length. Output: 64-bit
words, vector bit `k` = bit `k % 64` of word `k // 64`, `last` on a vector's final word.
Free-running 4-stage pipeline, credit backpressure, one beat per cycle.

**Bi-Attention unit** (`hw/attention.py`, golden `golden/attention.py`). Its own datapath, not the PE
array: `kb` keys per cycle; `kb` XNOR-popcount trees of `d` bits give the scores, the bool rule
(`popcount >= d // 2 + 1`, i.e. score > 0, and the key's mask bit) gives `kb` attention bits that feed
`d` AND-popcount trees of `kb` bits (one per value column) and a popcount of the attention bits; the
accumulators give `C = 2*popcount(A & v_c) - popcount(A)` and the sign. The chunk of attention bits the
scores produce is the chunk the context consumes, so no `n x n` attention buffer exists. A head of `n`
keys takes `n` cycles to load (K, V and mask bit per beat into `kb` banks) and `ceil(n / kb)` cycles
per query; any `n <= max_len` (the number of K/V beats).

The K/V banks must deliver `kb * (2d + 1)` bits per cycle; yosys puts them in LUT RAM
(`TRELLIS_DPR16X4`, which nextpnr counts as about 8 TRELLIS_COMB each: some 2,200 of the attention
unit's LUT4 at the default parameters). The read bandwidth, not the capacity, sets that cost: up to
16 rows per bank (`max_len <= 16 * kb`) cost the same. `BiAttention(kv_ram="block")` forces EBR
instead; measured once at the default parameters (`synth_attention(kv_ram="block")`): 5,293 LUT4,
2,051 FF, 32 EBR, **70.2 MHz**, because the EBR's clock-to-out (5.8 ns) then feeds the popcount
counters directly. An output register stage after the banks would be needed to use EBR.

**Vector unit** (`hw/vector.py`, golden `golden/vector.py`). One channel per cycle: the PE array's
popcount `acc` and the residual code `x`; per-channel `alpha`, bias, LayerNorm gain and shift in two
EBR tables written through `p_stream` (the `last` beat sets `H` and `K`). Pass 1 computes
`y = alpha*(2*acc - K) + bias` (floored, saturated), the residual sum `s = y + x` (saturated), writes
`s` into one bank of a two-bank token buffer and sums `S` and `Q = sum s^2`. A serial statistics engine
(no multiplier) computes `M = H*Q - S^2 + E` by shift-and-add, normalizes it two bits per cycle and runs
the bit-serial reciprocal square root with incrementally updated products, three cycles per result bit.
Pass 2 reads the bank back: `d = H*s - S`, `n = (d*R) >> shift`, `out = sat(n*g + beta)` and the sign
bit (`docs/arithmetic.md` sections 3, 4, 6, 7). The wide products are split into 18x18 partial
products registered before their sum. Pass 1 of a token overlaps the statistics and pass 2 of the two
before it (three banks). The normalization always takes its worst-case steps, so the engine's time is the
same for every token. With `vw > 1` (`vector_vw4`) both passes take `vw` channels a cycle (`vw` copies of
their datapath, the tables and the token buffer in `vw` memories, S and Q through adder trees).

Timing margins are thin: the attention unit's critical path is a 15-input group counter of a context
tree (6 LUT levels, mostly routing), the threshold unit's is the table EBR's clock-to-out into the
register beside the data. The table holds nextpnr seed 1; the attention unit at seed 2 reached
127.8 MHz (measured once).

**Weight fetch unit** (`hw/fetch.py`, golden `golden/fetch.py`). Word reads from external memory
(`req_stream` addresses, `rsp_stream` words in request order, any latency) assembled into tiles of
`tile_bits` (4096 = the 16 x 256 PE array's weights per fold) for the consumer. A credit of
`depth * words_per_tile` word slots lets requests run up to `depth` tiles ahead of the consumer, so
the memory streams the next tiles while the current one is in use (double buffering at `depth=2`);
responses always find room, so `rsp_stream.ready` is constant. In simulation a memory model with a
latency and a bandwidth in bits per cycle serves the deployment file's packed words
(`sim/memory.py`, `sim/tb_fetch.py`); tests show the total time stays near
max(fetch, compute) + latency instead of their sum. Every wide register (the 4096-bit shift
register that assembles a tile and the `depth` tile registers ahead of the output) is split into
64-bit chunks, each with its own copy of the enable: registered copies of the response valid,
per-chunk copies of the tile-complete strobe (made from that chunk's valid copy and a copy, per 8
chunks, of "the next word completes a tile"), and LUT copies of each stage's load, all kept as
ECP5 primitives so that yosys does not merge them back. History at the default 4096-bit tile
(measured, seed 1): 52.1 MHz with one valid net enabling the whole assembler and a 4096-bit FIFO;
115.0 MHz with per-chunk copies but one `complete` net feeding 64 copies across the die; the
figure in the table with the two-level copies.

## Verification

| block | Amaranth simulator | cocotb + Verilator |
|---|---|---|
| threshold | `tests/test_threshold_sim.py`: random tables and vectors with random stalls \
(P = 1, 4, 8, 16; 8- and 64-bit words), extremes, constant/masked channels, the attention table, \
golden word order, throughput, the PE array's `o_stream` connected straight in (attention rows) \
| `sim/tb_threshold.py`, `tests/test_threshold_cocotb.py` (P = 16, 12-bit), checker self-test |
| fetch | `tests/test_fetch_sim.py`: every word/tile width ratio, random stalls, zero-tile commands, \
overlap of fetch and compute, memory-image layout | `sim/tb_fetch.py`, `tests/test_fetch_cocotb.py` (a tiny \
exported model as the memory image, SDRAM-like 12.8 bits/cycle), checker self-test |
| attention | `tests/test_attention_sim.py`: heads of varying n back to back with random stalls \
(odd d, kb = 1, kb > max_len), ties, balanced (C = 0), all masked, padded keys, throughput \
| `sim/tb_attention.py`, `tests/test_attention_cocotb.py` (d = 32, the `ecp5` netlist), checker self-test |
| vector | `tests/test_vector_sim.py`: random tables and tokens with random stalls (H = 1 .. 40, K = 1 .. 1536), \
saturation at every stage, zero and tiny variance, extreme codes, other formats, rate and latency; \
`tests/test_vector_golden.py`: the golden function reproduces `golden/infer.py`'s taps \
| `sim/tb_vector.py`, `tests/test_vector_cocotb.py` (H = 384, K = 1536), throughput, checker self-test |
"""


def markdown(rows: dict) -> str:
    """The ``docs/hw-blocks.md`` page for the report rows."""
    lines = ["# Compute blocks: ECP5 synthesis", "",
             "Out-of-context yosys (`synth_ecp5 -abc9`) + nextpnr-ecp5 runs of each block in a registered wrapper "
             "(`bebert.fpga.synth.RegisteredWrapper`: shift-register loader and unloader, registered handshakes; "
             "its cost is included). LUT4 counts nextpnr's TRELLIS_COMB cells (LUT4s plus carry and LUTRAM halves). "
             f"Goal: >= {GOAL_MHZ:g} MHz post-route at the default parameters.", "",
             "| block | parameters | LUT4 | FF | EBR | Fmax (MHz) | goal |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        ok = "met" if row["fmax_mhz"] >= GOAL_MHZ else "**missed**"
        lines.append(f"| {name} | {_fmt_params(row['params'])} | {row['lut4']} | {row['ff']} | {row['ebr']} | "
                     f"{row['fmax_mhz']} | {ok} |")
    lines.append("")
    for name, row in rows.items():
        cells = ", ".join(f"{k} {v}" for k, v in row.get("yosys_cells", {}).items())
        lines.append(f"- **{name}** on {row['device']} (constraint {row['target_mhz']:g} MHz): yosys cells {cells}; "
                     f"synthesis {row['synth_seconds']} s, place and route {row['pnr_seconds']} s.")
        if name == "attention":
            lines.append(f"  {row['cells']} product cells (2 x kb x d): {row['lut4_per_cell']} LUT4 per cell with "
                         f"the wrapper; a head of n = max_len keys and queries takes "
                         f"{row['cycles_per_head_at_max_len']} cycles (n loads + n * ceil(n / kb) chunks).")
        if name == "threshold":
            lines.append(f"  One beat of {row['channels_per_cycle']} accumulators per cycle.")
        if name in ("vector", "vector_vw4"):
            h, vw = row["params"]["max_h"], row["params"].get("vw", 1)
            lines.append(f"  {row['mult18']} MULT18X18D. {vw} channel(s) per cycle in and out; a token of H = {h} "
                         f"channels: last result {row['token_cycles_at_max_h']} cycles after its first beat "
                         f"(statistics engine {row['stats_cycles']} cycles, pass-2 latency {row['latency']}); "
                         f"sustained {row['token_period_at_max_h']:g} cycles per token "
                         f"({h / row['token_period_at_max_h']:.2f} channels per cycle).")
    commands = sorted({row.get("command", "python -m bebert.fpga.blocks") for row in rows.values()})
    lines += ["", "Produced by " + ", ".join(f"`{c}`" for c in commands) + ".", "", NOTES]
    return "\n".join(lines)


DESCRIPTION = ("Synthesise the threshold, Bi-Attention and vector units for ECP5 in registered wrappers and write "
               "the JSON and Markdown reports.")


def add_arguments(ap) -> None:
    ap.add_argument("blocks", nargs="*", default=list(SYNTH), help="blocks to synthesise (default: all)")
    ap.add_argument("--device", choices=sorted(DEVICES), default="LFE5U-85F")
    ap.add_argument("--freq", type=float, default=GOAL_MHZ, help="clock constraint in MHz")
    ap.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    ap.add_argument("--workdir", type=Path, help="keep the tool files here (one folder per block)")
    ap.add_argument("--small", action="store_true",
                    help="the small test configurations (default output tests/baselines/hw_blocks_small.json, no page)")
    ap.add_argument("--json", type=Path, help="report (default docs/results/hw_blocks.json)")
    ap.add_argument("--md", type=Path, help="page (default docs/hw-blocks.md; none with --small)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bebert.fpga.blocks", description=DESCRIPTION)
    add_arguments(ap)
    args = ap.parse_args(argv)
    command = "python -m bebert.fpga.blocks " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    return run(args, command.strip())


def run(args, command: str) -> int:
    """Synthesise ``args.blocks`` and merge their rows into the reports; ``command`` is recorded in them."""
    for block in args.blocks:
        if block not in SYNTH:
            raise ValueError(f"unknown block {block!r}; choose from {', '.join(SYNTH)}")
    if args.json is None:
        args.json = Path("tests/baselines/hw_blocks_small.json" if args.small else "docs/results/hw_blocks.json")
    if args.md is None and not args.small:
        args.md = Path("docs/hw-blocks.md")
    configs = SMALL if args.small else DEFAULTS
    rows = json.loads(args.json.read_text()) if args.json.exists() else {}
    for block in args.blocks:
        print(f"synthesising {block} ({_fmt_params(configs[block])}) for {args.device} at {args.freq:g} MHz ...",
              flush=True)
        row = synth_block(block, configs[block], device=args.device, target_mhz=args.freq, seed=args.seed,
                          workdir=args.workdir / block if args.workdir else None)
        row["command"] = command
        print(f"  LUT4 {row['lut4']}  FF {row['ff']}  EBR {row['ebr']}  Fmax {row['fmax_mhz']} MHz", flush=True)
        rows[block] = row
        write_json_atomic(args.json, rows)
        if args.md:
            write_text_atomic(args.md, markdown(rows))
    print(f"wrote {args.json}" + (f" and {args.md}" if args.md else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
