"""Each integer operation of the golden model against an independent reference.

References are Python integers, ``math.isqrt``, exact rationals (``fractions.Fraction``) and
high-precision decimals; small widths are covered exhaustively.
"""

import ast
import decimal
import itertools
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from bebert.golden.fold import ceil_div, floor_div, fold_sign_threshold, score_threshold
from bebert.golden.intops import (
    Fmt,
    align_add,
    and_popcount,
    bit_length,
    layernorm,
    multi_threshold,
    pack_rows,
    rsqrt_bitserial,
    shift_floor,
    threshold,
    xnor_popcount,
)
from bebert.golden.pe_array import Mode, pack_bits, popcount_dot
from bebert.model import intops as tint
from bebert.model.fixedpoint import FixedPointFormat

torch.set_num_threads(1)
LN = tint.ln_params()


# ------------------------------------------------------------------------------ fixed point
def test_shift_floor_exhaustive_small():
    xs = np.arange(-512, 512)
    for s in range(-4, 12):
        want = [math.floor(Fraction(int(x)) / Fraction(2) ** s) for x in xs]
        assert shift_floor(xs, s).tolist() == want
    # per-element shifts
    s = np.array([-3, 0, 2, 7])
    assert shift_floor(np.array([-5, -5, -5, -5]), s).tolist() == [-40, -5, -2, -1]


@pytest.mark.parametrize("signed", [True, False])
def test_align_add_is_floor_of_the_exact_sum_then_saturation(signed):
    out = Fmt(5, 2, signed)
    rng = np.random.default_rng(0)
    for fa, fb in itertools.product(range(0, 5), range(-1, 4)):
        a = rng.integers(-64, 64, 200)
        b = rng.integers(-64, 64, 200)
        got = align_add([(a, fa), (b, fb)], out)
        for x, y, g in zip(a, b, got):
            exact = Fraction(int(x)) / Fraction(2) ** fa + Fraction(int(y)) / Fraction(2) ** fb
            want = min(max(math.floor(exact * 2**out.frac), out.qmin), out.qmax)
            assert g == want


def test_bit_length_exhaustive_and_powers():
    m = np.arange(0, 1 << 16)
    assert (bit_length(m) == np.array([int(v).bit_length() for v in m])).all()
    p = np.array([(1 << k) + d for k in range(1, 62) for d in (-1, 0, 1)], dtype=np.int64)
    assert bit_length(p).tolist() == [int(v).bit_length() for v in p]


