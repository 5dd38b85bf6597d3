#!/usr/bin/env bash
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

# bpy 5.0.1 is built for CPython 3.11 only.
PYTHON=${BLENDER_VENV_PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet "bpy==$BPY_VERSION" pytest
echo "setup_blender_env: $VENV ready (bpy $BPY_VERSION)"
