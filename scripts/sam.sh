#!/usr/bin/env bash
# Runs the AWS SAM CLI from its own environment (.tools/sam): its pins clash with the app's.
set -euo pipefail
cd "$(dirname "$0")/.."
SAM_CLI_VERSION=1.170.0
python=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
if [ ! -x .tools/sam/bin/sam ]; then
  .venv/bin/uv venv --quiet --python "$python" .tools/sam
  .venv/bin/uv pip install --quiet --python .tools/sam/bin/python "aws-sam-cli==${SAM_CLI_VERSION}"
fi
# `sam build` looks for python3.12 on PATH for the python3.12 build method.
export PATH="$(dirname "$python"):$PATH"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" SAM_CLI_TELEMETRY=0
exec .tools/sam/bin/sam "$@"
