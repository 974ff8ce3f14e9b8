"""``bebert eval`` on an integer deployment file: the golden model scores the shipped checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest

from bebert.cli import main
from bebert.golden.evaluate import evaluate_int_model
from bebert.golden.format import load_int_model
from bebert.golden.infer import GoldenModel
from bebert.model.data import encode_examples, get_task, load_tokenizer, read_examples, split_path
from bebert.model.teacher import default_base_model, vocab_path_of

SHIPPED = Path(__file__).parents[1] / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"
DATA = Path(__file__).parents[2] / "shared" / "data" / "sst2-sentences"
N = 24


def test_eval_of_the_shipped_file_equals_sentence_by_sentence_golden(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(SHIPPED), "--data-dir", str(DATA), "--max-examples", str(N), "--batch-size", "7",
                 "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["kind"] == "int" and printed["examples"] == N and len(printed["members"]) == 2
    # independent: one sentence at a time, no padding, no length sorting
    model = load_int_model(SHIPPED)
    golden = GoldenModel(model)
    spec = get_task("sst2-sentences")
    tok = load_tokenizer(vocab_path_of(default_base_model()), model.meta["max_len"], True)
    ds = encode_examples(read_examples(spec, split_path(spec, DATA, "dev"), N), tok)
    preds = [int(golden.predict(np.array([ds.input_ids[i]]))[0]) for i in range(N)]
    assert printed["metrics"]["acc"] == float(np.mean(np.array(preds) == ds.labels.numpy()))


def test_eval_refuses_a_vocabulary_of_the_wrong_size(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    assert main(["eval", str(SHIPPED), "--data-dir", str(DATA), "--max-examples", "2", "--vocab", str(vocab)]) == 2
    err = capsys.readouterr().err
    assert "has 5 entries" in err and "vocabulary of 30522" in err


def test_eval_of_a_corrupt_deployment_file(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert main(["eval", str(bad), "--data-dir", str(DATA)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_vocab_option_is_for_deployment_files_only(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--vocab", "x.txt"]) == 2
    assert "deployment files only" in capsys.readouterr().err


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="(?i)task"):
        evaluate_int_model(SHIPPED, "sst-7", str(DATA), max_examples=1)


def test_threaded_forward_equals_single_thread():
    golden = GoldenModel(load_int_model(SHIPPED))
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (5, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[4, 3:] = 0
    one = golden.forward(ids, mask)
    for threads in (2, 3, 8):  # 8 > batch: empty parts are dropped
        par = golden.forward(ids, mask, threads=threads)
        assert np.array_equal(par.logits, one.logits) and np.array_equal(par.member_logits, one.member_logits)
        assert np.array_equal(par.predictions, one.predictions)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        golden.forward(ids, threads=0)
    with pytest.raises(ValueError, match="taps are collected with threads=1 only"):
        golden.forward(ids, taps=True, threads=2)
