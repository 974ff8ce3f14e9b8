"""Upstream LZ4 for Verilator's FST writer (:mod:`bebert.sim.fst`): the sources from the ``lz4`` sdist, then a
real ``--trace-fst`` build.

The Verilator test (marker: verilator) builds a counter with ``--trace-fst`` plus
:func:`bebert.sim.fst.fst_build_args`, runs it under cocotb (this module is also its cocotb test
module) and reads ``dump.fst`` back with the small FST reader below: the hierarchy block is LZ4,
decoded with upstream ``LZ4_decompress_safe`` through ctypes, and the counter must count up by one per clock.
"""

import ctypes
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from bebert.sim.fst import LZ4_SDIST, fst_build_args, lz4_sources

HERE = Path(__file__).parent
CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) on PATH")

PERIOD_NS, CYCLES = 10, 40
COUNTER_V = """\
`timescale 1ns/1ps
module counter(input wire clk, input wire rst, output reg [7:0] count);
  always @(posedge clk) count <= rst ? 8'd0 : count + 8'd1;
endmodule
"""


def _cc(*args):
    res = subprocess.run([CC, "-O2", *map(str, args)], capture_output=True, text=True)
    assert res.returncode == 0, f"cc {' '.join(map(str, args))} failed:\n{res.stderr}"


@pytest.fixture(scope="module")
def lz4_so(tmp_path_factory):
    """Upstream LZ4 as a shared library (for ctypes), built from the sources :func:`lz4_sources` extracts."""
    src = lz4_sources()
    lib = tmp_path_factory.mktemp("lz4") / "liblz4.so"
    _cc("-shared", "-fPIC", src / "lz4.c", "-o", lib)
    return ctypes.CDLL(str(lib))


