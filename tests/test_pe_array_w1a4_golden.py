"""The PE array's bit-serial W1A4 mode against the golden W1A4 model's own layer taps.

A tiny BinaryBERT (W1A4, TWS) member is exported to the integer deployment format and run by the
golden model with taps; the 4-bit activation codes going into a linear layer (``.in``) and that
layer's packed weight rows go through the PE array in the Amaranth simulator as 4 bit-planes
(``shift`` = plane, random stalls), and every channel's result must equal the golden model's
bit-serial accumulator tap (``.acc``, ``.acc_2`` for the second TWS half) exactly: the signed
query input and the unsigned (post-GELU) FFN2 input.
"""

import numpy as np
import pytest
import torch

from bebert.golden.export import export_members
from bebert.golden.format import IntModel
from bebert.golden.infer import GoldenModel
from bebert.golden.pe_array import Mode, unpack_bits
from bebert.golden.w1a4 import offset_codes
from bebert.hw.pe_array import PEArray
from bebert.model.config import ModelConfig
from bebert.model.student import BinaryBertForSequenceClassification
from bebert.sim.pe_jobs import Job, decode_result, encode_beats
from bebert.sim.streams import run_streams

P, S = 8, 24  # S does not divide K: the last fold of each plane is padded


@pytest.fixture(scope="module")
def golden_run():
    cfg = ModelConfig(vocab_size=300, hidden_size=64, num_layers=1, num_heads=2, ffn_size=96, max_len=16,
                      hidden_dropout=0.0, backbone="w1a4", tws=True, center_weights=False)
    torch.manual_seed(3)
    member = BinaryBertForSequenceClassification(cfg)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, cfg.vocab_size, (2, 6))
    with torch.no_grad():  # LSQ steps initialised on data, as in training
        member.train()(torch.as_tensor(ids), torch.ones(2, 6, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long))
    tensors, meta = export_members([member.eval()], [1.0])
    out = GoldenModel(IntModel(meta, tensors)).forward(ids, np.ones((2, 6), np.int64), taps=True)
    return tensors, out.taps


@pytest.mark.parametrize("layer,signed", [("query", True), ("ffn_out", False)])
def test_pe_array_bitserial_equals_golden_w1a4_taps(golden_run, layer, signed):
    tensors, taps = golden_run
    tap_in = taps[f"m0.l0.{layer}.in"]  # (batch, tokens, K)
    codes = tap_in.reshape(-1, tap_in.shape[-1])[:3]  # three tokens
    assert codes.min() < 0 if signed else codes.min() >= 0
    assert len(np.unique(codes)) > 4, "the codes must exercise several bit-planes"
    u = offset_codes(codes, 4, signed)
    k = codes.shape[1]
    for half in ("", "_2"):
        w = unpack_bits(tensors[f"member.0.layer.0.{layer}.bits{half}"], k)
        tap_acc = taps[f"m0.l0.{layer}.acc{half}"]
        want_acc = tap_acc.reshape(-1, tap_acc.shape[-1])[:3]
        n = w.shape[0]
        jobs, where = [], []
        for g in range(0, n, P):
            rows = np.zeros((P, k), np.uint8)
            rows[: min(P, n - g)] = w[g : g + P]
            for t in range(u.shape[0]):
                jobs.append(Job(u[t].astype(np.int64), rows, Mode.XNOR, bits=4))
                where.append((t, g))
        dut = PEArray(p=P, s=S, max_k=k, max_shift=3)
        beats = [b for j in jobs for b in encode_beats(j, S, 3)]
        words, _ = run_streams(dut, [(dut.i_stream, beats)], len(jobs), idle=0.2, stall=0.3, seed=len(half),
                               max_cycles=len(beats) * 8 + 500)
        got = np.zeros_like(want_acc)
        for word, (t, g) in zip(words, where):
            res = decode_result(word, P, dut.acc_width)
            got[t, g : g + P] = res[: min(P, n - g)]
        assert np.array_equal(got, want_acc), f"{layer}{half}: PE array differs from the golden W1A4 tap"
