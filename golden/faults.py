"""Fault injection in the golden model: accuracy of a W1A1 ensemble and of each member under random bit flips.

``bebert faults MODEL`` (handler :func:`run_faults`). Each *trial* draws independent flips at one rate
from one seed and scores the faulty model on a GLUE split with the integer golden model (the scoring of
``bebert eval``); the clean model is scored once. Every bit of a target is flipped with probability
``rate``, independently: the number of flips is binomial, their places uniform without repetition.

Targets (``--targets``; the bits a flip can hit):

``weights``
    Every binary weight bit of the deployment file, member by member: the Q, K, V, attention-output,
    FFN and pooler sign bits (``*.bits``, ``K`` bits per row) and the word-embedding sign table
    (``emb.word.bits``) -- the bits ``weight_bits_per_member`` of ``bebert inspect`` counts. A flip
    turns a +1 weight into -1 or back: what a bit error in the weight memory or its stream does.
``thresholds``
    The integer threshold and polarity of every sign-only channel (Q, K, V, FFN1): each threshold code in
    the width of the accelerator's threshold field, ``acc_width = bits_for(H) + 1`` bits of two's
    complement, plus its polarity bit. A flipped threshold may leave ``0..K+1`` (the channel then outputs
    a constant).
``activations``
    Every binary activation buffer of an inference: layer inputs, Q/K/V bits, attention bits, context
    bits, FFN bits, the pooler's input (through :attr:`GoldenModel._pack_activations`). Fresh flips for
    every sentence; sentences are batched by exact length, so no flip lands on padding and each sentence
    sees what it would see alone on the accelerator.

Randomness: trial ``(rate, seed)`` uses ``numpy.random.default_rng([seed, round(rate * 1e12)])``, so a
trial's flips do not depend on the other rates or seeds asked for, and a run is reproducible.

The faulty tensors never pass :class:`~bebert.golden.format.IntModel`'s range checks again (a
flipped threshold may leave its range on purpose): :func:`inject` copies the validated model and
replaces the tensors it flips.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .infer import GoldenModel
from .intops import pack_rows

__all__ = ["RATES", "TARGETS", "FaultyGolden", "weight_sites", "threshold_sites", "flip_packed", "inject",
           "fault_curve", "plot_curve", "update_report", "add_faults_parser", "run_faults"]

#: The rates of issue 17 (probability per bit).
RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
TARGETS = ("weights", "thresholds", "activations")


def _rng(rate: float, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(round(rate * 1e12))])


def _positions(rng: np.random.Generator, total: int, rate: float) -> np.ndarray:
    """Independent flips at ``rate`` among ``total`` bits: their indices (distinct)."""
    count = int(rng.binomial(total, rate)) if total and rate > 0 else 0
    if count == 0:
        return np.zeros(0, np.int64)
    return rng.choice(total, size=count, replace=False).astype(np.int64)


def weight_sites(model) -> dict[str, int]:
    """Tensor name -> bits per row (``K``) of every binary weight tensor of a W1A1 model."""
    h, f = model.dims["hidden_size"], model.dims["ffn_size"]
    return {k: (f if ".ffn_out." in k else h) for k in sorted(model.tensors) if k.endswith(".bits")}


def threshold_sites(model) -> list[str]:
    """Names of the threshold tensors (``*.thr``; each has a ``*.pol`` beside it)."""
    return [k for k in sorted(model.tensors) if k.endswith(".thr")]


def threshold_width(model) -> int:
    """Bits of a threshold field in the accelerator's records (``AccelSpec.acc_width``)."""
    return int(model.dims["hidden_size"]).bit_length() + 1


