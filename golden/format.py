"""The integer deployment file: ``MODEL.safetensors`` with integer tensors and JSON metadata.

Layout (format ``bebert-int``, version :data:`FORMAT_VERSION`; ``docs/arithmetic.md`` section 11)
-----------------------------------------------------------------------------------------
safetensors header metadata (strings)::

    format          "bebert-int"
    format_version  "1"
    bebert          JSON: {"config": ModelConfig.to_dict(), "ln": {...}, "ln_eps_code": E,
                           "tanh_c0": c0, "members": M, "task", "max_len", "lowercase", "source"}

tensors (``m`` = member, ``l`` = layer; ``W(K) = ceil(K/64)`` words; codes are in the format
named in brackets, stored as int32; bits as little-endian uint64 words, docs section 1)::

    ensemble.weight                         (M,)            [ensemble_weight]
    tanh.table                              (Nt,)           [pooler]  pooler tanh of codes c0..
    member.m.emb.word.bits                  (V, W(H))       uint64 sign bits (1 = +1)
    member.m.emb.word.scale                 (V,)            [weight_scale] per-row alpha
    member.m.emb.position                   (max_len, H)    [embedding]
    member.m.emb.token_type                 (types, H)      [embedding]
    member.m.emb.ln.gamma / .beta           (H,)            [ln_weight] / [ln_bias]
    member.m.layer.l.{query,key,value}.bits (H, W(H))       uint64
    member.m.layer.l.{query,key,value}.{scale,bias}  (H,)   [weight_scale] / [bias]
    member.m.layer.l.{query,key,value}.{thr,pol}     (H,)   int32 threshold, uint8 polarity
                                                            (bit = y >= thr if pol else y < thr)
    member.m.layer.l.attn_out.{bits,scale,bias}      (H, W(H)), (H,), (H,)
    member.m.layer.l.attn_ln.{gamma,beta}            (H,)
    member.m.layer.l.ffn_in.{bits,scale,bias,thr,pol} (F, W(H)), (F,) ...
    member.m.layer.l.ffn_out.{bits,scale,bias}       (H, W(F)), (H,), (H,)
    member.m.layer.l.ffn_ln.{gamma,beta}             (H,)
    member.m.pooler.{bits,scale,bias}                (H, W(H)), (H,), (H,)
    member.m.classifier.weight                       (L, H)  [classifier_weight]
    member.m.classifier.bias                         (L,)    [logits]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .intops import Fmt

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IntModelError",
    "IntModel",
    "expected_tensors",
    "save_int_model",
    "load_int_model",
    "FORMAT_NAMES",
]

FORMAT = "bebert-int"
FORMAT_VERSION = 1

#: The fixed-point formats the integer model uses (keys of ``ModelConfig.fixed_point``).
FORMAT_NAMES = ("residual", "layernorm", "ln_weight", "ln_bias", "bias", "weight_scale", "embedding", "pooler",
                "classifier_weight", "logits", "ensemble_weight")

_LN_KEYS = ("mant_bits", "rsqrt_frac", "rsqrt_bits", "norm_frac")


class IntModelError(ValueError):
    """An integer model file is unreadable, of another format version, or inconsistent."""


def _words(k: int) -> int:
    return (k + 63) // 64


def _dims(cfg: dict[str, Any]) -> dict[str, int]:
    try:
        d = {k: int(cfg[k]) for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "ffn_size", "max_len",
                                      "type_vocab_size", "num_labels")}
        backbone = cfg["backbone"]
    except (KeyError, TypeError, ValueError) as e:
        raise IntModelError(f"model config is missing or has a bad field: {e}") from None
    if any(v < 1 for v in d.values()) or d["hidden_size"] % d["num_heads"]:
        raise IntModelError(f"model config has impossible dimensions: {d}")
    if backbone != "w1a1":
        raise IntModelError(f"the integer model implements the w1a1 backbone only, not {backbone!r}")
    return d


def expected_tensors(cfg: dict[str, Any], members: int, tanh_len: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype name) of every tensor a model with this config must hold."""
    d = _dims(cfg)
    h, f, v, lab = d["hidden_size"], d["ffn_size"], d["vocab_size"], d["num_labels"]
    i32, u64, u8 = "int32", "uint64", "uint8"
    out: dict[str, tuple[tuple[int, ...], str]] = {
        "ensemble.weight": ((members,), i32),
        "tanh.table": ((tanh_len,), i32),
    }
    for m in range(members):
        p = f"member.{m}."
        out.update({
            p + "emb.word.bits": ((v, _words(h)), u64),
            p + "emb.word.scale": ((v,), i32),
            p + "emb.position": ((d["max_len"], h), i32),
            p + "emb.token_type": ((d["type_vocab_size"], h), i32),
            p + "emb.ln.gamma": ((h,), i32),
            p + "emb.ln.beta": ((h,), i32),
            p + "pooler.bits": ((h, _words(h)), u64),
            p + "pooler.scale": ((h,), i32),
            p + "pooler.bias": ((h,), i32),
            p + "classifier.weight": ((lab, h), i32),
            p + "classifier.bias": ((lab,), i32),
        })
        for layer in range(d["num_layers"]):
            q = f"{p}layer.{layer}."
            for name, rows, k, thr in (("query", h, h, True), ("key", h, h, True), ("value", h, h, True),
                                       ("attn_out", h, h, False), ("ffn_in", f, h, True), ("ffn_out", h, f, False)):
                out[q + name + ".bits"] = ((rows, _words(k)), u64)
                out[q + name + ".scale"] = ((rows,), i32)
                out[q + name + ".bias"] = ((rows,), i32)
                if thr:
                    out[q + name + ".thr"] = ((rows,), i32)
                    out[q + name + ".pol"] = ((rows,), u8)
            for ln in ("attn_ln", "ffn_ln"):
                out[q + ln + ".gamma"] = ((h,), i32)
                out[q + ln + ".beta"] = ((h,), i32)
    return out


