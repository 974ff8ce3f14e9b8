"""The layer schedule of one BEBERT inference and its performance model.

One source of truth for what the accelerator runs: :func:`schedule` lists the operations of
one member's inference (embedding, per layer Q/K/V, attention, output projection with
LayerNorm, FFN, pooler, classifier) with their shapes, binary MACs and weight bits, from the
model configuration; :func:`performance` turns it into cycle counts for given hardware
parameters (:class:`HwParams`):

* ``ideal_cycles``: binary MACs / (P*S) per member, members in turns over ``lanes`` lanes
  (``ceil(M / lanes)`` rounds) -- the compute bound of ``../shared/DESIGN.md``;
* ``weight_floor_cycles``: every member's weight bits over the memory bandwidth (the lanes
  share one memory port) -- the weight-stream bound;
* ``estimated_cycles``: the schedule as the engine runs it. Linear layers go channel group
  by channel group (P output channels), each group's weights fetched while the previous group
  computes, so an op takes ``max(compute, weights) + latency``; the Bi-Attention unit takes
  ``heads * (n + n * ceil(n / kb))`` cycles (``docs/hw-blocks.md``); LayerNorm runs on the
  vector unit at its sustained rate (``vector_cycles_per_token``: 384 cycles per token of 384
  channels with its three banks, 440 with two; scaled by H and divided over ``vector_lanes``) after the projection that
  feeds it has finished (a token's row is complete only after the last channel group).

The model is analytic; the cycle-accurate figures come from Verilator (``sim/``) and the
engine's tests compare against :func:`linear_cycles`. Each op records which bound limits it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["HwParams", "Op", "PRESETS", "model_dims", "schedule", "linear_cycles", "performance"]

#: Model shapes by name (hidden, layers, heads, FFN, vocabulary): the teacher the project uses and
#: the two small BERTs of ``../shared/DESIGN.md``.
PRESETS = {
    "minilm-l6-h384": dict(hidden_size=384, num_layers=6, num_heads=12, ffn_size=1536, vocab_size=30522, num_labels=2),
    "bert-mini": dict(hidden_size=256, num_layers=4, num_heads=4, ffn_size=1024, vocab_size=30522, num_labels=2),
    "bert-tiny": dict(hidden_size=128, num_layers=2, num_heads=2, ffn_size=512, vocab_size=30522, num_labels=2),
}


@dataclass(frozen=True)
class HwParams:
    """Accelerator parameters the schedule's cycle counts depend on.

    Attributes
    ----------
    p, s : int
        PE array: output channels x input bits per cycle.
    lanes : int
        Ensemble-parallel lanes (members run ``lanes`` at a time, in turns beyond that).
    bits_per_cycle : float
        Sustained weight bandwidth of the shared memory port (ULX3S SDRAM: 12.8).
    batch : int
        Sequences sharing one weight fetch (weights are reused over ``batch * n`` tokens).
    attn_kb : int
        Bi-Attention keys per cycle.
    vector_lanes : int
        Vector-unit copies working on different tokens.
    vector_cycles_per_token : float
        One vector unit's sustained cycles per token at ``vector_ref_h`` channels.
    vector_ref_h : int
        Hidden size at which ``vector_cycles_per_token`` was measured.
    latency : int
        Pipeline fill and drain per op (PE array, threshold, buffers).
    fmax_mhz : float
        Clock for the time figures.
    """

    p: int = 16
    s: int = 256
    lanes: int = 1
    bits_per_cycle: float = 12.8
    batch: int = 1
    attn_kb: int = 16
    vector_lanes: int = 1
    vector_cycles_per_token: float = 384.0
    vector_ref_h: int = 384
    latency: int = 16
    fmax_mhz: float = 125.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"HwParams.{f.name} must be a positive number, not {v!r}")


@dataclass(frozen=True)
class Op:
    """One operation of the schedule (per member, per sequence batch).

    ``kind``: ``embed``, ``linear_sign`` (binary linear + threshold), ``linear_vector``
    (binary linear + scale/bias/residual + LayerNorm), ``attention``, ``pooler``,
    ``classifier``. ``tokens``: rows processed; ``k``, ``n``: input bits and output channels
    of a linear op; ``macs``: binary multiply-accumulates; ``weight_bits``: bits streamed.
    """

    name: str
    kind: str
    layer: int
    tokens: int
    k: int = 0
    n: int = 0
    macs: int = 0
    weight_bits: int = 0


def model_dims(config: dict[str, Any] | str) -> dict[str, int]:
    """Hidden, layers, heads, FFN, vocabulary and labels from a preset name or a config dict.

    Raises
    ------
    ValueError
        On an unknown preset, a missing key, or heads not dividing hidden.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown model preset {config!r}; choose from {', '.join(PRESETS)}")
        config = PRESETS[config]
    keys = ("hidden_size", "num_layers", "num_heads", "ffn_size", "vocab_size", "num_labels")
    missing = [k for k in keys if k not in config]
    if missing:
        raise ValueError(f"model configuration lacks {', '.join(missing)}")
    d = {k: int(config[k]) for k in keys}
    if any(v <= 0 for v in d.values()):
        raise ValueError(f"model dimensions must be positive: {d}")
    if d["hidden_size"] % d["num_heads"]:
        raise ValueError(f"{d['num_heads']} heads do not divide hidden size {d['hidden_size']}")
    return d


