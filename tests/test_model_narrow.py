"""Narrow students cut out of a teacher (bebert.model.narrow): the cut, its training, its errors."""

import pytest
import torch

from bebert.model.checkpoint import load_student
from bebert.model.narrow import NarrowSpec, kept_layers, narrow_bert
from bebert.model.teacher import load_hf_classifier
from bebert.model.train import Trainer
from test_model_train import _student, base_model, teacher  # noqa: F401  (fixtures)


def test_kept_layers_spread_over_the_depth():
    assert kept_layers(6, 2) == [2, 5]
    assert kept_layers(6, 3) == [1, 3, 5]
    assert kept_layers(6, 6) == list(range(6))
    assert kept_layers(12, 4) == [2, 5, 8, 11]


def test_narrow_bert_is_the_leading_block_of_the_teacher(teacher):
    hf = load_hf_classifier(teacher, 2)
    small = narrow_bert(hf, NarrowSpec(hidden=16, layers=1, ffn=32))
    c = small.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (16, 1, 1, 32)
    src, dst = hf.state_dict(), small.state_dict()
    w = src["bert.encoder.layer.1.intermediate.dense.weight"]  # layer 0 of the student is the teacher's last
    assert torch.equal(dst["bert.encoder.layer.0.intermediate.dense.weight"], w[:32, :16])
    assert torch.equal(dst["bert.embeddings.word_embeddings.weight"], src["bert.embeddings.word_embeddings.weight"][:, :16])
    assert torch.equal(dst["classifier.weight"], src["classifier.weight"][:, :16])
    ids = torch.tensor([[101, 2023, 2003, 102]])
    out = small(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert out.shape == (1, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("spec, match", [
    (dict(hidden=24), "multiple of the teacher's head size 16"),
    (dict(hidden=64), "larger than the teacher"),
    (dict(layers=3), "larger than the teacher"),
    (dict(ffn=0), "positive integer"),
])
def test_narrow_spec_errors(teacher, spec, match):
    hf = load_hf_classifier(teacher, 2)
    with pytest.raises(ValueError, match=match):
        narrow_bert(hf, NarrowSpec(**spec))


def test_narrow_student_trains_with_prediction_kd(tmp_path, teacher):
    cfg = _student(tmp_path / "n", teacher, members=2, kd="pred", epochs=1, student_hidden=16, student_layers=1,
                   student_ffn=32)
    result = Trainer(cfg, log=lambda s: None).run()
    assert result["done"]
    members, _, meta = load_student(tmp_path / "n")
    m = meta["model"]
    assert (m["hidden_size"], m["num_layers"], m["num_heads"], m["ffn_size"]) == (16, 1, 1, 32)
    assert len(members) == 2 and members[0].classifier.weight.shape == (2, 16)


@pytest.mark.parametrize("kw, match", [
    (dict(kind="teacher", kd="none", members=1), "shape a student"),
    (dict(kd="dmd"), "direction-matching"),
    (dict(student_layers=0), "positive integer"),
])
def test_narrow_config_errors(tmp_path, teacher, kw, match):
    with pytest.raises(ValueError, match=match):
        _student(tmp_path / "x", teacher, student_hidden=16, **kw)