class IntModel:
    """A validated integer model: metadata, formats and integer tensors.

    Attributes
    ----------
    meta : dict
        The ``bebert`` metadata (``config``, ``ln``, ``ln_eps_code``, ``tanh_c0``, ``members`` ...).
    config : dict
        ``meta["config"]`` (``ModelConfig.to_dict()``).
    fmt : dict of str to Fmt
        The fixed-point formats by name.
    tensors : dict of str to numpy.ndarray
        As stored (int32 / uint64 / uint8).

    Raises
    ------
    IntModelError
        When the metadata is incomplete, the formats cannot hold the contract, or a tensor is
        missing, extra, or of the wrong shape or dtype for the config.
    """

    def __init__(self, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        self.meta = meta
        for key in ("config", "ln", "ln_eps_code", "tanh_c0", "members"):
            if key not in meta:
                raise IntModelError(f"integer model metadata lacks {key!r}")
        self.config = meta["config"]
        dims = _dims(self.config)
        fp = self.config.get("fixed_point", {})
        if not fp.get("enabled", False):
            raise IntModelError("the model config has fixed point disabled; an integer model needs its formats")
        if fp.get("rounding", "floor") != "floor":
            raise IntModelError(f"the integer model implements floor rounding only, not {fp.get('rounding')!r}")
        try:
            self.fmt = {name: Fmt.from_dict(fp[name]) for name in FORMAT_NAMES}
        except (KeyError, TypeError, ValueError) as e:
            raise IntModelError(f"model config lacks a valid fixed-point format: {e}") from None
        ln = meta["ln"]
        if not all(isinstance(ln.get(k), int) for k in _LN_KEYS):
            raise IntModelError(f"LayerNorm parameters must be integers {list(_LN_KEYS)}, got {ln}")
        self.members = int(meta["members"])
        if self.members < 1:
            raise IntModelError(f"an integer model needs at least one member, not {self.members}")
        if "tanh.table" not in tensors:
            raise IntModelError("integer model lacks tensor 'tanh.table'")
        want = expected_tensors(self.config, self.members, int(tensors["tanh.table"].shape[0]))
        missing = sorted(set(want) - set(tensors))
        extra = sorted(set(tensors) - set(want))
        if missing:
            raise IntModelError(f"config does not match the tensors: {len(missing)} missing, e.g. {missing[:3]}")
        if extra:
            raise IntModelError(f"config does not match the tensors: {len(extra)} unexpected, e.g. {extra[:3]}")
        for name, (shape, dtype) in want.items():
            t = tensors[name]
            if tuple(t.shape) != shape or t.dtype != np.dtype(dtype):
                raise IntModelError(
                    f"config does not match tensor {name}: expected {dtype} {shape}, found {t.dtype} {tuple(t.shape)}"
                )
        self.dims = dims
        self.tensors = tensors
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Every code within its format, every threshold within ``0..K+1``."""
        f = self.fmt
        by_suffix = {".scale": f["weight_scale"], ".bias": f["bias"], ".gamma": f["ln_weight"], ".beta": f["ln_bias"],
                     "emb.position": f["embedding"], "emb.token_type": f["embedding"],
                     "classifier.weight": f["classifier_weight"], "classifier.bias": f["logits"],
                     "ensemble.weight": f["ensemble_weight"], "tanh.table": f["pooler"]}
        for name, t in self.tensors.items():
            for suffix, fmt in by_suffix.items():
                if name.endswith(suffix) and t.size and (int(t.min()) < fmt.qmin or int(t.max()) > fmt.qmax):
                    raise IntModelError(f"tensor {name} holds codes outside {fmt}")
            if name.endswith(".thr") and t.size:
                k = self.dims["hidden_size"]  # every thresholded layer reads H bits
                if int(t.min()) < 0 or int(t.max()) > k + 1:
                    raise IntModelError(f"tensor {name} holds thresholds outside 0..{k + 1}")
            if name.endswith(".pol") and t.size and int(t.max()) > 1:
                raise IntModelError(f"tensor {name} holds polarity values other than 0/1")

    def member(self, m: int) -> dict[str, np.ndarray]:
        """Member ``m``'s tensors without the ``member.m.`` prefix."""
        p = f"member.{m}."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (dimensions, formats, sizes)."""
        h, f = self.dims["hidden_size"], self.dims["ffn_size"]
        bits = sum(int(t.shape[0]) * (f if ".ffn_out." in k else h) for k, t in self.tensors.items()
                   if k.endswith(".bits"))
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "backbone": self.config["backbone"],
            "members": self.members,
            "dims": self.dims,
            "formats": {k: repr(v) for k, v in self.fmt.items()},
            "layernorm": dict(self.meta["ln"], eps_code=self.meta["ln_eps_code"]),
            "tensors": len(self.tensors),
            "weight_bits_per_member": bits // self.members,
            "bytes": int(sum(t.nbytes for t in self.tensors.values())),
            "task": self.meta.get("task"),
            "source": self.meta.get("source"),
        }


def save_int_model(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Validate and write an integer model atomically (temporary file, fsync, rename)."""
    from safetensors.numpy import save

    from bebert.atomic import atomic_path

    IntModel(meta, tensors)  # refuse to write an inconsistent model
    data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata={
        "format": FORMAT, "format_version": str(FORMAT_VERSION), "bebert": json.dumps(meta, sort_keys=True)})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a temporary file is private; the model file is not


def load_int_model(path: str | os.PathLike) -> IntModel:
    """Read and validate an integer model file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IntModelError
        If the file is not a safetensors file (truncated, corrupt), is not a ``bebert-int``
        model, has another format version, or its config does not match its tensors.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such integer model file")
    raw = path.read_bytes()
    try:
        tensors = load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise IntModelError(f"{path} is not a valid safetensors file (corrupt or truncated): {e}") from None
    md = header.get("__metadata__") or {}
    if md.get("format") != FORMAT:
        raise IntModelError(f"{path} is not a {FORMAT} integer model (format={md.get('format')!r}); "
                            "make one with 'bebert export CHECKPOINT -o MODEL.safetensors'")
    if md.get("format_version") != str(FORMAT_VERSION):
        raise IntModelError(f"{path} has format version {md.get('format_version')!r}; this bebert reads version "
                            f"{FORMAT_VERSION} (re-export the checkpoint)")
    try:
        meta = json.loads(md["bebert"])
    except (KeyError, ValueError) as e:
        raise IntModelError(f"{path} has no readable bebert metadata: {e}") from None
    try:
        return IntModel(meta, tensors)
    except IntModelError as e:
        raise IntModelError(f"{path}: {e}") from None
