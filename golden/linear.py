"""Golden model of the binary linear-layer engine (:class:`bebert.hw.linear.LinearEngine`).

Arithmetic: a W1A1 binary linear layer followed by the sign threshold of each output
channel (``docs/arithmetic.md`` sections 2 and 4)::

    out[t, c] = threshold_c(popcount(~(x[t] ^ W[c])))        t < n, c < N

built from :func:`bebert.golden.pe_array.popcount_dot` and
:func:`bebert.golden.threshold.threshold_bits` (:func:`linear_sign`).

Layouts (what the engine reads and writes):

- **Weights** (:func:`weight_tiles`, :func:`weight_words`): the layer's ``N x K`` weight
  bits (the exported packed rows, ``(N, ceil(K/64))`` ``uint64``) are cut into
  ``G = ceil(N/P)`` channel groups and ``F = ceil(K/S)`` folds. Tile ``g*F + f`` (group
  major) holds the ``P x S`` bits the PE array takes in fold ``f`` of group ``g``: row ``r``
  (channel ``g*P + r``) in tile bits ``r*S .. r*S + S - 1``, its bit ``i`` = weight bit
  ``(g*P + r, f*S + i)``; bits of channels ``>= N`` or inputs ``>= K`` are 0 (the PE array's
  zero padding). In a memory of ``word_bits``-bit words each tile takes
  ``wpt = ceil(P*S / word_bits)`` words, word ``j`` of a tile = tile bits ``j*word_bits ..``
  (the :mod:`bebert.golden.fetch` tile order), so the layer is ``G*F*wpt`` consecutive words
  and ``fetch_tiles(words, word_bits, P*S, base, G*F) == weight_tiles(...)``.
- **Activations** (:func:`activation_beats`): ``n*F`` beats of ``S`` bits, token major,
  beat ``t*F + f`` = bits ``f*S ..`` of token ``t``, zero past ``K``.
- **Output** (:func:`output_beats`): one ``P``-bit beat per (group, token), group major:
  beat ``g*n + t`` holds ``out[t, g*P + i]`` in bit ``i``, zero for channels ``>= N``.

:func:`expected_cycles` is the engine's analytic cycle model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .pe_array import Mode, pack_bits, popcount_dot, unpack_bits
from .threshold import normalize_threshold, threshold_bits

__all__ = ["linear_sign", "linear_popcounts", "raw_output_beats", "weight_tiles", "weight_words",
           "activation_beats", "output_beats",
           "expected_cycles", "RAW_TAIL", "CycleModel", "LinearLayer", "random_layer", "layers_memory"]


def _folds(k: int, s: int) -> int:
    return -(-k // s)


def _check_packed(name: str, packed, rows: int | None, k: int) -> np.ndarray:
    packed = np.asarray(packed)
    if packed.dtype != np.uint64 or packed.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of packed uint64 words, not {packed.dtype} {packed.shape}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"K must be a positive bit count, not {k!r}")
    if packed.shape[1] != -(-k // 64) or (rows is not None and packed.shape[0] != rows):
        raise ValueError(f"{name} has shape {packed.shape}; K={k} needs {-(-k // 64)} words per row")
    return packed


def linear_sign(x_packed: np.ndarray, w_packed: np.ndarray, k: int, thresholds, polarity) -> np.ndarray:
    """Output bits ``(n, N)`` (uint8) of a binary linear layer and its per-channel threshold.

    ``out[t, c] = (y >= T_c)`` if ``pol_c`` else ``(y < T_c)``, ``y = popcount(~(x[t] ^ W[c]))``
    over ``K`` bits.

    Parameters
    ----------
    x_packed : ``(n, ceil(K/64))`` uint64, token activations (bit 1 = +1).
    w_packed : ``(N, ceil(K/64))`` uint64, weight rows (the exported layout).
    k : ``K``, input bits.
    thresholds, polarity : ``(N,)`` integers and 0/1 (:mod:`bebert.golden.threshold`).
    """
    x_packed = _check_packed("x_packed", x_packed, None, k)
    w_packed = _check_packed("w_packed", w_packed, None, k)
    y = popcount_dot(x_packed, w_packed, k, Mode.XNOR)
    return threshold_bits(y, thresholds, polarity)


def linear_popcounts(x_packed: np.ndarray, w_packed: np.ndarray, k: int) -> np.ndarray:
    """Popcounts ``(n, N)`` (int64) of a binary linear layer, ``popcount(~(x[t] ^ W[c]))`` over ``K``
    bits: what a raw-mode engine (``LinearEngine(raw=True)``) puts out."""
    x_packed = _check_packed("x_packed", x_packed, None, k)
    w_packed = _check_packed("w_packed", w_packed, None, k)
    return popcount_dot(x_packed, w_packed, k, Mode.XNOR).astype(np.int64)


def raw_output_beats(acc: np.ndarray, p: int) -> list[list[int]]:
    """A raw-mode engine's output beats for :func:`linear_popcounts`'s ``(n, N)`` popcounts:
    one list of ``P`` popcounts per (group, token), group major; channels past ``N`` are 0."""
    acc = np.asarray(acc, np.int64)
    n, n_out = acc.shape
    groups = -(-n_out // p)
    padded = np.zeros((n, groups * p), np.int64)
    padded[:, :n_out] = acc
    return [[int(v) for v in padded[t, g * p:(g + 1) * p]] for g in range(groups) for t in range(n)]


def _check_shape(k, n_out, p, s):
    for name, v in (("K", k), ("N", n_out), ("P", p), ("S", s)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")


def weight_tiles(w_packed: np.ndarray, k: int, n_out: int, p: int, s: int) -> list[int]:
    """The layer's weight tiles (Python ints of ``P*S`` bits) in engine order: tile ``g*F + f``.

    See the module docstring for the bit layout. Raises ``ValueError`` on shapes that do not match.
    """
    _check_shape(k, n_out, p, s)
    w_packed = _check_packed("w_packed", w_packed, n_out, k)
    f_count, groups = _folds(k, s), -(-n_out // p)
    bits = np.zeros((groups * p, f_count * s), np.uint8)
    bits[:n_out, :k] = unpack_bits(w_packed, k)
    weights = 1 << np.arange(s, dtype=object)  # exact Python ints for any S
    tiles = []
    for g in range(groups):
        for f in range(f_count):
            block = bits[g * p:(g + 1) * p, f * s:(f + 1) * s]
            tile = 0
            for r in range(p):
                row = int(np.dot(block[r].astype(object), weights))
                tile |= row << (r * s)
            tiles.append(tile)
    return tiles


def weight_words(tiles: list[int], tile_bits: int, word_bits: int) -> np.ndarray:
    """Tiles laid out in a memory of ``word_bits``-bit words (``uint64`` array).

    Each tile takes ``ceil(tile_bits/word_bits)`` words, least significant first.
    """
    if not 1 <= word_bits <= 64:
        raise ValueError(f"word_bits must be 1 .. 64 for a uint64 memory image, not {word_bits!r}")
    wpt = -(-tile_bits // word_bits)
    mask = (1 << word_bits) - 1
    return np.array([(t >> (j * word_bits)) & mask for t in tiles for j in range(wpt)], dtype=np.uint64)


def activation_beats(x_packed: np.ndarray, k: int, s: int) -> list[int]:
    """The activation buffer's load: ``n*F`` beats of ``S`` bits, token major, zero past ``K``."""
    x_packed = _check_packed("x_packed", x_packed, None, k)
    bits = unpack_bits(x_packed, k)
    f_count = _folds(k, s)
    padded = np.zeros((bits.shape[0], f_count * s), np.uint8)
    padded[:, :k] = bits
    weights = 1 << np.arange(s, dtype=object)
    return [int(np.dot(padded[t, f * s:(f + 1) * s].astype(object), weights))
            for t in range(bits.shape[0]) for f in range(f_count)]


