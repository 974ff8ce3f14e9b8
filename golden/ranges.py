"""Value ranges of every integer tap on real data, against the widths the formats give them.

::

    python -m bebert.golden.ranges CHECKPOINT --data-dir ../shared/data/sst2-sentences [--max-examples 200]
    python -m bebert.golden.ranges --from-teacher runs/sst2-teacher --data-dir ...   # teacher-initialized W1A1

For each kind of tap (residual sums, LayerNorm outputs and statistics, accumulators, pooler,
logits) prints the observed minimum and maximum codes, the bits they need, the bits the
contract gives them, the margin (in bits) and how many values saturated.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

__all__ = ["measure_ranges", "main"]


def _bits_signed(lo: int, hi: int) -> int:
    """Two's-complement width holding every value in ``[lo, hi]``."""
    return max(int(lo).bit_length() if lo < 0 else 0, int(hi).bit_length()) + 1 if (lo or hi) else 1


def _kind(name: str) -> str:
    tail = name.split(".", 1)[1]  # drop the member prefix
    tail = tail.split(".", 1)[1] if tail.startswith("l") and tail[1:2].isdigit() else tail
    return tail


def measure_ranges(golden, batches) -> dict[str, dict[str, Any]]:
    """Run ``golden`` with taps on ``(ids, mask, types)`` batches; per tap kind, min/max over real tokens."""
    stats: dict[str, list[int]] = {}
    for ids, mask, types in batches:
        out = golden.forward(ids, mask, types, taps=True)
        valid = mask.astype(bool)
        for name, t in out.taps.items():
            if name == "logits":
                kind = "ensemble.logits"
            else:
                kind = _kind(name)
            if t.ndim >= 2 and t.shape[:2] == valid.shape:
                vals = t[valid]
            elif ".score." in name or ".attn." in name:
                vals = t[np.broadcast_to(valid[:, None, :, None] & valid[:, None, None, :], t.shape)]
            else:
                vals = t
            if vals.size == 0:
                continue
            lo, hi = int(vals.min()), int(vals.max())
            s = stats.setdefault(kind, [lo, hi, 0])
            s[0], s[1] = min(s[0], lo), max(s[1], hi)
    f = golden.fmt
    limits = {"emb.sum": f["residual"], "attn_out.sum": f["residual"], "ffn_out.sum": f["residual"],
              "attn_out.y": f["residual"], "ffn_out.y": f["residual"], "pooler.y": f["residual"],
              "emb.ln": f["layernorm"], "attn_ln": f["layernorm"], "ffn_ln": f["layernorm"],
              "pooler.tanh": f["pooler"], "logits": f["logits"], "ensemble.logits": f["logits"]}
    out: dict[str, dict[str, Any]] = {}
    for kind, (lo, hi, _) in sorted(stats.items()):
        row: dict[str, Any] = {"min": lo, "max": hi, "bits_needed": _bits_signed(lo, hi)}
        fmt = limits.get(kind)
        if fmt is not None:
            row["format"] = repr(fmt)
            row["margin_bits"] = fmt.bits - row["bits_needed"]
            row["saturated"] = bool(lo <= fmt.qmin or hi >= fmt.qmax)
        out[kind] = row
    return out


def _student_from_teacher(teacher: str, num_labels: int):
    from bebert.model.config import ModelConfig
    from bebert.model.student import BinaryBertForSequenceClassification
    from bebert.model.teacher import load_hf_classifier

    hf = load_hf_classifier(teacher, num_labels)
    cfg = ModelConfig.from_hf_config(hf.config, backbone="w1a1", num_labels=num_labels, hidden_dropout=0.0)
    student = BinaryBertForSequenceClassification(cfg)
    student.load_teacher_state(hf.state_dict())
    return [student.eval()], [1.0]


def main(argv: list[str] | None = None) -> int:
    """Command line of ``python -m bebert.golden.ranges``."""
    p = argparse.ArgumentParser(prog="python -m bebert.golden.ranges", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", default=None, help="student / ensemble checkpoint folder")
    p.add_argument("--from-teacher", default=None,
                   help="instead: a W1A1 student initialized from this fine-tuned teacher folder (no training)")
    p.add_argument("--task", default="sst2-sentences", help="task (default: %(default)s)")
    p.add_argument("--data-dir", default="../shared/data/sst2-sentences", help="data folder (default: %(default)s)")
    p.add_argument("--max-examples", type=int, default=200, help="dev examples (default: %(default)s)")
    p.add_argument("--max-len", type=int, default=64, help="tokens per sequence (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    import torch

    from bebert.model.data import encode_examples, get_task, load_tokenizer, read_examples, split_path
    from bebert.model.teacher import vocab_path_of

    from .export import export_members
    from .format import IntModel
    from .infer import GoldenModel, pad_batch

    torch.set_num_threads(1)
    spec = get_task(args.task)
    if (args.checkpoint is None) == (args.from_teacher is None):
        p.error("give a CHECKPOINT or --from-teacher, not both")
    if args.checkpoint:
        from bebert.model.checkpoint import load_student

        members, weights, _ = load_student(args.checkpoint, "cpu")
        src = args.checkpoint
    else:
        members, weights = _student_from_teacher(args.from_teacher, spec.num_labels)
        src = args.from_teacher
    tok = load_tokenizer(vocab_path_of(src), args.max_len)
    ds = encode_examples(read_examples(spec, split_path(spec, args.data_dir, "dev"), args.max_examples), tok)
    tensors, meta = export_members(members, weights)
    golden = GoldenModel(IntModel(meta, tensors))
    batches = []
    for s in range(0, len(ds), 32):
        idx = range(s, min(len(ds), s + 32))
        ids, mask = pad_batch([ds.input_ids[i] for i in idx])
        types, _ = pad_batch([ds.token_type_ids[i] for i in idx])
        batches.append((ids, mask, types))
    res = measure_ranges(golden, batches)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{'tap':22s} {'min':>14s} {'max':>14s} {'bits':>5s} {'format':>11s} {'margin':>6s} sat")
    for k, r in res.items():
        print(f"{k:22s} {r['min']:14d} {r['max']:14d} {r['bits_needed']:5d} {r.get('format', ''):>11s} "
              f"{r.get('margin_bits', ''):>6} {'yes' if r.get('saturated') else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
