# LLM Proxy: local gateway, tests, lint, build and benchmarks.
PYTHON_VERSION ?= 3.12
PY := .venv/bin/python
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: dev test lint build size bench profile report clients requirements clean

# The project environment: Python 3.12, dependencies installed from hash-pinned lock files.
.venv/.installed: requirements-dev.txt pyproject.toml
	scripts/bootstrap.sh
	@touch $@

dev: .venv/.installed
	$(PY) -m scripts.dev

test: .venv/.installed
	$(PY) -m pytest

lint: .venv/.installed
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/cfn-lint template.yaml
	scripts/sam.sh validate --lint
	scripts/checkov.sh

build: .venv/.installed
	scripts/sam.sh build

# The layers as `sam build` makes them (into build/layers), and their unzipped size.
size: .venv/.installed
	$(PY) scripts/build_layer.py size

# The gateway against the LiteLLM proxy and Portkey (installed under .tools on first use), a
# soak, the Lambda bill from its figures, keys and limits, the cost report, agent sessions with
# and without session affinity.
# `python -m scripts.bench --help` sizes it down.
bench: .venv/.installed
	$(PY) -m scripts.bench
	$(PY) -m scripts.bench.lambda_bill
	$(PY) -m scripts.bench.keys
	$(PY) -m scripts.bench.cost_report
	$(PY) -m scripts.bench.sessions

# Where the gateway's time goes under the bench's load (cProfile; see docs/performance.md).
profile: .venv/.installed
	$(PY) -m scripts.bench.profile

# The cost report of the running local stack (`make dev`), last 24 hours; the CLI takes a period.
report: .venv/.installed
	$(PY) -m scripts.report

# Claude Code, Codex CLI, OpenCode, Kilo Code's CLI and Cline's, as locked in scripts/clients,
# under .tools/clients: the agent CLIs tests/integration/test_agent_clients.py and
# test_coding_agent_clis.py run against the gateway (skipped without them). `npm install` with
# the lock, not `npm ci`: Kilo's lock lists platform packages its registry does not publish for
# every platform, which `npm ci` refuses; the versions and hashes are the lock's either way.
clients:
	rm -rf .tools/clients && mkdir -p .tools/clients
	cp scripts/clients/package.json scripts/clients/package-lock.json .tools/clients/
	cd .tools/clients && npm install --no-audit --no-fund

# Re-lock after changing pyproject.toml: runtime deps (the Lambda layer) and the dev set.
requirements:
	uv pip compile pyproject.toml --generate-hashes --python-version $(PYTHON_VERSION) --no-header -q -o layers/deps/requirements.txt
	uv pip compile pyproject.toml --group dev --generate-hashes --python-version $(PYTHON_VERSION) --no-header -q -o requirements-dev.txt
	uv pip compile layers/ops/requirements.in -c layers/deps/requirements.txt --generate-hashes --python-version $(PYTHON_VERSION) --no-header -q -o layers/ops/requirements.txt
	uv pip compile scripts/bench/litellm-proxy-requirements.in --generate-hashes --python-version $(PYTHON_VERSION) --no-header -q -o scripts/bench/litellm-proxy-requirements.txt

clean:
	rm -rf .venv .tools .aws-sam build .pytest_cache .mypy_cache .ruff_cache
