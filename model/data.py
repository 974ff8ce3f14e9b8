"""GLUE data: readers with strict row checks, WordPiece tokenization, dynamic padding.

Supported tasks (standard GLUE layout ``<data_dir>/<TASK>/{train,dev}.tsv``):

=========  =========================================  ==========  ==========================
task       columns                                    labels      metrics (first = primary)
=========  =========================================  ==========  ==========================
SST-2      header ``sentence, label``                 0 / 1       acc
MRPC       header ``Quality, #1 ID, #2 ID, #1 String,  0 / 1       f1, acc
           #2 String`` (UTF-8 BOM); label first
CoLA       no header; ``source, label, orig, sent``   0 / 1       mcc
RTE        header ``index, sentence1, sentence2,      entailment  acc
           label``                                    = 0
=========  =========================================  ==========  ==========================

and the sentence-level SST-2 text format (task ``sst2-sentences``,
``<data_dir>/{train,dev}.txt``, one ``label sentence`` per line). RTE labels follow GLUE's
label list order (``entailment`` = 0, ``not_entailment`` = 1).

Every malformed row (wrong column count, bad label, empty text, wrong header, blank line in
the middle of a file) raises :class:`DataFormatError` whose message names the file and the
1-based line number. Rows are never silently skipped.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

__all__ = [
    "DataFormatError",
    "TaskSpec",
    "TASKS",
    "Example",
    "get_task",
    "read_examples",
    "split_path",
    "load_tokenizer",
    "count_vocab",
    "EncodedDataset",
    "encode_examples",
    "collate",
]


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names file and line."""

    def __init__(self, path: str | os.PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True)
class TaskSpec:
    """How to read and score one task.

    Attributes
    ----------
    name : str
        Canonical name (``"SST-2"`` ...).
    labels : tuple of str
        Label strings as they appear in the files, in class-index order.
    metrics : tuple of str
        Metric names; the first is the primary (model-selection) metric.
    header : tuple of str or None
        Expected header columns, or ``None`` for headerless files.
    ncols : int
        Number of tab-separated columns per row.
    text_cols : tuple of int
        Columns of the first and (for pairs) second sentence.
    label_col : int
        Column of the label.
    suffix : str
        File suffix (``".tsv"`` or ``".txt"``).
    """

    name: str
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    header: tuple[str, ...] | None
    ncols: int
    text_cols: tuple[int, ...]
    label_col: int
    suffix: str = ".tsv"

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.labels)

    @property
    def primary_metric(self) -> str:
        """The metric used to pick the best epoch and plotted per member."""
        return self.metrics[0]


TASKS: dict[str, TaskSpec] = {
    "SST-2": TaskSpec("SST-2", ("0", "1"), ("acc",), ("sentence", "label"), 2, (0,), 1),
    "MRPC": TaskSpec(
        "MRPC", ("0", "1"), ("f1", "acc"), ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), 5, (3, 4), 0
    ),
    "CoLA": TaskSpec("CoLA", ("0", "1"), ("mcc",), None, 4, (3,), 1),
    "RTE": TaskSpec(
        "RTE", ("entailment", "not_entailment"), ("acc",), ("index", "sentence1", "sentence2", "label"), 4, (1, 2), 3
    ),
    "sst2-sentences": TaskSpec("sst2-sentences", ("0", "1"), ("acc",), None, 2, (1,), 0, ".txt"),
}

_ALIASES = {k.lower().replace("-", "").replace("_", ""): k for k in TASKS}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, case- and dash-insensitively (``sst2``, ``SST-2``, ``cola``)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _ALIASES:
        raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[_ALIASES[key]]


@dataclass(frozen=True)
class Example:
    """One labelled row.

    Attributes
    ----------
    text_a, text_b : str
        Sentence(s); ``text_b`` is ``None`` for single-sentence tasks.
    label : int
        Class index.
    line : int
        1-based line number in the source file (for messages).
    """

    text_a: str
    text_b: str | None
    label: int
    line: int


def split_path(task: TaskSpec, data_dir: str | os.PathLike, split: str) -> Path:
    """The file of ``split`` (``"train"`` or ``"dev"``) of ``task`` under ``data_dir``.

    ``data_dir`` is the GLUE root (holding ``<TASK>/``) or the task folder itself; for
    ``sst2-sentences`` the folder holding ``train.txt`` / ``dev.txt``.
    """
    d = Path(data_dir)
    name = f"{split}{task.suffix}"
    candidates = [d / task.name / name, d / name]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"No {name} for task {task.name} under {d} (looked for {', '.join(map(str, candidates))})")


def _parse_label(task: TaskSpec, raw: str, path: Path, lineno: int) -> int:
    try:
        return task.labels.index(raw)
    except ValueError:
        raise DataFormatError(path, lineno, f"label {raw!r} is not one of {list(task.labels)}") from None


