"""Multi-process training: ``bebert train`` under ``torchrun`` (PyTorch DDP; gloo on CPU, NCCL on GPUs).

``torchrun --standalone --nproc_per_node 2 $(which bebert) train ...`` runs the same command in two
processes; more nodes are the same command with torchrun's ``--nnodes``/``--rdzv-endpoint`` (torchrun's own
documentation). Each optimizer step's batch (the same batches, in the same order, as one process draws) is
split across the ranks, rank ``r`` taking samples ``r, r + W, ...``; each rank's loss is weighted by its
share of the batch, and DDP averages the gradients, so a step's gradient is the one-process gradient of the
whole batch (up to floating-point summation order). All ranks hold the same model, evaluate the same dev
set and compute the same boosting weights (deterministic CPU kernels on the same weights); only rank 0
writes files and logs.

What is and is not deterministic: a run with a given seed and process count is reproducible; a W-process
run is not bit-identical to a one-process run (summation order, and dropout draws its masks per rank from
seeds offset by the rank), so results are equal in expectation, and with dropout off they agree to
floating-point rounding (``tests/test_model_distributed.py``). A resumed multi-process run restores rank 0's
random state; the other ranks reseed from the seed, member and step, so a resume is reproducible but not
bit-identical to the uninterrupted multi-process run (a one-process resume is).
"""

from __future__ import annotations

import os

import torch

__all__ = ["setup", "teardown", "world", "shard", "all_mean"]


def world() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment (``(0, 1)`` outside torchrun)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str) -> tuple[int, int, str]:
    """Join the process group when started by torchrun; returns ``(rank, world size, device)``
    (``cuda:LOCAL_RANK`` on GPUs when several processes run)."""
    rank, size = world()
    if size == 1:
        return rank, size, device
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run one process")
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if use_cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, size, device


def teardown() -> None:
    """Leave the process group (no-op outside torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(indices, rank: int, size: int):
    """This rank's part of a batch and its loss weight (its share of the batch times ``size``, so that
    DDP's gradient average is the whole batch's gradient). A rank left without a sample (a last batch
    smaller than the world) takes the first one with weight 0: every rank must join each gradient all-reduce."""
    part = indices[rank::size]
    if len(part) == 0:
        return indices[:1], 0.0
    return part, len(part) * size / len(indices)


def all_mean(x: float, size: int) -> float:
    """The mean over the ranks of a float (the logged training loss)."""
    if size == 1:
        return x
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / size
