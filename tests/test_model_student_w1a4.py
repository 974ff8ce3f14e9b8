"""The W1A4 fake-quant forward pass computes the integer contract (docs/arithmetic.md section 14)
without changing what training sees: gradients equal those of the float formula it replaced."""

import math

import pytest
import torch
import torch.nn.functional as F

from bebert.model.config import ModelConfig
from bebert.model.fixedpoint import fake_quant
from bebert.model.quant import LSQ_MIN_STEP, LSQQuantizer
from bebert.model.student import QuantLinear, _weight_quant

torch.set_num_threads(1)


def _old_lsq(q: LSQQuantizer, x):
    """The float32 LSQ forward this package used before the exact contract."""
    g = 1.0 / math.sqrt(x.numel() * q.qmax)
    s = q.step * g + (q.step - q.step * g).detach()
    v = torch.clamp(x / s, q.qmin, q.qmax)
    v = v + (torch.floor(v + 0.5) - v).detach()
    return v * s


@pytest.mark.parametrize("tws", [False, True])
def test_quant_linear_gradients_match_the_float_formula(tws):
    cfg = ModelConfig(vocab_size=50, hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, max_len=8,
                      backbone="w1a4", tws=tws, center_weights=False)
    fp = cfg.fixed_point
    torch.manual_seed(0)
    lin = QuantLinear(32, 16, cfg)
    x = (torch.randn(5, 32) * 2.0).requires_grad_()
    lin.act_quant(x.detach())  # initialize the step
    y = lin(x)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    grads = (x.grad.clone(), lin.weight.grad.clone(), lin.act_quant.step.grad.clone())
    x.grad = None
    lin.zero_grad()
    # the old formula: F.linear(codes * s, sign(w)) * alpha, summed over the weight matrices
    xq = _old_lsq(lin.act_quant, x)
    ref = None
    for w in [lin.weight, lin.weight_2] if tws else [lin.weight]:
        codes, alpha = _weight_quant(w, cfg)
        term = F.linear(xq, codes) * fake_quant(alpha, fp.weight_scale, fp).view(-1)
        ref = term if ref is None else ref + term
    ref = fake_quant(ref + fake_quant(lin.bias, fp.bias, fp), fp.residual, fp)
    assert (ref - y).abs().max() <= 2 * fp.residual.lsb  # the forward differs only by rounding s * alpha
    (ref * r).sum().backward()
    for new, old in zip(grads, (x.grad, lin.weight.grad, lin.act_quant.step.grad)):
        assert torch.allclose(new, old, rtol=1e-3, atol=1e-6)


def test_lsq_step_value_is_exact_and_floored():
    q = LSQQuantizer(4, signed=True)
    q.initialized.fill_(1)
    with torch.no_grad():
        q.step.fill_(0.3)
    x = torch.linspace(-4, 4, 77, requires_grad=True)
    v, s = q.quantize(x)
    assert s.item() == q.step.item()  # exactly the stored float32, not a rounding of s*g + (s - s*g)
    assert torch.equal(v, torch.clamp(torch.floor(x.double() / q.step.double() + 0.5), -8, 7).float())
    (v * s).sum().backward()
    assert q.step.grad is not None
    with torch.no_grad():
        q.step.fill_(-1.0)
    assert q.step_value() == LSQ_MIN_STEP
    v, s = q.quantize(x.detach())
    assert s.item() == LSQ_MIN_STEP and v.abs().max() == 8
