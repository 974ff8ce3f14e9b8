"""Golden function of the linear + vector op (:class:`bebert.hw.linear_vector.LinearVectorOp`).

The attention output projection (``attn_out`` + ``attn_ln``) and the FFN down-projection
(``ffn_out`` + ``ffn_ln``) of a W1A1 layer, composed from the existing golden functions::

    acc      = linear_popcounts(x, W, K)                       (golden.linear, popcount_dot XNOR)
    out, bit = vector_step(acc, residual, K, scale, bias, gamma, beta, fmts)     (golden.vector)

:func:`expected_cycles` is the op's analytic cycle model.
"""

from __future__ import annotations

import math

import numpy as np

from . import linear as _linear
from .vector import VectorFormats, vector_step

__all__ = ["linear_vector", "expected_cycles", "FEED_OFFSET", "TAIL"]

#: Cycles from the engine's last PE beat of a token's last group to that token's first vector beat.
FEED_OFFSET = 8
#: Cycles from the vector unit's pass-2 end (last read issued) to the final output transfer.
TAIL = 14


def linear_vector(x_packed: np.ndarray, w_packed: np.ndarray, k: int, scale, bias, gamma, beta, residual,
                  fmts: VectorFormats):
    """LayerNorm outputs and sign bits of ``n`` tokens, exactly as :mod:`bebert.golden.infer`.

    Parameters
    ----------
    x_packed : ``(n, ceil(K/64))`` uint64, the layer's input bits (bit 1 = +1).
    w_packed : ``(H, ceil(K/64))`` uint64, weight rows (the exported ``*.bits`` layout).
    k : ``K``.
    scale, bias, gamma, beta : ``(H,)`` codes (the exported ``*.scale``, ``*.bias``, ``*_ln.gamma``,
        ``*_ln.beta``).
    residual : ``(n, H)`` residual-stream codes entering the layer (``fmts.layernorm``).
    fmts : VectorFormats

    Returns
    -------
    out : int64 ``(n, H)``, bits : uint8 ``(n, H)``, acc : int64 ``(n, H)`` (the popcounts).

    Raises
    ------
    ValueError
        On arrays whose shapes do not match each other or ``K``.
    """
    acc = _linear.linear_popcounts(x_packed, w_packed, k)
    n, h = acc.shape
    residual = np.asarray(residual, np.int64)
    if residual.shape != (n, h):
        raise ValueError(f"residual has shape {residual.shape}, the layer gives {(n, h)}")
    for name, v in (("scale", scale), ("bias", bias), ("gamma", gamma), ("beta", beta)):
        if np.shape(v) != (h,):
            raise ValueError(f"{name} has shape {np.shape(v)}, need ({h},)")
    out, bits = vector_step(acc, residual, k, scale, bias, gamma, beta, fmts)
    return out, bits, acc


def expected_cycles(n: int, k: int, h: int, p: int, s: int, bits_per_cycle: float, latency: int, *,
                    word_bits: int = 16, pe_latency: int = 4, fetch_depth: int = 2, stats_cycles: int = 80,
                    vector_latency: int = 13, banks: int = 3, vw: int = 1, detail: bool = False):
    """Cycles of one command with an always-ready output (acceptance to the ``final`` transfer).

    The linear part is :func:`bebert.golden.linear.expected_cycles` (``raw=True``): its last group
    starts computing at ``C = total - n*F - pe_latency - RAW_TAIL`` and token ``t``'s row is
    complete at ``C + (t+1)*F + pe_latency + FEED_OFFSET`` (``ready_t``). The vector unit
    (``stats_cycles`` = :attr:`bebert.hw.vector.VectorUnit.stats_cycles`) per token:

    - pass 1 ``in_t = max(ready_t, in_{t-1} + W, out_{t-B})`` (``W = H / vw`` beats of ``vw`` channels;
      ``B = banks`` banks: a bank is free once pass 2 of the token ``B`` before has read it), ``W`` cycles;
    - statistics ``st_t = max(in_t + W + 9, st_{t-1}) + stats_cycles`` (one serial engine);
    - pass 2 ``out_t = max(st_t, out_{t-1}) + W``;
    - ``total = out_{n-1} + vector_latency + TAIL - 13``.

    ``stats_cycles`` is the statistics engine's time per token, the same for every token (its
    normalization always takes ``norm_steps`` cycles), so the model is exact within a few cycles in the
    Amaranth simulator (``tests/test_linear_vector_sim.py``; the test still allows ``n * norm_steps + 4``
    under, from when the normalization time varied, and 4 over). Output backpressure is not modelled.

    ``detail=True`` returns a dict with ``total``, ``linear`` (the raw engine's own count) and
    ``vector`` (``n*H/vw``, the vector unit's input beats).
    """
    if h < 1:
        raise ValueError(f"H must be a positive integer, not {h!r}")
    if vw < 1 or h % vw:
        raise ValueError(f"H = {h} must be a multiple of vw = {vw} (channels a beat)")
    hw = h // vw                 # vector-unit beats a token
    lin = _linear.expected_cycles(n, k, h, p, s, bits_per_cycle, latency, word_bits=word_bits,
                                  pe_latency=pe_latency, fetch_depth=fetch_depth, raw=True)
    f_count = -(-k // s)
    c_last = lin - n * f_count - pe_latency - _linear.RAW_TAIL
    ins: list[float] = []
    sts: list[float] = []
    outs: list[float] = []
    for t in range(n):
        ready = c_last + (t + 1) * f_count + pe_latency + FEED_OFFSET
        i = max(ready, ins[-1] + hw if ins else 0, outs[t - banks] if t >= banks else 0)
        st = max(i + hw + 9, sts[-1] if sts else 0) + stats_cycles
        o = max(st, outs[-1] if outs else 0) + hw
        ins.append(i)
        sts.append(st)
        outs.append(o)
    total = math.ceil(outs[-1] + vector_latency + TAIL - 13)
    if detail:
        return {"total": total, "linear": lin, "vector": n * hw}
    return total
