"""Agreement of the integer golden model with the PyTorch fake-quant forward pass.

::

    python -m bebert.golden.agree CHECKPOINT --task sst2-sentences \\
        --data-dir ../shared/data/sst2-sentences [--max-examples N] [-o agreement.json]

Loads a student / ensemble checkpoint, runs the fake-quant ensemble (exactly as ``bebert eval``
does) and the golden model exported from the same checkpoint in memory on a task's dev split,
and reports the fraction of sentences with the same prediction (``agreement``), the fraction
with bit-identical logits (``logits_equal``) and both accuracies.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["agreement_on_dataset", "agreement_for_checkpoint", "main"]


def agreement_on_dataset(members, weights, ds, batch_size: int = 32, golden=None) -> dict[str, Any]:
    """Compare golden and fake-quant predictions on an encoded dataset.

    Parameters
    ----------
    members : list of BinaryBertForSequenceClassification
        The ensemble members (evaluation mode is set here).
    weights : list of float
        Their combination weights.
    ds : bebert.model.data.EncodedDataset
        Tokenized examples with labels.
    batch_size : int
        Sequences per batch (sorted by length; results are kept by example index).
    golden : GoldenModel, optional
        The integer model to compare (default: exported from ``members`` in memory).

    Returns
    -------
    dict
        ``examples``, ``agreement``, ``logits_equal``, ``acc_torch``, ``acc_golden`` (fractions),
        ``disagreements`` (example indices), ``seconds_torch``, ``seconds_golden``.
    """
    import torch

    from bebert.model.student import Ensemble
    from bebert.model.train import predict_logits

    from .export import export_members
    from .format import IntModel
    from .infer import GoldenModel, pad_batch

    fp = members[0].config.fixed_point
    ens = Ensemble(members, weights, fp if fp.enabled else None).eval()
    if golden is None:
        tensors, meta = export_members(members, weights)
        golden = GoldenModel(IntModel(meta, tensors))
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = predict_logits(ens, ds, batch_size)
    t1 = time.perf_counter()
    n = len(ds)
    order = sorted(range(n), key=lambda i: len(ds.input_ids[i]))
    gold = np.zeros((n, ref.shape[-1]), dtype=np.int64)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_batch([ds.input_ids[i] for i in idx], golden.pad_id)
        types, _ = pad_batch([ds.token_type_ids[i] for i in idx])
        gold[idx] = golden.forward(ids, mask, types).logits
    t2 = time.perf_counter()
    labels = ds.labels.numpy()
    ref64 = ref.to(torch.float64).numpy()
    ref_codes = np.round(ref64 * 2.0 ** golden.fmt["logits"].frac).astype(np.int64)
    pred_t = ref64.argmax(-1)
    pred_g = gold.argmax(-1)
    agree = pred_t == pred_g
    return {
        "examples": n,
        "agreement": float(agree.mean()),
        "logits_equal": float((ref_codes == gold).all(-1).mean()),
        "acc_torch": float((pred_t == labels).mean()),
        "acc_golden": float((pred_g == labels).mean()),
        "disagreements": [int(i) for i in np.nonzero(~agree)[0]],
        "seconds_torch": round(t1 - t0, 3),
        "seconds_golden": round(t2 - t1, 3),
    }


def agreement_for_checkpoint(checkpoint: str, task: str | None, data_dir: str, split: str = "dev",
                             max_examples: int | None = None, max_len: int | None = None,
                             batch_size: int = 32) -> dict[str, Any]:
    """:func:`agreement_on_dataset` on a checkpoint and a task split (tokenized as in training)."""
    from bebert.model.checkpoint import load_student, read_meta
    from bebert.model.data import encode_examples, get_task, load_tokenizer, read_examples, split_path
    from bebert.model.teacher import vocab_path_of

    meta = read_meta(checkpoint)
    task_name = task or meta.get("task")
    if not task_name:
        raise ValueError(f"{checkpoint} does not record its task; pass --task")
    spec = get_task(task_name)
    tok = load_tokenizer(vocab_path_of(checkpoint), max_len or int(meta.get("max_len", 128)),
                         meta.get("lowercase", True))
    ds = encode_examples(read_examples(spec, split_path(spec, data_dir, split), max_examples), tok)
    members, weights, _ = load_student(checkpoint, "cpu")
    result = agreement_on_dataset(members, weights, ds, batch_size)
    result.update({"task": spec.name, "split": split, "checkpoint": str(checkpoint)})
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line of ``python -m bebert.golden.agree``; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m bebert.golden.agree",
        description="Compare the integer golden model with the PyTorch fake-quant forward pass of a student / "
                    "ensemble checkpoint on a task split: prediction agreement, identical logits, both accuracies.",
    )
    p.add_argument("checkpoint", help="student or ensemble checkpoint folder (bebert.json + model.safetensors)")
    p.add_argument("--task", default=None, help="task name (default: the one the checkpoint records)")
    p.add_argument("--data-dir", default="../shared/data/sst2-sentences",
                   help="GLUE root or task folder (default: %(default)s)")
    p.add_argument("--split", default="dev", choices=("train", "dev"), help="split (default: %(default)s)")
    p.add_argument("--max-examples", type=int, default=None, help="use only the first N examples")
    p.add_argument("--max-len", type=int, default=None, help="tokens per sequence (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("-o", "--output", default=None, help="also write the result as JSON here (atomically)")
    p.add_argument("--update-results", default=None, metavar="JSON",
                   help="merge agreement, acc_torch, acc_golden (and details) into this results file "
                        "(e.g. docs/results/golden.json)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    try:
        result = agreement_for_checkpoint(args.checkpoint, args.task, args.data_dir, args.split,
                                          args.max_examples, args.max_len, args.batch_size)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["command"] = "python -m bebert.golden.agree " + " ".join(sys.argv[1:] if argv is None else argv)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        from bebert.atomic import write_json_atomic

        write_json_atomic(Path(args.output), result)
    if args.update_results:
        from .results import update_results

        fields = {k: result[k] for k in ("agreement", "acc_torch", "acc_golden", "logits_equal", "examples", "task",
                                         "split", "checkpoint")}
        fields["agreement_status"] = "measured"
        update_results(args.update_results, fields, result["command"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
