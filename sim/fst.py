"""FST waveforms from Verilator without liblz4-dev: upstream LZ4, built from the ``lz4`` package's sources.

Verilator's FST writer (``verilated_fst_c.cpp`` -> ``fstcpp/fstcpp_writer.cpp``) includes ``<lz4.h>`` and
its ``verilated.mk`` links ``-llz4``. This machine has neither the header nor a linkable library, so
:func:`lz4_library` takes the upstream LZ4 C sources that the ``lz4`` Python package's source
distribution carries (``lz4libs/lz4.c`` and ``lz4.h``, LZ4's own code; the sdist pinned below, checked
against PyPI's SHA-256), compiles them into a static ``liblz4.a`` in the project cache, and
:func:`fst_build_args` points Verilator's compile at its header and its ``-llz4`` at the library (an ``-L``
folder is searched before the system ones). The sdist is fetched from PyPI once; VCD waveforms need none
of this.
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import subprocess
import tarfile
import urllib.request
from pathlib import Path

from .. import toolchain
from ..atomic import atomic_path

__all__ = ["LZ4_SDIST", "TRACE_TAG", "lz4_sources", "lz4_library", "fst_build_args"]

#: The ``lz4`` source distribution whose ``lz4libs/`` holds upstream LZ4 (version, URL, SHA-256).
LZ4_SDIST = ("4.4.5",
             "https://files.pythonhosted.org/packages/57/51/f1b86d93029f418033dddf9b9f79c8d2641e7454080478ee2aab5123173e/"
             "lz4-4.4.5.tar.gz",
             "5f0b9e53c1e82e88c10d7c180069363980136b9d7a8306c4dca4f760d60c39f0")
_FILES = ("lz4.c", "lz4.h")
#: Part of a traced build's cache folder name: a build made against another LZ4 (its make dependencies name
#: that LZ4's files) is never reused.
TRACE_TAG = f"lz4-{LZ4_SDIST[0]}"


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def lz4_sources(fetch=None) -> Path:
    """The folder holding upstream ``lz4.c`` and ``lz4.h`` (``<cache>/lz4/<version>/``), extracted from the
    pinned sdist on first use. ``fetch(url) -> bytes`` replaces the download (tests). Raises
    ``RuntimeError`` naming the problem when the sdist cannot be fetched or does not match its digest."""
    version, url, sha = LZ4_SDIST
    folder = toolchain.cache_dir("lz4") / version
    if all((folder / f).is_file() for f in _FILES):
        return folder
    try:
        data = fetch(url) if fetch else urllib.request.urlopen(url, timeout=60).read()
    except OSError as exc:
        raise RuntimeError(f"FST waveforms need the LZ4 sources of the lz4 {version} sdist from PyPI, which could "
                           f"not be fetched ({exc}); use a .vcd waveform instead") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise RuntimeError(f"the lz4 {version} sdist from {url} does not match its SHA-256; not using it")
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for name in _FILES:
            member = tar.extractfile(f"lz4-{version}/lz4libs/{name}")
            if member is None:
                raise RuntimeError(f"the lz4 {version} sdist has no lz4libs/{name}")
            with atomic_path(folder / name) as tmp:
                tmp.write_bytes(member.read())
    return folder


def lz4_library() -> Path:
    """``liblz4.a`` compiled from upstream LZ4, in ``<cache>/lz4/<version>/<hash>/``; rebuilt only when the C
    compiler (``$CC``, default ``cc``) changes."""
    src = lz4_sources()
    cc = _compiler()
    key = hashlib.sha256(" ".join(cc).encode() + (src / "lz4.c").read_bytes()).hexdigest()[:16]
    lib = src / key / "liblz4.a"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    obj = lib.with_name(f"lz4.{os.getpid()}.o")
    steps = [cc + ["-O2", "-fPIC", "-c", str(src / "lz4.c"), "-o", str(obj)]]
    try:
        with atomic_path(lib) as tmp:
            tmp.unlink()                       # ar appends to an existing archive; start from none
            steps.append(["ar", "rcs", str(tmp), str(obj)])
            for cmd in steps:
                try:
                    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                except OSError as exc:
                    raise RuntimeError(f"cannot build LZ4 for FST tracing: {cmd[0]} not found ({exc})") from None
                if res.returncode:
                    raise RuntimeError(f"building LZ4 for FST tracing failed: {shlex.join(cmd)}\n{res.stderr.strip()}")
    finally:
        obj.unlink(missing_ok=True)
    return lib


def fst_build_args() -> list[str]:
    """Extra Verilator options for a ``--trace-fst`` build (add them to ``build_args`` beside it).

    ``-CFLAGS -I<sources>`` lets ``fstcpp_writer.cpp`` find upstream ``lz4.h``; ``-LDFLAGS -L<folder of
    liblz4.a>`` makes the ``-llz4`` of ``verilated.mk`` link it (built on first use, :func:`lz4_library`).
    """
    lib = lz4_library()
    return ["-CFLAGS", f"-I{lib.parent.parent}", "-LDFLAGS", f"-L{lib.parent}"]
