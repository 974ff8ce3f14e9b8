"""bebert train under torchrun: two processes (DDP, gloo) equal one process up to float rounding."""

import json
import os
import subprocess
import sys

import pytest
import torch

from bebert.model.checkpoint import load_tensors
from bebert.model.distributed import shard
from bebert.model.train import Trainer
from test_model_train import TINY, _student, base_model, teacher  # noqa: F401  (fixtures)


def test_shard_weights_sum_to_the_whole_batch():
    idx = list(range(15))
    parts = [shard(idx, r, 2) for r in range(2)]
    assert parts[0][0] == idx[0::2] and parts[1][0] == idx[1::2]
    assert sum(w for _, w in parts) == pytest.approx(2.0)  # DDP divides by the world size
    assert shard([7], 1, 2) == ([7], 0.0)  # a rank without a sample joins the all-reduce with weight 0


def _state(run_dir):
    import json

    info = json.loads((run_dir / "state" / "state.json").read_text())
    return info, load_tensors(run_dir / "state" / info["tensors"])


def test_two_processes_equal_one(tmp_path, teacher):
    # Batches of 15 (shards of 8 and 7), no dropout. After one optimizer step, Adam's first moment is
    # (1 - beta1) times the clipped gradient: the two-process gradient must be the one-process gradient of the
    # whole batch up to summation order. (Later steps are not compared: Adam's first update is about
    # lr * sign(g), so a rounding difference in a near-zero gradient changes it by 2 lr.)
    kw = dict(members=2, kd="pred", epochs=1, hidden_dropout=0.0, max_train_examples=47, batch_size=15, lr=3e-3)
    cfg = _student(tmp_path / "one", teacher, **kw)
    assert not Trainer(cfg, log=lambda s: None).run(stop_after_steps=1)["done"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "bebert.cli",
           "train", "ensemble", "--task", TINY["task"], "--data-dir", TINY["data_dir"], "--max-len", str(TINY["max_len"]),
           "--max-train-examples", "47", "--max-eval-examples", str(TINY["max_eval_examples"]), "--batch-size", "15",
           "--eval-batch-size", "32", "--members", "2", "--kd", "pred", "--epochs", "1", "--dropout", "0", "--lr", "3e-3",
           "--model", str(teacher), "--output-dir", str(tmp_path / "two"), "--threads", "1", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd + ["--stop-after-steps", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode != 0 and "state saved" in r.stdout + r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    (i1, a), (i2, b) = _state(tmp_path / "one"), _state(tmp_path / "two")
    assert (i1["global_step"], i2["global_step"]) == (1, 1)
    assert i2["loss_sum"] == pytest.approx(i1["loss_sum"], rel=1e-5), "the logged loss is the whole batch's"
    moments = [k for k in a if k.endswith(".exp_avg")]
    assert moments and sorted(moments) == sorted(k for k in b if k.endswith(".exp_avg"))
    for k in moments:
        scale = float(a[k].abs().max())
        assert float((a[k] - b[k]).abs().max()) <= 1e-5 * scale + 1e-9, k
    assert any(float(a[k].abs().max()) > 0 for k in moments), "the gradient is not all zero"
    # the same command again resumes the two-process run and finishes it; rank 0 alone wrote the files
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Resuming" in r.stdout and r.stdout.count("checkpoint written to") == 2  # both ranks end
    timing = json.loads((tmp_path / "two" / "timing.json").read_text())
    assert timing["processes"] == 2
    rows = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert [x["type"] for x in rows] == ["member", "ensemble"] * 2
    assert not list((tmp_path / "two").rglob("*.tmp"))
