"""cocotb testbench of the whole W1A1 :class:`bebert.hw.accelerator.Accelerator` in Verilator.

The Accelerator runs inside a small Verilog wrapper (:func:`wrapper_verilog`, toplevel ``accel_tb``) that
holds the model's memory image and the memory model, so no Python runs per cycle while an inference
computes: the image is loaded with ``$readmemh`` (file ``accel_image.hex`` in the simulator's working
folder, a link to the ``image`` file of the configuration, written by :func:`image_file`), and the
memory answers reads in request order with the timing rule of :class:`bebert.sim.memory.MemoryTiming`
(a read requested in cycle ``t`` is answered at ``ceil(max(t + latency, previous due + word_bits /
bits_per_cycle))``, the interval in 16.16 fixed point) -- the rule of the cocotb
:class:`bebert.sim.tb_fetch.MemoryModel`, which answers one cycle sooner than
:func:`bebert.sim.memory.amaranth_memory` for the same ``latency``. The wrapper also counts cycles
(``tb_cycle``) and memory reads (``mem_reads``) and flags reads outside the image or a queue overflow
(``mem_error``). Python only drives the input beats, the command and the (few) output beats.

Configuration (``BEBERT_TB``): ``model`` (deployment file), ``p``, ``s``, ``word_bits``, ``max_tokens``,
``addr_width``, ``image`` (hex file of :func:`image_file`), ``latency``, ``bits_per_cycle``, ``jobs`` (list
of ``{ids, types, length, stall, idle}``: ``stall`` the output backpressure probability, ``idle`` input
bubbles), ``reset_after`` (cycles after job 0's command at which the DUT is reset; job 0 is then dropped),
``check_cycles`` (compare jobs without backpressure with :func:`bebert.golden.accelerator.expected_cycles`),
``strict`` (default true: any disagreement fails the test; false: only reported), ``corrupt_expected``
(index of an expected output beat to falsify, for the checker self-test), ``report`` (JSON path), ``seed``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, Timer

from ..golden.accelerator import AccelSpec, expected_outputs, param_words
from ..golden.format import load_int_model
from ..hw.accelerator import Accelerator
from .tb_common import load_config

__all__ = ["wrapper_verilog", "build_accelerator", "image_file", "build_name", "run_inference", "PERIOD_NS"]

PERIOD_NS = 10
QUEUE_DEPTH = 64
#: Verilator and C++ options of the accelerator builds (part of the build folder's hash). cocotb's runner
#: passes ``--public-flat-rw`` (every signal visible to VPI, which keeps Verilator from optimizing them
#: away); the testbench reads only the wrapper's ports, so ``--no-public-flat-rw`` takes it back, and the
#: model's C++ is compiled with ``-O2`` instead of Verilator's default ``-Os`` (through ``MAKEFLAGS``), its
#: functions split at 2000 statements (gcc spends minutes on one huge evaluation function otherwise).
BUILD_FLAGS = ("--no-public-flat-rw", "--output-split-cfuncs", "2000", "OPT_FAST=-O2")


def queue_depth(dut) -> int:
    """Reads the memory model must hold in flight: the layer engines' fetch units keep ``fetch_depth``
    tiles of ``ceil(P*S / word_bits)`` words requested, the parameter reader ``reader_depth`` words, the
    weight prefetch its ``inflight`` reads (with several lanes, the arbiter's ``tag_depth`` bounds them all); a power of two with a 2x margin (an overflow sets
    ``mem_error``)."""
    sp = dut.spec
    need = max(dut._fetch_depth * -(-sp.p * sp.s // sp.word_bits), dut._reader_depth, dut.prefetch_inflight)
    if dut.lanes > 1:            # the shared port's tag FIFO bounds the reads in flight
        need = dut._tag_depth
    return max(QUEUE_DEPTH, 1 << (2 * need - 1).bit_length())


# --------------------------------------------------------------------------- host side: wrapper, build, image

def _ports(dut):
    """``(name, direction, width)`` of the component's ports (flattened signature)."""
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import Flow

    out = []
    for path, member, _value in dut.signature.flatten(dut):
        name = "__".join(str(p) for p in path)
        out.append((name, "input" if member.flow == Flow.In else "output", Shape.cast(member.shape).width))
    return out


