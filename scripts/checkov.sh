#!/usr/bin/env bash
# Runs checkov from its own environment (.tools/checkov): its boto3 pin clashes with sam-cli's.
# Skips live in .checkov.yaml and in the template's Metadata, each with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV_VERSION=3.3.30
python=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
if [ ! -x .tools/checkov/bin/checkov ]; then
  .venv/bin/uv venv --quiet --python "$python" .tools/checkov
  .venv/bin/uv pip install --quiet --python .tools/checkov/bin/python "checkov==${CHECKOV_VERSION}"
fi
exec .tools/checkov/bin/checkov --config-file .checkov.yaml "$@"
