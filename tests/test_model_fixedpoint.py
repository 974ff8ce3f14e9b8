"""Fixed-point formats, fake quantization and the model configuration."""

import json

import pytest
import torch

from bebert.model.config import ModelConfig
from bebert.model.fixedpoint import FixedPointConfig, FixedPointFormat, fake_quant, quantize
from bebert.model.quant import LSQQuantizer, ternary_parts
from bebert.model.student import BinaryBertForSequenceClassification

torch.set_num_threads(1)


def test_format_ranges():
    f = FixedPointFormat(16, 8)
    assert (f.qmin, f.qmax, f.lsb) == (-32768, 32767, 1 / 256)
    assert f.max_value == pytest.approx(127.99609375)
    u = FixedPointFormat(4, 0, signed=False)
    assert (u.qmin, u.qmax) == (0, 15)
    assert str(f) == "Qs(16,8)"
    with pytest.raises(ValueError, match="positive integer"):
        FixedPointFormat(0, 3)


def test_floor_and_half_even_rounding():
    f = FixedPointFormat(8, 1)  # LSB 0.5
    x = torch.tensor([0.74, 0.75, -0.25, -0.26, 1.25, 0.25, 100.0, -100.0])
    assert quantize(x, f, "floor").tolist() == [1, 1, -1, -1, 2, 0, 127, -128]
    # half_even: 0.75*2=1.5 -> 2, -0.25*2=-0.5 -> -0, 1.25*2=2.5 -> 2, 0.25*2 = 0.5 -> 0
    assert quantize(x, f, "half_even").tolist() == [1, 2, 0, -1, 2, 0, 127, -128]


def test_fake_quant_straight_through_and_disable():
    cfg = FixedPointConfig()
    x = torch.tensor([0.001, -0.001, 1000.0], requires_grad=True)
    y = fake_quant(x, cfg.residual, cfg)
    assert y.tolist() == [0.0, -1 / 256, cfg.residual.max_value]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]
    off = FixedPointConfig(enabled=False)
    assert fake_quant(x, off.residual, off) is x
    with pytest.raises(ValueError, match="rounding"):
        FixedPointConfig(rounding="nearest")


def test_configs_round_trip_json():
    fp = FixedPointConfig(rounding="half_even", residual=FixedPointFormat(20, 10))
    assert FixedPointConfig.from_dict(json.loads(json.dumps(fp.to_dict()))) == fp
    cfg = ModelConfig(hidden_size=64, num_heads=4, backbone="w1a4", tws=True, fixed_point=fp)
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg and again.fixed_point.residual.bits == 20
    assert cfg.head_size == 16


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(hidden_size=30, num_heads=4), "multiple"),
        (dict(backbone="w3a3"), "backbone"),
        (dict(backbone="w1a1", tws=True), "tws"),
        (dict(num_layers=0), "positive"),
    ],
)
def test_model_config_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        ModelConfig(**kwargs)
    with pytest.raises(ValueError, match="Unknown"):
        ModelConfig.from_dict({"hidden": 3})


def test_student_values_lie_on_the_fixed_point_grid():
    cfg = ModelConfig(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, ffn_size=32, max_len=16)
    model = BinaryBertForSequenceClassification(cfg).eval()
    ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids, return_internals=True)
    fp = cfg.fixed_point
    for h in out.hidden:  # LayerNorm outputs
        codes = h * 2 ** fp.layernorm.frac
        assert torch.equal(codes, codes.round())
    for q, k, v in out.qkv:
        codes = q * 2 ** fp.residual.frac
        assert torch.equal(codes, codes.round())
    logits = out.logits * 2 ** fp.logits.frac
    assert torch.equal(logits, logits.round())


def test_lsq_quantizer_codes_and_init():
    q = LSQQuantizer(4, signed=True)
    x = torch.linspace(-3, 3, 101, requires_grad=True)
    y = q(x)
    assert bool(q.initialized)
    codes = y / q.step
    assert torch.allclose(codes, codes.round(), atol=1e-5)
    assert codes.min() >= -8 and codes.max() <= 7
    y.sum().backward()
    assert q.step.grad is not None and x.grad is not None
    u = LSQQuantizer(4, signed=False)
    assert u(torch.tensor([-1.0, 0.0, 5.0])).min() == 0


def test_ternary_parts():
    w = torch.tensor([[1.0, -1.0, 0.1, -0.1, 0.0]])
    t, alpha = ternary_parts(w)
    # delta = 0.7 * mean|w| = 0.7 * 0.44 = 0.308
    assert t.tolist() == [[1, -1, 0, 0, 0]]
    assert alpha.item() == pytest.approx(1.0)
