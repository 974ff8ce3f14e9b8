"""Training: the full-precision teacher, binary students and their ensembles.

One loop serves all three. A run writes into its output folder:

* the final checkpoint (see :mod:`bebert.model.checkpoint` for the layouts);
* ``metrics.json`` and ``metrics.csv``: one row per member epoch (``type="member"``) and one
  per ensemble prefix after each member (``type="ensemble"``), dev metrics as GLUE reports them;
* ``dev_metric.png``: the primary dev metric per epoch for each member, and the ensemble's;
* ``members/<m>.safetensors``: each finished member;
* ``state/``: the resume point (model, optimizer, scheduler, RNG, boosting weights, progress),
  written atomically every ``checkpoint_every`` steps and at every epoch end.

Determinism. Every epoch's sample order is a pure function of ``(seed, member, epoch)`` and
the sample weights (:func:`bebert.model.ensemble.epoch_order`); dropout draws from torch's
global generator, seeded per member and saved in the resume state. A run resumed from any
saved step therefore ends with the same weights, bit for bit, as an uninterrupted run on the
same machine and thread count.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .checkpoint import (
    META_NAME,
    atomic_write_bytes,
    copy_file_atomic,
    load_json,
    load_student,
    load_tensors,
    read_meta,
    save_json,
    save_student,
    save_tensors,
)
from .config import BACKBONES, SCALE_GRANULARITIES, ModelConfig
from .data import EncodedDataset, TaskSpec, collate, encode_examples, get_task, load_tokenizer, read_examples, split_path
from .distill import KD_MODES, StudentTeacherRunner, TeacherRunner, per_sample_loss
from .ensemble import bootstrap_indices, derive_seed, diversity, epoch_order, holdout_split, samme_update
from .fixedpoint import FixedPointConfig
from .metrics import compute_metrics
from . import distributed
from .narrow import NarrowSpec, kept_layers, narrow_bert
from .student import BinaryBertForSequenceClassification, Ensemble
from .teacher import default_base_model, linear_input_scales, load_hf_classifier, vocab_path_of
from .tws import split_ternary_model

__all__ = ["TrainConfig", "Trainer", "predict_logits", "evaluate_logits", "RUNTIME_FIELDS"]

#: Fields that may differ between a run and its resumption.
RUNTIME_FIELDS = ("progress", "threads", "device", "checkpoint_every")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``run_config`` in the resume state).

    Attributes
    ----------
    kind : str
        ``"teacher"`` (fine-tune a full-precision model) or ``"student"`` (binary student or
        ensemble).
    task : str
        GLUE task (``SST-2``, ``MRPC``, ``CoLA``, ``RTE``) or ``sst2-sentences``.
    data_dir : str
        GLUE root (``<TASK>/{train,dev}.tsv``) or the ``sst2-sentences`` folder.
    output_dir : str
        Where the run writes (and resumes from).
    model : str or None
        Teacher: base checkpoint to fine-tune (default MiniLM-L6-H384). Student: the
        fine-tuned teacher (initialization, unless ``init`` is given, and distillation).
    init : str or None
        Student: checkpoint to start from (a teacher, or a student such as the ternary stage
        that ``tws`` splits). Defaults to ``model``.
    backbone : str
        ``w1a1`` (BiBERT), ``w1a4`` (BinaryBERT) or ``w2a4`` (ternary TWN stage).
    tws : bool
        Split the ternary ``init`` into the full-width binary W1A4 model first.
    members : int
        Ensemble size (1 trains a single student).
    ensemble : str
        ``"boost"`` (SAMME), ``"bag"`` (bootstrap samples) or ``"seeds"`` (all the data, a seed per member:
        data order and dropout; equal weights).
    boost_sampling : str
        ``"resample"`` (BEBERT) or ``"reweight"``.
    member_init : str
        ``"previous"`` (member m+1 starts from member m) or ``"initial"``.
    kd : str
        ``"none"``, ``"pred"`` or ``"dmd"``.
    kd_temperature, kd_ce_weight : float
        Softmax temperature of prediction distillation and weight of the label term.
    epochs, batch_size, eval_batch_size : int
        Epochs per member and batch sizes.
    lr : float or None
        Peak learning rate (default 5e-5 for a teacher, 1e-4 for a student).
    weight_decay, warmup, grad_clip : float
        AdamW decay (not on biases, LayerNorms, LSQ steps), warm-up fraction of the
        linear schedule, gradient-norm clip (0 disables).
    max_len : int
        Tokens per sequence after truncation.
    seed : int
        Base seed.
    max_train_examples, max_eval_examples : int or None
        Use only the first rows (quick runs, tests).
    holdout : int
        Training rows held out (:func:`~bebert.model.ensemble.holdout_split`: the same rows for every run on
        the same data): never trained on, scored after every epoch and ensemble prefix as ``holdout_*``
        metrics beside ``dev_*``.
    checkpoint_every : int
        Save the resume state every this many optimizer steps (0: only at epoch ends).
    fixed_point : bool
        Train the student with fixed-point fake quantization (the deployed arithmetic).
    embedding_scale : str
        Word-embedding scale granularity of a new student (``row`` or ``tensor``).
    input_scales : bool
        W1A1 student built from a teacher: fold each binary layer's input scale
        ``beta = E|x|``, measured on the teacher, into its weights (XNOR-Net's activation
        scale; :meth:`~bebert.model.student.BinaryBertForSequenceClassification.fold_input_scales`).
    student_hidden, student_layers, student_ffn : int or None
        A narrow student cut out of the teacher (:mod:`bebert.model.narrow`): its hidden size (whole heads
        of the teacher's head size), encoder layers (spread over the teacher's depth) and FFN width; ``None``
        keeps the teacher's. Prediction distillation (``kd="pred"``) trains it from the full teacher.
    hidden_dropout : float
        Student dropout. (``fixed_point``, ``embedding_scale`` and ``hidden_dropout`` apply
        to a student built from a teacher; a student ``init`` keeps its own model config.)
    lowercase : bool
        Lower-case before WordPiece (uncased vocabularies).
    device : str
        ``auto``, ``cpu``, ``cuda`` ...
    threads : int or None
        ``torch.set_num_threads`` for the run.
    progress : bool
        Show progress bars.
    """

    kind: str = "student"
    task: str = "SST-2"
    data_dir: str = "../shared/data/glue"
    output_dir: str = "runs/default"
    model: str | None = None
    init: str | None = None
    backbone: str = "w1a1"
    tws: bool = False
    members: int = 1
    ensemble: str = "boost"
    boost_sampling: str = "resample"
    member_init: str = "previous"
    kd: str = "none"
    kd_temperature: float = 1.0
    kd_ce_weight: float = 0.5
    kd_teacher: str | None = None
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 0.01
    warmup: float = 0.1
    grad_clip: float = 1.0
    max_len: int = 128
    seed: int = 42
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    holdout: int = 0
    checkpoint_every: int = 0
    fixed_point: bool = True
    embedding_scale: str = "row"
    hidden_dropout: float = 0.1
    student_hidden: int | None = None
    student_layers: int | None = None
    student_ffn: int | None = None
    input_scales: bool = True
    lowercase: bool = True
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        get_task(self.task)
        checks = {
            "kind": ("teacher", "student"),
            "backbone": BACKBONES,
            "ensemble": ("boost", "bag", "seeds"),
            "boost_sampling": ("resample", "reweight"),
            "member_init": ("previous", "initial"),
            "kd": KD_MODES,
            "embedding_scale": SCALE_GRANULARITIES,
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if not isinstance(self.holdout, int) or self.holdout < 0:
            raise ValueError(f"holdout must be a non-negative integer, not {self.holdout!r}")
        for name in ("members", "epochs", "batch_size", "eval_batch_size", "max_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if self.kind == "teacher" and (self.members != 1 or self.kd != "none" or self.tws):
            raise ValueError("A teacher run trains one full-precision model: members=1, kd='none', no tws")
        if self.tws and self.backbone != "w1a4":
            raise ValueError("tws splits a ternary model into the w1a4 backbone; use backbone='w1a4'")
        if self.kind == "student" and self.kd != "none" and not (self.model or self.kd_teacher):
            raise ValueError("Distillation needs the fine-tuned teacher (model)")
        if self.kd_teacher and (self.kind != "student" or self.kd == "none"):
            raise ValueError("kd_teacher is the teacher of a student's distillation: use it with kd='pred'")
        if self.narrow:
            NarrowSpec(self.student_hidden, self.student_layers, self.student_ffn)  # checks the values
            if self.kind == "teacher":
                raise ValueError("--student-hidden/--student-layers/--student-ffn shape a student, not a teacher")
            if self.kd == "dmd":
                raise ValueError("a narrow student has other heads and layers than its teacher: direction-matching "
                                 "distillation (kd='dmd') does not apply; use kd='pred'")
            if self.tws:
                raise ValueError("a narrow student is cut out of a teacher; --tws starts from a ternary student "
                                 "(narrow the ternary stage instead)")
        if self.kind == "student" and not (self.model or self.init):
            raise ValueError("A student needs a checkpoint to start from (model or init)")

    @property
    def narrow(self) -> NarrowSpec:
        """The narrow-student shape (false when the student keeps the teacher's)."""
        return NarrowSpec(self.student_hidden, self.student_layers, self.student_ffn)

    @property
    def peak_lr(self) -> float:
        """The learning rate actually used."""
        if self.lr is not None:
            return self.lr
        return 5e-5 if self.kind == "teacher" else 1e-4

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serializable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


# ----------------------------------------------------------------------------------------------
# Prediction helpers
# ----------------------------------------------------------------------------------------------


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(model, (BinaryBertForSequenceClassification, Ensemble)):
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    return model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
    ).logits


@torch.no_grad()
def predict_logits(
    model,
    ds: EncodedDataset,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    order: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of every example, row ``i`` for example ``i`` whatever order batches run in.

    Parameters
    ----------
    model : nn.Module
        A student, an :class:`~bebert.model.student.Ensemble` or a Hugging Face classifier.
    ds : EncodedDataset
        The examples.
    batch_size : int
        Batch size.
    device : torch.device or str
        Where the model lives.
    order : torch.Tensor, optional
        The order to run the examples in (default: by length, which minimizes padding).
        Results are scattered back by each sample's index, so the order cannot change them.

    Returns
    -------
    torch.Tensor
        ``(N, num_labels)`` float32 on the CPU.
    """
    was_training = model.training
    model.eval()
    n = len(ds)
    if order is None:
        order = torch.as_tensor(sorted(range(n), key=lambda i: len(ds.input_ids[i])))
    out: torch.Tensor | None = None
    filled = torch.zeros(n, dtype=torch.bool)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        batch = _to(collate(ds, idx), torch.device(device))
        logits = _forward_logits(model, batch).float().cpu()
        if out is None:
            out = torch.zeros(n, logits.shape[-1])
        out[batch["index"].cpu()] = logits
        filled[batch["index"].cpu()] = True
    if not bool(filled.all()):
        raise ValueError("order does not cover every example")
    model.train(was_training)
    return out


def evaluate_logits(task: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """GLUE metrics of ``argmax(logits)`` against ``labels``."""
    return compute_metrics(task.metrics, logits.argmax(-1).numpy(), labels.numpy())


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


def _lr_lambda(total: int, warmup: float) -> Callable[[int], float]:
    w = int(total * warmup)

    def fn(step: int) -> float:
        if w > 0 and step < w:
            return (step + 1) / w
        return max(0.0, (total - step) / max(1, total - w))

    return fn


def _optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("bias") or "LayerNorm" in name or name.endswith(".step"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x


class _Interrupted(Exception):
    pass


class Trainer:
    """Runs one :class:`TrainConfig` (resuming from its output folder when possible).

    Parameters
    ----------
    cfg : TrainConfig
        The run.
    log : callable, optional
        Receives one-line progress messages (default: ``print``).
    """

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.log = log or (lambda s: print(s, flush=True))
        self.task = get_task(cfg.task)
        self.out = Path(cfg.output_dir)
        # under torchrun: join the process group; rank 0 alone logs and writes (see bebert.model.distributed)
        self.rank, self.world, device = distributed.setup(cfg.device)
        if self.rank:
            self.log = lambda s: None
        if device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.kind == "teacher":
            self.source = cfg.model or default_base_model()
        else:
            self.source = cfg.init or cfg.model
        self.vocab = vocab_path_of(self.source)
        tok = load_tokenizer(self.vocab, cfg.max_len, cfg.lowercase)
        train_ex = read_examples(self.task, split_path(self.task, cfg.data_dir, "train"), cfg.max_train_examples)
        dev_ex = read_examples(self.task, split_path(self.task, cfg.data_dir, "dev"), cfg.max_eval_examples)
        held_ex = []
        if cfg.holdout:
            keep, held = holdout_split(len(train_ex), cfg.holdout)
            train_ex, held_ex = [train_ex[i] for i in keep], [train_ex[i] for i in held]
        self.train_ds = encode_examples(train_ex, tok)
        self.dev_ds = encode_examples(dev_ex, tok)
        self.holdout_ds = encode_examples(held_ex, tok) if held_ex else None
        self._member_preds: dict[tuple[str, int], torch.Tensor] = {}
        self.teacher_runner: TeacherRunner | None = None
        self._initial_state: dict[str, torch.Tensor] | None = None
        self._model_cfg: ModelConfig | None = None
        self._hf_config = None

    # -- models ---------------------------------------------------------------------------------

    def _build_initial(self):
        cfg = self.cfg
        k = self.task.num_labels
        if cfg.kind == "teacher":
            model = load_hf_classifier(self.source, k)
            self._hf_config = model.config
            return model
        meta = read_meta(self.source)
        if meta.get("kind") == "student":
            if cfg.narrow:
                raise ValueError(f"{self.source} is a student; a narrow student is cut out of a teacher (--model)")
            members, _, smeta = load_student(self.source)
            src = members[0]
            if cfg.tws:
                if src.config.backbone != "w2a4":
                    raise ValueError(f"--tws splits a ternary (w2a4) student; {self.source} is {src.config.backbone}")
                model = split_ternary_model(src)
            else:
                if src.config.backbone != cfg.backbone:
                    raise ValueError(
                        f"Init {self.source} is a {src.config.backbone} student; this run trains {cfg.backbone}"
                    )
                model = src
            if smeta.get("task") and get_task(smeta["task"]).name != self.task.name:
                raise ValueError(f"Init {self.source} was trained on {smeta['task']}, not {self.task.name}")
            model.config.members = cfg.members
            return model
        if cfg.tws:
            raise ValueError("--tws needs a ternary (w2a4) student checkpoint as --init, not a teacher")
        hf = load_hf_classifier(self.source, k)
        if cfg.narrow:
            depth = hf.config.num_hidden_layers
            hf = narrow_bert(hf, cfg.narrow)
            c = hf.config
            self.log(f"narrow student cut out of {self.source}: hidden {c.hidden_size}, {c.num_attention_heads} heads, "
                     f"layers {kept_layers(depth, c.num_hidden_layers)} of the teacher's {depth}, ffn {c.intermediate_size}")
        mcfg = ModelConfig.from_hf_config(
            hf.config,
            backbone=cfg.backbone,
            num_labels=k,
            members=cfg.members,
            embedding_scale=cfg.embedding_scale,
            hidden_dropout=cfg.hidden_dropout,
            fixed_point=FixedPointConfig(enabled=cfg.fixed_point),
        )
        model = BinaryBertForSequenceClassification(mcfg)
        model.load_teacher_state(hf.state_dict())
        if cfg.input_scales and mcfg.backbone == "w1a1":
            # sign(x) has magnitude 1 where the teacher saw x: fold beta = E|x| (measured on
            # the teacher over the first training sentences) into alpha, or every binary branch
            # starts 2-4x too large for its residual stream and bias (see fold_input_scales)
            n = min(len(self.train_ds), 256)
            batches = [collate(self.train_ds, range(i, min(i + 64, n))) for i in range(0, n, 64)]
            scales = linear_input_scales(hf, batches, model.binary_linear_names())
            model.fold_input_scales(scales)
            self.log("input scales folded into alpha: " + " ".join(
                f"{k.replace('bert.encoder.layer.', 'L').replace('attention.', 'att.')}={v:.3f}"
                for k, v in scales.items() if k.startswith(("bert.encoder.layer.0.", "bert.pooler."))))
        return model

    def _fresh_initial(self):
        """A new copy of the initial model (built once, then copied from memory)."""
        if self._initial_state is None:
            model = self._build_initial()
            self._initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self._template = model
        model = copy.deepcopy(self._template)
        model.load_state_dict(self._initial_state)
        return model.to(self.device)

    def _teacher(self) -> TeacherRunner | None:
        if self.cfg.kind != "student" or self.cfg.kd == "none":
            return None
        if self.teacher_runner is None:
            source = self.cfg.kd_teacher or self.cfg.model
            if read_meta(source).get("kind") == "student":
                if self.cfg.kd != "pred":
                    raise ValueError(f"{source} is a binary student: it teaches by its predictions only (kd='pred'), "
                                     f"not kd={self.cfg.kd!r}")
                members, weights, meta = load_student(source, self.device)
                if meta.get("task") and get_task(meta["task"]).name != self.task.name:
                    raise ValueError(f"Teacher {source} was trained on {meta['task']}, not {self.task.name}")
                fp = members[0].config.fixed_point
                self.teacher_runner = StudentTeacherRunner(Ensemble(members, weights, fp if fp.enabled else None))
            else:
                hf = load_hf_classifier(source, self.task.num_labels, strict_labels=True).to(self.device)
                self.teacher_runner = TeacherRunner(hf)
        return self.teacher_runner

    # -- state ------------------------------------------------------------------------------------

    def _state_dir(self) -> Path:
        return self.out / "state"

    def _config_for_compare(self, d: dict[str, Any]) -> dict[str, Any]:
        # a field added since the run started reads as its default (the run was made without it)
        full = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
        full.update(d)
        return {k: v for k, v in full.items() if k not in RUNTIME_FIELDS}

    def _save_state(self, model, opt, sched, prog: dict[str, Any]) -> None:
        if self.rank:
            return
        tensors: dict[str, torch.Tensor] = {}
        for k, v in model.state_dict().items():
            tensors[f"model.{k}"] = v
        osd = opt.state_dict() if opt is not None else {"state": {}, "param_groups": []}
        scalars: dict[str, dict[str, Any]] = {}
        for pid, st in osd["state"].items():
            for name, val in st.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"optim.{pid}.{name}"] = val
                else:
                    scalars.setdefault(str(pid), {})[name] = val
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        tensors["boost.weights"] = prog["sample_weights"]
        name = f"state-{uuid.uuid4().hex}.safetensors"
        sd = self._state_dir()
        save_tensors(sd / name, tensors)
        info = {k: v for k, v in prog.items() if k != "sample_weights"}
        info.update(
            version=1,
            run_config=self.cfg.to_dict(),
            tensors=name,
            optim_groups=_jsonable(osd["param_groups"]),
            optim_scalars=_jsonable(scalars),
            sched=_jsonable(sched.state_dict()) if sched is not None else None,
        )
        save_json(sd / "state.json", info)
        for p in sd.glob("state-*.safetensors"):
            if p.name != name:
                p.unlink()

    def _save_done(self, prog: dict[str, Any]) -> None:
        """Mark the run complete; the large resume tensors are no longer needed."""
        if self.rank:
            return
        sd = self._state_dir()
        info = {k: v for k, v in prog.items() if k != "sample_weights"}
        info.update(version=1, run_config=self.cfg.to_dict(), tensors=None)
        save_json(sd / "state.json", info)
        for p in sd.glob("state-*.safetensors"):
            p.unlink()

    def _load_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        p = self._state_dir() / "state.json"
        if not p.is_file():
            return None
        info = load_json(p)
        if self._config_for_compare(info["run_config"]) != self._config_for_compare(self.cfg.to_dict()):
            raise ValueError(
                f"{self.out} holds a run with a different configuration; use another --output-dir "
                "(or delete the folder to start over)"
            )
        tensors = load_tensors(self._state_dir() / info["tensors"]) if info.get("tensors") else {}
        return info, tensors

    # -- training -----------------------------------------------------------------------------------

    def _make_opt(self, model, steps_total: int):
        opt = torch.optim.AdamW(_optimizer_groups(model, self.cfg.weight_decay), lr=self.cfg.peak_lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps_total, self.cfg.warmup))
        return opt, sched

    def _restore_opt(self, opt, sched, info, tensors) -> None:
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(self.device) if name != "step" else v
        for pid, sc in info["optim_scalars"].items():
            state.setdefault(int(pid), {}).update(sc)
        if info["optim_groups"]:
            opt.load_state_dict({"state": state, "param_groups": info["optim_groups"]})
        if info.get("sched"):
            sched.load_state_dict(info["sched"])

    def _loss(self, model, batch, sample_weights: torch.Tensor | None, forward=None) -> torch.Tensor:
        """The mean training loss of a batch; ``forward`` runs the model (its DDP wrapper under torchrun)."""
        cfg = self.cfg
        forward = model if forward is None else forward
        if cfg.kind == "teacher":
            vec = F.cross_entropy(_forward_logits(forward, batch), batch["labels"], reduction="none")
        else:
            internals = cfg.kd == "dmd"
            out = forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], return_internals=internals)
            runner = self._teacher()
            t = runner(batch, internals) if runner is not None else None
            t_heads = runner.num_heads if runner is not None else model.config.num_heads
            vec = per_sample_loss(
                cfg.kd, out, batch["labels"], t, batch["attention_mask"], model.config.num_heads, t_heads,
                cfg.kd_temperature, cfg.kd_ce_weight,
            )
        if sample_weights is not None:
            w = sample_weights.to(vec.device, vec.dtype)[batch["index"]] * len(sample_weights)
            return (vec * w).mean()
        return vec.mean()

    def _splits(self):
        return [("dev", self.dev_ds)] + ([("holdout", self.holdout_ds)] if self.holdout_ds is not None else [])

    def _eval_row(self, model, dev: torch.Tensor | None = None) -> dict[str, float]:
        """``dev_*`` (and ``holdout_*``) metrics of a model (``dev``: its dev logits, if computed)."""
        row = {}
        for name, ds in self._splits():
            logits = dev if (name == "dev" and dev is not None) else predict_logits(
                model, ds, self.cfg.eval_batch_size, self.device)
            row.update({f"{name}_{k}": v for k, v in evaluate_logits(self.task, logits, ds.labels).items()})
        return row

    def _ensemble_row(self, ens, members: list) -> dict[str, float | None]:
        """The ensemble's metrics per split, with its best member's primary metric, the gain over it, and
        the members' diversity (:func:`~bebert.model.ensemble.diversity`)."""
        row = self._eval_row(ens)
        key = self.task.primary_metric
        for name, ds in self._splits():
            preds = []
            for m, mdl in enumerate(members):
                if (name, m) not in self._member_preds:
                    self._member_preds[(name, m)] = predict_logits(mdl, ds, self.cfg.eval_batch_size,
                                                                   self.device).argmax(-1)
                preds.append(self._member_preds[(name, m)])
            best = max(compute_metrics(self.task.metrics, p.numpy(), ds.labels.numpy())[key] for p in preds)
            row[f"{name}_best_member"] = best
            row[f"{name}_gain"] = row[f"{name}_{key}"] - best
            row.update({f"{name}_{k}": v for k, v in diversity(preds, ds.labels).items()})
        return row

    def run(self, stop_after_steps: int | None = None) -> dict[str, Any]:
        """Train (or resume) to completion and write the final checkpoint.

        Parameters
        ----------
        stop_after_steps : int, optional
            Save the resume state and stop after this many optimizer steps in this call
            (simulates an interruption; used by tests).

        Returns
        -------
        dict
            ``{"done": bool, "metrics": rows, "weights": member weights, "output_dir": str}``.
        """
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        loaded = self._load_state()
        n = len(self.train_ds)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        steps_total = steps_per_epoch * cfg.epochs
        if loaded is not None and loaded[0].get("done"):
            self.log(f"{self.out}: run already complete")
            return {"done": True, "metrics": loaded[0]["metrics"], "weights": loaded[0]["weights"], "output_dir": str(self.out)}

        if loaded is None:
            prog: dict[str, Any] = dict(
                member=0, epoch=0, step=0, global_step=0, loss_sum=0.0, loss_count=0,
                weights=[], errors=[], metrics=[], sample_weights=torch.full((n,), 1.0 / n, dtype=torch.float64),
                done=False, seconds=0.0, member_seconds=[],
            )
            tensors: dict[str, torch.Tensor] = {}
            resume_mid_member = False
        else:
            info, tensors = loaded
            prog = {k: info[k] for k in ("member", "epoch", "step", "global_step", "loss_sum", "loss_count",
                                         "weights", "errors", "metrics", "done")}
            prog["seconds"] = float(info.get("seconds", 0.0))
            prog["member_seconds"] = list(info.get("member_seconds", []))
            prog["sample_weights"] = tensors["boost.weights"]
            resume_mid_member = True
            self.log(f"Resuming {self.out} at member {prog['member']}, epoch {prog['epoch']}, step {prog['step']}")

        t_start, base_seconds = time.perf_counter(), prog["seconds"]

        def tick() -> float:
            prog["seconds"] = base_seconds + time.perf_counter() - t_start
            return prog["seconds"]

        members: list = []
        for m in range(prog["member"]):
            mdl = self._fresh_initial()
            mdl.load_state_dict(load_tensors(self.out / "members" / f"{m}.safetensors", self.device))
            members.append(mdl)

        steps_this_call = 0
        for m in range(prog["member"], cfg.members):
            if resume_mid_member:
                model = self._fresh_initial()
                model.load_state_dict({k[6:]: v.to(self.device) for k, v in tensors.items() if k.startswith("model.")})
                opt, sched = self._make_opt(model, steps_total)
                self._restore_opt(opt, sched, info, tensors)
                torch.set_rng_state(tensors["rng.torch"])
                if "rng.cuda" in tensors and self.device.type == "cuda":
                    torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
                if self.rank:  # rank 0's state was saved; the others reseed (bebert.model.distributed)
                    torch.manual_seed(derive_seed(cfg.seed, "torch", m, "rank", self.rank, prog["global_step"]))
                resume_mid_member = False
            else:
                if m == 0 or cfg.member_init == "initial":
                    model = self._fresh_initial()
                else:
                    model = copy.deepcopy(members[-1])
                torch.manual_seed(derive_seed(cfg.seed, "torch", m) if not self.rank
                                  else derive_seed(cfg.seed, "torch", m, "rank", self.rank))
                opt, sched = self._make_opt(model, steps_total)
                prog.update(member=m, epoch=0, step=0, loss_sum=0.0, loss_count=0)
                self._save_state(model, opt, sched, prog)
            model.train()
            forward = model
            if self.world > 1:
                from torch.nn.parallel import DistributedDataParallel

                # broadcasts rank 0's parameters, then averages the gradients in backward
                forward = DistributedDataParallel(model, find_unused_parameters=True)
            bag = bootstrap_indices(n, cfg.seed, m) if (cfg.members > 1 and cfg.ensemble == "bag") else None
            boosting = cfg.members > 1 and cfg.ensemble == "boost"
            reweight = boosting and cfg.boost_sampling == "reweight" and m > 0
            weighted_sampling = boosting and cfg.boost_sampling == "resample" and m > 0
            try:
                for e in range(prog["epoch"], cfg.epochs):
                    order = epoch_order(
                        n, cfg.seed, m, e, "weighted" if weighted_sampling else "permute",
                        weights=prog["sample_weights"], subset=bag,
                    )
                    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
                    bar = self._bar(len(batches), f"{cfg.kind} m{m} e{e + 1}/{cfg.epochs}", prog["step"])
                    for s in range(prog["step"], len(batches)):
                        idx, share = distributed.shard(batches[s], self.rank, self.world)
                        batch = _to(collate(self.train_ds, idx), self.device)
                        loss = self._loss(model, batch, prog["sample_weights"] if reweight else None, forward)
                        if self.world > 1:
                            loss = loss * share
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        if cfg.grad_clip > 0:
                            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                        opt.step()
                        sched.step()
                        prog["global_step"] += 1
                        prog["loss_sum"] += distributed.all_mean(float(loss.detach()), self.world)
                        prog["loss_count"] += 1
                        prog["step"] = s + 1
                        steps_this_call += 1
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(loss=f"{prog['loss_sum'] / prog['loss_count']:.4f}")
                        stop = stop_after_steps is not None and steps_this_call >= stop_after_steps
                        if stop or (cfg.checkpoint_every and prog["global_step"] % cfg.checkpoint_every == 0):
                            tick()
                            self._save_state(model, opt, sched, prog)
                        if stop:
                            raise _Interrupted
                    if bar is not None:
                        bar.close()
                    dev = predict_logits(model, self.dev_ds, cfg.eval_batch_size, self.device)
                    row = {"type": "member", "member": m, "epoch": e + 1, "global_step": prog["global_step"],
                           "train_loss": prog["loss_sum"] / max(1, prog["loss_count"]), "lr": sched.get_last_lr()[0]}
                    row.update(self._eval_row(model, dev))
                    prog["metrics"].append(row)
                    self.log(self._fmt_row(row))
                    prog.update(epoch=e + 1, step=0, loss_sum=0.0, loss_count=0)
                    self._write_metrics(prog["metrics"])
                    tick()
                    self._save_state(model, opt, sched, prog)
            except _Interrupted:
                self.log(f"Stopped after {steps_this_call} steps; state saved in {self._state_dir()}")
                return {"done": False, "metrics": prog["metrics"], "weights": prog["weights"], "output_dir": str(self.out)}

            # Member finished: boosting weights, member file, ensemble evaluation.
            model.eval()
            alpha, err = 1.0, None
            if boosting:
                logits = predict_logits(model, self.train_ds, cfg.eval_batch_size, self.device)
                miss = logits.argmax(-1) != self.train_ds.labels
                prog["sample_weights"], alpha, err = samme_update(prog["sample_weights"], miss, self.task.num_labels)
            members.append(model)
            prog["weights"].append(alpha)
            prog["errors"].append(err)
            prog["member_seconds"] = prog["member_seconds"][:m] + [round(tick(), 1)]
            if not self.rank:
                save_tensors(self.out / "members" / f"{m}.safetensors", model.state_dict())
            if cfg.kind == "student":
                ens = Ensemble(members, prog["weights"], model.config.fixed_point if model.config.fixed_point.enabled else None)
                row = {"type": "ensemble", "member": m, "members": m + 1, "epoch": cfg.epochs,
                       "global_step": prog["global_step"], "alpha": alpha, "train_error": err}
                row.update(self._ensemble_row(ens, members))
                prog["metrics"].append(row)
                self.log(self._fmt_row(row))
                self._write_metrics(prog["metrics"])
            # The next member's start point is saved by the next iteration; a crash before
            # that resumes at this member's end and redoes the (deterministic) steps above.
            prog.update(member=m + 1, epoch=0, step=0, loss_sum=0.0, loss_count=0)

        self._write_final(members, prog["weights"])
        tick()
        # Wall-clock time is kept apart from metrics.json, which is deterministic for a seed.
        if not self.rank:
            save_json(self.out / "timing.json", {
                "train_seconds": round(prog["seconds"], 1),
                "member_end_seconds": prog["member_seconds"],
                "processes": self.world,
                "note": "wall-clock seconds over all calls of this run (resumes add up), evaluation included",
            })
        self.log(f"training took {prog['seconds']:.0f} s (timing.json)")
        prog["done"] = True
        self._save_done(prog)
        self._write_metrics(prog["metrics"])
        self._plot(prog["metrics"])
        return {"done": True, "metrics": prog["metrics"], "weights": prog["weights"], "output_dir": str(self.out)}

    # -- outputs ------------------------------------------------------------------------------------

    def _bar(self, total: int, desc: str, initial: int):
        if not self.cfg.progress or self.rank:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)

    def _fmt_row(self, row: dict[str, Any]) -> str:
        parts = [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if v is not None]
        return " ".join(parts)

    def _meta(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "max_len": self.cfg.max_len,
            "lowercase": self.cfg.lowercase,
            "ensemble": {"method": self.cfg.ensemble if self.cfg.members > 1 else "single"},
            "train_config": self.cfg.to_dict(),
        }

    def _write_final(self, members: list, weights: list[float]) -> None:
        if self.rank:
            return
        if self.cfg.kind == "teacher":
            model = members[0]
            save_tensors(self.out / "model.safetensors", model.state_dict(), metadata={"format": "pt"})
            atomic_write_bytes(self.out / "config.json", model.config.to_json_string().encode("utf-8"))
            copy_file_atomic(self.vocab, self.out / "vocab.txt")
            meta = self._meta()
            meta["kind"] = "teacher"
            save_json(self.out / META_NAME, meta)
        else:
            save_student(self.out, members, weights, self._meta(), self.vocab)

    def _write_metrics(self, rows: list[dict[str, Any]]) -> None:
        if self.rank:
            return
        save_json(self.out / "metrics.json", rows)
        keys: list[str] = []
        for r in rows:
            for k in r:
                if k not in keys:
                    keys.append(k)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
        atomic_write_bytes(self.out / "metrics.csv", buf.getvalue().encode("utf-8"))

    def _plot(self, rows: list[dict[str, Any]]) -> None:
        if self.rank:
            return
        from .plot import plot_dev_metric

        plot_dev_metric(rows, f"dev_{self.task.primary_metric}", self.out / "dev_metric.png", title=self.task.name)


def config_json(cfg: TrainConfig) -> str:
    """The run configuration as JSON text."""
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