def output_beats(out_bits: np.ndarray, p: int) -> list[int]:
    """The engine's output beats for :func:`linear_sign`'s ``(n, N)`` bits.

    ``P`` bits per (group, token), group major; channels past ``N`` are 0.
    """
    out_bits = np.asarray(out_bits)
    n, n_out = out_bits.shape
    groups = -(-n_out // p)
    padded = np.zeros((n, groups * p), np.int64)
    padded[:, :n_out] = out_bits
    return [sum(int(padded[t, g * p + i]) << i for i in range(p)) for g in range(groups) for t in range(n)]


#: Cycles after the last PE-array beat of a raw-mode command (fitted in the Amaranth simulator).
RAW_TAIL = 9


class CycleModel(dict):
    """The terms of :func:`expected_cycles` (a dict: ``total`` and its parts)."""


def expected_cycles(n: int, k: int, n_out: int, p: int, s: int, bits_per_cycle: float, latency: int, *,
                    word_bits: int = 16, pe_latency: int = 4, fetch_depth: int = 2, detail: bool = False,
                    raw: bool = False):
    """Cycle count of one :class:`~bebert.hw.linear.LinearEngine` command with an always-ready output.

    From the command's acceptance to the transfer of its last output beat, with the memory
    of :class:`bebert.sim.memory.MemoryTiming` (``latency``, ``bits_per_cycle``,
    ``word_bits``). ``F = ceil(K/S)`` folds, ``G = ceil(N/P)`` groups,
    ``wpt = ceil(P*S/word_bits)`` words per tile, ``iv = word_bits / min(bits_per_cycle,
    word_bits)`` cycles per word. A recurrence over the ``G*F`` tiles ``j`` (group major):

    - ``R_j`` (tile ``j`` assembled in the fetch unit): the memory streams one tile per
      ``wpt*iv`` cycles and the fetch unit requests one word per cycle, losing one cycle
      between two groups' fetch commands: ``R_j >= R_{j-1} + max(wpt*iv, wpt + [f == 0])``;
      the fetch unit's credit lets tile ``j``'s
      requests start only after tile ``j - fetch_depth`` left it, so
      ``R_j >= W_{j-depth} + 1 + latency + ceil((wpt-1)*iv) + 5`` (the memory answers on whole
      cycles); ``R_0 = F + latency + wpt*iv``
      (``F`` cycles of setup: ``ceil(K/S)`` without a divider);
    - ``W_j`` (tile written into the group buffer) ``= max(R_j, W_{j-1} + 1, B_g)``, where
      ``B_g`` is when group ``g``'s bank is free: the end of group ``g - 2``'s compute;
    - group ``g`` computes ``n*F`` beats (at least ``n + 1`` cycles: one reloads the threshold
      unit) from ``C_g = max(W_last(g) + 1, C_{g-1} + n*F)``;
    - ``total = C_{G-1} + n*F + pe_latency + 14`` (PE array, threshold unit, output FIFOs).

    The fixed terms (5, 14) were fitted once to the engine in the Amaranth simulator with
    :func:`bebert.sim.memory.amaranth_memory` (whose ``latency`` counts one cycle more than
    the cocotb :class:`bebert.sim.tb_fetch.MemoryModel`'s). Accuracy: over 26 shapes from
    compute bound to credit and bandwidth bound (P x S from 2 x 4 to 16 x 64, 1 to 16
    groups, 1 to 30 tokens) the model was 1 cycle under to 3 cycles over
    the measured count; the tests (``tests/test_linear_sim.py::test_cycles_match_model``,
    ``sim/tb_linear.py::cycles``) allow ``1% + 4`` cycles. ``pe_latency`` is
    :attr:`bebert.hw.pe_array.PEArray.latency` (``LinearEngine.expected_cycles`` passes it).
    Output backpressure is not modelled (it only adds cycles).

    ``raw=True``: the raw-mode engine (no threshold unit): no reload cycle per group
    (``n*F`` cycles per group) and a pipeline tail of ``pe_latency + RAW_TAIL``.

    ``detail=True`` returns a :class:`CycleModel` with ``total`` and the two floors
    ``compute = G*n*F`` and ``weight_stream = G*F*wpt*iv``.
    """
    _check_shape(k, n_out, p, s)
    if n < 1 or bits_per_cycle <= 0 or latency < 1 or fetch_depth < 1:
        raise ValueError(f"need n >= 1, bits_per_cycle > 0, latency >= 1, fetch_depth >= 1; got "
                         f"{n}, {bits_per_cycle}, {latency}, {fetch_depth}")
    f_count, groups = _folds(k, s), -(-n_out // p)
    wpt = -(-(p * s) // word_bits)
    iv = word_bits / min(bits_per_cycle, word_bits)
    tc = n * f_count
    group_time = tc if raw else max(tc, n + 1)
    ready: list[float] = []    # R_j
    written: list[float] = []  # W_j
    starts: list[float] = []   # C_g
    for g in range(groups):
        bank_free = starts[g - 2] + group_time if g >= 2 else 0
        for f in range(f_count):
            j = g * f_count + f
            if j == 0:
                r = f_count + latency + wpt * iv
            else:  # the memory's pace; the request side loses a cycle between two groups' commands
                r = ready[j - 1] + max(wpt * iv, wpt + (f == 0))
            if j >= fetch_depth:
                r = max(r, written[j - fetch_depth] + 1 + latency + math.ceil((wpt - 1) * iv) + 5)
            ready.append(r)
            written.append(max(r, written[j - 1] + 1 if j else 0, bank_free))
        starts.append(max(written[-1] + 1, starts[-1] + group_time if starts else 0))
    total = math.ceil(starts[-1] + tc + pe_latency + (RAW_TAIL if raw else 14))
    if detail:
        return CycleModel(total=total, compute=groups * tc, weight_stream=groups * f_count * wpt * iv)
    return total


# ---- test vectors (shared by the Amaranth-simulator tests and the cocotb testbench)

@dataclass
class LinearLayer:
    """One layer's data: bits ``x (n, K)``, ``w (N, K)``; ``t``, ``pol`` for ``G*P`` channels (padding included)."""

    x: np.ndarray
    w: np.ndarray
    t: np.ndarray
    pol: np.ndarray

    n = property(lambda self: int(self.x.shape[0]))
    k = property(lambda self: int(self.x.shape[1]))
    n_out = property(lambda self: int(self.w.shape[0]))

    def out_bits(self) -> np.ndarray:
        """:func:`linear_sign` of the layer: ``(n, N)`` bits."""
        return linear_sign(pack_bits(self.x), pack_bits(self.w), self.k, self.t[:self.n_out], self.pol[:self.n_out])

    def ties(self) -> int:
        """How many (token, channel) popcounts equal their threshold exactly."""
        y = popcount_dot(pack_bits(self.x), pack_bits(self.w), self.k)
        return int((y == self.t[None, :self.n_out]).sum())


def random_layer(rng: np.random.Generator, n: int, k: int, n_out: int, p: int, width: int) -> LinearLayer:
    """Random bits; thresholds of 70% of the channels at or next to one of their actual popcounts
    (exact ties), the rest (and the padding channels of the last group) anywhere in ``-2 .. K+2``;
    random polarities; normalized to ``signed(width)`` (:func:`~bebert.golden.threshold.normalize_threshold`)."""
    x = rng.integers(0, 2, (n, k), dtype=np.uint8)
    w = rng.integers(0, 2, (n_out, k), dtype=np.uint8)
    groups = -(-n_out // p)
    y = popcount_dot(pack_bits(x), pack_bits(w), k)                    # (n, N)
    t = rng.integers(-2, k + 3, size=groups * p)
    near = y[rng.integers(0, n, size=n_out), np.arange(n_out)] + rng.integers(-1, 2, size=n_out)
    t[:n_out] = np.where(rng.random(n_out) < 0.7, near, t[:n_out])
    pol = rng.integers(0, 2, size=groups * p)
    t, pol = normalize_threshold(t, pol, width)
    return LinearLayer(x, w, t, pol)


def layers_memory(layers: list[LinearLayer], p: int, s: int, word_bits: int, rng: np.random.Generator,
                  base: int = 5) -> tuple[np.ndarray, list[int]]:
    """A memory image: ``base`` random words, each layer's :func:`weight_words` in turn, 3 random words.

    Returns ``(words, bases)``, ``bases[i]`` the first word of layer ``i``'s tiles.
    """
    chunks = [rng.integers(0, 1 << word_bits, size=base, dtype=np.uint64)]
    bases, at = [], base
    for layer in layers:
        img = weight_words(weight_tiles(pack_bits(layer.w), layer.k, layer.n_out, p, s), p * s, word_bits)
        bases.append(at)
        chunks.append(img)
        at += len(img)
    chunks.append(rng.integers(0, 1 << word_bits, size=3, dtype=np.uint64))
    return np.concatenate(chunks), bases
