"""Technology cells written two ways: portable Amaranth, or ECP5 primitives.

``impl="behavioral"`` gives plain Amaranth (simulation, Verilator, any FPGA);
``impl="ecp5"`` instantiates ECP5 primitives so that yosys keeps the structure
the design chose (the mapper would otherwise restructure LUT networks and merge
replicated registers). ``sim/models/ecp5_cells.v`` models the primitives for
Verilator, where both netlists are checked against the golden functions.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Signal

__all__ = ["IMPLS", "lut_cell", "register_copies"]

IMPLS = ("behavioral", "ecp5")


def _check_impl(impl):
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")


def lut_cell(m, inputs, fn, impl: str, name: str, *, keep: bool = False) -> Signal:
    """One 4-input LUT computing ``fn(*inputs) & 1``; returns its output signal.

    ``keep=True`` marks the ECP5 cell so that yosys does not merge it with an identical
    LUT (replicas that split a wide fan-out).
    """
    if len(inputs) > 4:
        raise ValueError(f"a LUT4 cell takes at most 4 inputs, not {len(inputs)}")
    _check_impl(impl)
    out = Signal(name=name)
    if impl == "behavioral":
        m.d.comb += out.eq(fn(*inputs))
    elif impl == "ecp5":
        k = len(inputs)
        # INIT bit i is the output for inputs (A, B, C, D) = bits of i; unused inputs tie to 0.
        init = sum((fn(*((i >> j) & 1 for j in range(k))) & 1) << i for i in range(16) if i >> k == 0)
        ports = dict(zip("ABCD", list(inputs) + [Const(0, 1)] * (4 - k)))
        attrs = {"a_keep": 1} if keep else {}
        m.submodules[name] = Instance("LUT4", p_INIT=Const(init, 16), **attrs,
                                      **{f"i_{p}": v for p, v in ports.items()}, o_Z=out)
    return out


def register_copies(m, d, copies: int, impl: str, name: str) -> list[Signal]:
    """``copies`` registers of the same value ``d`` (free running, no enable, no reset).

    Replicas let each copy drive a small part of a wide fan-out. Yosys merges
    identical ``$dff`` cells, so for ECP5 each bit is a ``TRELLIS_FF`` primitive.
    """
    _check_impl(impl)
    outs = [Signal(len(d), name=f"{name}_{c}") for c in range(copies)]
    for c, q in enumerate(outs):
        if impl == "behavioral":
            m.d.sync += q.eq(d)
            continue
        for b in range(len(d)):
            m.submodules[f"{name}_{c}_ff{b}"] = Instance(
                "TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR",
                p_REGSET="RESET", p_SRMODE="LSR_OVER_CE", a_keep=1,
                i_CLK=ClockSignal(), i_LSR=Const(0, 1), i_DI=d[b], o_Q=q[b])
    return outs
