"""Checkpoints: safetensors + JSON, every file written atomically.

A file is written to a temporary name in its destination folder, flushed, fsynced and moved
over the destination with ``os.replace``: a reader (or a run resumed after a crash) sees the
old file or the new one, never a torn one.

Layouts
-------
Teacher (Hugging Face layout, loadable by ``transformers``)::

    config.json          Hugging Face model config
    model.safetensors    Hugging Face parameter names
    vocab.txt            the tokenizer vocabulary
    bebert.json          {"kind": "teacher", "task": ..., "max_len": ..., "lowercase": ...}

Student / ensemble::

    model.safetensors    member.<m>.<parameter> for every member (latent float weights)
    vocab.txt
    bebert.json          {"kind": "student", "task", "max_len", "lowercase",
                          "model": ModelConfig, "ensemble": {"method", "weights"}}
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

__all__ = [
    "atomic_write_bytes",
    "save_json",
    "load_json",
    "save_tensors",
    "load_tensors",
    "copy_file_atomic",
    "save_student",
    "load_student",
    "read_meta",
    "STUDENT_WEIGHTS",
    "META_NAME",
]

STUDENT_WEIGHTS = "model.safetensors"
META_NAME = "bebert.json"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically (tensors are copied to contiguous CPU memory)."""
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(clean, metadata=metadata))


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file into a dict of tensors on ``device``."""
    with open(path, "rb") as f:
        data = f.read()
    return {k: v.to(device) for k, v in st_load(data).items()}


def copy_file_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file atomically (no-op when source and destination are the same file)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.resolve() == dst.resolve():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_meta(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint's ``bebert.json``; a plain Hugging Face folder reads as a teacher."""
    d = Path(ckpt_dir)
    meta = d / META_NAME
    if meta.is_file():
        return load_json(meta)
    if (d / "config.json").is_file():
        return {"kind": "teacher"}
    raise FileNotFoundError(f"{d} is not a checkpoint (no {META_NAME} or config.json)")


def save_student(
    ckpt_dir: str | os.PathLike,
    members: list[torch.nn.Module],
    weights: list[float],
    meta: dict[str, Any],
    vocab_path: str | os.PathLike,
) -> None:
    """Write a student/ensemble checkpoint (weights first, then the JSON that describes them).

    Parameters
    ----------
    ckpt_dir : path-like
        Destination folder.
    members : list of BinaryBertForSequenceClassification
        The members.
    weights : list of float
        Their combination weights.
    meta : dict
        ``task``, ``max_len``, ``lowercase``, ``ensemble.method`` ...; ``kind``, ``model`` and
        ``ensemble.weights`` are filled in here.
    vocab_path : path-like
        The vocabulary to copy next to the weights.
    """
    d = Path(ckpt_dir)
    tensors = {}
    for m, member in enumerate(members):
        for k, v in member.state_dict().items():
            tensors[f"member.{m}.{k}"] = v
    save_tensors(d / STUDENT_WEIGHTS, tensors, metadata={"format": "bebert-student", "members": str(len(members))})
    copy_file_atomic(vocab_path, d / "vocab.txt")
    meta = dict(meta)
    meta["kind"] = "student"
    meta["model"] = members[0].config.to_dict()
    ens = dict(meta.get("ensemble", {}))
    ens["weights"] = [float(w) for w in weights]
    ens["members"] = len(members)
    meta["ensemble"] = ens
    save_json(d / META_NAME, meta)


def load_student(ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a student/ensemble checkpoint.

    Returns
    -------
    members : list of BinaryBertForSequenceClassification
    weights : list of float
    meta : dict
    """
    from .config import ModelConfig
    from .student import BinaryBertForSequenceClassification

    d = Path(ckpt_dir)
    meta = read_meta(d)
    if meta.get("kind") != "student":
        raise ValueError(f"{d} is not a student checkpoint (kind={meta.get('kind')!r})")
    cfg = ModelConfig.from_dict(meta["model"])
    tensors = load_tensors(d / STUDENT_WEIGHTS, device)
    n = int(meta["ensemble"]["members"])
    members = []
    for m in range(n):
        prefix = f"member.{m}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        model = BinaryBertForSequenceClassification(cfg).to(device)
        model.load_state_dict(state, strict=True)
        model.eval()
        members.append(model)
    return members, [float(w) for w in meta["ensemble"]["weights"]], meta
