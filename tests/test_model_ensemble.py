"""SAMME boosting on hand-made examples, alignment of per-sample results under shuffling, bagging."""

import math

import pytest
import torch

from bebert.model.config import ModelConfig
from bebert.model.data import EncodedDataset, collate
from bebert.model.ensemble import (
    bootstrap_indices,
    combine_logits,
    combine_votes,
    derive_seed,
    epoch_order,
    samme_update,
)
from bebert.model.student import BinaryBertForSequenceClassification, Ensemble
from bebert.model.train import predict_logits

torch.set_num_threads(1)


def test_samme_two_classes_hand_made():
    w = torch.full((4,), 0.25)
    miss = torch.tensor([True, False, False, False])
    new, alpha, err = samme_update(w, miss, num_classes=2)
    assert err == pytest.approx(0.25)
    assert alpha == pytest.approx(math.log(3.0))  # log((1-e)/e) + log(K-1), K=2
    # the missed sample's weight triples, then everything is renormalized
    assert new.tolist() == pytest.approx([0.5, 1 / 6, 1 / 6, 1 / 6])
    assert new.sum().item() == pytest.approx(1.0)


def test_samme_three_classes_hand_made():
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    miss = torch.tensor([False, True, False, True])
    new, alpha, err = samme_update(w, miss, num_classes=3)
    assert err == pytest.approx(0.6)  # still better than chance (1 - 1/3)
    assert alpha == pytest.approx(math.log(0.4 / 0.6) + math.log(2))
    f = math.exp(alpha)
    z = 0.1 + 0.3 + (0.2 + 0.4) * f
    assert new.tolist() == pytest.approx([0.1 / z, 0.2 * f / z, 0.3 / z, 0.4 * f / z])


def test_samme_edge_cases():
    w = torch.full((4,), 0.25)
    new, alpha, err = samme_update(w, torch.zeros(4, dtype=torch.bool), 2)
    assert err == 0 and math.isfinite(alpha) and alpha > 20  # perfect member: large, finite
    with pytest.warns(RuntimeWarning, match="no better than chance"):
        new, alpha, _ = samme_update(w, torch.tensor([True, True, False, False]), 2)
    assert alpha == 0 and torch.allclose(new, w.double())
    with pytest.raises(ValueError, match="sample weights"):
        samme_update(torch.full((3,), 0.3), torch.zeros(4, dtype=torch.bool), 2)


def test_combination_rules():
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    assert torch.equal(combine_logits([a, b], [1.0, 0.5]), torch.tensor([[2.0, 1.5], [0.5, 1.0]]))
    votes = combine_votes([a, b], [1.0, 0.5])
    assert votes.argmax(-1).tolist() == [0, 1]


def _tiny_dataset(n=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (n,), generator=g).tolist()
    ids = [[101] + torch.randint(1000, 1100, (L - 2,), generator=g).tolist() + [102] for L in lengths]
    labels = torch.randint(0, 2, (n,), generator=g).tolist()
    return EncodedDataset(ids, [[0] * len(x) for x in ids], labels)


