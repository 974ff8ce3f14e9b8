"""``docs/results/golden.json``: merge measured fields written by the benchmark and the agreement check.

The file holds ``{"agreement", "acc_torch", "acc_golden", "seq_per_s_n64", "seq_per_s_n128",
"command"}`` (and a few detail fields); each tool replaces only its own fields and its own part of
``command`` (parts are joined by ``" && "``), so the file always says which commands produced
which numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bebert.atomic import write_json_atomic

__all__ = ["update_results"]


def update_results(path: str | Path, fields: dict[str, Any], command: str) -> dict[str, Any]:
    """Merge ``fields`` into the JSON file at ``path`` (atomic), replacing ``command``'s part.

    The part replaced is the one starting with the same first two words (``python -m
    bebert.golden.bench`` ...).
    """
    path = Path(path)
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    data.update(fields)
    key = " ".join(command.split()[:3])
    parts = [c for c in str(data.get("command", "")).split(" && ") if c and not c.startswith(key)]
    data["command"] = " && ".join(parts + [command])
    write_json_atomic(path, data)
    return data
