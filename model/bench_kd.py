"""Training-step time with and without knowledge distillation, measured in one run.

::

    python -m bebert.model.bench_kd --model runs/sst2-teacher [--task sst2-sentences]
        [--data-dir ../shared/data/sst2-sentences] [--steps 30] [--batch-size 16] [--max-len 64]
        [--threads 1] [--json docs/results/kd_timing.json]

BEBERT trains its members without distillation and reports that as about twice as fast as with
it. This times the same optimizer steps (same student initialized from the teacher, same
batches, same seed) under ``--kd none``, ``pred`` and ``dmd`` with the trainer's own loss
(:meth:`bebert.model.train.Trainer._loss`), after two warm-up steps each, and prints seconds
per step and the ratio to ``none``. The three modes take turns step by step, so that a change in
the machine's load during the run affects them alike. The ratios are the claim to check; the absolute seconds
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

__all__ = ["time_steps", "main"]


def time_steps(model_dir: str, task: str, data_dir: str, modes: tuple[str, ...], steps: int, batch_size: int,
               max_len: int, backbone: str = "w1a1", seed: int = 0, tmp_dir: str | None = None,
               max_train_examples: int | None = None) -> dict[str, float]:
    """Median seconds per optimizer step of a student trained under each KD mode of ``modes``.

    The modes take turns step by step (one step of each, then the next batch), so a change in
    the machine's load affects them alike; every mode sees the same batches.
    """
    from .data import collate
    from .train import TrainConfig, Trainer, _to

    runs = {}
    for kd in modes:
        cfg = TrainConfig(kind="student", task=task, data_dir=data_dir, output_dir=tmp_dir or "unused",
                          model=model_dir, backbone=backbone, kd=kd, batch_size=batch_size, max_len=max_len,
                          max_eval_examples=1, max_train_examples=max_train_examples, seed=seed, progress=False)
        tr = Trainer(cfg, log=lambda s: None)
        torch.manual_seed(seed)
        model = tr._fresh_initial()
        model.train()
        opt, _ = tr._make_opt(model, steps + 2)
        runs[kd] = (tr, model, opt, [])
    tr0 = runs[modes[0]][0]
    n = len(tr0.train_ds)
    if n < (steps + 2) * batch_size:
        raise ValueError(f"{steps + 2} steps of {batch_size} need {(steps + 2) * batch_size} training rows; "
                         f"the task has {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    for s in range(steps + 2):
        idx = order[s * batch_size : (s + 1) * batch_size]
        for kd in modes:
            tr, model, opt, times = runs[kd]
            batch = _to(collate(tr.train_ds, idx), tr.device)
            t0 = time.perf_counter()
            loss = tr._loss(model, batch, None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if s >= 2:  # the first steps load the teacher and warm up allocators
                times.append(time.perf_counter() - t0)
    return {kd: sorted(r[3])[len(r[3]) // 2] for kd, r in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bebert.model.bench_kd", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="fine-tuned teacher folder (student initialization and KD)")
    ap.add_argument("--task", default="sst2-sentences")
    ap.add_argument("--data-dir", default="../shared/data/sst2-sentences")
    ap.add_argument("--backbone", default="w1a1", choices=("w1a1", "w1a4"))
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-train-examples", type=int, default=None, help="read only the first N training rows")
    ap.add_argument("--json", type=Path, help="write the figures here (atomically)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    torch.set_num_threads(args.threads)
    try:
        rows = time_steps(args.model, args.task, args.data_dir, ("none", "pred", "dmd"), args.steps, args.batch_size,
                          args.max_len, args.backbone, max_train_examples=args.max_train_examples)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for kd, sec in rows.items():
        print(f"kd={kd:5s} {sec * 1000:8.1f} ms/step  x{sec / rows['none']:.2f} of no-KD")
    result = {
        "seconds_per_step": {k: round(v, 4) for k, v in rows.items()},
        "kd_over_none": {k: round(v / rows["none"], 3) for k, v in rows.items() if k != "none"},
        "goal": "no-KD at least 2x faster than KD (kd_over_none >= 2)",
        "goal_met": {k: v / rows["none"] >= 2.0 for k, v in rows.items() if k != "none"},
        "steps": args.steps, "batch_size": args.batch_size, "max_len": args.max_len, "threads": args.threads,
        "backbone": args.backbone, "machine": platform.processor() or platform.machine(),
        "command": "python -m bebert.model.bench_kd " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
    }
    if args.json:
        from bebert.atomic import write_json_atomic

        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
