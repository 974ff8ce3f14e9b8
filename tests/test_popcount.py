"""Full-adder popcount counters (hw/popcount.py): exact counts, cell budget, LUT INITs."""

import itertools
import random

import pytest
from amaranth.hdl import Fragment, Instance, Module, Signal
from amaranth.sim import Simulator

from bebert.hw.cells import lut_cell
from bebert.hw.popcount import GROUP, Term, group_counter


def _instances(m):
    frag = Fragment.get(m, None)
    return [sub for sub, _name, _loc in frag.subfragments if isinstance(sub, Instance)]


def _xnor(a, w):
    return ~(a ^ w)


def _check_counter(n, vectors):
    m = Module()
    a, w = Signal(n), Signal(n)
    out = group_counter(m, [Term((a[i], w[i]), _xnor) for i in range(n)], "behavioral", "g")
    assert len(out) == n.bit_length()
    bad = []

    async def tb(ctx):
        for va, vw in vectors:
            ctx.set(a, va)
            ctx.set(w, vw)
            want = bin(~(va ^ vw) & ((1 << n) - 1)).count("1")
            if ctx.get(out) != want:
                bad.append((va, vw, ctx.get(out), want))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert not bad, bad[:3]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_counter_exhaustive(n):
    _check_counter(n, itertools.product(range(1 << n), repeat=2))


@pytest.mark.parametrize("n", [5, 7, 14, GROUP])
def test_counter_random_and_extremes(n):
    rng = random.Random(n)
    full = (1 << n) - 1
    vectors = [(0, 0), (full, full), (full, 0), (0x5555 & full, 0xAAAA & full)]
    vectors += [(rng.getrandbits(n), rng.getrandbits(n)) for _ in range(400)]
    _check_counter(n, vectors)


def test_group_of_15_costs_31_cells():
    """11 full adders (22 cells) and 9 products given their own cell: about 2 cells per bit."""
    m = Module()
    a, w = Signal(GROUP), Signal(GROUP)
    group_counter(m, [Term((a[i], w[i]), _xnor) for i in range(GROUP)], "ecp5", "g")
    cells = _instances(m)
    assert len(cells) == 31
    assert all(c.type == "LUT4" for c in cells)


def test_lut_init_matches_function():
    """INIT bit i is fn(bits of i) with A the least significant input."""
    m = Module()
    x = [Signal(name=f"x{i}") for i in range(4)]
    lut_cell(m, x, lambda a, b, c, d: (a & b) ^ (c | ~d), "ecp5", "cell")
    (inst,) = _instances(m)
    init = inst.parameters["INIT"].value
    for i in range(16):
        a, b, c, d = ((i >> k) & 1 for k in range(4))
        assert (init >> i) & 1 == ((a & b) ^ (c | (1 - d))) & 1


def test_lut_cell_rejects_bad_use():
    m = Module()
    Fragment.get(m, None)  # used: only the calls below are under test
    with pytest.raises(ValueError, match="at most 4 inputs"):
        lut_cell(m, [Signal() for _ in range(5)], lambda *v: 0, "ecp5", "c")
    with pytest.raises(ValueError, match="impl must be one of"):
        lut_cell(m, [Signal()], lambda v: v, "xilinx", "c")