def wrapper_verilog(dut, inner: str = "accelerator", top: str = "accel_tb") -> str:
    """Verilog of the testbench toplevel: ``inner`` (the Accelerator) plus the image memory and its timing."""
    ports = _ports(dut)
    aw = dut._addr_width
    wb = dut.spec.word_bits
    decl = ["input wire clk", "input wire rst"]
    conn = [".clk(clk)", ".rst(rst)"]
    for name, d, w in ports:
        rng = f"[{w - 1}:0] " if w > 1 else ""
        if name.startswith(("req_stream", "rsp_stream", "tap_")):
            continue
        decl.append(f"{d} wire {rng}{name}")
        conn.append(f".{name}({name})")
    lanes, yb, vw = dut.lanes, dut.spec.fmt["layernorm"].bits, dut.vw
    conn += [".tap_valid(tap_valid)", ".tap_y(tap_y)"]
    # one signed wire per lane and slot: Verilator printed $signed(tap_y[15:0]) with the neighbouring lane's bits
    # above; a lane's slots in channel order, one line each
    slots = [(e, j, e * vw + j) for e in range(lanes) for j in range(vw)]
    tap_wires = "\n".join(f"  wire signed [{yb - 1}:0] tap_y{i} = tap_y[{(i + 1) * yb - 1}:{i * yb}];"
                           for _, _, i in slots)
    tap_writes = "\n".join(f"      if (tap_valid[{i}]) $fwrite(tapf, \"%0d %0d\\n\", {e}, tap_y{i});"
                           for e, _, i in slots)
    conn += [".req_stream__valid(req_valid)", ".req_stream__ready(1'b1)", ".req_stream__payload(req_addr)",
             ".rsp_stream__valid(rsp_valid)", ".rsp_stream__ready(rsp_ready)", ".rsp_stream__payload(rsp_data)"]
    decl += ["input wire mem_load", "input wire [31:0] mem_words", "input wire [15:0] mem_latency",
             "input wire [31:0] mem_interval", "output reg mem_error", "output reg [31:0] mem_reads",
             "output reg [31:0] tb_cycle"]
    depth = queue_depth(dut)
    qb = (depth - 1).bit_length()
    # the ports stay visible to VPI (cocotb) when the build drops --public-flat-rw (BUILD_FLAGS)
    decl = [f"{d} /*verilator public_flat_rw*/" for d in decl]
    return f"""// generated by bebert.sim.tb_accelerator.wrapper_verilog: {inner} + image memory + memory timing
module {top} (
  {(',' + chr(10) + '  ').join(decl)}
);
  wire req_valid;
  wire [{aw - 1}:0] req_addr;
  wire rsp_valid;
  wire rsp_ready;
  wire [{wb - 1}:0] rsp_data;
  wire [{lanes * vw - 1}:0] tap_valid;
  wire [{lanes * vw * yb - 1}:0] tap_y;
{tap_wires}
  // every activation-buffer write of every lane (the layer taps), "lane code" per line, flushed with each
  // output beat and in reset; the testbench compares them with the golden model's taps
  integer tapf;
  initial tapf = $fopen("accel_taps.txt", "w");
  always @(posedge clk) begin
    if (rst) $fflush(tapf);
    else begin
{tap_writes}
      if (o_stream__valid && o_stream__ready) $fflush(tapf);
    end
  end
  {inner} u_acc (
    {(',' + chr(10) + '    ').join(conn)}
  );
  reg [{wb - 1}:0] mem [0:{(1 << aw) - 1}];
  reg [{wb - 1}:0] q_data [0:{depth - 1}];
  reg [31:0] q_due [0:{depth - 1}];
  reg [{qb - 1}:0] q_head, q_tail;
  reg [{qb}:0] q_count;
  reg [63:0] last_fx;
  reg has_last;
  initial begin
    tb_cycle = 0; mem_reads = 0; mem_error = 0; q_head = 0; q_tail = 0; q_count = 0; has_last = 0; last_fx = 0;
  end
  wire [63:0] t_fx = ({{32'd0, tb_cycle}} + {{48'd0, mem_latency}}) << 16;
  wire [63:0] cand_fx = last_fx + {{32'd0, mem_interval}};
  wire [63:0] due_fx = (has_last && cand_fx > t_fx) ? cand_fx : t_fx;
  wire [63:0] due_c = (due_fx + 64'hFFFF) >> 16;
  assign rsp_valid = (q_count != 0) && (q_due[q_head] <= tb_cycle);
  assign rsp_data = q_data[q_head];
  wire pop = rsp_valid && rsp_ready;
  always @(posedge clk) begin
    tb_cycle <= tb_cycle + 1;
    if (mem_load) $readmemh("accel_image.hex", mem);
    if (rst) begin
      q_head <= 0; q_tail <= 0; q_count <= 0; has_last <= 0;
    end else begin
      if (req_valid) begin
        if ({{{32 - aw}'d0, req_addr}} >= mem_words || q_count == {depth}) mem_error <= 1;
        q_data[q_tail] <= mem[req_addr];
        q_due[q_tail] <= due_c[31:0];
        q_tail <= q_tail + 1;
        last_fx <= due_fx;
        has_last <= 1;
        mem_reads <= mem_reads + 1;
      end
      if (pop) q_head <= q_head + 1;
      q_count <= q_count + {{{qb}'d0, req_valid}} - {{{qb}'d0, pop}};
    end
  end
endmodule
"""


