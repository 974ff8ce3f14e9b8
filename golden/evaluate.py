"""GLUE metrics of an integer deployment file, computed by the golden model (``bebert eval MODEL.safetensors``).

The deployment file (``bebert export``) holds integers only, so this scores exactly what the
hardware computes. It carries the task and maximum length of its training run but not the
WordPiece vocabulary: that comes from ``--vocab`` (default: the MiniLM vocabulary the project's
checkpoints are trained with) and must have the model's ``vocab_size`` entries.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["is_int_model_file", "evaluate_int_model"]


def is_int_model_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file (a deployment file is one file; training checkpoints are folders)."""
    return Path(path).is_file()


def evaluate_int_model(path: str | os.PathLike, task: str | None, data_dir: str, split: str = "dev",
                       max_len: int | None = None, max_examples: int | None = None, batch_size: int = 64,
                       vocab: str | os.PathLike | None = None, progress: bool = False) -> dict[str, Any]:
    """Score a deployment file with :class:`~bebert.golden.infer.GoldenModel`.

    Returns
    -------
    dict
        ``{"task", "split", "examples", "kind": "int", "backbone", "metrics", "members", "seconds"}``;
        ``members`` holds each member's metrics when there are several.

    Raises
    ------
    ValueError
        If the task is unknown or not recorded, or the vocabulary does not match the model.
    bebert.golden.format.IntModelError
        If the file is not a valid deployment file.
    """
    from bebert.model.data import encode_examples, get_task, load_tokenizer, read_examples, split_path
    from bebert.model.metrics import compute_metrics
    from bebert.model.teacher import default_base_model, vocab_path_of

    from .format import load_int_model
    from .infer import GoldenModel, pad_batch

    model = load_int_model(path)
    meta = model.meta
    task_name = task or meta.get("task")
    if not task_name:
        raise ValueError(f"{path} does not record its task; pass --task")
    spec = get_task(task_name)
    vocab_file = Path(vocab) if vocab is not None else vocab_path_of(default_base_model())
    n_vocab = sum(1 for _ in vocab_file.open(encoding="utf-8"))
    want = int(meta["config"]["vocab_size"])
    if n_vocab != want:
        raise ValueError(f"{vocab_file} has {n_vocab} entries but {path} has a vocabulary of {want}; "
                         "pass the training run's vocab.txt with --vocab")
    tok = load_tokenizer(vocab_file, max_len or int(meta.get("max_len") or 128), meta.get("lowercase", True))
    ds = encode_examples(read_examples(spec, split_path(spec, data_dir, split), max_examples), tok)
    golden = GoldenModel(model)
    n = len(ds)
    order = sorted(range(n), key=lambda i: len(ds.input_ids[i]))
    members = int(meta["members"])
    logits = np.zeros((n, spec.num_labels), dtype=np.int64)
    member_logits = np.zeros((members, n, spec.num_labels), dtype=np.int64)
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="golden", unit="batch", leave=False)
    t0 = time.perf_counter()
    for s in starts:
        idx = order[s : s + batch_size]
        ids, mask = pad_batch([ds.input_ids[i] for i in idx], golden.pad_id)
        types, _ = pad_batch([ds.token_type_ids[i] for i in idx])
        out = golden.forward(ids, mask, types)
        logits[idx] = out.logits
        member_logits[:, idx] = out.member_logits
    seconds = time.perf_counter() - t0
    labels = ds.labels.numpy()
    # argmax takes the first maximum, as GoldenOutput.predictions does
    result: dict[str, Any] = {
        "task": spec.name, "split": split, "examples": n, "kind": "int",
        "backbone": meta["config"].get("backbone", "w1a1"),
        "metrics": compute_metrics(spec.metrics, logits.argmax(-1), labels),
    }
    if members > 1:
        result["members"] = [compute_metrics(spec.metrics, member_logits[m].argmax(-1), labels) for m in range(members)]
    result["seconds"] = round(seconds, 2)
    return result
