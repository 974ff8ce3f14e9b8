"""The bit-packed C engine (``golden/bitpacked.py``) against the golden model: exact integer equality."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bebert.golden.bitpacked import BitPackedModel, load_library
from bebert.golden.export import export_members
from bebert.golden.format import IntModel, load_int_model
from bebert.golden.infer import GoldenInputError, GoldenModel, pad_batch
from bebert.golden.intops import pack_rows, xnor_popcount
from bebert.model.config import ModelConfig
from bebert.model.fixedpoint import FixedPointConfig, FixedPointFormat
from bebert.model.student import BinaryBertForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"
DATA = ROOT.parent / "shared" / "data" / "sst2-sentences"
KERNELS = ("avx2", "scalar")


def _same(out, ref):
    assert out.logits.dtype == np.int64 and out.member_logits.dtype == np.int64
    assert np.array_equal(out.logits, ref.logits)
    assert np.array_equal(out.member_logits, ref.member_logits)
    assert np.array_equal(out.predictions, ref.predictions)


# ------------------------------------------------------------------------- shipped checkpoint
@pytest.fixture(scope="module")
def shipped():
    model = load_int_model(SHIPPED)
    return model, GoldenModel(model), BitPackedModel(model)


def _sentences(model, count):
    from bebert.model.data import encode_examples, get_task, load_tokenizer, read_examples, split_path
    from bebert.model.teacher import default_base_model, vocab_path_of

    if not DATA.is_dir():
        pytest.skip(f"SST-2 sentences not present at {DATA}")
    spec = get_task("sst2-sentences")
    tok = load_tokenizer(vocab_path_of(default_base_model()), 128, model.meta.get("lowercase", True))
    return encode_examples(read_examples(spec, split_path(spec, DATA, "dev"), count), tok).input_ids


def test_shipped_checkpoint_on_sst2_sentences(shipped):
    model, golden, bp = shipped
    ids, mask = pad_batch(_sentences(model, 10))
    ref = golden.forward(ids, mask)
    for kernel in KERNELS:
        bp.kernel = kernel
        for threads in (1, 2):
            _same(bp.forward(ids, mask, threads=threads), ref)
    bp.kernel = "avx2"
    # one sentence alone, and the last layer's output against the golden tap
    one = np.array([_sentences(model, 1)[0]])
    ref = golden.forward(one, taps=True)
    out = bp.forward(one, threads=2, hidden=True)
    _same(out, ref)
    last = model.dims["num_layers"] - 1
    for m in range(model.members):
        assert np.array_equal(out.taps[f"m{m}.hidden"], ref.taps[f"m{m}.l{last}.ffn_ln"])


def test_shipped_checkpoint_long_random_sequences(shipped):
    """Lengths past 64 and 128 tokens (several words of keys per attention row), padding holes."""
    model, golden, bp = shipped
    rng = np.random.default_rng(5)
    ids = rng.integers(0, model.dims["vocab_size"], (3, 150))
    mask = np.ones_like(ids)
    mask[1, 70:] = 0
    mask[2, 5:9] = 0  # a hole: the golden model drops those tokens as keys and rows
    types = rng.integers(0, 2, ids.shape)
    _same(bp.forward(ids, mask, types, threads=2), golden.forward(ids, mask, types))


# ------------------------------------------------------------------------- random small models
SHAPES = [  # hidden, heads, ffn, layers, max_len, members
    (32, 2, 64, 2, 40, 2),    # d = 16
    (36, 3, 52, 1, 70, 3),    # d = 12 (not a byte), H and F not multiples of 8, keys past 64
    (160, 2, 72, 1, 20, 1),   # d = 80: two words per head
    (130, 2, 200, 1, 140, 2),  # d = 65, keys past 128
    (64, 1, 128, 2, 24, 2),   # d = 64 exactly
]


def _random_model(shape, seed, scramble):
    hidden, heads, ffn, layers, max_len, members = shape
    fp = FixedPointConfig(residual=FixedPointFormat(10, 6)) if seed % 3 == 2 else FixedPointConfig()
    cfg = ModelConfig(vocab_size=300, hidden_size=hidden, num_heads=heads, ffn_size=ffn, num_layers=layers,
                      max_len=max_len, hidden_dropout=0.0, fixed_point=fp)
    torch.manual_seed(seed)
    mems = [BinaryBertForSequenceClassification(cfg).eval() for _ in range(members)]
    with torch.no_grad():
        for m in mems:  # non-trivial LayerNorm gains and biases
            for name, p in m.named_parameters():
                if "LayerNorm.weight" in name:
                    p.mul_(1.0 + 3.0 * torch.rand_like(p))
                elif name.endswith("bias"):
                    p.normal_(0, 0.5)
    tensors, meta = export_members(mems, list(np.linspace(0.3, 1.0, members)))
    if scramble:  # thresholds anywhere in 0..K+1, both polarities: every compare path
        rng = np.random.default_rng(seed)
        for name, t in tensors.items():
            if name.endswith(".thr"):
                k = ffn if ".ffn_out." in name else hidden
                tensors[name] = rng.integers(0, k + 2, t.shape).astype(t.dtype)
            elif name.endswith(".pol"):
                tensors[name] = rng.integers(0, 2, t.shape).astype(t.dtype)
    return IntModel(meta, tensors), cfg


@pytest.mark.parametrize("shape", SHAPES, ids=[f"H{s[0]}-A{s[1]}-F{s[2]}" for s in SHAPES])
def test_random_models_are_bit_exact(shape):
    for seed in (0, 1, 2):
        model, cfg = _random_model(shape, seed + 10 * shape[0], scramble=seed == 1)
        golden, bp = GoldenModel(model), BitPackedModel(model)
        rng = np.random.default_rng(seed)
        b, n = 4, cfg.max_len
        ids = rng.integers(0, cfg.vocab_size, (b, n))
        mask = np.ones((b, n), dtype=np.int64)
        for i in range(1, b):
            mask[i, rng.integers(1, n + 1):] = 0
        types = rng.integers(0, cfg.type_vocab_size, (b, n))
        ref = golden.forward(ids, mask, types, taps=True)
        for kernel in KERNELS:
            bp.kernel = kernel
            for threads in (1, 2, 3):
                out = bp.forward(ids, mask, types, threads=threads, hidden=True)
                _same(out, ref)
                for m in range(model.members):
                    assert np.array_equal(out.taps[f"m{m}.hidden"], ref.taps[f"m{m}.l{cfg.num_layers - 1}.ffn_ln"])


def test_gemm_kernels_equal_the_golden_popcount():
    rng = np.random.default_rng(0)
    bp = BitPackedModel(_random_model(SHAPES[0], 0, False)[0])
    for t, p, k in ((1, 1, 1), (5, 9, 63), (7, 17, 64), (13, 40, 65), (4, 8, 2048), (33, 100, 1990)):
        bits_a, bits_w = rng.integers(0, 2, (t, k)), rng.integers(0, 2, (p, k))
        a, w = pack_rows(bits_a), pack_rows(bits_w)
        ref = xnor_popcount(a, np.ascontiguousarray(w.T), k)
        assert np.array_equal(ref, (bits_a[:, None, :] == bits_w[None, :, :]).sum(-1))
        for kernel in KERNELS:
            bp.kernel = kernel
            for threads in (1, 2):
                assert np.array_equal(bp.xnor_gemm(a, w, k, threads=threads), ref)


# ------------------------------------------------------------------------------------- errors
def test_bad_inputs_give_the_golden_errors(shipped):
    model, golden, bp = shipped
    bad = [
        (np.array([[5, model.dims["vocab_size"]]]), None, "outside"),
        (np.zeros((1, 0), dtype=np.int64), None, "empty input"),
        (np.array([[1, 2, 3]]), np.array([[0, 1, 1]]), "starts with padding"),
        (np.array([[1.5, 2.0]]), None, "must be integers"),
        (np.ones((1, model.dims["max_len"] + 1), dtype=np.int64), None, "exceeds"),
    ]
    for ids, mask, msg in bad:
        with pytest.raises(GoldenInputError, match=msg) as got:
            bp.forward(ids, mask)
        with pytest.raises(GoldenInputError) as want:
            golden.forward(ids, mask)
        assert str(got.value) == str(want.value)
    for threads in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            bp.forward(np.array([[1, 2]]), threads=threads)
    with pytest.raises(ValueError, match="kernel must be one of"):
        BitPackedModel(model, kernel="avx512")
    with pytest.raises(FileNotFoundError):
        BitPackedModel(ROOT / "no-such-model.safetensors")
    with pytest.raises(ValueError, match="same words"):
        bp.xnor_gemm(np.zeros((2, 3), np.uint64), np.zeros((2, 4), np.uint64), 100)


def test_w1a4_models_are_refused():
    fake = object.__new__(IntModel)  # the backbone is checked before anything else is read
    fake.config = {"backbone": "w1a4"}
    with pytest.raises(ValueError, match="implements the W1A1 backbone"):
        BitPackedModel(fake)


def test_library_is_cached_and_reports_features():
    ffi, lib = load_library()
    assert load_library()[1] is lib
    assert lib.bb_has_avx2() in (0, 1) and lib.bb_max_threads() >= 1
