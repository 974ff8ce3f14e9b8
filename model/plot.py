"""Plots of training runs (matplotlib, non-interactive backend)."""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

from .checkpoint import atomic_write_bytes

__all__ = ["plot_dev_metric"]


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