def read_examples(task: TaskSpec | str, path: str | os.PathLike, limit: int | None = None) -> list[Example]:
    """Read and check every row of a task file.

    Parameters
    ----------
    task : TaskSpec or str
        The task.
    path : path-like
        The file.
    limit : int, optional
        Stop after this many examples (the rows read are still checked).

    Returns
    -------
    list of Example

    Raises
    ------
    DataFormatError
        On the first malformed row, naming file and line.
    """
    task = get_task(task) if isinstance(task, str) else task
    path = Path(path)
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"not valid UTF-8 ({e.reason})") from None
    if raw.startswith("\ufeff"):
        raw = raw[1:]
    lines = raw.split("\n")
    while lines and lines[-1].strip("\r") == "":
        lines.pop()
    examples: list[Example] = []
    start = 0
    if task.header is not None:
        if not lines:
            raise DataFormatError(path, 1, "empty file (expected a header)")
        got = tuple(lines[0].rstrip("\r").split("\t"))
        if got != task.header:
            raise DataFormatError(path, 1, f"header {list(got)} is not the {task.name} header {list(task.header)}")
        start = 1
    for i in range(start, len(lines)):
        lineno = i + 1
        line = lines[i].rstrip("\r")
        if line.strip() == "":
            raise DataFormatError(path, lineno, "blank line")
        if task.suffix == ".txt":
            cols = line.split(" ", 1)
            if len(cols) != 2:
                raise DataFormatError(path, lineno, "expected 'label sentence'")
        else:
            cols = line.split("\t")
            if len(cols) != task.ncols:
                raise DataFormatError(path, lineno, f"expected {task.ncols} tab-separated columns, found {len(cols)}")
        label = _parse_label(task, cols[task.label_col].strip(), path, lineno)
        texts = [cols[c].strip() for c in task.text_cols]
        for c, t in zip(task.text_cols, texts):
            if not t:
                raise DataFormatError(path, lineno, f"empty text in column {c + 1}")
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label, lineno))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataFormatError(path, len(lines) + 1, "no examples")
    return examples


def load_tokenizer(vocab_path: str | os.PathLike, max_len: int, lowercase: bool = True):
    """A ``tokenizers`` WordPiece tokenizer from a BERT ``vocab.txt``, truncating to ``max_len``.

    Pairs are truncated longest-first, as BERT's GLUE scripts do.
    """
    from tokenizers import BertWordPieceTokenizer

    if not Path(vocab_path).is_file():
        raise FileNotFoundError(f"Vocabulary file {vocab_path} not found")
    if max_len < 4:
        raise ValueError(f"max_len must be at least 4, not {max_len}")
    tok = BertWordPieceTokenizer(str(vocab_path), lowercase=lowercase)
    tok.enable_truncation(max_length=max_len)
    tok.no_padding()
    return tok


def count_vocab(vocab_path: str | os.PathLike) -> int:
    """Entries (lines) of a WordPiece ``vocab.txt``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    DataFormatError
        If it is not UTF-8 text (naming the line).
    """
    path = Path(vocab_path)
    if not path.is_file():
        raise FileNotFoundError(f"Vocabulary file {path} not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, raw[: e.start].count(b"\n") + 1, f"not valid UTF-8 ({e.reason})") from None
    return sum(1 for _ in io.StringIO(text, newline=None))  # lines as a text-mode file counts them


class EncodedDataset:
    """Tokenized examples; item ``i`` keeps its index ``i`` so results can be scattered back.

    Attributes
    ----------
    input_ids, token_type_ids : list of list of int
        Unpadded token ids and segment ids.
    labels : torch.Tensor
        ``(N,)`` int64 class indices.
    """

    def __init__(self, input_ids: list[list[int]], token_type_ids: list[list[int]], labels: Sequence[int]) -> None:
        if not (len(input_ids) == len(token_type_ids) == len(labels)):
            raise ValueError("input_ids, token_type_ids and labels differ in length")
        self.input_ids = input_ids
        self.token_type_ids = token_type_ids
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_examples(examples: Sequence[Example], tokenizer) -> EncodedDataset:
    """Tokenize examples (``[CLS] a [SEP] b [SEP]``) into an :class:`EncodedDataset`."""
    singles = [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]
    encs = tokenizer.encode_batch(singles)
    return EncodedDataset([e.ids for e in encs], [e.type_ids for e in encs], [e.label for e in examples])


def collate(ds: EncodedDataset, indices: Sequence[int], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad the selected examples to the longest among them (dynamic padding).

    Returns
    -------
    dict
        ``input_ids``, ``token_type_ids``, ``attention_mask`` of shape ``(B, n)``, ``labels``
        ``(B,)`` and ``index`` ``(B,)`` (the dataset positions, so per-sample results stay
        aligned with their samples whatever the order).
    """
    idx = [int(i) for i in indices]
    n = max(len(ds.input_ids[i]) for i in idx)
    b = len(idx)
    ids = torch.full((b, n), pad_id, dtype=torch.int64)
    types = torch.zeros((b, n), dtype=torch.int64)
    mask = torch.zeros((b, n), dtype=torch.int64)
    for r, i in enumerate(idx):
        L = len(ds.input_ids[i])
        ids[r, :L] = torch.as_tensor(ds.input_ids[i])
        types[r, :L] = torch.as_tensor(ds.token_type_ids[i])
        mask[r, :L] = 1
    index = torch.as_tensor(idx, dtype=torch.int64)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": ds.labels[index], "index": index}
