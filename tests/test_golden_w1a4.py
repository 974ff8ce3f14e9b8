"""The W1A4 (BinaryBERT) integer contract (docs/arithmetic.md section 14): each integer operation
against an independent reference (exact rationals, mpmath, decimals, plain integer matmul),
golden logits == the torch fake-quant forward pass on random tiny models (with and without TWS),
taps, file format and export errors, and the W1A1 file shipped before W1A4 existed."""

import hashlib
import json
import math
from decimal import Context, Decimal
from fractions import Fraction
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch

from bebert.golden.export import export_members
from bebert.golden.format import IntModel, IntModelError, load_int_model, save_int_model
from bebert.golden.infer import GoldenInputError, GoldenModel, pad_batch
from bebert.golden.intops import multi_threshold, pack_rows
from bebert.golden.w1a4 import act_codes, code_dot, dot_correction, int_softmax, offset_codes
from bebert.model.config import ModelConfig
from bebert.model.intops import (
    context_bound,
    dyadic,
    gelu_thresholds,
    int_softmax_codes,
    lsq_thresholds,
    softmax_delta_max,
    softmax_exp_table,
)
from bebert.model.quant import LSQ_MIN_STEP, LSQQuantizer
from bebert.model.student import BinaryBertForSequenceClassification

from test_golden_model import _torch_logits  # the ensemble's logits as integer codes

torch.set_num_threads(1)

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"


def _f32(x: float) -> float:
    return float(np.float32(x))


def _ref_code(v: Fraction, step: float, qmin: int, qmax: int) -> int:
    """clamp(floor(v / s + 1/2)) in exact rationals."""
    return max(qmin, min(qmax, math.floor(v / Fraction(step) + Fraction(1, 2))))


# ------------------------------------------------------------------ activation multi-threshold
@pytest.mark.parametrize("signed", [True, False])
def test_lsq_thresholds_exhaustive_against_fractions(signed):
    """Every code of an 8-bit input format, random steps and steps with exact ties."""
    rng = np.random.default_rng(0)
    qmin, qmax = (-8, 7) if signed else (0, 15)
    frac = 3
    steps = [_f32(x) for x in rng.uniform(0.05, 4.0, 12)] + [0.5, 1.25, 2.0, 3.0 / 8]  # the last: exact ties
    codes = np.arange(-128, 128)
    for step in steps:
        thr = lsq_thresholds(step, Fraction(1, 2**frac), qmin, qmax, -128, 128)
        got = act_codes(codes, thr, qmin)
        want = [_ref_code(Fraction(int(c), 2**frac), step, qmin, qmax) for c in codes]
        assert got.tolist() == want, step
        assert (multi_threshold(codes, thr, qmin) == got).all()
    # a tie rounds up: c / s = j - 1/2 exactly
    thr = lsq_thresholds(1.0, Fraction(1, 2), -8, 7, -128, 128)
    assert act_codes(np.array([1, 3, -1, -3]), thr, -8).tolist() == [1, 2, 0, -1]


def test_float64_lsq_rule_equals_thresholds_on_every_16bit_code():
    """The fake-quant's float64 floor(x/s + 1/2) is exact on a 16-bit fixed-point grid."""
    rng = np.random.default_rng(1)
    codes = np.arange(-(1 << 15), 1 << 15)
    x = torch.tensor(codes, dtype=torch.float64) * 2.0**-8
    ties = [2.0**-7, 0.375]  # (j - 1/2) s on the grid: exact ties
    for step in [_f32(s) for s in rng.uniform(0.01, 3.0, 6)] + ties + [_f32(0.1)]:
        q = LSQQuantizer(4, signed=True)
        with torch.no_grad():
            q.step.fill_(step)
        q.initialized.fill_(1)
        thr = lsq_thresholds(q.step_value(), Fraction(1, 256), -8, 7, -(1 << 15), 1 << 15)
        assert (q.codes(x.float()).numpy().astype(np.int64) == act_codes(codes, thr, -8)).all(), step
        assert (q.int_codes(torch.as_tensor(codes), Fraction(1, 256), -(1 << 15), 1 << 15).numpy()
                == act_codes(codes, thr, -8)).all()
        if step in ties:
            c_tie = int(thr[9])  # the code exactly at (2 - 1/2) s rounds up to 2
            assert Fraction(c_tie, 256) == Fraction(3, 2) * Fraction(step)
            assert act_codes(np.array([c_tie, c_tie - 1]), thr, -8).tolist() == [2, 1]


