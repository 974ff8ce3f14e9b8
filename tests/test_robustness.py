"""Bad input, refused (issue 17, ``docs/robustness.md``): every case exits non-zero with one line on stderr that
names the problem, no traceback, and leaves no file behind (nothing new or changed in the folders it touches).

The CLI runs in-process (``bebert.cli.main``); two cases run it as a real process (bytes on the command line,
exit status and stderr of the interpreter itself). With ``BEBERT_ROBUSTNESS_JSON=docs/results/robustness.json``
a full run of this module writes each case's outcome into that report's ``bad_inputs`` list.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bebert.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "sst2-bebert-w1a1-m2.safetensors"
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "movie", "good", "bad", "fine"]
VOCAB = 100
GOOD_TSV = "sentence\tlabel\na good movie\t1\na bad movie\t0\n"
REPORT_ENV = "BEBERT_ROBUSTNESS_JSON"


# ------------------------------------------------------------------------------------------- inputs
def _tiny_members(backbone="w1a1"):
    import torch

    from bebert.model.config import ModelConfig
    from bebert.model.student import BinaryBertForSequenceClassification

    kw = dict(backbone="w1a4", center_weights=False) if backbone == "w1a4" else {}
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, max_len=8,
                      hidden_dropout=0.0, **kw)
    members = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        m = BinaryBertForSequenceClassification(cfg)
        if backbone == "w1a4":
            ids = torch.as_tensor(np.random.default_rng(seed).integers(0, VOCAB, (2, 8)))
            with torch.no_grad():
                m.train()(ids, torch.ones_like(ids), torch.zeros_like(ids))  # initializes the LSQ steps
        members.append(m.eval())
    return members


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Shared, read-only inputs: a tiny W1A1 ensemble (file and checkpoint folder), a W1A4 file, its
    100-word vocabulary and a well-formed SST-2 folder."""
    from bebert.golden.export import export_members
    from bebert.golden.format import save_int_model
    from bebert.model.checkpoint import save_student

    d = tmp_path_factory.mktemp("inputs")
    vocab = d / "vocab.txt"
    vocab.write_text("\n".join(WORDS + [f"w{i}" for i in range(VOCAB - len(WORDS))]) + "\n")
    members = _tiny_members()
    tensors, meta = export_members(members, [0.6, 0.4], {"task": "SST-2", "max_len": 8, "lowercase": True})
    tiny = d / "tiny.safetensors"
    save_int_model(tiny, tensors, meta)
    w4_tensors, w4_meta = export_members(_tiny_members("w1a4"), [0.5, 0.5], {"task": "SST-2", "max_len": 8})
    w1a4 = d / "w1a4.safetensors"
    save_int_model(w1a4, w4_tensors, w4_meta)
    ckpt = d / "ckpt"
    save_student(ckpt, members, [0.6, 0.4], {"task": "SST-2", "max_len": 8, "lowercase": True}, vocab)
    glue = d / "glue"
    (glue / "SST-2").mkdir(parents=True)
    (glue / "SST-2" / "dev.tsv").write_text(GOOD_TSV)
    return SimpleNamespace(dir=d, vocab=vocab, tiny=tiny, w1a4=w1a4, ckpt=ckpt, glue=glue, tensors=tensors, meta=meta)


def _resave(path, tensors, metadata):
    """Write a safetensors file with any metadata (no validation: a corrupt deployment file on purpose)."""
    from safetensors.numpy import save

    Path(path).write_bytes(save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata))
    return path


def _metadata(inp, **changes):
    md = {"format": "bebert-int", "format_version": "1", "bebert": json.dumps(inp.meta, sort_keys=True)}
    md.update(changes)
    return md


def _eval(inp, model, data=None, *extra):
    return ["eval", str(model), "--data-dir", str(data or inp.glue), "--vocab", str(inp.vocab), *extra]


def _glue(work, text: str | bytes):
    (work / "glue" / "SST-2").mkdir(parents=True)
    f = work / "glue" / "SST-2" / "dev.tsv"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return work / "glue"


