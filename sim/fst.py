"""FST waveforms from Verilator without liblz4-dev: build and point Verilator at our LZ4 shim.

Verilator's FST writer (``verilated_fst_c.cpp`` -> ``fstcpp/fstcpp_writer.cpp``) includes
``<lz4.h>`` and its ``verilated.mk`` links ``-llz4``. Machines with only the LZ4 runtime (no
``lz4.h``, no ``liblz4.so`` link) cannot build ``--trace-fst`` models. ``sim/lz4shim`` is a small
self-written LZ4 block codec with the calls that writer makes; :func:`fst_build_args` compiles it
into a static ``liblz4.a`` in the project cache and returns the Verilator options that make the
model's compile find our ``lz4.h`` and its ``-llz4`` link find our library (an ``-L`` folder is
searched before the system ones, so the shim wins even where liblz4 is installed).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

from .. import toolchain
from ..atomic import atomic_path

__all__ = ["SHIM_DIR", "fst_build_args", "shim_library"]

#: The shim's sources: ``lz4.h`` and ``lz4.c``.
SHIM_DIR = Path(__file__).resolve().parent / "lz4shim"


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def shim_library() -> Path:
    """``liblz4.a`` built from the shim, in ``<cache>/lz4shim/<hash>/``; rebuilt only when the
    shim's sources or the C compiler (``$CC``, default ``cc``) change."""
    cc = _compiler()
    key = hashlib.sha256(" ".join(cc).encode())
    for name in ("lz4.h", "lz4.c"):
        key.update((SHIM_DIR / name).read_bytes())
    lib = toolchain.cache_dir("lz4shim") / key.hexdigest()[:16] / "liblz4.a"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    obj = lib.with_name(f"lz4.{os.getpid()}.o")
    steps = [cc + ["-std=c99", "-O2", "-fPIC", "-c", str(SHIM_DIR / "lz4.c"), "-o", str(obj)]]
    try:
        with atomic_path(lib) as tmp:
            tmp.unlink()                       # ar appends to an existing archive; start from none
            steps.append(["ar", "rcs", str(tmp), str(obj)])
            for cmd in steps:
                try:
                    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                except OSError as exc:
                    raise RuntimeError(f"cannot build the LZ4 shim for FST tracing: {cmd[0]} not found ({exc})") from None
                if res.returncode:
                    raise RuntimeError(f"building the LZ4 shim for FST tracing failed: {shlex.join(cmd)}\n"
                                       f"{res.stderr.strip()}")
    finally:
        obj.unlink(missing_ok=True)
    return lib


def fst_build_args() -> list[str]:
    """Extra Verilator options for a ``--trace-fst`` build (add them to ``build_args`` beside it).

    ``-CFLAGS -I<sim/lz4shim>`` lets ``fstcpp_writer.cpp`` find our ``lz4.h``;
    ``-LDFLAGS -L<folder of liblz4.a>`` makes the ``-llz4`` of ``verilated.mk`` link our static
    shim (built on first use, see :func:`shim_library`). No extra source files are needed.
    """
    return ["-CFLAGS", f"-I{SHIM_DIR}", "-LDFLAGS", f"-L{shim_library().parent}"]