def test_context_thresholds_against_fractions():
    """Requantization of the integer context C (value C * s_p * s_v) for the output dense."""
    rng = np.random.default_rng(2)
    cmax = context_bound(4, 6)
    cs = np.arange(-cmax, cmax + 1)
    for _ in range(6):
        sp, sv, so = (_f32(x) for x in rng.uniform(0.02, 1.5, 3))
        lsb = Fraction(sp) * Fraction(sv)
        thr = lsq_thresholds(so, lsb, -8, 7, -cmax, cmax + 1)
        want = [_ref_code(int(c) * lsb, so, -8, 7) for c in cs]
        assert act_codes(cs, thr, -8).tolist() == want


def _gelu_mp(h: int, frac: int):
    x = mpmath.mpf(h) / 2**frac
    return x * mpmath.ncdf(x)


def test_gelu_thresholds_exhaustive_against_mpmath():
    """Codes of GELU(h 2^-f) by thresholds on h == clamp(floor(GELU/s + 1/2), 0, 15) in 50 digits."""
    frac, lo, hi = 5, -512, 511
    x = 41 / 32  # on the grid: h = 41
    gx = 0.5 * x * (1 + math.erf(x / math.sqrt(2)))
    # the last two (float64 steps) put GELU(41/32) within 1e-15 of the threshold (j - 1/2) s of
    # j = 3: float64 cannot decide, the mpmath path does
    steps = [_f32(0.07), _f32(0.33), _f32(1.1), _f32(2 * gx / 5), 2 * gx / 5, math.nextafter(2 * gx / 5, 1)]
    with mpmath.workdps(50):
        for step in steps:
            thr = gelu_thresholds(step, frac, 15, lo, hi)
            got = act_codes(np.arange(lo, hi + 1), thr, 0)
            want = []
            for h in range(lo, hi + 1):
                v = _gelu_mp(h, frac) / mpmath.mpf(Fraction(step).numerator) * Fraction(step).denominator
                want.append(max(0, min(15, int(mpmath.floor(v + mpmath.mpf(1) / 2)))))
            assert got.tolist() == want, step


# --------------------------------------------------------------------------- integer softmax
def test_softmax_exp_table_against_decimals():
    ctx = Context(prec=50)
    # the last case puts 2^15 exp(-3 r) within 1e-12 of 1000: decided by the decimal path
    near = math.log(2**15 / 1000) / 3 * 4
    cases = [(_f32(a), _f32(b), d) for a, b, d in ((0.37, 0.52, 32), (0.05, 0.04, 16), (1.5, 1.25, 4), (0.8, 0.9, 64))]
    for sq, sk, d in cases + [(near, 1.0, 16), (math.nextafter(near, 0), 1.0, 16)]:
        t = softmax_exp_table(sq, sk, d, 4)
        assert t[0] == 2**15 and t.size <= softmax_delta_max(4, d) + 1 and (np.diff(t) <= 0).all()
        r = ctx.divide(ctx.multiply(Decimal(sq), Decimal(sk)), ctx.sqrt(Decimal(d)))
        for delta in range(t.size):
            assert t[delta] == math.floor(ctx.multiply(ctx.exp(-delta * r), 2**15)), (sq, sk, d, delta)
        assert t[-1] == 0 or t.size == softmax_delta_max(4, d) + 1
    assert softmax_exp_table(near, 1.0, 16, 4)[3] == 999  # float64 alone would give 1000


