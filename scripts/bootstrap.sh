#!/usr/bin/env bash
# Creates .venv on Python 3.12 and installs the hash-pinned dependencies (litellm is locked to
# an exact version and its hashes are checked: releases of it have been compromised before).
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  # pyenv shims exist for versions that are not selected, so each candidate must really run.
  for candidate in "${PYTHON:-}" "$HOME"/.pyenv/versions/3.12*/bin/python3.12 python3.12 /usr/bin/python3.12; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

python=$(find_python) || { echo "Python 3.12 is required (set PYTHON=/path/to/python3.12)" >&2; exit 1; }
# uv from PATH, or installed with pip into a private environment of its own.
uv=$(command -v uv || true)
if [ -z "$uv" ]; then
  [ -x .tools/uv/bin/uv ] || { "$python" -m venv .tools/uv && .tools/uv/bin/python -m pip install --quiet "uv==0.13.9"; }
  uv=.tools/uv/bin/uv
fi
"$uv" venv --quiet --allow-existing --python "$python" .venv
"$uv" pip install --quiet --python .venv/bin/python --require-hashes -r requirements-dev.txt
"$uv" pip install --quiet --python .venv/bin/python --no-deps -e .
echo "environment ready: .venv ($(.venv/bin/python --version))"