# ---------------------------------------------------------------------- reciprocal sqrt
@pytest.mark.parametrize("frac,bits", [(8, 9), (LN["rsqrt_frac"], LN["rsqrt_bits"])])
def test_rsqrt_bitserial_matches_isqrt(frac, bits):
    lo = 1 if frac == 8 else 1 << (LN["mant_bits"] - 2)
    m = np.arange(lo, 1 << 16, dtype=np.int64)
    want = np.array([math.isqrt((1 << (2 * frac)) // int(v)) for v in m])
    got = rsqrt_bitserial(m, frac, bits)
    ok = want < (1 << bits)  # the result register holds `bits` bits
    assert (got[ok] == want[ok]).all()
    assert ok.all() or frac == 8  # the LayerNorm parameters never overflow the register


def test_rsqrt_torch_twin_is_the_same_function():
    m = torch.arange(1 << (LN["mant_bits"] - 2), 1 << LN["mant_bits"], dtype=torch.int64)
    got = tint._rsqrt(m).numpy()
    assert (got == rsqrt_bitserial(m.numpy(), LN["rsqrt_frac"], LN["rsqrt_bits"])).all()


# ------------------------------------------------------------------------------ LayerNorm
def _ln_reference(x, g, b, fr, fg, fb, out, eps_code):
    """The contract, written once more with Python integers, ``math.isqrt`` and Fractions."""
    h = len(x)
    s = sum(x)
    v = h * sum(t * t for t in x) - s * s
    mm = v + eps_code
    sh = mm.bit_length() - LN["mant_bits"]
    sh += sh % 2
    m = mm >> sh if sh >= 0 else mm << -sh
    r = math.isqrt((1 << (2 * LN["rsqrt_frac"])) // m)
    res = []
    for xi, gi, bi in zip(x, g, b):
        n = math.floor(Fraction((h * xi - s) * r, 2 ** (LN["rsqrt_frac"] + sh // 2 - LN["norm_frac"])))
        y = math.floor((Fraction(n * gi, 2 ** (LN["norm_frac"] + fg)) + Fraction(bi, 2**fb)) * 2**out.frac)
        res.append(min(max(y, out.qmin), out.qmax))
    return res


def test_layernorm_against_python_integers_and_torch_twin():
    rng = np.random.default_rng(1)
    out = Fmt(16, 8)
    eps = tint.ln_eps_code(1e-12, 24, 8)
    for trial in range(60):
        h = 24
        scale = [1, 3, 40, 2000, 30000][trial % 5]
        x = rng.integers(-scale, scale + 1, (4, h))
        if trial == 0:
            x[0] = 7  # zero variance: output is beta
            x[1, :] = 0
        g = rng.integers(-5000, 5000, h)
        b = rng.integers(-3000, 3000, h)
        got = layernorm(x, g, b, 8, 12, 8, out, eps, LN)
        tw = tint.int_layernorm(torch.tensor(x), torch.tensor(g), torch.tensor(b), 8, 12, 8,
                                FixedPointFormat(16, 8), eps).numpy()
        assert (tw == got).all()
        for row, grow in zip(x, got):
            assert grow.tolist() == _ln_reference([int(t) for t in row], g.tolist(), b.tolist(), 8, 12, 8, out, eps)
    assert (layernorm(np.full((1, 24), 7), g, b, 8, 12, 8, out, eps, LN) == b).all()


def test_layernorm_is_close_to_the_real_layernorm():
    """The integer method is a LayerNorm: within a few LSB of the exact real-valued one."""
    rng = np.random.default_rng(2)
    h = 384
    x = rng.normal(0, 2.0, (64, h))
    xc = np.floor(x * 256).astype(np.int64)
    g = np.floor(rng.normal(1.0, 0.2, h) * 4096).astype(np.int64)
    b = np.floor(rng.normal(0.0, 0.2, h) * 256).astype(np.int64)
    got = layernorm(xc, g, b, 8, 12, 8, Fmt(16, 8), tint.ln_eps_code(1e-12, h, 8), LN)
    xr = xc / 256
    want = (xr - xr.mean(-1, keepdims=True)) / np.sqrt(xr.var(-1, keepdims=True) + 1e-12) * (g / 4096) + b / 256
    assert np.abs(got / 256 - want).max() <= 3 / 256


# ------------------------------------------------------------------------ popcounts, packing
def test_pack_rows_matches_pack_bits():
    rng = np.random.default_rng(3)
    for k in (1, 5, 63, 64, 65, 200):
        bits = rng.integers(0, 2, (3, 4, k))
        assert (pack_rows(bits) == pack_bits(bits)).all()
        assert (pack_rows(bits.astype(bool)) == pack_bits(bits)).all()


@pytest.mark.parametrize("k", [1, 3, 64, 100, 384])
def test_xnor_popcount_matches_pe_array_golden(k):
    rng = np.random.default_rng(k)
    a = pack_rows(rng.integers(0, 2, (7, k)))
    w = pack_rows(rng.integers(0, 2, (11, k)))
    assert (xnor_popcount(a, np.ascontiguousarray(w.T), k) == popcount_dot(a, w, k, Mode.XNOR)).all()


def test_xnor_popcount_exhaustive_small():
    k = 4
    allv = pack_rows(np.array(list(itertools.product((0, 1), repeat=k))))
    got = xnor_popcount(allv, np.ascontiguousarray(allv.T), k)
    vecs = list(itertools.product((0, 1), repeat=k))
    for i, j in itertools.product(range(16), range(16)):
        assert got[i, j] == sum(x == y for x, y in zip(vecs[i], vecs[j]))


def test_and_popcount_exhaustive_small():
    k = 4
    vecs = np.array(list(itertools.product((0, 1), repeat=k)))
    p = pack_rows(vecs)
    got = and_popcount(p[:, None, :], p[None, :, :])  # a = rows, w = columns
    for i, j in itertools.product(range(16), range(16)):
        assert got[i, j] == sum((2 * a - 1) for a, w in zip(vecs[i], vecs[j]) if w)
    assert (got == popcount_dot(p, p, k, Mode.AND)).all()


# -------------------------------------------------------------------- threshold folding
def _float_sign(a, fs, c, fb, y, k):
    """The float formula: sign(alpha * (2y - K) + b) with sign(0) = +1, evaluated in float64."""
    v = np.ldexp(float(a), -fs) * float(2 * y - k) + np.ldexp(float(c), -fb)
    return 1 if v >= 0 else 0


def test_fold_sign_threshold_random_against_float_formula():
    rng = np.random.default_rng(4)
    for fs, fb in ((14, 8), (8, 14), (10, 10), (0, 3)):
        for _ in range(40):
            k = int(rng.integers(1, 200))
            p = 16
            a = rng.integers(-3000, 3000, p)
            a[:2] = 0
            c = rng.integers(-40000, 40000, p)
            thr, pol = fold_sign_threshold(a, fs, c, fb, k)
            y = np.arange(k + 1)[:, None]
            got = threshold(y, thr, pol)
            want = np.array([[_float_sign(a[j], fs, c[j], fb, yy, k) for j in range(p)] for yy in range(k + 1)])
            assert (got == want).all()
            assert (thr >= 0).all() and (thr <= k + 1).all()


def test_fold_sign_threshold_ties_give_plus_one():
    # choose biases that make alpha*(2y - K) + b exactly zero at some y: the tie must give +1
    rng = np.random.default_rng(5)
    fs, fb, k = 14, 8, 96
    for _ in range(200):
        a = int(rng.integers(-4096, 4096)) * 64  # multiples of 2**(fs-fb) so that b = -alpha*(2y-K) is on its grid
        y0 = int(rng.integers(0, k + 1))
        c = -(a >> 6) * (2 * y0 - k)
        thr, pol = fold_sign_threshold(np.array([a]), fs, np.array([c]), fb, k)
        assert _float_sign(a, fs, c, fb, y0, k) == 1
        assert threshold(np.array([[y0]]), thr, pol)[0, 0] == 1
        for y in range(k + 1):
            assert threshold(np.array([[y]]), thr, pol)[0, 0] == _float_sign(a, fs, c, fb, y, k)


def test_fold_agrees_with_the_threshold_unit_golden():
    """The export's (T, pol) mean the same bits in the threshold unit's own golden function."""
    threshold_golden = pytest.importorskip("bebert.golden.threshold")
    rng = np.random.default_rng(6)
    k = 77
    a = rng.integers(-3000, 3000, 32)
    a[:3] = 0
    c = rng.integers(-40000, 40000, 32)
    thr, pol = fold_sign_threshold(a, 14, c, 8, k)
    y = np.arange(k + 1)[:, None].repeat(32, axis=1)
    assert (threshold_golden.threshold_bits(y, thr, pol) == threshold(y, thr, pol)).all()


def test_score_threshold_is_strictly_positive():
    for d in range(1, 70):
        t = score_threshold(d)
        for y in range(d + 1):
            assert (y >= t) == (2 * y - d > 0)


def test_integer_division_helpers():
    for n, d in itertools.product(range(-20, 21), [-7, -3, -1, 1, 2, 5]):
        assert floor_div(n, d) == math.floor(Fraction(n, d))
        assert ceil_div(n, d) == math.ceil(Fraction(n, d))


def test_multi_threshold_counts():
    thr = np.array([-3, 0, 4])
    assert multi_threshold(np.array([-5, -3, 0, 3, 4, 9]), thr, -1).tolist() == [-1, 0, 1, 1, 2, 2]


# ----------------------------------------------------------------------------- tanh table
def test_tanh_table_against_decimal_reference():
    fin, fout = FixedPointFormat(16, 8), FixedPointFormat(16, 14)
    c0, table = tint.tanh_table(fin, fout)
    ctx = decimal.Context(prec=200)  # 1 - tanh(128) ~ 1e-111 is still resolved

    def ref(c):
        x = ctx.divide(decimal.Decimal(c), 256)
        e = ctx.exp(ctx.multiply(x, 2))
        t = ctx.divide(ctx.subtract(e, 1), ctx.add(e, 1))
        return max(min(math.floor(ctx.multiply(t, 2**14)), fout.qmax), fout.qmin)

    codes = list(range(fin.qmin, fin.qmax + 1, 37)) + list(range(c0 - 3, c0 + table.size + 3))
    for c in codes:
        idx = min(max(c - c0, 0), table.size - 1)
        assert table[idx] == ref(c), c
    assert table.size < 4096  # a small ROM, constant beyond both ends


# --------------------------------------------------------------------------- no floats
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
_FLOAT_FUNCS = {"mean", "sqrt", "exp", "tanh", "log", "log2", "divide", "true_divide", "average", "std", "var",
                "float16", "float32", "float64", "floor", "ceil", "round", "ldexp", "frexp", "sin", "cos", "erf",
                "rint", "power", "float_power", "reciprocal", "linspace", "interp"}


@pytest.mark.parametrize("module", ["infer.py", "intops.py", "fold.py", "w1a4.py"])
def test_inference_path_has_no_floating_point(module):
    """The golden inference path has no true division, float literal, float dtype or float function."""
    tree = ast.parse((GOLDEN / module).read_text())
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)), f"{module}:{node.lineno}: '/'"
        assert not (isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Div)), f"{module}:{node.lineno}"
        assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), f"{module}:{node.lineno}"
        if isinstance(node, ast.Attribute):
            assert node.attr not in _FLOAT_FUNCS, f"{module}:{node.lineno}: {node.attr}"
        if isinstance(node, ast.Name):
            assert node.id != "float", f"{module}:{node.lineno}: float"
