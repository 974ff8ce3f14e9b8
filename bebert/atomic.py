"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "check_output_file", "write_json_atomic", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; the output is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_file(path, option: str = "output") -> Path:
    """Refuse, before any work, an output file that cannot be written: ``ValueError`` naming ``option``.

    The folder must exist (a mistyped folder is not created) and take a new file (probed with a temporary
    file, so that a read-only file system or a folder without write permission is found even for root), and
    the path must not be a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: folder {parent} does not exist (create it first)")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot write in folder {parent} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file and a rename."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
