"""Parameter checks shared by the hardware blocks."""

from __future__ import annotations

__all__ = ["check_positive"]


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