def test_int_softmax_against_exact_rationals_and_torch_twin():
    rng = np.random.default_rng(3)
    for trial in range(8):
        n, d = int(rng.integers(1, 9)), 8
        sq, sk, sp = _f32(rng.uniform(0.1, 1.0)), _f32(rng.uniform(0.1, 1.0)), _f32(rng.uniform(0.01, 0.2))
        q = rng.integers(-8, 8, (2, 3, n, d))
        k = rng.integers(-8, 8, (2, 3, n, d))
        s = np.einsum("bhid,bhjd->bhij", q, k)
        valid = np.ones((2, n), dtype=bool)
        valid[1, rng.integers(1, n + 1):] = False
        key_ok = valid[:, None, None, :]
        table = softmax_exp_table(sq, sk, d, 4)
        m, kk = dyadic(sp)
        assert Fraction(m, 2**kk) == Fraction(sp)
        e, z, p = int_softmax(s, key_ok, table, m, kk, 15)
        twin = int_softmax_codes(torch.as_tensor(s), torch.as_tensor(key_ok), torch.tensor(table), m, kk, 15)
        assert (twin.numpy() == p).all()
        for bi in range(2):
            real = [j for j in range(n) if valid[bi, j]]
            for hi in range(3):
                for i in range(n):
                    mx = max(int(s[bi, hi, i, j]) for j in real)
                    ee = [int(table[min(mx - int(s[bi, hi, i, j]), table.size - 1)]) if j in real else 0
                          for j in range(n)]
                    zz = sum(ee)
                    assert z[bi, hi, i, 0] == zz and e[bi, hi, i].tolist() == ee
                    want = [_ref_code(Fraction(x, zz), sp, 0, 15) for x in ee]
                    assert p[bi, hi, i].tolist() == want


# --------------------------------------------------------------------- code . binary weights
@pytest.mark.parametrize("k", [1, 5, 63, 64, 65, 100, 200])
@pytest.mark.parametrize("signed", [True, False])
def test_code_dot_equals_plain_integer_matmul(k, signed):
    rng = np.random.default_rng(k)
    lo, hi = (-8, 7) if signed else (0, 15)
    codes = rng.integers(lo, hi + 1, (9, k))
    codes[0] = lo
    codes[1] = hi  # extremes
    wbits = rng.integers(0, 2, (7, k))
    wbits[0] = 1
    wbits[1] = 0
    packed = pack_rows(wbits)
    want = codes @ (2 * wbits - 1).T
    fast = code_dot(codes, packed, k, signed)
    assert fast.dtype == np.int64 and (fast == want).all()
    assert (code_dot(codes, packed, k, signed, reference=True) == want).all()
    pc = wbits.sum(1)
    corr = 15 * (pc - k) - (8 * (2 * pc - k) if signed else 0)
    assert (dot_correction(packed, k, 4, signed) == corr).all()


def test_code_dot_other_widths_and_range_errors():
    rng = np.random.default_rng(9)
    for bits in (2, 3, 8):
        codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (4, 70))
        w = rng.integers(0, 2, (3, 70))
        assert (code_dot(codes, pack_rows(w), 70, True, bits) == codes @ (2 * w - 1).T).all()
    with pytest.raises(ValueError, match="signed 4-bit codes must lie in -8..7"):
        offset_codes(np.array([8]), 4, True)
    with pytest.raises(ValueError, match="unsigned 4-bit codes must lie in 0..15"):
        offset_codes(np.array([-1]), 4, False)


# ---------------------------------------------------------------------- the model end to end
def _cfg(**kw):
    base = dict(vocab_size=400, hidden_size=64, num_layers=2, num_heads=2, ffn_size=128, max_len=24,
                hidden_dropout=0.0, backbone="w1a4", center_weights=False)
    base.update(kw)
    return ModelConfig(**base)


