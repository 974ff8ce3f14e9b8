"""Pipelined popcount trees built from 4-input LUT cells.

A popcount of ``n`` product bits (each product a small function of up to two
signals, e.g. ``~(a ^ w)``) is built in two parts:

1. *Group counters*: groups of up to 15 products are reduced to a 4-bit count
   by full adders (3:2 counters), each a pair of 4-input cells. Every full adder
   takes at most one product unmaterialised: ``sum = p(a, w) ^ x ^ y`` and
   ``carry = maj(p(a, w), x, y)`` are each a function of four signals, so the
   product costs no cell of its own. A 15-bit group costs 11 full adders and 8
   materialised products: 30 cells, 2 per bit.
2. An adder tree of the group counts (``+``, which yosys maps to carry chains
   once the sums are wider than 4 bits), with a register every
   ``levels_per_stage`` levels.

Cells are written either as Amaranth expressions (``impl="behavioral"``:
simulation, Verilator, any FPGA) or as ECP5 ``LUT4`` primitives
(``impl="ecp5"``) whose ``INIT`` is computed from the same Python function, so
the technology mapper cannot restructure the counters back into wider, costlier
logic. The two netlists are checked equal in Verilator
(``tests/test_pe_array_cocotb.py``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

from amaranth.hdl import Cat, Signal

from .cells import lut_cell

__all__ = ["Term", "group_counter", "popcount_pipeline", "pipeline_stages", "GROUP"]

#: Products per group counter: 15 reduce exactly to a 4-bit count with full adders.
GROUP = 15


@dataclass(frozen=True, eq=False)
class Term:
    """A 1-bit function ``fn(*inputs)`` of at most two signals, not yet given a cell."""

    inputs: tuple
    fn: Callable


def _identity(x):
    return x


def _xor3(x, y, z):
    return x ^ y ^ z


def _maj3(x, y, z):
    return (x & y) | (x & z) | (y & z)


def group_counter(m, terms: list, impl: str, name: str, slack: int = 1) -> Signal:
    """Count the ones among ``terms`` (Terms or 1-bit signals) with full adders.

    Returns a ``Signal`` of ``bits_for(len(terms))`` bits. Each full adder takes one
    unmaterialised product if any is left, and two single signals: an existing
    one when its logic depth is at most ``slack`` deeper than a product given
    its own cell, otherwise a newly materialised product (this keeps the adder
    tree shallow while most products ride in a full adder for free).
    """
    cells = itertools.count()

    def cell(inputs, fn):
        return lut_cell(m, inputs, fn, impl, f"{name}_c{next(cells)}")

    def term_fn(t):
        return t.fn if isinstance(t, Term) else _identity

    # Items: (depth, Term). Unmaterialised products have depth 0 and two inputs.
    columns = [[(0, t if isinstance(t, Term) else Term((t,), _identity)) for t in terms]]
    weight = 0
    while weight < len(columns):
        col = columns[weight]
        while len(col) >= 2:
            wides = [it for it in col if len(it[1].inputs) > 1]
            singles = sorted((it for it in col if len(it[1].inputs) == 1), key=lambda it: it[0])
            take = 3 if len(col) >= 3 else 2
            picked = []
            if wides:
                picked.append(wides.pop(0))
            while len(picked) < take:
                spare = [w for w in wides if w not in picked]
                if singles and (not spare or singles[0][0] <= 1 + slack):
                    picked.append(singles.pop(0))
                elif len(picked) == 1 and take == 2 and spare:
                    picked.append(spare[0])  # two products fit one 4-input cell
                else:
                    w = spare[0]
                    wides.remove(w)
                    col.remove(w)
                    picked.append((1, Term((cell(w[1].inputs, w[1].fn),), _identity)))
            for it in picked:
                if it in col:
                    col.remove(it)
            ins = tuple(x for _, t in picked for x in t.inputs)
            spans, at = [], 0
            for _, t in picked:
                spans.append((at, len(t.inputs), t.fn))
                at += len(t.inputs)

            def f(*v, spans=spans, fn3=None):
                vals = [fn(*v[a:a + n]) for a, n, fn in spans] + [0] * (3 - len(spans))
                return fn3(*vals)
            depth = max(d for d, _ in picked) + 1
            s = cell(ins, lambda *v, f=f: f(*v, fn3=_xor3))
            c = cell(ins, lambda *v, f=f: f(*v, fn3=_maj3))
            col.append((depth, Term((s,), _identity)))
            if weight + 1 == len(columns):
                columns.append([])
            columns[weight + 1].append((depth, Term((c,), _identity)))
        weight += 1
    bits = []
    for col in columns:
        if col:
            (_, t), = col
            bits.append(t.inputs[0] if t.fn is _identity else cell(t.inputs, t.fn))
    out = Signal(max(1, len(bits)), name=f"{name}_count")
    m.d.comb += out.eq(Cat(*bits))
    return out


def pipeline_stages(n_bits: int, levels_per_stage: int) -> int:
    """Register stages of :func:`popcount_pipeline` for ``n_bits`` inputs."""
    groups = -(-n_bits // GROUP)
    levels = (groups - 1).bit_length() if groups > 1 else 0
    return 1 + -(-levels // levels_per_stage)


def popcount_pipeline(m, terms: list, levels_per_stage: int, name: str, impl: str = "behavioral"):
    """Pipelined popcount of ``terms``; returns ``(count_signal, stages)``.

    A register follows the group counters and every ``levels_per_stage`` adder
    levels (and the last level); the stage count depends only on ``len(terms)``
    (:func:`pipeline_stages`), so trees of equal size stay aligned.
    """
    level = []
    for g, i in enumerate(range(0, len(terms), GROUP)):
        count = group_counter(m, terms[i:i + GROUP], impl, f"{name}_g{g}")
        r = Signal(len(count), name=f"{name}_g{g}_r")
        m.d.sync += r.eq(count)
        level.append(r)
    stages = 1
    depth = 0
    while len(level) > 1:
        level = [level[j] + level[j + 1] if j + 1 < len(level) else level[j] for j in range(0, len(level), 2)]
        depth += 1
        if depth % levels_per_stage == 0 or len(level) == 1:
            regs = []
            for j, node in enumerate(level):
                r = Signal(len(node), name=f"{name}_t{stages}_{j}")
                m.d.sync += r.eq(node)
                regs.append(r)
            level = regs
            stages += 1
    return level[0], stages