def schedule(config: dict[str, Any] | str, tokens: int) -> list[Op]:
    """The operations of one member's inference on ``tokens`` tokens, in order."""
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
    d = model_dims(config)
    h, f, a = d["hidden_size"], d["ffn_size"], d["num_heads"]
    n = tokens

    def lin(name, kind, layer, k, out, rows=n):
        return Op(name, kind, layer, rows, k, out, rows * k * out, k * out)

    # the word embedding streams one H-bit row per token
    ops = [Op("embed", "embed", -1, n, weight_bits=n * h)]
    for layer in range(d["num_layers"]):
        ops += [
            lin("qkv", "linear_sign", layer, h, 3 * h),
            Op("attention", "attention", layer, n, macs=2 * n * n * h),  # n = batch * tokens: an upper bound
            lin("attn_out", "linear_vector", layer, h, h),
            lin("ffn_in", "linear_sign", layer, h, f),
            lin("ffn_out", "linear_vector", layer, f, h),
        ]
    ops += [lin("pooler", "pooler", d["num_layers"], h, h, rows=1),
            Op("classifier", "classifier", d["num_layers"], 1, h, d["num_labels"], 0, 0)]
    return ops


def linear_cycles(tokens: int, k: int, n: int, hw: HwParams) -> dict[str, float]:
    """Cycles of one binary linear op on the engine (channel-group major, weights double-buffered).

    ``compute = ceil(n/P) * tokens * ceil(k/S)`` PE-array beats; ``weights = n*k / bandwidth``;
    the estimate is ``max`` of the two (the first group's fetch is not hidden: ``+ P*k/bw``)
    plus the pipeline latency.
    """
    groups, folds = math.ceil(n / hw.p), math.ceil(k / hw.s)
    compute = groups * tokens * folds
    weights = n * k / hw.bits_per_cycle
    first_fetch = min(n, hw.p) * k / hw.bits_per_cycle
    per_group = max(tokens * folds, hw.p * k / hw.bits_per_cycle)
    est = first_fetch + (groups - 1) * per_group + tokens * folds + hw.latency
    return {"compute": compute, "weights": weights, "estimate": est,
            "bound": "weights" if weights > compute else "compute"}


def _vector_cycles(tokens: int, h: int, hw: HwParams) -> float:
    return math.ceil(tokens / hw.vector_lanes) * hw.vector_cycles_per_token * h / hw.vector_ref_h