def _bebert_process(*args):
    """``python -m bebert.cli ARGS`` as a real process: ``(exit status, stderr)``."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-m", "bebert.cli", *args], cwd=ROOT, capture_output=True, env=env,
                       timeout=300)
    return p.returncode, p.stderr.decode("utf-8", "replace")


# -------------------------------------------------------------------------------------------- cases
#: name -> (function(inputs, work folder, monkeypatch) -> argv of bebert.cli.main or a callable giving
#: (exit status, stderr), the text the one line must contain)
CASES: dict = {}


def case(name: str, expect: str):
    def register(fn):
        CASES[name] = (fn, expect)
        return fn
    return register


# deployment files
@case("truncated deployment file", "is not a valid safetensors file (corrupt or truncated)")
def _(inp, work, mp):
    raw = inp.tiny.read_bytes()
    (work / "t.safetensors").write_bytes(raw[: len(raw) // 2])
    return _eval(inp, work / "t.safetensors")


@case("truncated deployment file, as a real process", "is not a valid safetensors file (corrupt or truncated)")
def _(inp, work, mp):
    raw = inp.tiny.read_bytes()
    (work / "t.safetensors").write_bytes(raw[: len(raw) - 100])
    return lambda: _bebert_process("inspect", str(work / "t.safetensors"))


@case("corrupt deployment file (header bytes overwritten)", "is not a valid safetensors file (corrupt or truncated)")
def _(inp, work, mp):
    raw = bytearray(inp.tiny.read_bytes())
    raw[20:60] = b"\x00\xff" * 20
    (work / "c.safetensors").write_bytes(bytes(raw))
    return ["inspect", str(work / "c.safetensors")]


@case("random bytes", "is not a valid safetensors file (corrupt or truncated)")
def _(inp, work, mp):
    (work / "r.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    return ["faults", str(work / "r.safetensors"), "--data-dir", str(inp.glue), "--vocab", str(inp.vocab)]


@case("empty file", "is not a valid safetensors file (corrupt or truncated)")
def _(inp, work, mp):
    (work / "e.safetensors").write_bytes(b"")
    return ["sim", str(work / "e.safetensors"), "--text", "a movie"]


@case("a safetensors file that is not a deployment file", "is not a bebert-int integer model")
def _(inp, work, mp):
    return _eval(inp, _resave(work / "p.safetensors", {"x": np.zeros(3, np.int32)}, {}))


@case("wrong format version", "has format version '7'; this bebert reads version 1 (w1a1), 2 (w1a4)")
def _(inp, work, mp):
    return ["inspect", str(_resave(work / "v.safetensors", inp.tensors, _metadata(inp, format_version="7")))]


@case("format version that disagrees with the content (version 1 on a W1A4 file)",
      "format version 1 holds the w1a1 backbone, but the model config says 'w1a4'")
def _(inp, work, mp):
    from safetensors.numpy import load_file
    from safetensors import safe_open

    with safe_open(str(inp.w1a4), "np") as f:
        md = f.metadata()
    return ["inspect", str(_resave(work / "v.safetensors", load_file(str(inp.w1a4)), dict(md, format_version="1")))]


@case("a W1A4 (version 2) file where W1A1 (version 1) is needed: bebert faults",
      "fault injection runs W1A1 deployment files (version 1) only")
def _(inp, work, mp):
    return ["faults", str(inp.w1a4), "--data-dir", str(inp.glue), "--vocab", str(inp.vocab)]


@case("a W1A4 (version 2) file where W1A1 (version 1) is needed: bebert sim", "the accelerator runs W1A1 models only")
def _(inp, work, mp):
    return ["sim", str(inp.w1a4), "--text", "a movie"]


@case("config that does not match the weights", "config does not match tensor member.0.emb.position")
def _(inp, work, mp):
    meta = json.loads(json.dumps(inp.meta))
    meta["config"]["hidden_size"] = 48
    md = _metadata(inp, bebert=json.dumps(meta))
    return ["inspect", str(_resave(work / "m.safetensors", inp.tensors, md))]


@case("a tensor missing", "config does not match the tensors: 1 missing, e.g. ['member.1.pooler.bits']")
def _(inp, work, mp):
    t = {k: v for k, v in inp.tensors.items() if k != "member.1.pooler.bits"}
    return _eval(inp, _resave(work / "m.safetensors", t, _metadata(inp)))


@case("a code outside its range (corrupt tensor data)", "holds thresholds outside 0..33")
def _(inp, work, mp):
    t = dict(inp.tensors)
    thr = t["member.0.layer.0.query.thr"].copy()
    thr[3] = 999
    t["member.0.layer.0.query.thr"] = thr
    return ["inspect", str(_resave(work / "m.safetensors", t, _metadata(inp)))]


@case("unreadable metadata", "has no readable bebert metadata")
def _(inp, work, mp):
    return ["inspect", str(_resave(work / "m.safetensors", inp.tensors, _metadata(inp, bebert="{config")))]


@case("missing model path: bebert eval", "no such checkpoint folder or deployment file")
def _(inp, work, mp):
    return _eval(inp, work / "nope.safetensors")


@case("missing model path: bebert faults", "not found")
def _(inp, work, mp):
    return ["faults", str(work / "nope.safetensors")]


@case("a folder where a deployment file is needed", "is a folder, not an integer model file")
def _(inp, work, mp):
    return ["inspect", str(inp.ckpt)]


# text
@case("empty text", "--text number 2 is empty")
def _(inp, work, mp):
    return ["sim", str(inp.tiny), "--vocab", str(inp.vocab), "--text", "a movie", "--text", "  "]


@case("over-long text (bebert sim without --truncate)", "has 11 tokens, more than --max-tokens 8")
def _(inp, work, mp):
    return ["sim", str(inp.tiny), "--vocab", str(inp.vocab), "--text", "a good movie a bad movie a good movie"]


@case("non-UTF-8 text on the command line (a real process)", "--text number 1 is not valid UTF-8")
def _(inp, work, mp):
    return lambda: _bebert_process("sim", str(inp.tiny), "--vocab", str(inp.vocab), "--text", b"a \xff movie")


@case("non-UTF-8 data file", "dev.tsv:4: not valid UTF-8")
def _(inp, work, mp):
    return _eval(inp, inp.tiny, _glue(work, GOOD_TSV.encode() + b"caf\xe9 movie\t1\n"))


@case("non-UTF-8 vocabulary", "vocab.txt:2: not valid UTF-8")
def _(inp, work, mp):
    (work / "vocab.txt").write_bytes(b"[PAD]\n\xff\xfe\n")
    return ["eval", str(inp.tiny), "--data-dir", str(inp.glue), "--vocab", str(work / "vocab.txt")]


@case("token ids out of range at the accelerator's input (AccelCodec)", "token id 100 at position 1 is outside 0..99")
def _(inp, work, mp):
    from bebert.golden.accelerator import AccelSpec
    from bebert.golden.format import load_int_model
    from bebert.hw.accelerator import AccelCodec, AccelInputError

    codec = AccelCodec(AccelSpec.from_int_model(load_int_model(inp.tiny), 8, 16, 32), 8, ("cycles",))

    def run():
        try:
            codec.sequence([2, VOCAB, 3])
        except AccelInputError as e:
            return 1, f"AccelInputError: {e}\n"
        return 0, ""
    return run


@case("token ids out of range from a larger vocabulary", "has 120 entries but")
def _(inp, work, mp):
    (work / "vocab.txt").write_text("\n".join(WORDS + [f"w{i}" for i in range(120 - len(WORDS))]) + "\n")
    return ["eval", str(inp.tiny), "--data-dir", str(inp.glue), "--vocab", str(work / "vocab.txt")]


# hardware parameters
@case("hardware parameter zero (bebert sim --p 0)", "--p must be a positive integer, not 0")
def _(inp, work, mp):
    return ["sim", str(inp.tiny), "--text", "a movie", "--p", "0"]


@case("hardware parameter negative (bebert perf --s -4)", "--s must be a positive integer, not -4")
def _(inp, work, mp):
    return ["perf", "--model", str(inp.tiny), "--s", "-4"]


@case("zero memory bandwidth (bebert perf --bits-per-cycle 0)", "--bits-per-cycle must be positive, not 0.0")
def _(inp, work, mp):
    return ["perf", "--bits-per-cycle", "0"]


@case("lanes above members (bebert sim)", "--lanes 3 is more than the model's 2 members")
def _(inp, work, mp):
    return ["sim", str(inp.tiny), "--text", "a movie", "--lanes", "3"]


@case("lanes above members (bebert perf)", "--lanes must be 1..2 (the file's members)")
def _(inp, work, mp):
    return ["perf", "--model", str(inp.tiny), "--lanes", "3", "--tokens", "8"]


@case("a one-word weight prefetch (bebert sim --prefetch 1)", "--prefetch must be 0 (none) or at least 2 words, not 1")
def _(inp, work, mp):
    return ["sim", str(inp.tiny), "--text", "a movie", "--prefetch", "1"]


@case("memory words narrower than a code (bebert sim --word-bits 8)", "word_bits=8 is narrower than a 16-bit code")
def _(inp, work, mp):
    return ["sim", str(inp.tiny), "--text", "a movie", "--word-bits", "8"]


# data
@case("GLUE TSV: a missing column", "dev.tsv:4: expected 2 tab-separated columns, found 1")
def _(inp, work, mp):
    return _eval(inp, inp.tiny, _glue(work, GOOD_TSV + "a fine movie\n"))


@case("GLUE TSV: a bad label", "dev.tsv:2: label '2' is not one of ['0', '1']")
def _(inp, work, mp):
    return _eval(inp, inp.tiny, _glue(work, GOOD_TSV.replace("\t1\n", "\t2\n")))


@case("GLUE TSV: a wrong header", "dev.tsv:1: header ['text', 'label'] is not the SST-2 header")
def _(inp, work, mp):
    return _eval(inp, inp.tiny, _glue(work, GOOD_TSV.replace("sentence\t", "text\t")))


@case("GLUE TSV: an empty sentence", "dev.tsv:3: empty text in column 1")
def _(inp, work, mp):
    return _eval(inp, inp.tiny, _glue(work, GOOD_TSV.replace("a bad movie", " ")))


@case("missing data folder", "No dev.tsv for task SST-2")
def _(inp, work, mp):
    return _eval(inp, inp.tiny, work / "nodata")


@case("unknown task", "Unknown task 'sst-7'")
def _(inp, work, mp):
    return _eval(inp, inp.tiny, None, "--task", "sst-7")


@case("--max-len above the model's position table", "--max-len 64 exceeds the model's maximum of 8 tokens")
def _(inp, work, mp):
    return _eval(inp, inp.tiny, None, "--max-len", "64")


# outputs
@case("output in a missing folder (bebert eval --output)", "does not exist (create it first)")
def _(inp, work, mp):
    return _eval(inp, inp.tiny, None, "--output", str(work / "no" / "such" / "eval.json"))


@case("output in an unwritable folder (bebert export -o)", "cannot write in folder")
def _(inp, work, mp):
    import tempfile

    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        fd, probe = tempfile.mkstemp(dir=ro)        # root writes anyway: use a folder nobody can write in
        os.close(fd)
        os.unlink(probe)
        ro = Path("/sys")
        if not ro.is_dir():
            pytest.skip("running as root and no /sys: no unwritable folder to try")
    except PermissionError:
        pass
    return ["export", str(inp.ckpt), "-o", str(ro / "int.safetensors")]


@case("output path that is a folder (bebert perf --json)", "is a folder; give a file name")
def _(inp, work, mp):
    return ["perf", "--json", str(work)]


@case("export interrupted midway (Ctrl-C while the file is written)", "bebert export: interrupted")
def _(inp, work, mp):
    import bebert.golden.format as fmt

    def boom(fd):
        raise KeyboardInterrupt
    mp.setattr(fmt.os, "fsync", boom)
    return ["export", str(inp.ckpt), "-o", str(work / "int.safetensors")]


@case("disk full during an export", "No space left on device")
def _(inp, work, mp):
    import bebert.golden.format as fmt

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    mp.setattr(fmt.os, "fsync", full)
    return ["export", str(inp.ckpt), "-o", str(work / "int.safetensors")]


@case("export of a folder that is not a checkpoint", "is not a checkpoint (no bebert.json or config.json)")
def _(inp, work, mp):
    (work / "empty").mkdir()
    return ["export", str(work / "empty"), "-o", str(work / "int.safetensors")]


# fault-injection options
@case("a flip rate outside (0, 1] (bebert faults --rates 2)", "flip rates must lie in (0, 1], not 2.0")
def _(inp, work, mp):
    return ["faults", str(inp.tiny), "--data-dir", str(inp.glue), "--vocab", str(inp.vocab), "--rates", "0.01", "2"]


@case("no seeds (bebert faults --seeds 0)", "--seeds must be a positive integer, not 0")
def _(inp, work, mp):
    return ["faults", str(inp.tiny), "--seeds", "0"]


# ---------------------------------------------------------------------------------------- the tests
RESULTS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def report():
    """Writes the outcomes into ``$BEBERT_ROBUSTNESS_JSON`` after a run of every case."""
    yield
    path = os.environ.get(REPORT_ENV)
    if path and len(RESULTS) == len(CASES):
        from bebert.golden.faults import update_report

        update_report(path, {"bad_inputs": [RESULTS[n] for n in CASES]},
                      f"{REPORT_ENV}={path} python -m pytest tests/test_robustness.py")


@pytest.fixture(autouse=True)
def no_rtl_build(monkeypatch):
    """A case that got past the checks of ``bebert sim`` would build the accelerator (minutes): fail instead."""
    import bebert.sim.tb_accelerator as tb

    def refuse(*a, **k):
        raise AssertionError("bebert sim got past its checks and started a build")
    monkeypatch.setattr(tb, "build_accelerator", refuse)


def _snapshot(folders):
    out = {}
    for d in folders:
        for p in Path(d).rglob("*"):
            if p.is_file():
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused(name, inputs, tmp_path, capsys, monkeypatch):
    fn, expect = CASES[name]
    work = tmp_path / "work"
    work.mkdir()
    how = fn(inputs, work, monkeypatch)
    folders = [work, inputs.dir]
    before = _snapshot(folders)
    if callable(how):
        rc, err = how()
    else:
        rc = main(how)
        err = capsys.readouterr().err
    after = _snapshot(folders)
    partial = sorted(p for p in after if before.get(p) != after[p])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    refused = rc != 0 and len(lines) == 1 and "Traceback" not in err and expect in lines[0]
    message = lines[0] if len(lines) == 1 else err
    message = message.replace(str(work), "<work>").replace(str(inputs.dir), "<inputs>")
    RESULTS[name] = {"case": name, "refused": refused, "partial_files": len(partial), "exit": rc, "message": message}
    assert rc != 0
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert expect in lines[0], lines[0]
    assert not partial, partial


def test_there_are_at_least_twenty_kinds():
    assert len(CASES) >= 20


# ------------------------------------------------------------------------- documented, not refused
def test_eval_truncates_a_long_text_to_the_training_length(inputs):
    """``bebert eval`` (and training) cut a sentence to ``max_len`` WordPiece tokens: ``[CLS]``, the first
    ``max_len - 2`` pieces, ``[SEP]``."""
    from bebert.model.data import load_tokenizer

    enc = load_tokenizer(inputs.vocab, 8, True).encode("a good movie a bad movie a good movie")
    assert enc.tokens == ["[CLS]", "a", "good", "movie", "a", "bad", "movie", "[SEP]"]


def test_sim_truncate_cuts_to_max_tokens_with_a_notice(inputs):
    from bebert.golden.format import load_int_model
    from bebert.sim.sim_cli import tokenize

    ((tokens, ids, _, notice),) = tokenize(load_int_model(inputs.tiny), ["a good movie a bad movie a good movie"], 6,
                                           True, inputs.vocab)
    assert tokens == ["[CLS]", "a", "good", "movie", "a", "[SEP]"] and len(ids) == 6
    assert notice == "truncated from 11 to 6 tokens"


def test_p_and_s_that_do_not_divide_are_valid(inputs, capsys):
    """P and S need not divide H or F: the engine pads the last channel group and the last fold (exact in the
    Amaranth simulator: ``test_accelerator_exact_with_p_and_s_that_do_not_divide``)."""
    assert main(["perf", "--model", str(inputs.tiny), "--p", "3", "--s", "7", "--tokens", "8"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| L1-H32 | 8 |")]
    assert row and not row[0].rstrip(" |").endswith("-"), row


@pytest.mark.slow
def test_accelerator_exact_with_p_and_s_that_do_not_divide(inputs):
    """The whole accelerator at P x S = 3 x 7 (neither divides H = 32 or F = 64) in the Amaranth simulator:
    every member's logits and the combined logits equal the golden model's."""
    sys.path.insert(0, str(Path(__file__).parent))
    import test_accelerator_sim as T

    from bebert.golden.accelerator import AccelSpec, model_image
    from bebert.golden.format import load_int_model
    from bebert.hw.accelerator import Accelerator

    model = load_int_model(inputs.tiny)
    spec = AccelSpec.from_int_model(model, 3, 7, 32)
    words, _ = model_image(model, spec)
    dut = Accelerator(spec, max_tokens=8, addr_width=16)
    job = dict(ids=[2, 5, 7, 6, 3], types=[0] * 5, length=5)
    assert T.MEMBERS == model.members
    (res,), _ = T.run(dut, words, (7, 24.0, 32), [job], limit=2_000_000)
    T.check(dut, model, job, res)


def test_a_closed_output_pipe_stops_quietly(inputs):
    """``bebert inspect MODEL | head -0``: exit status 141 (SIGPIPE's), no traceback."""
    p = subprocess.Popen([sys.executable, "-m", "bebert.cli", "inspect", str(inputs.tiny), "--tensors"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141 and "Traceback" not in err and err == "", err
