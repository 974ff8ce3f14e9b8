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

__all__ = ["is_int_model_file", "evaluate_int_model", "load_eval_data", "golden_logits"]


def is_int_model_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file (a deployment file is one file; training checkpoints are folders)."""
    return Path(path).is_file()


def load_eval_data(model, path, task: str | None, data_dir: str, split: str = "dev", max_len: int | None = None,
                   max_examples: int | None = None, vocab: str | os.PathLike | None = None,
                   rows: list[int] | None = None):
    """``(task spec, encoded dataset)`` of a split for a loaded deployment file (``model``, read from ``path``);
    ``rows``: only those rows of the split, in that order (e.g. the held-out training rows of
    :func:`bebert.model.ensemble.holdout_split`).

    Raises
    ------
    ValueError
        If the task is unknown or not recorded, ``max_len`` exceeds the model's position table, or the
        vocabulary does not match the model.
    FileNotFoundError, bebert.model.data.DataFormatError
        If the split's file is missing or malformed.
    """
    from bebert.model.data import count_vocab, encode_examples, get_task, load_tokenizer, read_examples, split_path
    from bebert.model.teacher import default_base_model, vocab_path_of

    meta = model.meta
    task_name = task or meta.get("task")
    if not task_name:
        raise ValueError(f"{path} does not record its task; pass --task")
    spec = get_task(task_name)
    limit = int(model.dims["max_len"])
    if max_len is not None and max_len > limit:
        raise ValueError(f"--max-len {max_len} exceeds the model's maximum of {limit} tokens (its position table)")
    vocab_file = Path(vocab) if vocab is not None else vocab_path_of(default_base_model())
    n_vocab = count_vocab(vocab_file)
    want = int(meta["config"]["vocab_size"])
    if n_vocab != want:
        raise ValueError(f"{vocab_file} has {n_vocab} entries but {path} has a vocabulary of {want}; "
                         "pass the training run's vocab.txt with --vocab")
    tok = load_tokenizer(vocab_file, max_len or int(meta.get("max_len") or limit), meta.get("lowercase", True))
    examples = read_examples(spec, split_path(spec, data_dir, split), max_examples)
    if rows is not None:
        bad = [i for i in rows if not 0 <= i < len(examples)]
        if bad:
            raise ValueError(f"row {bad[0]} is outside the {len(examples)} rows of {spec.name} {split}")
        examples = [examples[i] for i in rows]
    ds = encode_examples(examples, tok)
    return spec, ds


def golden_logits(golden, ds, batch_size: int = 64, progress: bool = False, exact_length: bool = False,
                  threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, L), member logits (M, N, L))`` of every example of ``ds`` by ``golden`` (a GoldenModel).

    Batches hold sentences of similar length (sorted); with ``exact_length`` only sentences of the same
    length, so that no batch has padding (each sentence then runs as the accelerator runs it alone).
    """
    n = len(ds)
    order = sorted(range(n), key=lambda i: len(ds.input_ids[i]))
    if exact_length:
        batches, at = [], 0
        while at < n:
            length = len(ds.input_ids[order[at]])
            end = at
            while end < n and end - at < batch_size and len(ds.input_ids[order[end]]) == length:
                end += 1
            batches.append(order[at:end])
            at = end
    else:
        batches = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    labels = int(golden.model.dims["num_labels"])
    logits = np.zeros((n, labels), dtype=np.int64)
    member_logits = np.zeros((len(golden.members), n, labels), dtype=np.int64)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="golden", unit="batch", leave=False)
    from .infer import pad_batch

    for idx in batches:
        ids, mask = pad_batch([ds.input_ids[i] for i in idx], golden.pad_id)
        types, _ = pad_batch([ds.token_type_ids[i] for i in idx])
        out = golden.forward(ids, mask, types, threads=threads)
        logits[idx] = out.logits
        member_logits[:, idx] = out.member_logits
    return logits, member_logits


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
    from bebert.model.metrics import compute_metrics

    from .format import load_int_model
    from .infer import GoldenModel

    model = load_int_model(path)
    meta = model.meta
    spec, ds = load_eval_data(model, path, task, data_dir, split, max_len, max_examples, vocab)
    golden = GoldenModel(model)
    n = len(ds)
    members = int(meta["members"])
    t0 = time.perf_counter()
    logits, member_logits = golden_logits(golden, ds, batch_size, progress)
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
