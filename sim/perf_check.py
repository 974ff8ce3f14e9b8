"""The cycle model against Verilator: :func:`bebert.golden.accelerator.expected_cycles` beside the cycles the
whole accelerator takes in the cocotb + Verilator testbench (:mod:`bebert.sim.tb_accelerator`), one
sequence per configuration, no output backpressure.

``bebert bench --perf-model`` runs :data:`CONFIGS` on the shipped checkpoint and writes the rows into
``bench.json``'s ``perf_model``; ``tests/test_perf_check.py`` runs two small ones on a random model. The goal
is an error within 2% on every configuration. Batching (B sequences per pass over the weights) is not an
RTL feature yet, so no configuration varies B.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIGS", "GOAL_PCT", "check_config", "validate"]

#: Goal: ``|model - verilator| / verilator`` within this many percent.
GOAL_PCT = 2.0

#: Configurations for the shipped checkpoint (H = 384, F = 1536: P and S divide both): the shipped demo one,
#: without the prefetch, one lane, wider and narrower arrays, other memories and lengths.
CONFIGS = [
    dict(p=2, s=32, lanes=2, prefetch=4096, word_bits=16, bits_per_cycle=12.8, latency=8, n=10),
    dict(p=2, s=32, lanes=2, prefetch=0, word_bits=16, bits_per_cycle=12.8, latency=8, n=16),
    dict(p=4, s=32, lanes=1, prefetch=4096, word_bits=16, bits_per_cycle=12.8, latency=8, n=12),
    dict(p=8, s=64, lanes=2, prefetch=4096, word_bits=32, bits_per_cycle=32.0, latency=4, n=8),
    dict(p=4, s=16, lanes=2, prefetch=1024, word_bits=16, bits_per_cycle=16.0, latency=12, n=16),
    # the narrow 128/2 pair (tiny-ice40's file) on a wide array and a 64-bit memory with 16 attention keys a
    # cycle (edge-ecp5's kb): the non-GEMM paths count; then with four vector channels a cycle (edge-ecp5's vw)
    dict(p=16, s=64, lanes=2, prefetch=4096, word_bits=64, bits_per_cycle=64.0, latency=2, n=32, kb=16,
         model="checkpoints/sst2-w1a1-h128-l2-m2.safetensors"),
    dict(p=16, s=64, lanes=2, prefetch=4096, word_bits=64, bits_per_cycle=64.0, latency=2, n=32, kb=16, vw=4,
         model="checkpoints/sst2-w1a1-h128-l2-m2.safetensors"),
]


def check_config(model_path, ids, cfg: dict, *, seed: int = 1) -> dict:
    """One row: ``{"config", "model_cycles", "verilator_cycles", "error_pct", "agree", "build_seconds",
    "sim_seconds"}`` for the sequence ``ids`` (token type 0) through the W1A1 deployment file ``model_path``
    in configuration ``cfg`` (keys of
    :data:`CONFIGS`; ``n`` is ignored, the length is ``len(ids)``). ``agree``: the logits equal golden's."""
    from ..golden.accelerator import AccelSpec, expected_cycles
    from ..golden.format import load_int_model
    from .tb_accelerator import run_inference

    if cfg.get("model"):         # a configuration for another deployment file (relative to the repository)
        model_path = Path(__file__).resolve().parents[1] / cfg["model"]
    model = load_int_model(model_path)
    spec = AccelSpec.from_int_model(model, cfg["p"], cfg["s"], cfg["word_bits"])
    n = len(ids)
    if n > spec.max_len:
        raise ValueError(f"a sequence of {n} tokens is longer than the model's {spec.max_len}")
    lanes = min(cfg["lanes"], int(model.members))
    rep = run_inference(model_path, spec, [dict(ids=[int(i) for i in ids], types=[0] * n, length=n)], lanes=lanes,
                        prefetch=cfg["prefetch"], max_tokens=n, report_name="perf_check", latency=cfg["latency"],
                        kb=cfg.get("kb", 4), vw=cfg.get("vw", 1),
                        bits_per_cycle=cfg["bits_per_cycle"], check_cycles=False, seed=seed)
    job = rep["jobs"][0]
    measured = int(job["counters"]["cycles"])
    # the testbench's memory answers a read `latency` cycles after the request; the model counts the wait
    # between them (latency - 1), as bebert perf and bebert bench do
    predicted = int(expected_cycles(spec, n, cfg["bits_per_cycle"], max(cfg["latency"] - 1, 1), lanes=lanes,
                                    prefetch=bool(cfg["prefetch"]), kb=cfg.get("kb", 4), vw=cfg.get("vw", 1)))
    return {"config": dict(cfg, n=n, lanes=lanes), "model_cycles": predicted, "verilator_cycles": measured,
            "error_pct": round(100.0 * (predicted - measured) / measured, 3), "agree": bool(job["agree"]),
            "build_seconds": rep["build_seconds"], "sim_seconds": rep["sim_seconds"]}


def validate(model_path, token_ids, configs=CONFIGS, progress: bool = True) -> list[dict]:
    """:func:`check_config` for each configuration, on the first ``n`` tokens of ``token_ids`` (a 1-D
    sequence that starts with [CLS]; the last token kept is replaced by its last one, [SEP])."""
    import sys

    from tqdm import tqdm

    rows = []
    with tqdm(total=len(configs), desc="cycle model vs Verilator", unit="config", file=sys.stderr,
              disable=not progress) as bar:
        for cfg in configs:
            n = cfg["n"]
            if n < 2 or n > len(token_ids):
                raise ValueError(f"n = {n}: need 2 <= n <= {len(token_ids)} tokens")
            ids = list(token_ids[: n - 1]) + [int(token_ids[-1])]
            rows.append(check_config(model_path, ids, cfg))
            bar.update()
    return rows