def _batch(cfg, b=6, n=None, seed=0):
    rng = np.random.default_rng(seed)
    n = n or cfg.max_len
    ids = rng.integers(0, cfg.vocab_size, (b, n))
    mask = np.ones((b, n), dtype=np.int64)
    for i in range(1, b):
        mask[i, rng.integers(1, n + 1):] = 0
    return ids, mask, rng.integers(0, cfg.type_vocab_size, (b, n))


def _members(cfg, count, seed=0):
    """Random members whose LSQ steps were initialized on data (training mode, one batch), with
    larger classifier weights and biases so that logits and residuals are not all tiny."""
    torch.manual_seed(seed)
    members = [BinaryBertForSequenceClassification(cfg) for _ in range(count)]
    ids, mask, types = _batch(cfg, 4, seed=seed + 100)
    with torch.no_grad():
        for m in members:
            m.train()(torch.as_tensor(ids), torch.as_tensor(mask), torch.as_tensor(types))
            m.classifier.weight.mul_(40.0)
            for name, p in m.named_parameters():
                if name.endswith("dense.bias"):
                    p.normal_(0, 0.3)
            m.eval()
    return members


def _golden(members, weights):
    tensors, meta = export_members(members, weights)
    return GoldenModel(IntModel(meta, tensors)), tensors, meta


@pytest.fixture(scope="module")
def tws_pair():
    cfg = _cfg(tws=True)
    members = _members(cfg, 2, seed=5)
    return members, [0.6, 0.9]


@pytest.mark.parametrize("tws,layers,count", [(False, 1, 1), (False, 2, 2), (True, 1, 2), (True, 2, 3)])
def test_golden_logits_equal_fake_quant(tws, layers, count):
    cfg = _cfg(tws=tws, num_layers=layers)
    members = _members(cfg, count, seed=layers)
    weights = [1.0, 0.45, 0.3][:count]
    golden, _, _ = _golden(members, weights)
    for seed in (0, 1):
        ids, mask, types = _batch(cfg, b=7, seed=seed)
        out = golden.forward(ids, mask, types)
        want = _torch_logits(members, weights, ids, mask, types)
        assert (out.logits == want).all()
        assert np.abs(out.logits).max() > 8  # not a trivially small model


