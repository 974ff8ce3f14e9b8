"""Parameter checks, payload packing and stream-end records shared by the hardware blocks."""

from __future__ import annotations

from amaranth.hdl import Shape

__all__ = ["check_positive", "pack_fields", "StreamEnds"]


class StreamEnds:
    """One end of a stream inside a module (``valid``, ``ready``, ``payload``): a FIFO's read end, a gearbox's."""

    def __init__(self, *, valid, ready, payload):
        self.valid, self.ready, self.payload = valid, ready, payload


def check_positive(owner, name: str, value) -> int:
    """Return ``value`` if it is a positive ``int``, else raise ``TypeError`` naming it.

    A block that refuses its parameters was never meant to be elaborated, so it is
    marked used: Amaranth would otherwise warn ``UnusedElaboratable`` when the
    half-built object is collected.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        owner._MustUse__used = True
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    return value


def code_beats(layout, codes, bits: int, vw: int) -> list[int]:
    """Stream payloads of ``codes`` (signed, ``bits`` wide), ``vw`` to a beat in field ``x`` (code ``j`` of a
    beat at ``x``'s offset ``+ j*bits``), ``last`` on the final beat. For testbenches and hosts (codecs).

    Raises
    ------
    ValueError
        If the count is not a multiple of ``vw`` or a code does not fit ``bits``.
    """
    codes = [int(v) for v in codes]
    if len(codes) % vw:
        raise ValueError(f"{len(codes)} codes do not fill beats of {vw}")
    lo, mask = -(1 << (bits - 1)), (1 << bits) - 1
    bad = [v for v in codes if not lo <= v < -lo]
    if bad:
        raise ValueError(f"x={bad[0]} does not fit {bits} bits")
    off, last = layout["x"].offset, layout["last"].offset
    beats = []
    for i in range(0, len(codes), vw):
        w = sum((v & mask) << (off + j * bits) for j, v in enumerate(codes[i:i + vw]))
        beats.append(w | (int(i + vw == len(codes)) << last))
    return beats


def pack_fields(layout, **values) -> int:
    """A stream payload as a plain integer: each ``name=value`` into its field of ``layout``.

    For testbenches and hosts (codecs). Signed fields take two's complement.

    Raises
    ------
    ValueError
        If a value does not fit its field.
    """
    word = 0
    for name, value in values.items():
        fld = layout[name]
        shape = Shape.cast(fld.shape)
        v = int(value)
        lo = -(1 << (shape.width - 1)) if shape.signed else 0
        if not lo <= v < lo + (1 << shape.width):
            raise ValueError(f"{name}={v} does not fit {shape.width} bits")
        word |= (v & ((1 << shape.width) - 1)) << fld.offset
    return word
