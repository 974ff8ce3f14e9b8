"""The integer deployment file: ``MODEL.safetensors`` with integer tensors and JSON metadata.

Layout (format ``bebert-int``; ``docs/arithmetic.md`` sections 12 and 14)
------------------------------------------------------------------------
Version 1 holds the ``w1a1`` backbone (BiBERT), version 2 the ``w1a4`` backbone (BinaryBERT,
with or without TWS); :data:`VERSION_OF_BACKBONE`. Both are read.

safetensors header metadata (strings)::

    format          "bebert-int"
    format_version  "1" (w1a1) or "2" (w1a4)
    bebert          JSON: {"config": ModelConfig.to_dict(), "ln": {...}, "ln_eps_code": E,
                           "tanh_c0": c0, "members": M, "task", "max_len", "lowercase", "source"}
                    version 2 adds "softmax": {"exp_frac": 15}

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

version 2 (``w1a4``; ``B = act_bits``, ``Q = 2**B - 1`` thresholds, ``lin`` = query, key,
value, attn_out, ffn_in, ffn_out and pooler; ``_2`` tensors only with TWS)::

    member.m.emb.word.bits[_2]               (V, W(H))  uint64 sign bits of each word table
    member.m.emb.word.scale[_2]              (V,)       [weight_scale]
    member.m.emb.position / token_type / ln  as in version 1
    member.m.{layer.l.,}lin.bits[_2]         (P, W(K))  uint64 sign bits
    member.m.{layer.l.,}lin.scale[_2]        (P,)       [dot_scale] s * alpha per row
    member.m.{layer.l.,}lin.bias             (P,)       [bias]
    member.m.{layer.l.,}lin.in_thr           (Q,)       int32 input multi-thresholds, ascending
    member.m.layer.l.attn.{q,k,v}_thr        (Q,)       int32 thresholds on the Q/K/V residual codes
    member.m.layer.l.attn.exp                (N,)       int32 exp table, T[0] = 2**exp_frac
    member.m.layer.l.attn.prob_step          (2,)       int32 (m, k): s_p = m * 2**-k
    member.m.layer.l.{attn_ln,ffn_ln}.{gamma,beta}, member.m.classifier.*  as in version 1
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
    "VERSION_OF_BACKBONE",
    "W1A4_LINEARS",
]

FORMAT = "bebert-int"
#: The newest format version (``w1a4``); ``w1a1`` files stay version 1.
FORMAT_VERSION = 2
#: The format version that holds each backbone.
VERSION_OF_BACKBONE = {"w1a1": 1, "w1a4": 2}
#: W1A4 linear layers per encoder layer: name -> (rows, K, input kind), ``H``/``F`` symbolic.
W1A4_LINEARS = {"query": ("H", "H", "ln"), "key": ("H", "H", "ln"), "value": ("H", "H", "ln"),
                "attn_out": ("H", "H", "ctx"), "ffn_in": ("F", "H", "ln"), "ffn_out": ("H", "F", "gelu")}

#: The fixed-point formats the integer model uses (keys of ``ModelConfig.fixed_point``); ``w1a4``
#: adds ``dot_scale``.
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
    if backbone not in VERSION_OF_BACKBONE:
        raise IntModelError(f"the integer model implements the {' and '.join(VERSION_OF_BACKBONE)} backbones, "
                            f"not {backbone!r}")
    if backbone == "w1a4":
        try:
            d["act_bits"] = int(cfg.get("act_bits", 4))
        except (TypeError, ValueError) as e:
            raise IntModelError(f"model config has a bad act_bits: {e}") from None
        if not 2 <= d["act_bits"] <= 8:
            raise IntModelError(f"the integer model takes 2..8 activation bits, not {d['act_bits']}")
    return d


def _w1a4_tensors(cfg: dict[str, Any], d: dict[str, int], members: int, out: dict) -> None:
    """Version 2 (``w1a4``) tensor names and shapes (``None``: any length)."""
    h, f, v, lab = d["hidden_size"], d["ffn_size"], d["vocab_size"], d["num_labels"]
    i32, u64 = "int32", "uint64"
    q = (1 << d["act_bits"]) - 1
    dims = {"H": h, "F": f}
    tws = ("", "_2") if cfg.get("tws") else ("",)

    def linear(prefix, rows, k):
        for t in tws:
            out[prefix + ".bits" + t] = ((rows, _words(k)), u64)
            out[prefix + ".scale" + t] = ((rows,), i32)
        out[prefix + ".bias"] = ((rows,), i32)
        out[prefix + ".in_thr"] = ((q,), i32)

    for m in range(members):
        p = f"member.{m}."
        for t in tws:
            out[p + "emb.word.bits" + t] = ((v, _words(h)), u64)
            out[p + "emb.word.scale" + t] = ((v,), i32)
        out.update({
            p + "emb.position": ((d["max_len"], h), i32),
            p + "emb.token_type": ((d["type_vocab_size"], h), i32),
            p + "emb.ln.gamma": ((h,), i32),
            p + "emb.ln.beta": ((h,), i32),
            p + "classifier.weight": ((lab, h), i32),
            p + "classifier.bias": ((lab,), i32),
        })
        linear(p + "pooler", h, h)
        for layer in range(d["num_layers"]):
            pl = f"{p}layer.{layer}."
            for name, (rows, k, _) in W1A4_LINEARS.items():
                linear(pl + name, dims[rows], dims[k])
            for x in ("q_thr", "k_thr", "v_thr"):
                out[pl + "attn." + x] = ((q,), i32)
            out[pl + "attn.exp"] = ((None,), i32)
            out[pl + "attn.prob_step"] = ((2,), i32)
            for ln in ("attn_ln", "ffn_ln"):
                out[pl + ln + ".gamma"] = ((h,), i32)
                out[pl + ln + ".beta"] = ((h,), i32)


def expected_tensors(cfg: dict[str, Any], members: int, tanh_len: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype name) of every tensor a model with this config must hold.

    A ``None`` in a shape stands for any length (the W1A4 exp tables).
    """
    d = _dims(cfg)
    h, f, v, lab = d["hidden_size"], d["ffn_size"], d["vocab_size"], d["num_labels"]
    i32, u64, u8 = "int32", "uint64", "uint8"
    out: dict[str, tuple[tuple[int, ...], str]] = {
        "ensemble.weight": ((members,), i32),
        "tanh.table": ((tanh_len,), i32),
    }
    if cfg["backbone"] == "w1a4":
        _w1a4_tensors(cfg, d, members, out)
        return out
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
        self.backbone = self.config["backbone"]
        self.version = VERSION_OF_BACKBONE[self.backbone]
        fp = self.config.get("fixed_point", {})
        if not fp.get("enabled", False):
            raise IntModelError("the model config has fixed point disabled; an integer model needs its formats")
        if fp.get("rounding", "floor") != "floor":
            raise IntModelError(f"the integer model implements floor rounding only, not {fp.get('rounding')!r}")
        names = FORMAT_NAMES + (("dot_scale",) if self.backbone == "w1a4" else ())
        try:
            self.fmt = {name: Fmt.from_dict(fp[name]) for name in names}
        except (KeyError, TypeError, ValueError) as e:
            raise IntModelError(f"model config lacks a valid fixed-point format: {e}") from None
        if self.backbone == "w1a4":
            sm = meta.get("softmax")
            if not isinstance(sm, dict) or not isinstance(sm.get("exp_frac"), int) or not 1 <= sm["exp_frac"] <= 30:
                raise IntModelError(f"a w1a4 integer model needs softmax metadata {{'exp_frac': 1..30}}, got {sm!r}")
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
            found = tuple(t.shape)
            if len(found) == len(shape):  # None: any length (compared as found)
                shape = tuple(x if w is None else w for x, w in zip(found, shape))
            if found != shape or t.dtype != np.dtype(dtype):
                raise IntModelError(
                    f"config does not match tensor {name}: expected {dtype} {shape}, found {t.dtype} {tuple(t.shape)}"
                )
        self.dims = dims
        self.tensors = tensors
        if self.backbone == "w1a4":
            self._check_ranges_w1a4()
        else:
            self._check_ranges()

    def _check_codes(self, name: str, t: np.ndarray, fmt: Fmt) -> None:
        if t.size and (int(t.min()) < fmt.qmin or int(t.max()) > fmt.qmax):
            raise IntModelError(f"tensor {name} holds codes outside {fmt}")

    def _check_ranges_w1a4(self) -> None:
        """Codes within their formats; thresholds ascending within their input's range; exp tables
        and probability steps of the integer softmax well formed."""
        from bebert.model.intops import SOFTMAX_MAX_STEP_SHIFT, context_bound, softmax_delta_max

        f = self.fmt
        d = self.dims
        bits = d["act_bits"]
        cmax = context_bound(bits, d["max_len"])
        res, ln = f["residual"], f["layernorm"]
        thr_range = {"query": ln, "key": ln, "value": ln, "ffn_in": ln, "pooler": ln, "ffn_out": res,
                     "q_thr": res, "k_thr": res, "v_thr": res}
        one = 1 << int(self.meta["softmax"]["exp_frac"])
        dmax = softmax_delta_max(bits, d["hidden_size"] // d["num_heads"])
        for name, t in self.tensors.items():
            last = name.rsplit(".", 2)
            leaf, owner = last[-1], last[-2] if len(last) > 1 else ""
            if leaf in ("scale", "scale_2"):
                self._check_codes(name, t, f["weight_scale"] if owner == "word" else f["dot_scale"])
            elif leaf == "bias" and owner != "classifier":
                self._check_codes(name, t, f["bias"])
            elif leaf in ("gamma", "beta"):
                self._check_codes(name, t, f["ln_weight"] if leaf == "gamma" else f["ln_bias"])
            elif name.endswith(("emb.position", "emb.token_type")):
                self._check_codes(name, t, f["embedding"])
            elif name.endswith("classifier.weight"):
                self._check_codes(name, t, f["classifier_weight"])
            elif name.endswith("classifier.bias"):
                self._check_codes(name, t, f["logits"])
            elif name == "ensemble.weight":
                self._check_codes(name, t, f["ensemble_weight"])
            elif name == "tanh.table":
                self._check_codes(name, t, f["pooler"])
            elif leaf in ("in_thr", "q_thr", "k_thr", "v_thr"):
                key = owner if leaf == "in_thr" else leaf
                lo, hi = (-cmax, cmax + 1) if key == "attn_out" else (thr_range[key].qmin, thr_range[key].qmax + 1)
                t64 = t.astype(np.int64)
                if int(t64.min()) < lo or int(t64.max()) > hi or (np.diff(t64) < 0).any():
                    raise IntModelError(f"tensor {name} must hold ascending thresholds in {lo}..{hi}")
            elif leaf == "exp":
                t64 = t.astype(np.int64)
                if not 1 <= t.size <= dmax + 1 or int(t64[0]) != one or int(t64.min()) < 0 or (np.diff(t64) > 0).any():
                    raise IntModelError(f"tensor {name} is not an exp table: non-increasing from {one}, "
                                        f"at most {dmax + 1} entries")
            elif leaf == "prob_step":
                m, k = (int(x) for x in t)
                if m < 1 or not 0 <= k <= SOFTMAX_MAX_STEP_SHIFT:
                    raise IntModelError(f"tensor {name} holds a probability step ({m}, {k}) outside m >= 1, "
                                        f"0 <= k <= {SOFTMAX_MAX_STEP_SHIFT}")

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
                   if k.endswith((".bits", ".bits_2")))
        return {
            "format": FORMAT,
            "format_version": self.version,
            "backbone": self.config["backbone"],
            "tws": bool(self.config.get("tws", False)),
            "act_bits": self.dims.get("act_bits"),
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

    model = IntModel(meta, tensors)  # refuse to write an inconsistent model
    data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata={
        "format": FORMAT, "format_version": str(model.version), "bebert": json.dumps(meta, sort_keys=True)})
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # a temporary file is private; the model file is not
    except OSError as e:  # disk full, permissions ...: name the file (the temporary file is gone)
        if e.errno is None or e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None


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
    if path.is_dir():
        raise IntModelError(f"{path} is a folder, not an integer model file (bebert export writes one)")
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
    readable = {str(v): b for b, v in VERSION_OF_BACKBONE.items()}
    version = md.get("format_version")
    if version not in readable:
        known = ", ".join(f"{v} ({b})" for v, b in readable.items())
        raise IntModelError(f"{path} has format version {version!r}; this bebert reads version {known} "
                            "(re-export the checkpoint)")
    try:
        meta = json.loads(md["bebert"])
    except (KeyError, ValueError) as e:
        raise IntModelError(f"{path} has no readable bebert metadata: {e}") from None
    try:
        model = IntModel(meta, tensors)
    except IntModelError as e:
        raise IntModelError(f"{path}: {e}") from None
    if model.version != int(version):
        raise IntModelError(f"{path}: format version {version} holds the {readable[version]} backbone, but the "
                            f"model config says {model.backbone!r}")
    return model