def performance(config: dict[str, Any] | str, tokens: int, hw: HwParams | None = None,
                members: int = 1) -> dict[str, Any]:
    """Cycle counts of a BEBERT inference (``members`` members, ``hw.batch`` sequences).

    Returns
    -------
    dict
        ``ideal_cycles``, ``weight_floor_cycles``, ``estimated_cycles``, ``bound`` (``compute``,
        ``weights`` or ``other``: what makes the estimate exceed the larger floor),
        ``ratio_to_floor`` (estimate / max(ideal, weight floor)), ``by_kind`` (cycles per op
        kind for one member round), ``ops`` (per op: cycles and limiting bound),
        ``microseconds`` at ``hw.fmax_mhz`` and the inputs.
    """
    hw = hw or HwParams()
    if not isinstance(members, int) or members < 1:
        raise ValueError(f"members must be a positive integer, not {members!r}")
    d = model_dims(config)
    h = d["hidden_size"]
    rows = tokens * hw.batch
    ops = schedule(config, rows)
    rounds = math.ceil(members / hw.lanes)
    per_op = []
    for op in ops:
        if op.kind in ("linear_sign", "linear_vector", "pooler"):
            c = linear_cycles(op.tokens, op.k, op.n, hw)
            cyc, bound = c["estimate"], c["bound"]
            if op.kind == "linear_vector":
                v = _vector_cycles(op.tokens, h, hw)
                cyc += v
                bound = "vector" if v > c["estimate"] else bound
            elif op.kind == "pooler":
                cyc += h  # tanh table, one channel per cycle
        elif op.kind == "attention":
            # attention is per sequence: each of the batch's sequences, every head
            cyc = d["num_heads"] * (tokens + tokens * math.ceil(tokens / hw.attn_kb)) * hw.batch
            bound = "attention"
        elif op.kind == "embed":
            cyc = max(op.weight_bits / hw.bits_per_cycle, 0) + _vector_cycles(op.tokens, h, hw)
            bound = "vector"
        else:  # classifier: labels x H multiply-accumulates on one MAC
            cyc = op.n * op.k
            bound = "mac"
        per_op.append({"name": op.name, "layer": op.layer, "kind": op.kind, "cycles": round(cyc, 1), "bound": bound,
                       "macs": op.macs, "weight_bits": op.weight_bits})
    # lanes run their members in lockstep: one round costs one member's schedule, except that
    # the lanes share the memory port, so weight-bound ops stretch by the lane count
    lanes_now = min(hw.lanes, members)
    round_cycles = 0.0
    for op, row in zip(ops, per_op):
        if op.kind in ("linear_sign", "linear_vector", "pooler") and lanes_now > 1:
            c = linear_cycles(op.tokens, op.k, op.n, dataclasses.replace(hw, bits_per_cycle=hw.bits_per_cycle / lanes_now))
            extra = _vector_cycles(op.tokens, h, hw) if op.kind == "linear_vector" else (h if op.kind == "pooler" else 0)
            round_cycles += c["estimate"] + extra
        else:
            round_cycles += row["cycles"]
    combine = members * d["num_labels"]
    estimated = rounds * round_cycles + combine
    macs = sum(op.macs for op in ops)
    weight_bits = sum(op.weight_bits for op in ops)
    ideal = rounds * macs / (hw.p * hw.s)
    floor = members * weight_bits / hw.bits_per_cycle
    by_kind: dict[str, float] = {}
    for row in per_op:
        by_kind[row["kind"]] = round(by_kind.get(row["kind"], 0.0) + row["cycles"], 1)
    top = max(ideal, floor)
    return {
        "model": d, "tokens": tokens, "members": members, "hw": dataclasses.asdict(hw),
        "binary_macs_per_member": macs, "weight_bits_per_member": weight_bits,
        "ideal_cycles": round(ideal, 1), "weight_floor_cycles": round(floor, 1),
        "estimated_cycles": round(estimated, 1),
        "ratio_to_floor": round(estimated / top, 3),
        "bound": "weights" if floor >= ideal else "compute",
        "microseconds": round(estimated / hw.fmax_mhz, 1),
        "by_kind": by_kind, "ops": per_op,
    }