def _deep(fn):
    """``fn()`` in a thread with a large stack and recursion limit: the Accelerator's pooler popcount at
    ``H = 384`` is a 384-term ``sum`` (a chain of adds), deeper than Python's default limit while converting."""
    import sys
    import threading

    box = {}

    def work():
        try:
            box["out"] = fn()
        except BaseException as exc:  # noqa: BLE001 (re-raised below)
            box["exc"] = exc
    old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(max(old_limit, 200_000))
    threading.stack_size(1 << 30)
    try:
        th = threading.Thread(target=work)
        th.start()
        th.join()
    finally:
        threading.stack_size(old_stack)
        sys.setrecursionlimit(old_limit)
    if "exc" in box:
        raise box["exc"]
    return box["out"]


def build_name(spec, max_tokens: int, addr_width: int, lanes: int = 1, prefetch: int = 0, kb: int = 4,
               vw: int = 1) -> str:
    """Build folder name: the dimensions, the tiles and a hash of everything baked into the RTL."""
    key = repr((spec, max_tokens, addr_width) + ((lanes,) if lanes > 1 else ()) + ((prefetch,) if prefetch else ())
               + ((f"kb{kb}",) if kb != 4 else ()) + ((f"vw{vw}",) if vw != 1 else ()) + BUILD_FLAGS).encode()
    return (f"accel__H{spec.hidden}_A{spec.heads}_F{spec.ffn}_L{spec.layers}_M{spec.members}_P{spec.p}_S{spec.s}"
            f"_W{spec.word_bits}_T{max_tokens}{f'_E{lanes}' if lanes > 1 else ''}{f'_pf{prefetch}' if prefetch else ''}"
            f"{f'_kb{kb}' if kb != 4 else ''}{f'_vw{vw}' if vw != 1 else ''}"
            f"_{hashlib.sha1(key).hexdigest()[:8]}")