def flip_packed(packed: np.ndarray, k: int, positions: np.ndarray) -> np.ndarray:
    """A copy of packed rows (``uint64``, ``ceil(k/64)`` words per row) with bits ``positions`` flipped.

    Position ``p`` is bit ``p % k`` of row ``p // k``; padding bits beyond ``k`` are never touched.
    """
    out = np.array(packed, dtype=np.uint64, copy=True)
    if positions.size:
        row, col = positions // k, positions % k
        masks = np.left_shift(np.uint64(1), (col % 64).astype(np.uint64))
        np.bitwise_xor.at(out, (row, col // 64), masks)
    return out


def _flip_thresholds(thr: np.ndarray, pol: np.ndarray, width: int, positions: np.ndarray):
    """Thresholds (``width``-bit two's complement) and polarities with flat bit ``positions`` flipped;
    channel ``c`` owns bits ``c * (width + 1) ..``, the last of them its polarity."""
    per = width + 1
    ch, bit = positions // per, positions % per
    tmask = np.zeros(thr.shape[0], np.int64)
    pmask = np.zeros(thr.shape[0], np.uint8)
    t = bit < width
    np.bitwise_xor.at(tmask, ch[t], np.left_shift(np.int64(1), bit[t]))
    np.bitwise_xor.at(pmask, ch[~t], np.uint8(1))
    u = (thr.astype(np.int64) & ((1 << width) - 1)) ^ tmask
    signed = np.where(u >= 1 << (width - 1), u - (1 << width), u)
    return signed.astype(np.int32), (pol ^ pmask).astype(np.uint8)


def inject(model, rate: float, seed: int, targets: Sequence[str] = ("weights",)):
    """``(faulty model, flips)``: a copy of ``model`` (an IntModel) with the stored targets' bits flipped.

    ``flips`` counts the flipped bits per target (``weights``, ``thresholds``). Activations are flipped
    during inference (:class:`FaultyGolden`). The model itself is not changed.
    """
    rng = _rng(rate, seed)
    out = copy.copy(model)
    out.tensors = dict(model.tensors)
    flips: dict[str, int] = {}
    if "weights" in targets:
        n = 0
        for name, k in weight_sites(model).items():
            t = model.tensors[name]
            pos = _positions(rng, t.shape[0] * k, rate)
            out.tensors[name] = flip_packed(t, k, pos)
            n += pos.size
        flips["weights"] = n
    if "thresholds" in targets:
        n, w = 0, threshold_width(model)
        for name in threshold_sites(model):
            thr, pol_name = model.tensors[name], name[: -len(".thr")] + ".pol"
            pos = _positions(rng, thr.shape[0] * (w + 1), rate)
            out.tensors[name], out.tensors[pol_name] = _flip_thresholds(thr, model.tensors[pol_name], w, pos)
            n += pos.size
        flips["thresholds"] = n
    return out, flips


class FaultyGolden(GoldenModel):
    """The golden model with bit flips in its activation buffers at ``rate`` (a W1A1 model).

    ``flips`` counts the activation bits flipped so far. Run it with ``threads=1`` (one generator).
    """

    def __init__(self, model, rate: float = 0.0, rng: np.random.Generator | None = None) -> None:
        super().__init__(model)
        if self.backbone != "w1a1":
            raise ValueError(f"activation faults are modelled for the w1a1 backbone, not {self.backbone!r}")
        self.rate = float(rate)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.flips = 0

    def _pack_activations(self, bits):
        bits = np.asarray(bits)
        pos = _positions(self.rng, bits.size, self.rate)
        if pos.size:
            bits = bits.astype(np.bool_, copy=True)
            bits.reshape(-1)[pos] ^= True
            self.flips += int(pos.size)
        return pack_rows(bits)


def _scores(spec, logits, member_logits, labels) -> tuple[float, list[float]]:
    from bebert.model.metrics import compute_metrics

    metric = spec.primary_metric
    ens = compute_metrics(spec.metrics, logits.argmax(-1), labels)[metric]
    mem = [compute_metrics(spec.metrics, member_logits[m].argmax(-1), labels)[metric]
           for m in range(member_logits.shape[0])]
    return float(ens), [float(x) for x in mem]


def check_w1a1(model, path) -> None:
    """``ValueError`` unless ``model`` is a W1A1 (``bebert-int`` version 1) model."""
    backbone = model.config.get("backbone", "w1a1")
    if backbone != "w1a1":
        raise ValueError(f"{path} is a {backbone.upper()} model (bebert-int version {model.version}); fault "
                         "injection runs W1A1 deployment files (version 1) only")


def fault_curve(path, task: str | None = None, data_dir: str | None = None, split: str = "dev",
                rates: Sequence[float] = RATES, seeds: Sequence[int] = range(5),
                targets: Sequence[str] = ("weights",), limit: int | None = None, batch_size: int = 64,
                vocab=None, threads: int = 1, progress: bool = False, command: str | None = None) -> dict[str, Any]:
    """Accuracy (the task's primary metric) of the ensemble and each member against the flip rate.

    Returns
    -------
    dict
        ``model``, ``task``, ``split``, ``examples``, ``metric``, ``targets``, ``rates``, ``seeds``,
        ``bits`` (bits a flip can hit per target, stored targets), ``clean`` (``ensemble``, ``members``),
        ``ensemble`` (mean over seeds per rate), ``members`` (per member, mean per rate), ``ensemble_range``
        / ``members_range`` (``[min, max]`` over seeds per rate), ``trials`` (per rate and seed: flips,
        ensemble and members), ``seconds``, ``command``.

    Raises
    ------
    ValueError
        On a model that is not W1A1, a rate outside ``(0, 1]``, no seeds, an unknown target, or the
        errors of :func:`bebert.golden.evaluate.load_eval_data`.
    """
    from .evaluate import golden_logits, load_eval_data
    from .format import load_int_model

    rates = [float(r) for r in rates]
    seeds = [int(s) for s in seeds]
    targets = list(dict.fromkeys(targets))
    bad = [r for r in rates if not 0 < r <= 1]
    if not rates or bad:
        raise ValueError(f"flip rates must lie in (0, 1], not {bad[0] if bad else 'none'}")
    if not seeds:
        raise ValueError("give at least one seed")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"fault targets are {', '.join(TARGETS)}, not {unknown[0] if unknown else 'none'}")
    if "activations" in targets and threads != 1:
        raise ValueError("activation faults run with --threads 1 (one random generator)")
    model = load_int_model(path)
    check_w1a1(model, path)
    spec, ds = load_eval_data(model, path, task, data_dir or default_data_dir(task or model.meta.get("task")),
                              split, None, limit, vocab)
    labels = ds.labels.numpy()
    t0 = time.perf_counter()
    clean = _scores(spec, *golden_logits(GoldenModel(model), ds, batch_size, exact_length=True, threads=threads),
                    labels)
    trials = []
    todo = [(r, s) for r in rates for s in seeds]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="faults", unit="trial", file=sys.stderr)
    for rate, seed in todo:
        faulty, flips = inject(model, rate, seed, targets)
        if "activations" in targets:
            golden = FaultyGolden(faulty, rate, np.random.default_rng([int(seed), int(round(rate * 1e12)), 1]))
        else:
            golden = GoldenModel(faulty)
        ens, mem = _scores(spec, *golden_logits(golden, ds, batch_size, exact_length=True, threads=threads), labels)
        if "activations" in targets:
            flips["activations"] = golden.flips
        trials.append({"rate": rate, "seed": seed, "flips": flips, "ensemble": ens, "members": mem})
        if bar is not None:
            bar.set_postfix(rate=f"{rate:g}", seed=seed, acc=f"{ens:.3f}")
            bar.update()
    if bar is not None:
        bar.close()
    m = int(model.members)

    def per_rate(fn):
        return [fn([t for t in trials if t["rate"] == r]) for r in rates]

    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    span = lambda xs: [float(min(xs)), float(max(xs))]  # noqa: E731
    bits = {}
    if "weights" in targets:
        bits["weights"] = int(sum(model.tensors[k].shape[0] * kk for k, kk in weight_sites(model).items()))
    if "thresholds" in targets:
        bits["thresholds"] = int(sum(model.tensors[k].shape[0] for k in threshold_sites(model))
                                 * (threshold_width(model) + 1))
    return {
        "model": str(path), "task": spec.name, "split": split, "examples": len(ds), "metric": spec.primary_metric,
        "targets": targets, "rates": rates, "seeds": seeds, "bits": bits,
        "clean": {"ensemble": clean[0], "members": clean[1]},
        "ensemble": per_rate(lambda ts: mean([t["ensemble"] for t in ts])),
        "members": [per_rate(lambda ts, i=i: mean([t["members"][i] for t in ts])) for i in range(m)],
        "ensemble_range": per_rate(lambda ts: span([t["ensemble"] for t in ts])),
        "members_range": [per_rate(lambda ts, i=i: span([t["members"][i] for t in ts])) for i in range(m)],
        "trials": trials, "seconds": round(time.perf_counter() - t0, 1), "command": command,
    }


