"""Plots of training runs (matplotlib, non-interactive backend)."""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

from .checkpoint import atomic_write_bytes

__all__ = ["plot_dev_metric", "plot_runs"]


def plot_dev_metric(rows: Sequence[dict[str, Any]], metric: str, path: str | os.PathLike, title: str = "") -> None:
    """Plot a dev metric per epoch for every member, and the ensemble after each member.

    Parameters
    ----------
    rows : sequence of dict
        Metric rows as written to ``metrics.json`` (``type`` ``"member"`` or ``"ensemble"``).
    metric : str
        Column to plot (e.g. ``"dev_acc"``).
    path : path-like
        PNG file to write (atomically).
    title : str
        Figure title.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or window state

    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    member_rows = [r for r in rows if r.get("type") == "member" and metric in r]
    epochs_per_member: dict[int, int] = {}
    for r in member_rows:
        epochs_per_member[r["member"]] = max(epochs_per_member.get(r["member"], 0), r["epoch"])
    offsets, acc = {}, 0
    for m in sorted(epochs_per_member):
        offsets[m] = acc
        acc += epochs_per_member[m]
    for m in sorted(epochs_per_member):
        pts = [(offsets[m] + r["epoch"], r[metric]) for r in member_rows if r["member"] == m]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"member {m}")
    ens = [r for r in rows if r.get("type") == "ensemble" and metric in r]
    if ens:
        xs = [offsets.get(r["member"], 0) + epochs_per_member.get(r["member"], 0) for r in ens]
        ax.plot(xs, [r[metric] for r in ens], marker="*", markersize=12, linestyle="--", color="black", label="ensemble")
    ax.set_xlabel("epoch (cumulative over members)")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if member_rows or ens:
        ax.legend(loc="best", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_runs(runs: dict[str, Sequence[dict[str, Any]]], metric: str, path: str | os.PathLike) -> None:
    """Training curves of several runs side by side: per run, each member's ``dev_<metric>`` (solid) and
    ``holdout_<metric>`` (dashed) per epoch, and the ensemble after each member (stars).

    Parameters
    ----------
    runs : dict
        Run label -> its ``metrics.json`` rows.
    metric : str
        Metric name without the split prefix (``"acc"``, ``"f1"``, ``"mcc"``).
    path : path-like
        PNG file to write (atomically).
    """
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("no runs to plot")
    cols = min(3, len(runs))
    rows_n = (len(runs) + cols - 1) // cols
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows_n), dpi=100)
    for k, (label, rows) in enumerate(runs.items()):
        ax = fig.add_subplot(rows_n, cols, k + 1)
        epochs: dict[int, int] = {}
        for r in rows:
            if r.get("type") == "member":
                epochs[r["member"]] = max(epochs.get(r["member"], 0), r["epoch"])
        offsets, acc = {}, 0
        for m in sorted(epochs):
            offsets[m], acc = acc, acc + epochs[m]
        for split, style in (("dev", "-"), ("holdout", "--")):
            key = f"{split}_{metric}"
            for m in sorted(epochs):
                pts = [(offsets[m] + r["epoch"], r[key]) for r in rows
                       if r.get("type") == "member" and r["member"] == m and r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", markersize=3, color=f"C{m}",
                            label=f"member {m} {split}" if k == 0 else None)
            ens = [(offsets[r["member"]] + epochs[r["member"]], r[key]) for r in rows
                   if r.get("type") == "ensemble" and r.get(key) is not None and r["member"] in epochs]
            if ens:
                ax.plot(*zip(*ens), style, marker="*", markersize=10, color="black",
                        label=f"ensemble {split}" if k == 0 else None)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch (cumulative over members)", fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.legend(loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