def build_accelerator(dut, *, waves: bool | str = False):
    """Verilog of ``dut`` plus the wrapper, compiled with Verilator (cached like
    :func:`bebert.sim.runner.build_block`); returns a :class:`bebert.sim.runner.SimBuild`.

    ``waves``: ``"fst"`` (or ``True``) or ``"vcd"`` builds with tracing (a separate build folder); the run
    then writes ``dump.fst`` / ``dump.vcd`` in its folder. FST builds link upstream LZ4 built from the lz4
    sdist (:mod:`bebert.sim.fst`: Verilator's FST writer needs ``lz4.h`` and ``-llz4``, which this machine lacks)."""
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    from .. import toolchain
    from .fst import fst_build_args
    from .runner import SimBuild

    toolchain.apply_tool_env()
    name = build_name(dut.spec, dut.max_tokens, dut._addr_width, dut.lanes, dut.prefetch, dut._kb, dut.vw)
    kind = "fst" if waves is True else (waves or None)
    if kind not in (None, "fst", "vcd"):
        raise ValueError(f"waves must be 'fst', 'vcd' or False, not {waves!r}")
    from .fst import TRACE_TAG

    suffix = {None: "", "vcd": "_vcd", "fst": f"_fst_{TRACE_TAG}"}[kind]
    build_dir = toolchain.cache_dir("sim_build") / (name + suffix)
    build_dir.mkdir(parents=True, exist_ok=True)
    files = {build_dir / "accelerator.v": _deep(lambda: verilog.convert(dut, name="accelerator")),
             build_dir / "accel_tb.v": wrapper_verilog(dut)}
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    t0 = time.monotonic()
    build_args = ["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
    make_vars = " ".join(f for f in BUILD_FLAGS if "=" in f)
    build_args += [f for f in BUILD_FLAGS if "=" not in f]
    if kind:
        build_args += (["--trace-fst", *fst_build_args()] if kind == "fst" else []) + ["--trace-structs"]
    log = build_dir / "build.log"
    old_flags = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"{old_flags or ''} {make_vars}".strip()     # command-line variables of make
    try:
        get_runner("verilator").build(sources=list(files), hdl_toplevel="accel_tb", build_dir=build_dir,
                                      always=False, build_args=build_args, waves=bool(kind), log_file=log)
    except (SystemExit, Exception) as exc:
        raise RuntimeError(f"the Verilator build failed ({exc}); see {log}") from None
    finally:
        if old_flags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old_flags
    return SimBuild(name, "accel_tb", build_dir, build_dir / "accelerator.v", time.monotonic() - t0)


def image_file(model, spec, cache=None) -> Path:
    """The model's memory image as a ``$readmemh`` file (hex, one word a line), cached by content."""
    from .. import toolchain
    from ..golden.accelerator import IMAGE_VERSION, model_image, model_layout

    # keyed by the image format too: a layout change must not reuse an image of the old one
    key = hashlib.sha1(repr((IMAGE_VERSION, spec, sorted(model_layout(spec).items()))).encode())
    for k in sorted(model.tensors):
        key.update(k.encode())
        key.update(np.ascontiguousarray(model.tensors[k]).tobytes())
    folder = Path(cache) if cache is not None else toolchain.cache_dir("sim_images")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"image_{key.hexdigest()[:16]}.hex"
    if not path.exists():
        words, _ = model_image(model, spec)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("\n".join(map("{:x}".format, words.tolist())) + "\n")
        tmp.replace(path)
    return path


def run_inference(model_path, spec, jobs, *, lanes: int, prefetch: int, max_tokens: int, image=None,
                  report_name: str = "run", kb: int = 4, vw: int = 1, **tb) -> dict:
    """Build the accelerator of ``spec`` (cached) and run ``jobs`` through it in Verilator: the testbench's
    report (``failures``, ``jobs``) with ``build_seconds`` and ``sim_seconds`` added. ``image``: the memory
    image file (default: :func:`image_file` of the model); ``tb``: other testbench options (``latency``,
    ``bits_per_cycle``, ``reset_after``, ``seed``, ...; ``strict`` defaults to false). Raises
    ``RuntimeError`` when the simulation itself fails."""
    from ..golden.accelerator import model_layout
    from .runner import SimulationFailed, run_testbench

    aw = max(16, (model_layout(spec)["words"] - 1).bit_length())
    dut = Accelerator(spec, lanes=lanes, prefetch=prefetch, max_tokens=max_tokens, addr_width=aw, kb=kb, vw=vw)
    t0 = time.monotonic()
    build = build_accelerator(dut)
    t_build = time.monotonic() - t0
    if image is None:
        image = image_file(load_int_model(model_path), spec)
    report = build.build_dir / "run_inference" / f"{report_name}.json"
    report.parent.mkdir(exist_ok=True)
    report.unlink(missing_ok=True)
    cfg = dict(model=str(Path(model_path).resolve()), p=spec.p, s=spec.s, word_bits=spec.word_bits,
               max_tokens=max_tokens, addr_width=aw, lanes=lanes, prefetch=prefetch, kb=kb, vw=vw, image=str(image),
               jobs=jobs, report=str(report), **{"strict": False, **tb})
    t1 = time.monotonic()
    try:
        run_testbench(build, "bebert.sim.tb_accelerator", "inference", cfg)
    except SimulationFailed as exc:
        raise RuntimeError(f"the accelerator simulation failed: {exc}") from None
    rep = json.loads(report.read_text())
    rep.update(build_seconds=round(t_build, 1), sim_seconds=round(time.monotonic() - t1, 1))
    return rep


# --------------------------------------------------------------------------- cocotb side

def tap_failures(model, lanes: int, ids, types, length: int, lines, code_bits: int = 16) -> tuple[int, list[str]]:
    """Compare one inference's activation-buffer writes (``"lane code"`` lines of the wrapper's
    ``accel_taps.txt``) with the golden model's taps: per member (lane ``m % E``, its ``m // E``-th turn) the
    embedding LayerNorm output (``m<k>.emb.ln``) and every layer's output (``m<k>.l<l>.ffn_ln``), the real
    tokens' rows of the ``n`` computed. Returns ``(blocks compared, failures)``."""
    from ..golden.infer import GoldenModel

    n, h, layers = len(ids), model.dims["hidden_size"], model.dims["num_layers"]
    per_lane = [[] for _ in range(lanes)]
    half, full = 1 << (code_bits - 1), 1 << code_bits
    for line in lines:
        e, v = line.split()
        # only the code's own bits: Verilator 5.049 has printed the signed tap wire with bits of a wider
        # internal signal above it (a positive code as code + 2**16)
        v = int(v) & (full - 1)
        per_lane[int(e)].append(v - full if v >= half else v)
    taps = GoldenModel(model).forward(np.array([ids[:length]]), None, np.array([types[:length]]), taps=True).taps
    block, blocks, bad = n * h, 0, []
    turns = -(-int(model.members) // lanes)
    for e in range(lanes):
        mine = [mm for mm in range(e, int(model.members), lanes)]
        want_len = len(mine) * (layers + 1) * block
        if len(per_lane[e]) != want_len:
            bad.append(f"lane {e}: {len(per_lane[e])} activation writes, expected {want_len} ({turns} turn(s))")
            continue
        for t, mm in enumerate(mine):
            names = [f"m{mm}.emb.ln"] + [f"m{mm}.l{li}.ffn_ln" for li in range(layers)]
            for k, name in enumerate(names):
                at = (t * (layers + 1) + k) * block
                got = np.array(per_lane[e][at:at + block]).reshape(n, h)[:length]
                want = np.asarray(taps[name][0])
                blocks += 1
                if not np.array_equal(got, want):
                    bad.append(f"member {mm} {name}: {int((got != want).sum())} of {got.size} codes differ")
    return blocks, bad


def _counter_checks(spec, lay, c: dict, n: int, measured: int, reads: int, lanes: int = 1, vw: int = 1) -> list[str]:
    """Consistency of the performance counters of one inference; returns the failures."""
    h, f, p, s, M, L = spec.hidden, spec.ffn, spec.p, spec.s, spec.members, spec.layers
    bad = []

    def need(cond, what):
        if not cond:
            bad.append(what)
    need(c["cycles"] == measured, f"cycles {c['cycles']} != measured {measured}")
    need(c["embed"] + sum(c[f"layer{i}"] for i in range(L)) + c["head"] == c["cycles"], "phases do not sum to cycles")
    per_layer = n * (-(-3 * h // p) * -(-h // s) + -(-h // p) * -(-h // s) + -(-f // p) * -(-h // s)
                     + -(-h // p) * -(-f // s))
    need(c["busy"] == M * L * per_layer, f"busy {c['busy']} != {M * L * per_layer}")
    beats = M * L * 2 * n * h // vw
    need(c["vector_beats"] == beats, f"vector_beats {c['vector_beats']} != {beats}")
    need(c["busy"] + c["stall_weights"] + c["stall_output"] <= lanes * c["cycles"], "busy + stalls > lanes x cycles")
    need(c["load"] <= sum(c[f"layer{i}"] for i in range(L)), "load > layers")
    words = param_words(spec, n)
    need(c["param_words"] == words, f"param_words {c['param_words']} != {words}")
    # the memory model's reads: the parameter reader's words and each layer command's weight image once
    need(reads == words + M * L * lay["thr"], f"memory reads {reads} != {words} + {M * L} x {lay['thr']}")
    return bad



async def put(dut, name, beats, idle, rng):
    """Drive ``beats`` on stream ``name`` (bubbles with probability ``idle``); returns the cycle
    (``tb_cycle``) of the last transfer."""
    valid, ready, payload = (getattr(dut, f"{name}__{x}") for x in ("valid", "ready", "payload"))
    at = None
    for b in beats:
        while True:
            await RisingEdge(dut.clk)
            if rng.random() < idle:
                valid.value = 0
                continue
            payload.value = b
            valid.value = 1
            await ReadOnly()
            if ready.value == 1:
                at = int(dut.tb_cycle.value)
                break
    await RisingEdge(dut.clk)
    valid.value = 0
    return at

async def collect(dut, count, stall, rng, codec):
    """``count`` output beats; ``o_stream.ready`` random (probability ``stall`` low per cycle) while beats
    are offered, low while waiting for one when ``stall`` > 0, high otherwise. No Python runs per cycle
    between the output bursts. Returns the beats and the cycle of the last transfer."""
    valid, ready, payload = dut.o_stream__valid, dut.o_stream__ready, dut.o_stream__payload
    beats, last_at = [], None
    ready.value = int(stall == 0)
    while len(beats) < count:
        if valid.value != 1:
            await RisingEdge(valid)
        await ReadOnly()
        while len(beats) < count:
            if valid.value == 1 and ready.value == 1:
                beats.append(codec.output(int(payload.value)))
                last_at = int(dut.tb_cycle.value)
            await RisingEdge(dut.clk)
            if stall:
                ready.value = int(rng.random() >= stall)
            await ReadOnly()
            if valid.value != 1:
                break
        if len(beats) < count:
            await RisingEdge(dut.clk)        # leave the read-only phase before writing
            ready.value = int(stall == 0)
    await RisingEdge(dut.clk)
    ready.value = 0
    return beats, last_at

@cocotb.test()
async def inference(dut):
    """The configured jobs back to back (optionally a reset during job 0); outputs exact against golden,
    counters consistent, cycles against the estimate."""
    cfg = load_config(strict=True, check_cycles=False, latency=8, bits_per_cycle=12.8)
    model = load_int_model(cfg["model"])
    spec = AccelSpec.from_int_model(model, cfg["p"], cfg["s"], cfg["word_bits"])
    acc = Accelerator(spec, lanes=cfg.get("lanes", 1), prefetch=cfg.get("prefetch", 0), max_tokens=cfg["max_tokens"],
                      addr_width=cfg["addr_width"], kb=cfg.get("kb", 4), vw=cfg.get("vw", 1))
    acc._MustUse__used = True
    codec, lay = acc.codec, acc.layout
    rng = random.Random(cfg["seed"])
    link = Path("accel_image.hex")
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(cfg["image"]).resolve())
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for name in ("i_stream", "c_stream"):
        getattr(dut, f"{name}__valid").value = 0
    dut.o_stream__ready.value = 0
    dut.mem_words.value = lay["words"]
    dut.mem_latency.value = cfg["latency"]
    dut.mem_interval.value = round(cfg["word_bits"] / cfg["bits_per_cycle"] * 65536)
    dut.mem_load.value = 1
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.mem_load.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    M, L = spec.members, spec.labels
    count = M * L + L
    taps = open("accel_taps.txt")       # the wrapper's activation-buffer log (opened at time 0)
    corrupt = cfg.get("corrupt_expected")
    reports, failures, beat_index = [], [], 0
    for j, job in enumerate(cfg["jobs"]):
        ids, types, length = job["ids"], job.get("types") or [0] * len(job["ids"]), job.get("length")
        length = len(ids) if length is None else length
        n = len(ids)
        beats, cmd = codec.sequence(ids, types, length)
        t0 = time.monotonic()
        reads0 = int(dut.mem_reads.value)
        await put(dut, "i_stream", beats, job.get("idle", 0.0), rng)
        accept = await put(dut, "c_stream", [cmd], 0.0, rng)
        if j == 0 and cfg.get("reset_after"):
            await Timer(cfg["reset_after"] * PERIOD_NS, unit="ns")
            await ReadOnly()
            at_reset = dict(running=int(dut.running.value), cycles=int(dut.counters.value) & 0xFFFFFFFF)
            await RisingEdge(dut.clk)
            dut.rst.value = 1
            await RisingEdge(dut.clk)
            await RisingEdge(dut.clk)
            dut.rst.value = 0
            await RisingEdge(dut.clk)
            await ReadOnly()
            if at_reset["running"] != 1 or dut.running.value != 0:
                failures.append(f"reset: not running before ({at_reset}) or still running after")
            reports.append(dict(job=j, reset=True, at_reset=at_reset))
            taps.readlines()        # the interrupted inference's writes (flushed in reset)
            await RisingEdge(dut.clk)
            continue
        outs, final = await collect(dut, count, job.get("stall", 0.0), rng, codec)
        if dut.running.value == 1:
            await FallingEdge(dut.running)
        await RisingEdge(dut.clk)
        await ReadOnly()
        counters = codec.counters(int(dut.counters.value))
        reads = int(dut.mem_reads.value) - reads0
        sim_s = time.monotonic() - t0
        want = expected_outputs(model, ids, types, length)
        want_beats = [dict(logit=int(v), member=mm, label=c, last=0)
                      for mm in range(M) for c, v in enumerate(want["member_logits"][mm])]
        want_beats += [dict(logit=int(v), member=M, label=c, pred=want["pred"], last=int(c == L - 1))
                       for c, v in enumerate(want["logits"])]
        for wb in want_beats:
            if corrupt == beat_index:
                wb["logit"] += 1
            beat_index += 1
        got = [{k: o[k] for k in wb} for o, wb in zip(outs, want_beats)]
        mismatches = [(i, w, g) for i, (w, g) in enumerate(zip(want_beats, got)) if w != g]
        measured = final - accept
        bad = _counter_checks(spec, lay, counters, n, measured, reads, acc.lanes, acc.vw)
        tap_blocks, tap_bad = tap_failures(model, acc.lanes, ids, types, length, taps.readlines(),
                                           code_bits=spec.fmt["layernorm"].bits)
        if int(dut.error.value):
            bad.append("a weight prefetch saw a request out of sequence (error)")
        stall = job.get("stall", 0.0)
        if stall == 0 and counters["out_wait"] != 0:
            bad.append(f"out_wait {counters['out_wait']} without backpressure")
        rep = dict(job=j, n=n, length=length, ids=ids, types=types,
                   member_logits=[[o["logit"] for o in outs[mm * L:(mm + 1) * L]] for mm in range(M)],
                   logits=[o["logit"] for o in outs[M * L:]], pred=outs[-1]["pred"] if outs else None,
                   want_member_logits=want["member_logits"].tolist(), want_logits=want["logits"].tolist(),
                   want_pred=want["pred"], agree=not mismatches and not tap_bad, mismatches=len(mismatches),
                   taps_checked=tap_blocks, tap_failures=tap_bad,
                   counters=counters, measured=measured, mem_reads=reads, sim_seconds=round(sim_s, 3),
                   cycles_per_second=round(measured / max(sim_s, 1e-9)), counter_failures=bad)
        if cfg["check_cycles"] and stall == 0:
            est = acc.expected_cycles(n, cfg["bits_per_cycle"], max(cfg["latency"] - 1, 1), detail=True)
            rep["estimate"] = est
            # the statistics engine takes the same cycles for every token, so the model is an estimate within a
            # few cycles a phase (no longer an upper bound taking its worst case)
            for k in ("embed", "load", "head"):
                if not abs(counters[k] - est[k]) <= 0.03 * est[k] + 12:
                    bad.append(f"{k} {counters[k]} vs estimate {est[k]}")
            for k in [f"layer{i}" for i in range(spec.layers)] + ["total"]:
                g = counters["cycles"] if k == "total" else counters[k]
                if not abs(g - est[k]) <= 0.02 * est[k] + 16:
                    bad.append(f"{k} {g} vs estimate {est[k]}")
        reports.append(rep)
        if mismatches:
            failures.append(f"job {j}: {len(mismatches)} mismatches; first (index, want, got): {mismatches[0]}")
        if tap_bad:
            failures.append(f"job {j}: layer taps: {tap_bad[:3]}")
        if bad:
            failures.append(f"job {j}: counters: {bad}")
        await RisingEdge(dut.clk)
    if int(dut.mem_error.value):
        failures.append("memory model: a read outside the image or a queue overflow")
    taps.close()
    if cfg.get("report"):
        Path(cfg["report"]).write_text(json.dumps(dict(jobs=reports, failures=failures), indent=1))
    if cfg["strict"]:
        assert not failures, "; ".join(failures)