def default_data_dir(task: str | None) -> str:
    """``../shared/data/sst2-sentences`` for the sentence-level SST-2 task, ``../shared/data/glue`` otherwise."""
    key = (task or "").lower().replace("-", "").replace("_", "")
    return "../shared/data/sst2-sentences" if key == "sst2sentences" else "../shared/data/glue"


def plot_curve(result: dict[str, Any], path) -> None:
    """The fault curve as a PNG (written atomically): ensemble and members, mean over seeds with the
    min..max band, against the rate (log axis); the clean accuracies as dotted lines."""
    import io

    from matplotlib.figure import Figure  # no pyplot: no global backend or window state

    from bebert.atomic import atomic_path

    rates = result["rates"]
    fig = Figure(figsize=(7, 4.4), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    series = [("ensemble", result["ensemble"], result["ensemble_range"], result["clean"]["ensemble"], "black", "-")]
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for i, (acc, rng, cl) in enumerate(zip(result["members"], result["members_range"], result["clean"]["members"])):
        series.append((f"member {i}", acc, rng, cl, colors[i % len(colors)], "--"))
    for label, acc, rng, cl, color, style in series:
        ax.plot(rates, acc, marker="o", linestyle=style, color=color, label=f"{label} (clean {cl:.1%})")
        ax.fill_between(rates, [r[0] for r in rng], [r[1] for r in rng], color=color, alpha=0.12, linewidth=0)
        ax.axhline(cl, color=color, linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"bit-flip rate ({', '.join(result['targets'])}; per bit)")
    ax.set_ylabel(f"{result['task']} {result['split']} {result['metric']}")
    ax.set_title(f"{Path(result['model']).name}: {result['examples']} sentences, {len(result['seeds'])} seeds per rate "
                 "(mean, min..max)", fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def table(result: dict[str, Any]) -> str:
    """Plain-text summary: one row per rate (mean over seeds), the clean model first."""
    m = len(result["members"])
    head = f"{'rate':>8}  {'flips':>9}  {'ensemble':>8}  " + "  ".join(f"{'member ' + str(i):>8}" for i in range(m))
    lines = [head, f"{'0':>8}  {0:>9}  {result['clean']['ensemble']:>8.4f}  "
             + "  ".join(f"{a:>8.4f}" for a in result["clean"]["members"])]
    for j, r in enumerate(result["rates"]):
        ts = [t for t in result["trials"] if t["rate"] == r]
        flips = np.mean([sum(t["flips"].values()) for t in ts])
        lines.append(f"{r:>8g}  {flips:>9.0f}  {result['ensemble'][j]:>8.4f}  "
                     + "  ".join(f"{result['members'][i][j]:>8.4f}" for i in range(m)))
    return "\n".join(lines)


def add_faults_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``faults`` subcommand (handler :func:`run_faults`)."""
    p = subparsers.add_parser(
        "faults", help="accuracy of an ensemble and its members under random bit flips (golden model)",
        description=textwrap.fill(
            "Flip random bits of a W1A1 deployment file (binary weights; optionally thresholds and activation "
            "buffers) at each rate, with independent flips per seed, and score the faulty model with the integer "
            "golden model on a GLUE split (as 'bebert eval' does): the accuracy of the ensemble and of every "
            "member against the flip rate, as a table, JSON (--json) and a plot (--plot). The clean model is "
            "scored once. See golden/faults.py for the fault model.", width=88),
        epilog="examples:\n"
               "  bebert faults checkpoints/sst2-bebert-w1a1-m2.safetensors --json faults.json --plot faults.png\n"
               "  bebert faults MODEL --limit 64 --seeds 2 --targets weights thresholds activations",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="W1A1 deployment file (bebert export)")
    p.add_argument("--task", default=None, help="task (default: the one the file records)")
    p.add_argument("--data-dir", default=None,
                   help="GLUE root or sst2-sentences folder (default: ../shared/data/sst2-sentences for the "
                        "sst2-sentences task, else ../shared/data/glue)")
    p.add_argument("--split", choices=("dev", "train"), default="dev", help="split to score (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="score only the first N sentences")
    p.add_argument("--rates", type=float, nargs="+", default=list(RATES),
                   help="flip probabilities per bit (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=5, help="trials per rate, seeds 0..N-1 (default: %(default)s)")
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=["weights"],
                   help="what the flips hit (default: weights)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per golden batch (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="threads of the golden model (default: %(default)s)")
    p.add_argument("--vocab", default=None, help="WordPiece vocab.txt (default: MiniLM's, as training)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write the curve as a PNG")
    p.add_argument("--report", metavar="FILE",
                   help="also merge the curve into a robustness report (docs/results/robustness.json): as "
                        "'faults' for the weights alone, else as 'faults_<targets>'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_faults)
    return p


def command_line(args: argparse.Namespace) -> str:
    """The ``bebert faults`` command that reproduces this run (every option that shapes the result)."""
    parts = ["bebert", "faults", str(args.model), "--rates", *[f"{r:g}" for r in args.rates],
             "--seeds", str(args.seeds), "--targets", *args.targets]
    for name in ("task", "data_dir", "limit", "vocab"):
        if getattr(args, name) is not None:
            parts += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.split != "dev":
        parts += ["--split", args.split]
    for name in ("json", "plot", "report"):
        if getattr(args, name):
            parts += [f"--{name}", str(getattr(args, name))]
    return shlex.join(parts)


def update_report(path, fields: dict[str, Any], command: str) -> dict[str, Any]:
    """Merge ``fields`` (sections such as ``faults`` or ``bad_inputs``) into the robustness report
    (``docs/results/robustness.json``; written atomically), keeping the other sections.

    ``command`` is the report's commands joined by ``" && "`` (as ``docs/results/golden.json`` has them);
    ``commands`` maps each section to the command that made it, so a section measured again replaces its
    own command only. A report without a soak section gets an empty one marked as not run.
    """
    import json

    from bebert.atomic import write_json_atomic

    path = Path(path)
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    data.update(fields)
    data.setdefault("soak", {"sequences": 0, "mismatches": 0,
                             "note": "not run yet (the soak run of issue 17, item 3, fills it in)"})
    owners = dict(data.get("commands") or {})
    parts = [c for c in str(data.get("command") or "").split(" && ") if c]
    for section in fields:
        old = owners.pop(section, None)
        if old is not None and old not in owners.values() and old in parts:
            parts.remove(old)
        owners[section] = command
    if command not in parts:
        parts.append(command)
    data["command"] = " && ".join(parts)
    data["commands"] = owners
    write_json_atomic(path, data)
    return data


def run_faults(args: argparse.Namespace) -> int:
    """Handler of ``bebert faults``."""
    from bebert.atomic import check_output_file, write_json_atomic

    for name in ("limit", "batch_size", "threads", "seeds"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, not {v}")
    for option in ("json", "plot", "report"):
        if getattr(args, option):
            check_output_file(getattr(args, option), f"--{option}")
    if not Path(args.model).exists():
        raise FileNotFoundError(f"model file {args.model} not found")
    command = command_line(args)
    result = fault_curve(args.model, args.task, args.data_dir, args.split, args.rates, range(args.seeds),
                         args.targets, args.limit, args.batch_size, args.vocab, args.threads,
                         progress=not args.no_progress and sys.stderr.isatty(), command=command)
    print(f"{result['model']}: {result['task']} {result['split']}, {result['examples']} sentences, "
          f"{len(result['seeds'])} seeds per rate, targets {', '.join(result['targets'])}, {result['seconds']} s")
    print(table(result))
    if args.json:
        write_json_atomic(args.json, result)
    if args.plot:
        plot_curve(result, args.plot)
    if args.report:
        keep = ("rates", "ensemble", "members", "seeds", "clean", "targets", "examples", "ensemble_range",
                "members_range", "metric", "task", "split", "bits")
        key = "faults" if result["targets"] == ["weights"] else "faults_" + "_".join(result["targets"])
        update_report(args.report, {key: {k: result[k] for k in keep}}, command)
    return 0