def test_trained_split_model_is_bit_exact():
    """The real pipeline in miniature: a ternary (w2a4) model split by TWS into w1a4, a few training
    steps (learned steps and weights, the exact forward in training mode), then golden == torch."""
    from bebert.model.tws import split_ternary_model

    cfg = _cfg(backbone="w2a4", num_layers=1)
    tern = _members(cfg, 1, seed=21)[0]
    model = split_ternary_model(tern)
    ids, mask, types = _batch(model.config, b=8, seed=22)
    labels = torch.as_tensor(np.random.default_rng(23).integers(0, 2, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(6):
        out = model(torch.as_tensor(ids), torch.as_tensor(mask), torch.as_tensor(types))
        loss = torch.nn.functional.cross_entropy(out.logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    steps = [q.step.grad for q in model.modules() if isinstance(q, LSQQuantizer)]
    assert all(g is not None for g in steps)  # LSQ steps learn through the exact forward
    golden, _, _ = _golden([model], [1.0])
    ids, mask, types = _batch(model.config, b=6, seed=24)
    assert (golden.forward(ids, mask, types).logits == _torch_logits([model], [1.0], ids, mask, types)).all()


def test_odd_sizes_and_tensor_scale():
    cfg = _cfg(hidden_size=48, num_heads=3, ffn_size=80, vocab_size=300, max_len=20, embedding_scale="tensor",
               tws=True, num_layers=1)
    members = _members(cfg, 2, seed=11)
    golden, _, _ = _golden(members, [1.0, 1.0])
    ids, mask, types = _batch(cfg, b=5, seed=4)
    assert (golden.forward(ids, mask, types).logits == _torch_logits(members, [1.0, 1.0], ids, mask, types)).all()


def test_padding_does_not_change_results(tws_pair):
    members, weights = tws_pair
    golden, _, _ = _golden(members, weights)
    ids, mask = pad_batch([[101, 230, 143, 102, 7, 9], [101, 65, 102]])
    both = golden.forward(ids, mask).logits
    alone = golden.forward(np.array([[101, 65, 102]])).logits
    assert (both[1] == alone[0]).all()
    with pytest.raises(GoldenInputError, match="starts with padding"):
        golden.forward(np.array([[101, 102]]), np.array([[0, 1]]))
    with pytest.raises(GoldenInputError, match="outside 0..399"):
        golden.forward(np.array([[101, 400]]))
    with pytest.raises(GoldenInputError, match="exceeds the model's maximum 24"):
        golden.forward(np.full((1, 25), 101))


def test_taps_match_torch_internals_and_reference_arithmetic(tws_pair):
    members, weights = tws_pair
    cfg = members[0].config
    golden, tensors, _ = _golden(members, weights)
    ids, mask, types = _batch(cfg, b=4, n=20, seed=2)
    out = golden.forward(ids, mask, types, taps=True)
    tp = out.taps
    for name, t in tp.items():
        assert t.dtype.kind in "iu", (name, t.dtype)
    valid = mask.astype(bool)
    with torch.no_grad():
        ref = members[1](torch.as_tensor(ids), torch.as_tensor(mask), torch.as_tensor(types), return_internals=True)
    fp = cfg.fixed_point
    names = ["m1.emb.ln"] + [f"m1.l{i}.ffn_ln" for i in range(cfg.num_layers)]
    for name, h in zip(names, ref.hidden):
        codes = np.round(h.double().numpy() * 2**fp.layernorm.frac).astype(np.int64)
        assert (tp[name][valid] == codes[valid]).all(), name
        assert (tp[name][~valid] == 0).all()
    for layer, qkv in enumerate(ref.qkv):
        for part, t in zip(("query", "key", "value"), qkv):
            codes = np.round(t.double().numpy() * 2**fp.residual.frac).astype(np.int64)
            assert (tp[f"m1.l{layer}.{part}.y"][valid] == codes[valid]).all()
    # dot products == plain integer matmul of the input codes with the +-1 weights (both matrices)
    h = cfg.hidden_size
    for lin, k in (("query", h), ("attn_out", h), ("ffn_out", cfg.ffn_size)):
        a = tp[f"m0.l1.{lin}.in"][valid]
        for sfx in ("", "_2"):
            w = np.unpackbits(tensors[f"member.0.layer.1.{lin}.bits{sfx}"].view(np.uint8), axis=-1,
                              bitorder="little")[:, :k].astype(np.int64)
            assert (tp[f"m0.l1.{lin}.dot{sfx}"][valid] == a @ (2 * w - 1).T).all()
    assert tp["m0.l1.ffn_out.in"].min() >= 0 and tp["m0.l1.query.in"].min() >= -8
    # attention: scores, probability codes (exact rationals), context
    b, hd = 4, h // cfg.num_heads
    heads = lambda t: t.reshape(b, 20, cfg.num_heads, hd).transpose(0, 2, 1, 3)  # noqa: E731
    qh, kh, vh = (heads(tp[f"m0.l0.attn.{x}_codes"]) for x in "qkv")
    s = qh @ kh.transpose(0, 1, 3, 2)
    both = valid[:, None, :, None] & valid[:, None, None, :]
    assert (tp["m0.l0.attn.score"] == np.where(both, s, 0)).all()
    sp = members[0].bert.encoder.layer[0].attention.self.p_quant.step_value()
    e, z, p = tp["m0.l0.attn.exp"], tp["m0.l0.attn.sum"], tp["m0.l0.attn.p_codes"]
    for bi, hi_, i in ((0, 0, 0), (1, 1, 3), (3, 0, 2)):
        assert z[bi, hi_, i] == e[bi, hi_, i].sum()
        assert p[bi, hi_, i].tolist() == [_ref_code(Fraction(int(x), int(z[bi, hi_, i])), sp, 0, 15)
                                          for x in e[bi, hi_, i]]
    ctx = (p @ vh).transpose(0, 2, 1, 3).reshape(b, 20, h)
    assert (tp["m0.l0.attn.ctx"][valid] == ctx[valid]).all()
    assert (out.member_logits[1] == tp["m1.logits"]).all()
    assert (tp["m0.l0.attn.p_codes"][~both[:, 0][:, None].repeat(cfg.num_heads, 1)] == 0).all()


# ------------------------------------------------------------------------- file and errors
def test_file_roundtrip_version_2_and_errors(tws_pair, tmp_path):
    from safetensors.numpy import save

    members, weights = tws_pair
    _, tensors, meta = _golden(members, weights)
    path = tmp_path / "w1a4.safetensors"
    save_int_model(path, tensors, meta)
    model = load_int_model(path)
    s = model.summary()
    assert s["format_version"] == 2 and s["backbone"] == "w1a4" and s["tws"] and s["act_bits"] == 4
    assert "dot_scale" in s["formats"]
    ids, mask, types = _batch(members[0].config, b=3, n=10, seed=8)
    assert (GoldenModel(model).forward(ids, mask, types).logits == _torch_logits(members, weights, ids, mask,
                                                                                 types)).all()
    bad = tmp_path / "bad.safetensors"

    def write(t=tensors, m=meta, version="2"):
        bad.write_bytes(save(t, metadata={"format": "bebert-int", "format_version": version,
                                          "bebert": json.dumps(m)}))

    write(version="1")
    with pytest.raises(IntModelError, match="version 1 holds the w1a1 backbone.*'w1a4'"):
        load_int_model(bad)
    write(version="3")
    with pytest.raises(IntModelError, match="format version '3'; this bebert reads version 1 \\(w1a1\\), 2 \\(w1a4\\)"):
        load_int_model(bad)
    no_tws = json.loads(json.dumps(meta))
    no_tws["config"]["tws"] = False
    write(m=no_tws)
    with pytest.raises(IntModelError, match="unexpected, e.g. .*_2"):
        load_int_model(bad)
    fewer = {k: v for k, v in tensors.items() if k != "member.1.layer.0.attn.exp"}
    write(t=fewer)
    with pytest.raises(IntModelError, match="missing, e.g. \\['member.1.layer.0.attn.exp'\\]"):
        load_int_model(bad)
    for name, value, msg in (
            ("member.0.layer.0.query.in_thr", lambda t: t[::-1].copy(), "ascending thresholds"),
            ("member.0.layer.1.attn.exp", lambda t: t + 1, "not an exp table"),
            ("member.0.layer.0.attn.prob_step", lambda t: np.array([1, 60], dtype=np.int32), "probability step"),
            ("member.0.layer.0.ffn_in.scale_2", lambda t: np.full_like(t, -(2**31)), "outside Qs\\(24,24\\)"),
            ("member.0.layer.0.attn.v_thr", lambda t: t[:-1].copy(), "config does not match tensor")):
        changed = dict(tensors)
        changed[name] = value(tensors[name])
        write(t=changed)
        with pytest.raises(IntModelError, match=msg):
            load_int_model(bad)
    no_sm = dict(meta)
    del no_sm["softmax"]
    write(m=no_sm)
    with pytest.raises(IntModelError, match="softmax metadata"):
        load_int_model(bad)


def test_export_errors_for_w1a4():
    cfg = _cfg(vocab_size=100, num_layers=1)
    with pytest.raises(IntModelError, match="never initialized"):
        export_members([BinaryBertForSequenceClassification(cfg)], [1.0])
    with pytest.raises(IntModelError, match="not 'w2a4'"):
        export_members([BinaryBertForSequenceClassification(_cfg(backbone="w2a4", vocab_size=100))], [1.0])
    members = _members(cfg, 1)
    sa = members[0].bert.encoder.layer[0].attention.self
    with torch.no_grad():
        sa.p_quant.step.fill_(float("nan"))
    with pytest.raises(IntModelError, match="must be positive and finite"):
        export_members(members, [1.0])
    # a step trained below the minimum (or negative) acts as LSQ_MIN_STEP, in torch and in the file
    with torch.no_grad():
        sa.p_quant.step.fill_(-0.5)
        sa.v_quant.step.fill_(1e-9)
    assert sa.p_quant.step_value() == LSQ_MIN_STEP
    golden, tensors, _ = _golden(members, [1.0])
    assert tensors["member.0.layer.0.attn.prob_step"].tolist() == [1, 20]
    ids, mask, types = _batch(cfg, b=3, seed=5)
    assert (golden.forward(ids, mask, types).logits == _torch_logits(members, [1.0], ids, mask, types)).all()
    with pytest.raises(IntModelError, match="different configs"):
        export_members([_members(cfg, 1)[0], _members(_cfg(vocab_size=100, num_layers=1, tws=True), 1)[0]], [1, 1])


# ------------------------------------------------------------- the shipped W1A1 file is unchanged
def test_shipped_w1a1_file_still_loads_and_gives_the_same_results():
    if not SHIPPED.is_file():
        pytest.skip("shipped checkpoint not present")
    model = load_int_model(SHIPPED)
    assert model.summary()["format_version"] == 1 and model.summary()["backbone"] == "w1a1"
    g = GoldenModel(model)
    rng = np.random.default_rng(123)
    ids = rng.integers(1000, 30000, (4, 20))
    ids[:, 0] = 101
    mask = np.ones((4, 20), dtype=np.int64)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    out = g.forward(ids, mask, taps=True)
    assert out.logits.tolist() == [[-243, 209], [119, -115], [-293, 248], [156, -143]]
    assert out.member_logits.tolist() == [[[-275, 236], [-8, -9], [-287, 242], [48, -51]],
                                          [[-205, 179], [267, -238], [-299, 256], [283, -250]]]
    h = hashlib.sha256()
    for k in sorted(out.taps):  # every intermediate, recorded before W1A4 was added
        h.update(k.encode())
        h.update(np.ascontiguousarray(out.taps[k]).astype(np.int64).tobytes())
    assert h.hexdigest() == "15774e9f52434f4562674012f852108e845daf52138e47423100bf6b342a6f22"


def test_cli_export_and_inspect_show_the_backbone(tws_pair, tmp_path, capsys):
    import argparse

    from bebert.golden.cli import add_export_parser, add_inspect_parser
    from bebert.model.checkpoint import save_student

    members, weights = tws_pair
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"tok{i}\n" for i in range(members[0].config.vocab_size)))
    ckpt = tmp_path / "ckpt"
    save_student(ckpt, members, weights, {"task": "sst2-sentences", "max_len": 24, "lowercase": True}, vocab)
    path = tmp_path / "w1a4.safetensors"
    p = argparse.ArgumentParser(prog="bebert")
    sub = p.add_subparsers(dest="command", required=True)
    add_export_parser(sub)
    add_inspect_parser(sub)
    args = p.parse_args(["export", str(ckpt), "-o", str(path)])
    assert args.func(args) == 0
    assert "w1a4 (4-bit activations, TWS" in capsys.readouterr().out
    args = p.parse_args(["inspect", str(path), "--tensors"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "bebert-int v2" in text and "w1a4 (4-bit activations, TWS" in text and "attn.prob_step" in text
    ids, mask, types = _batch(members[0].config, b=3, n=9, seed=12)
    assert (GoldenModel(load_int_model(path)).forward(ids, mask, types).logits
            == _torch_logits(members, weights, ids, mask, types)).all()
