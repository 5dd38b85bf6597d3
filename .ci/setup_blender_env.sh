#!/usr/bin/env bash
# Optional (README, "Set up"): Blender's own Python environment, for the Blender add-on's end-to-end tests
# only; the command line, the Nuke plugin and the farm worker never need it. Without it those tests skip
# (CI sets RVM_VFX_REQUIRE_BLENDER=1, which makes them fail instead).
# Blender's Python (bpy pins numpy < 2) lives in its own venv, apart from the engine's (.venv, numpy 2):
# the add-on only ever talks to the engine through a subprocess, so the two never share packages.
# Idempotent: does nothing when .venv-blender already has bpy 5.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

BPY_VERSION=5.0.1
VENV=.venv-blender

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$BPY_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version

sys.exit(0 if version("bpy") == sys.argv[1] and version("pytest") else 1)
PY
then
    echo "setup_blender_env: $VENV already has bpy $BPY_VERSION"
    exit 0
fi

# bpy 5.0.1 is built for CPython 3.11 only: say so here rather than let pip report "no matching distribution".
PYTHON=${BLENDER_VENV_PYTHON:-$(command -v python3.11 || command -v python3 || true)}
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "setup_blender_env: bpy $BPY_VERSION needs CPython 3.11, and ${PYTHON:-no python3.11 or python3} is not" \
        "3.11; install Python 3.11 or set BLENDER_VENV_PYTHON to one" >&2
    exit 1
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet "bpy==$BPY_VERSION" pytest
echo "setup_blender_env: $VENV ready (bpy $BPY_VERSION)"