def test_shuffling_cannot_misalign_predictions_and_weights():
    ds = _tiny_dataset()
    cfg = ModelConfig(vocab_size=1200, hidden_size=16, num_layers=1, num_heads=2, ffn_size=32, max_len=16)
    torch.manual_seed(0)
    model = BinaryBertForSequenceClassification(cfg).eval()
    sequential = predict_logits(model, ds, batch_size=4, order=torch.arange(len(ds)))
    shuffled = predict_logits(model, ds, batch_size=4, order=torch.randperm(len(ds), generator=torch.Generator().manual_seed(5)))
    by_length = predict_logits(model, ds, batch_size=4)
    # Row i is sample i whatever order the batches ran in (padding differs: outputs must not).
    assert torch.equal(sequential.argmax(-1), shuffled.argmax(-1))
    assert torch.allclose(sequential, shuffled, atol=1e-6) and torch.allclose(sequential, by_length, atol=1e-6)
    w = torch.rand(len(ds), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    miss_seq = sequential.argmax(-1) != ds.labels
    miss_shuf = shuffled.argmax(-1) != ds.labels
    new_a, alpha_a, _ = samme_update(w, miss_seq, 2)
    new_b, alpha_b, _ = samme_update(w, miss_shuf, 2)
    assert torch.equal(new_a, new_b) and alpha_a == alpha_b



class _ParityModel(torch.nn.Module):
    """A stand-in classifier whose prediction varies from sample to sample."""

    def forward(self, input_ids, attention_mask, token_type_ids):
        score = (input_ids[:, 1] % 2).float()
        return type("Out", (), {"logits": torch.stack([1 - score, score], -1)})()


def test_bebert_style_pairing_misaligns_but_scatter_does_not():
    ds = _tiny_dataset()
    # labels follow the parity rule except for a few samples: a member better than chance
    ds.labels = torch.tensor([ids[1] % 2 for ids in ds.input_ids]) ^ (torch.arange(len(ds)) % 6 == 0).long()
    model = _ParityModel()
    w = torch.rand(len(ds), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    truth = predict_logits(model, ds, batch_size=4, order=torch.arange(len(ds))).argmax(-1) != ds.labels
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(5))
    shuffled = predict_logits(model, ds, batch_size=4, order=order).argmax(-1) != ds.labels
    assert torch.equal(shuffled, truth)
    # BEBERT's published code: fill the prediction vector batch by batch from a shuffled loader
    # and pair it with labels and weights in dataset order.
    loader_preds = torch.cat([
        model(**{k: v for k, v in collate(ds, order[i : i + 4]).items()
                 if k in ("input_ids", "attention_mask", "token_type_ids")}).logits.argmax(-1)
        for i in range(0, len(ds), 4)
    ])
    misaligned = loader_preds != ds.labels
    assert not torch.equal(misaligned, truth), "the shuffled pairing mis-scores some samples"
    weighted_error = lambda miss: float((w * miss).sum() / w.sum())  # noqa: E731
    assert weighted_error(misaligned) != weighted_error(truth)
    # The same loader-order predictions scattered back by index give the right answer.
    scattered = torch.empty_like(loader_preds)
    scattered[order] = loader_preds
    assert torch.equal(scattered != ds.labels, truth)


def test_index_travels_with_the_sample():
    ds = _tiny_dataset(9)
    b = collate(ds, [7, 2, 5])
    assert b["index"].tolist() == [7, 2, 5]
    assert b["labels"].tolist() == [int(ds.labels[i]) for i in (7, 2, 5)]
    for r, i in enumerate((7, 2, 5)):
        L = len(ds.input_ids[i])
        assert b["input_ids"][r, :L].tolist() == ds.input_ids[i]


def test_epoch_orders_are_deterministic():
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2) != derive_seed(1, "a", 3)
    a = epoch_order(50, 7, 1, 2)
    assert torch.equal(a, epoch_order(50, 7, 1, 2)) and not torch.equal(a, epoch_order(50, 7, 1, 3))
    assert sorted(a.tolist()) == list(range(50))
    w = torch.zeros(50, dtype=torch.float64)
    w[[3, 9]] = 0.5
    drawn = epoch_order(50, 7, 1, 0, "weighted", weights=w)
    assert len(drawn) == 50 and set(drawn.tolist()) <= {3, 9}
    bag = bootstrap_indices(50, 7, 0)
    assert torch.equal(bag, bootstrap_indices(50, 7, 0)) and len(set(bag.tolist())) < 50
    assert sorted(epoch_order(50, 7, 0, 0, subset=bag).tolist()) == sorted(bag.tolist())


def test_ensemble_module_combines_weighted_logits():
    cfg = ModelConfig(vocab_size=1200, hidden_size=16, num_layers=1, num_heads=2, ffn_size=32, max_len=16)
    torch.manual_seed(1)
    a, b = BinaryBertForSequenceClassification(cfg).eval(), BinaryBertForSequenceClassification(cfg).eval()
    ids = torch.randint(1000, 1100, (3, 5))
    with torch.no_grad():
        ens = Ensemble([a, b], [0.75, 0.25])(ids).logits
        ref = 0.75 * a(ids).logits + 0.25 * b(ids).logits
        assert torch.allclose(ens, ref)
        # all-zero boosting weights fall back to equal weights
        eq = Ensemble([a, b], [0.0, 0.0])(ids).logits
        assert torch.allclose(eq, 0.5 * (a(ids).logits + b(ids).logits))
        # weights are normalized: scaling them changes nothing
        assert torch.allclose(Ensemble([a, b], [30.0, 10.0])(ids).logits, ens)


def test_diversity_of_members():
    from bebert.model.ensemble import diversity

    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    a = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])  # wrong on 4, 5
    same = diversity([a, a.clone()], labels)
    assert same["disagreement"] == 0.0 and same["error_corr"] == pytest.approx(1.0)
    b = torch.tensor([1, 0, 0, 1, 0, 1, 0, 1])  # wrong on 0, 1: disjoint errors
    d = diversity([a, b], labels)
    assert d["disagreement"] == pytest.approx(0.5)
    assert d["error_corr"] == pytest.approx(-1 / 3)  # two 2-of-8 error sets, disjoint
    perfect = labels.clone()  # never wrong: its error indicator is constant, the pair has no correlation
    assert diversity([a, perfect], labels)["error_corr"] is None
    assert diversity([a], labels) == {"disagreement": None, "error_corr": None}


def test_holdout_split_is_fixed_and_disjoint():
    from bebert.model.ensemble import holdout_split

    keep, held = holdout_split(100, 10)
    assert len(held) == 10 and len(keep) == 90 and not set(keep) & set(held)
    assert sorted(keep + held) == list(range(100)) and held == sorted(held)
    assert holdout_split(100, 10) == (keep, held)
    assert holdout_split(100, 0) == (list(range(100)), [])
    with pytest.raises(ValueError, match="nothing to train on"):
        holdout_split(10, 10)
    with pytest.raises(ValueError, match="non-negative"):
        holdout_split(10, -1)