def test_upstream_lz4_round_trip(lz4_so):
    """The library is upstream LZ4 of the pinned sdist's version (LZ4_versionNumber), and compresses and
    decompresses: random and repetitive data of many sizes, and a truncated block is refused."""
    import random

    assert lz4_so.LZ4_versionNumber() >= 10900, "upstream LZ4 (1.9 or later)"
    assert "LZ4_VERSION_MAJOR" in (lz4_sources() / "lz4.h").read_text()
    comp, dec, bound = lz4_so.LZ4_compress_default, lz4_so.LZ4_decompress_safe, lz4_so.LZ4_compressBound
    for fn in (comp, dec):
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    rng = random.Random(7)
    for size in (0, 1, 15, 64, 1000, 65536, 300001):
        for data in (bytes(rng.getrandbits(8) for _ in range(min(size, 4096))) * (size // 4096 + 1),
                     b"abc" * size):
            data = data[:size]
            out = ctypes.create_string_buffer(bound(len(data)) + 1)
            n = comp(data, out, len(data), len(out))
            assert n > 0 or size == 0
            back = ctypes.create_string_buffer(max(size, 1))
            assert dec(out.raw[:n], back, n, size) == size and back.raw[:size] == data
            if n > 4:
                assert dec(out.raw[:n // 2], back, n // 2, size) < 0, "a truncated block is an error"
    small = ctypes.create_string_buffer(bound(3000))
    assert 0 < comp(b"abc" * 1000, small, 3000, len(small)) < 100, "a repetitive block really compresses"


def test_lz4_sources_check_the_digest(tmp_path, monkeypatch):
    """A download that does not match the pinned SHA-256 is refused by name; a failed one names the way out."""
    from bebert import toolchain

    monkeypatch.setattr(toolchain, "cache_dir", lambda name: tmp_path / name)
    with pytest.raises(RuntimeError, match="does not match its SHA-256"):
        lz4_sources(fetch=lambda url: b"not the sdist")

    def offline(url):
        raise OSError("network unreachable")

    with pytest.raises(RuntimeError, match=f"lz4 {LZ4_SDIST[0]} sdist .* use a .vcd waveform instead"):
        lz4_sources(fetch=offline)
    assert not list(tmp_path.rglob("lz4.c")), "nothing half-written"


# --------------------------------------------------------------------------- Verilator --trace-fst
@cocotb.test()
async def count_cycles(dut):
    """cocotb side: hold reset for 2 clocks, then let the counter run CYCLES clocks."""
    dut.rst.value = 1
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await ClockCycles(dut.clk, CYCLES)


def _uleb(buf, pos):
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _sleb(buf, pos):
    value, end = _uleb(buf, pos)
    bits = 7 * (end - pos)
    return (value - (1 << bits) if value >> (bits - 1) & 1 else value), end


def _u64(buf, pos):
    return struct.unpack_from(">Q", buf, pos)[0]


def read_fst(path: Path, lz4_decompress) -> dict:
    """Just enough of an FST reader for the counter: ``{"header", "vars": {name: (handle, width)},
    "changes": {handle: [(time, bits), ...]}}`` (each variable's initial value and its changes).

    Follows the block layout of Verilator's writer (``fstcpp_writer.cpp``): header (type 0), value
    changes (type 8, VCDATA_DYN_ALIAS2), geometry (3), LZ4 hierarchy (6)."""
    data = path.read_bytes()
    blocks, pos = [], 0
    while pos < len(data):
        length = _u64(data, pos + 1)
        blocks.append((data[pos], data[pos + 9:pos + 1 + length]))
        pos += 1 + length
    assert pos == len(data), "block lengths do not add up to the file size"
    kinds = [kind for kind, _ in blocks]
    assert kinds[0] == 0 and 6 in kinds and 8 in kinds, f"block types {kinds}"
    hdr = blocks[0][1]
    header = dict(start=_u64(hdr, 0), end=_u64(hdr, 8), scopes=_u64(hdr, 32), vars=_u64(hdr, 40),
                  handles=_u64(hdr, 48), vc_blocks=_u64(hdr, 56))

    # hierarchy: u64 decoded size, then one LZ4 block
    hier = blocks[kinds.index(6)][1]
    size = _u64(hier, 0)
    out = ctypes.create_string_buffer(size)
    got = lz4_decompress(hier[8:], out, len(hier) - 8, size)
    assert got == size, f"LZ4 hierarchy decoded to {got} bytes, header says {size}"
    tree, pos, scope, handles, variables = out.raw, 0, [], 0, {}
    while pos < len(tree):
        tag = tree[pos]
        if tag == 254:                                   # scope: type, name, component
            end = tree.index(0, pos + 2)
            scope.append(tree[pos + 2:end].decode())
            pos = tree.index(0, end + 1) + 1
        elif tag == 255:                                 # upscope
            scope.pop()
            pos += 1
        elif tag == 252:                                 # attribute: type, subtype, name, argument
            pos = _uleb(tree, tree.index(0, pos + 3) + 1)[1]
        elif tag == 253:                                 # end of attribute
            pos += 1
        else:                                            # variable: type, direction, name, width, alias
            end = tree.index(0, pos + 2)
            name = ".".join(scope + [tree[pos + 2:end].decode()])
            width, pos = _uleb(tree, end + 1)
            alias, pos = _uleb(tree, pos)
            if alias == 0:
                handles += 1
            variables[name] = (alias or handles, width)
    widths = {handle: width for handle, width in variables.values()}

    changes = {}
    for _, vc in (b for b in blocks if b[0] == 8):
        pos = 24                                         # start time, end time, memory needed
        raw, pos = _uleb(vc, pos)                        # initial values: '0'/'1' per bit
        packed, pos = _uleb(vc, pos)
        pos = _uleb(vc, pos)[1]
        bits = (vc[pos:pos + packed] if packed == raw else zlib.decompress(vc[pos:pos + packed])).decode()
        pos += packed
        pos = _uleb(vc, pos)[1]                          # handle count, then the pack type byte
        assert vc[pos:pos + 1] == b"4", f"pack type {vc[pos:pos + 1]!r}"
        waves = pos                                      # chain offsets count from the pack type byte

        # from the block's end: time table (data, raw length, packed length, count), positions (data, length)
        t_raw, t_packed, t_count = (_u64(vc, len(vc) - 24 + 8 * i) for i in range(3))
        t_end = len(vc) - 24
        table = vc[t_end - t_packed:t_end]
        table = table if t_packed == t_raw else zlib.decompress(table)
        times, pos, now = [], 0, 0
        for _ in range(t_count):
            delta, pos = _uleb(table, pos)
            now += delta
            times.append(now)
        p_len = _u64(vc, t_end - t_packed - 8)
        p_end = t_end - t_packed - 8
        pos, offsets, prev, alias = p_end - p_len, [], 0, 0
        while pos < p_end:                               # per handle: 0 none, >0 delta to its chain, <0 alias
            if vc[pos] & 1:
                value, pos = _sleb(vc, pos)
                value >>= 1
                if value > 0:
                    prev += value
                    offsets.append(prev)
                else:
                    alias = value or alias
                    offsets.append(alias)
            else:
                run, pos = _uleb(vc, pos)
                offsets += [0] * (run >> 1)
        assert len(offsets) == header["handles"], f"{len(offsets)} chain positions for {header['handles']} handles"
        chain_ends = sorted(o for o in offsets if o > 0) + [p_end - p_len - waves]

        start = 0
        for handle, offset in enumerate(offsets, 1):
            width = widths[handle]
            value = bits[start:start + width]
            start += width
            history = changes.setdefault(handle, [(times[0], value)])
            offset = offsets[-offset - 1] if offset < 0 else offset
            if offset == 0:
                continue
            stop = waves + chain_ends[chain_ends.index(offset) + 1]
            raw, pos = _uleb(vc, waves + offset)         # 0: stored as is, else its LZ4-decoded size
            chain = vc[pos:stop]
            if raw:
                buf = ctypes.create_string_buffer(raw)
                assert lz4_decompress(chain, buf, len(chain), raw) == raw, "LZ4 value change chain"
                chain = buf.raw
            pos, index = 0, 0
            while pos < len(chain):
                code, pos = _uleb(chain, pos)
                if width == 1:                           # 1 bit: delta << 2 | bit << 1 (x/z: << 4, not decoded)
                    assert not code & 1, "x/z values are not decoded here"
                    index += code >> 2
                    history.append((times[index], str(code >> 1 & 1)))
                    continue
                assert not code & 1, "only two-state values are decoded here"
                index += code >> 1                       # multi-bit: delta << 1, then big-endian bits
                nbytes = (width + 7) // 8
                word = int.from_bytes(chain[pos:pos + nbytes], "big") >> (8 * nbytes - width)
                pos += nbytes
                history.append((times[index], format(word, f"0{width}b")))
    return dict(header=header, vars=variables, changes=changes)


@pytest.fixture(scope="module")
def lz4_decompress(lz4_so):
    """Upstream ``LZ4_decompress_safe``."""
    fn = lz4_so.LZ4_decompress_safe
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    return fn


@pytest.mark.verilator
def test_verilator_fst_trace(tmp_path, lz4_decompress):
    """A --trace-fst build links with upstream LZ4 and writes an FST file that reads back as counting."""
    from cocotb_tools.runner import get_runner

    from bebert import toolchain
    from bebert.sim.runner import SimBuild, run_testbench

    toolchain.apply_tool_env()
    vfile = tmp_path / "counter.v"
    vfile.write_text(COUNTER_V)
    log = tmp_path / "build.log"
    try:
        get_runner("verilator").build(sources=[vfile], hdl_toplevel="counter", build_dir=tmp_path, always=True,
                                      build_args=["-Wno-fatal", "--trace-fst", *fst_build_args()], waves=True,
                                      log_file=log)
    except SystemExit as exc:
        pytest.fail(f"Verilator --trace-fst build failed ({exc}):\n{log.read_text(errors='replace')[-3000:]}")
    build = SimBuild("counter_fst", "counter", tmp_path, vfile, 0.0)
    run_testbench(build, __name__, "count_cycles", {}, waves=True)

    fst = tmp_path / "run_count_cycles" / "dump.fst"
    data = fst.read_bytes()
    assert data[0] == 0 and len(data) > 200, f"{fst}: {len(data)} bytes, first block type {data[:1]!r}"
    wave = read_fst(fst, lz4_decompress)
    assert "counter.count [7:0]" in wave["vars"], f"no counter.count among {sorted(wave['vars'])}"
    handle, width = wave["vars"]["counter.count [7:0]"]
    assert width == 8
    # the writer's initial value is all x until the first dump
    history = [(t, int(v, 2)) for t, v in wave["changes"][handle] if set(v) <= {"0", "1"}]
    last_reset = max(i for i, (_, v) in enumerate(history) if v == 0)
    counting = history[last_reset:]
    assert [v for _, v in counting] == list(range(len(counting))), history
    assert len(counting) >= CYCLES - 1, history
    # 1, 2, 3, ... one clock (in ps, the trace's timescale) apart; 0 lasts from time 0 through reset
    steps = {b[0] - a[0] for a, b in zip(counting[1:], counting[2:])}
    assert steps == {PERIOD_NS * 1000}, f"changes not one clock apart: {history}"
