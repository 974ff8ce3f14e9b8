"""``bebert sim``: sentences through the whole W1A1 accelerator RTL in Verilator, checked against golden.

Builds (cached per dimensions and tiles) the Accelerator for the deployment file, tokenizes each ``--text``
with the MiniLM WordPiece vocabulary (``[CLS] ... [SEP]``), runs the sentences back to back in Verilator
(cocotb testbench ``bebert.sim.tb_accelerator``, the model image in a simulated memory of the given
latency and bandwidth) and prints per sentence the tokens, the prediction, whether every member logit and
the combined logits equal the golden model's exactly, the cycles (total and per phase) and the simulation
seconds. The defaults are the demo configuration of ``docs/results-hw.md``: two ensemble lanes of
``P x S = 2 x 32`` sharing the ULX3S SDRAM's 12.8 bits per cycle, each with a 4096-word weight prefetch. A sentence longer than ``--max-tokens`` tokens is refused unless ``--truncate`` is given (then it is
cut to ``--max-tokens`` tokens, ``[SEP]`` kept last, with a notice). Exit status 1 on any disagreement.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path

from ..atomic import atomic_path, check_output_file

#: Class names of tasks whose labels are indices (the data files hold ``0`` / ``1``).
LABEL_NAMES = {"sst2": ("negative", "positive"), "sst2sentences": ("negative", "positive")}


def label_names(task: str | None, labels: int):
    key = (task or "").lower().replace("-", "").replace("_", "")
    names = LABEL_NAMES.get(key)
    if names is None and key:
        try:
            from ..model.data import get_task

            names = get_task(task).labels
        except (ValueError, ImportError):
            names = None
    return names if names is not None and len(names) == labels else None


def command_line(args) -> str:
    """The ``bebert sim`` command that reproduces this run (every hardware option spelled out)."""
    parts = ["bebert", "sim", str(args.model)]
    for t in args.text:
        parts += ["--text", t]
    for name in ("p", "s", "lanes", "prefetch", "word_bits", "latency", "bits_per_cycle", "max_tokens"):
        parts += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    parts += (["--truncate"] if args.truncate else []) + (["--vocab", str(args.vocab)] if args.vocab else [])
    return shlex.join(parts)


def _check_args(args) -> None:
    from ..hw.presets import apply

    lanes = args.lanes
    apply(args, need_built="bebert sim")
    if lanes is None:              # the preset's lanes, or fewer for a smaller ensemble: decided with the model
        args.lanes_cap, args.lanes = args.lanes, None
    for name in ("p", "s", "lanes", "word_bits", "latency", "max_tokens", "kb", "vw"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, not {v}")
    if not args.bits_per_cycle > 0:
        raise ValueError(f"--bits-per-cycle must be positive, not {args.bits_per_cycle}")
    if args.prefetch is not None and (args.prefetch < 0 or args.prefetch == 1):
        raise ValueError(f"--prefetch must be 0 (none) or at least 2 words, not {args.prefetch}")
    if not args.text:
        raise ValueError("give at least one sentence with --text")
    for i, t in enumerate(args.text):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:   # undecodable bytes of the command line arrive as lone surrogates
            raise ValueError(f"--text number {i + 1} is not valid UTF-8") from None
        if not t.strip():
            raise ValueError(f"--text number {i + 1} is empty")
    for option in ("json", "wave"):
        if getattr(args, option, None):
            check_output_file(getattr(args, option), f"--{option}")


def load_model(path):
    """The deployment file, refused with a readable message if the accelerator cannot run it."""
    from ..golden.format import load_int_model

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model file {p} not found")
    if p.is_dir():
        raise ValueError(f"{p} is a folder, not a deployment file (bebert export writes one)")
    model = load_int_model(p)
    backbone = model.config.get("backbone", "w1a1")
    if backbone != "w1a1":
        raise ValueError(f"{p} is a {backbone.upper()} model; the accelerator runs W1A1 models only "
                         "(W1A4 is not supported by the RTL yet)")
    return model


def tokenize(model, texts, max_tokens: int, truncate: bool, vocab=None):
    """``[(tokens, ids, types, notice)]`` per text (WordPiece, ``[CLS] text [SEP]``)."""
    from ..model.data import count_vocab, load_tokenizer
    from ..model.teacher import default_base_model, vocab_path_of

    vocab_file = Path(vocab) if vocab is not None else vocab_path_of(default_base_model())
    if not vocab_file.is_file():
        raise FileNotFoundError(f"vocabulary {vocab_file} not found")
    n_vocab = count_vocab(vocab_file)
    want = int(model.dims["vocab_size"])
    if n_vocab != want:
        raise ValueError(f"{vocab_file} has {n_vocab} entries but the model's vocabulary has {want}; "
                         "pass the training run's vocab.txt with --vocab")
    lowercase = model.meta.get("lowercase", True)
    full = load_tokenizer(vocab_file, 1 << 20, lowercase)          # no truncation: count the tokens
    cut = load_tokenizer(vocab_file, max(max_tokens, 4), lowercase) if truncate else None
    out = []
    for i, text in enumerate(texts):
        enc = full.encode(text)
        notice = None
        if len(enc.ids) > max_tokens:
            if not truncate:
                raise ValueError(f"--text number {i + 1} has {len(enc.ids)} tokens, more than --max-tokens "
                                 f"{max_tokens} (the accelerator's activation buffer); raise --max-tokens "
                                 f"(up to the model's {model.dims['max_len']}; a new build) or pass --truncate")
            n0 = len(enc.ids)
            enc = cut.encode(text) if max_tokens >= 4 else None
            if enc is None:
                raise ValueError("--truncate needs --max-tokens of at least 4")
            notice = f"truncated from {n0} to {len(enc.ids)} tokens"
        out.append((list(enc.tokens), list(enc.ids), list(enc.type_ids), notice))
    return out


def run(args) -> int:
    from ..golden.accelerator import AccelSpec
    from ..golden.schedule import HwParams, performance
    from ..hw.accelerator import Accelerator
    from .runner import SimulationFailed, run_testbench
    from .tb_accelerator import build_accelerator, image_file

    _check_args(args)
    model = load_model(args.model)
    if args.lanes is None:
        args.lanes = min(getattr(args, "lanes_cap", None) or 2, int(model.members))
    if args.lanes > int(model.members):
        raise ValueError(f"--lanes {args.lanes} is more than the model's {model.members} members (lanes run members)")
    spec = AccelSpec.from_int_model(model, args.p, args.s, args.word_bits)
    mt = min(args.max_tokens, spec.max_len)
    sents = tokenize(model, args.text, mt, args.truncate, args.vocab)
    from ..golden.accelerator import model_layout

    words = model_layout(spec)["words"]
    aw = max(16, (words - 1).bit_length())
    dut = Accelerator(spec, lanes=args.lanes, prefetch=args.prefetch, max_tokens=mt, addr_width=aw, kb=args.kb,
                      vw=args.vw)
    d = model.dims
    print(f"model {args.model}: H={d['hidden_size']}, {d['num_layers']} layers, {d['num_heads']} heads, "
          f"F={d['ffn_size']}, {spec.members} member(s), {spec.labels} labels, task {model.meta.get('task')}")
    print(f"accelerator P={spec.p} x S={spec.s}, {args.lanes} lane(s), weight prefetch {args.prefetch} words, "
          f"{spec.word_bits}-bit words ({words} words, {aw} address bits), "
          f"max {mt} tokens, {args.kb} attention keys and {args.vw} LayerNorm channel(s) a cycle; memory latency "
          f"{args.latency}, {args.bits_per_cycle} bits/cycle")
    print("building RTL (Amaranth -> Verilog -> Verilator; cached after the first run) ...", flush=True)
    t0 = time.monotonic()
    wave_kind = ("vcd" if str(args.wave).lower().endswith(".vcd") else "fst") if args.wave else False
    build = build_accelerator(dut, waves=wave_kind)
    t_build = time.monotonic() - t0
    print(f"  build {t_build:.1f} s ({build.build_dir})", flush=True)
    image = image_file(model, spec)
    jobs = [dict(ids=ids, types=types, length=len(ids)) for _, ids, types, _ in sents]
    report_path = build.build_dir / "run_inference" / "cli_report.json"
    report_path.parent.mkdir(exist_ok=True)
    if report_path.exists():
        report_path.unlink()
    cfg = dict(model=str(Path(args.model).resolve()), p=spec.p, s=spec.s, word_bits=spec.word_bits, max_tokens=mt,
               addr_width=aw, lanes=args.lanes, prefetch=args.prefetch, kb=args.kb, vw=args.vw, image=str(image),
               jobs=jobs, latency=args.latency, bits_per_cycle=args.bits_per_cycle,
               strict=False, check_cycles=False, report=str(report_path), seed=1)
    print(f"simulating {len(jobs)} sentence(s) in Verilator (cocotb) ...", flush=True)
    t1 = time.monotonic()
    try:
        run_testbench(build, "bebert.sim.tb_accelerator", "inference", cfg, waves=bool(args.wave))
    except SimulationFailed as exc:
        raise RuntimeError(f"the simulation failed: {exc}") from None
    t_sim = time.monotonic() - t1
    rep = json.loads(report_path.read_text())
    names = label_names(model.meta.get("task"), spec.labels)
    hw = HwParams(p=spec.p, s=spec.s, bits_per_cycle=args.bits_per_cycle, lanes=args.lanes)
    results = []
    all_ok = not rep["failures"]
    for (tokens, ids, _types, notice), job in zip(sents, rep["jobs"]):
        c = job["counters"]
        perf = performance(dict(d), len(ids), hw, members=spec.members)
        util = c["busy"] / max(1, c["busy"] + c["stall_weights"] + c["stall_output"])
        pred = job["pred"]
        label = f" ({names[pred]})" if names else ""
        all_ok &= job["agree"]
        print()
        print(f"  tokens      {len(tokens)}: {' '.join(tokens)}" + (f"   [{notice}]" if notice else ""))
        print(f"  prediction  class {pred}{label}; logits {job['logits']}, members {job['member_logits']}")
        verdict = (f"yes: {job['taps_checked']} layer outputs (the embedding LayerNorm's and every layer's, every "
                   "member), member and combined logits equal exactly" if job["agree"] else
                   "NO" + (": " + "; ".join(job["tap_failures"][:2]) if job["tap_failures"] else ""))
        print(f"  golden      {verdict}"
              + ("" if job["agree"] else f" (golden {job['want_logits']}, members {job['want_member_logits']})"))
        phases = ", ".join(f"{k} {c[k]}" for k in ["embed"] + [f"layer{i}" for i in range(spec.layers)] + ["head"])
        print(f"  cycles      {c['cycles']} ({phases}; parameter loads {c['load']})")
        print(f"  PE array    busy {c['busy']}, weight stalls {c['stall_weights']}, output stalls "
              f"{c['stall_output']} ({util:.1%} of the linear-op cycles); ideal {perf['ideal_cycles']:.0f}, "
              f"weight floor {perf['weight_floor_cycles']:.0f} cycles "
              f"({c['cycles'] / max(perf['ideal_cycles'], perf['weight_floor_cycles']):.2f}x)")
        print(f"  simulation  {job['sim_seconds']:.1f} s ({job['cycles_per_second']} cycles/s)")
        results.append(dict(text=args.text[len(results)], tokens=tokens, ids=ids, notice=notice, pred=pred,
                            label=names[pred] if names else None, agree=job["agree"], logits=job["logits"],
                            member_logits=job["member_logits"], golden_logits=job["want_logits"],
                            counters=c, sim_seconds=job["sim_seconds"], ideal_cycles=perf["ideal_cycles"],
                            weight_floor_cycles=perf["weight_floor_cycles"], gemm_utilization=round(util, 4)))
    if rep["failures"]:
        print(f"\n  checks failed: {'; '.join(rep['failures'])}")
    print(f"\n  wall time   build {t_build:.1f} s, simulation {t_sim:.1f} s (simulator start and image load included)")
    if args.wave:
        dumps = sorted((build.build_dir / "run_inference").glob("dump.*"))
        if dumps:
            shutil.copyfile(dumps[-1], args.wave)
            print(f"  waveform    {args.wave}")
        else:
            print("  waveform    not found (no dump.* in the run folder)")
    if args.json:
        out = dict(model=str(args.model), command=command_line(args),
                   config=dict(p=spec.p, s=spec.s, lanes=args.lanes, prefetch=args.prefetch, word_bits=spec.word_bits,
                               max_tokens=mt, latency=args.latency, bits_per_cycle=args.bits_per_cycle),
                   build_seconds=round(t_build, 1), sim_seconds=round(t_sim, 1), sentences=results,
                   failures=rep["failures"])
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if all_ok else 1


def add_parser(sub) -> None:
    p = sub.add_parser("sim", help="sentences through the accelerator RTL in Verilator, checked against golden",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("model", help="W1A1 deployment file (bebert export)")
    p.add_argument("--text", action="append", default=[], help="a sentence (repeat for several)")
    p.add_argument("--preset", help="a named configuration (bebert presets; default: demo-ecp5's parameters); "
                                    "the options below override it")
    p.add_argument("--p", type=int, help="PE array output channels per lane (demo-ecp5: 2)")
    p.add_argument("--s", type=int, help="PE array input bits per cycle (demo-ecp5: 32)")
    p.add_argument("--lanes", type=int, default=None,
                   help="ensemble-parallel lanes, 1..members (default: the preset's, 2, or fewer for a smaller ensemble)")
    p.add_argument("--prefetch", type=int,
                   help="words of each lane's run-ahead weight FIFO, 0 for none (demo-ecp5: 4096)")
    p.add_argument("--word-bits", type=int, help="memory word width (demo-ecp5: 16)")
    p.add_argument("--latency", type=int, help="memory read latency in cycles (demo-ecp5: 8)")
    p.add_argument("--bits-per-cycle", type=float,
                   help="memory bandwidth (demo-ecp5: 12.8, the ULX3S SDRAM at 100 MHz)")
    p.add_argument("--max-tokens", type=int,
                   help="longest sentence the built accelerator takes (demo-ecp5: 16; one build per value)")
    p.add_argument("--kb", type=int, help="Bi-Attention keys per cycle (demo-ecp5: 4)")
    p.add_argument("--vw", type=int, help="channels a cycle through the vector unit (LayerNorm) and out of the "
                                          "layers: a power of two dividing P, S and H (demo-ecp5: 1)")
    p.add_argument("--truncate", action="store_true", help="cut longer sentences to --max-tokens (with a notice)")
    p.add_argument("--vocab", help="WordPiece vocab.txt (default: MiniLM's, as training)")
    p.add_argument("--wave", metavar="FILE",
                   help="write a waveform: FST, or VCD for a .vcd name (a separate, slower build)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=run)
