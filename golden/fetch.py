"""Golden model of the weight fetch path: memory images and the tiles a fetch command yields.

The deployment file's packed ``uint64`` tensors are laid out one after another in a
word-addressed memory of ``word_bits``-bit words (each ``uint64`` split into
``64 // word_bits`` words, least significant first, so bit order is kept);
:func:`fetch_tiles` is what :class:`bebert.hw.fetch.WeightFetch` must produce.
"""

from __future__ import annotations

import numpy as np

__all__ = ["memory_image", "fetch_tiles", "split_words", "prefetch_reads"]


def _check_word_bits(word_bits: int) -> None:
    if word_bits not in (1, 2, 4, 8, 16, 32, 64):
        raise ValueError(f"word_bits must divide 64 (1, 2, 4, 8, 16, 32 or 64), not {word_bits!r}")


def split_words(packed: np.ndarray, word_bits: int) -> np.ndarray:
    """``uint64`` words -> ``word_bits``-bit words (``uint64`` array), least significant first."""
    _check_word_bits(word_bits)
    packed = np.ascontiguousarray(np.asarray(packed, dtype=np.uint64).reshape(-1))
    per = 64 // word_bits
    mask = np.uint64((1 << word_bits) - 1) if word_bits < 64 else np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    shifts = (np.arange(per, dtype=np.uint64) * np.uint64(word_bits))
    return ((packed[:, None] >> shifts[None, :]) & mask).reshape(-1)


def memory_image(tensors: dict[str, np.ndarray], word_bits: int) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """Lay packed ``uint64`` tensors out in memory, in the dict's order.

    Returns ``(words, layout)`` with ``layout[name] = (base, n_words)``.

    Raises
    ------
    ValueError
        If a tensor is not ``uint64`` or ``word_bits`` does not divide 64.
    """
    _check_word_bits(word_bits)
    chunks, layout, base = [], {}, 0
    for name, t in tensors.items():
        t = np.asarray(t)
        if t.dtype != np.uint64:
            raise ValueError(f"tensor {name!r} is {t.dtype}, not packed uint64 words")
        w = split_words(t, word_bits)
        layout[name] = (base, int(w.size))
        chunks.append(w)
        base += w.size
    words = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
    return words, layout


def fetch_tiles(words: np.ndarray, word_bits: int, tile_bits: int, base: int, tiles: int) -> list[int]:
    """The ``tiles`` tiles a fetch command ``(base, tiles)`` yields, as Python ints.

    Tile ``t`` is words ``base + t*wpt ..`` (``wpt = ceil(tile_bits / word_bits)``),
    word ``i`` at bit ``i * word_bits``, cut to ``tile_bits`` bits.

    Raises
    ------
    ValueError
        If the command reads past the end of ``words``.
    """
    wpt = -(-tile_bits // word_bits)
    end = base + tiles * wpt
    if base < 0 or end > len(words):
        raise ValueError(f"fetch of {tiles} tiles at word {base} reads words up to {end - 1}, "
                         f"past the image's {len(words)} words")
    out = []
    for t in range(tiles):
        value = 0
        for i in range(wpt):
            value |= int(words[base + t * wpt + i]) << (i * word_bits)
        out.append(value & ((1 << tile_bits) - 1))
    return out


def prefetch_reads(memory, base: int, count: int, requests) -> tuple[list[int], bool]:
    """The contract of :class:`bebert.hw.prefetch.WordPrefetch` for one command ``(base, count)``.

    ``requests``: the consumer's word addresses in order. Returns ``(responses, error)``: one response per
    request, ``memory[base + i]`` for the ``i``-th (the word the consumer is owed, whatever address it asked
    for), and ``error`` if any request was not ``base + i`` or came beyond ``count``.
    """
    if base < 0 or count < 0 or base + count > len(memory):
        raise ValueError(f"words {base}..{base + count - 1} are outside the memory's {len(memory)} words")
    requests = [int(a) for a in requests]
    error = len(requests) > count or any(a != base + i for i, a in enumerate(requests))
    return [int(memory[base + i]) for i in range(min(len(requests), count))], error
