"""Process settings (llm_proxy.settings): each function's model, the empty-variable rule, errors
that name the variable, the three ways to build settings, and the README's table, the template
and the layers kept in step with the models."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from llm_proxy import settings as settings_module
from llm_proxy.settings import (
    FUNCTION_SETTINGS,
    ApiSettings,
    AwsSettings,
    CostReportSettings,
    EnvSettings,
    MetricsSettings,
    SettingsError,
    SharedSettings,
    UsageReplaySettings,
)

from devstack.aws import load_template

REPO = Path(__file__).resolve().parents[2]
MODELS: tuple[type[EnvSettings], ...] = (
    AwsSettings,
    MetricsSettings,
    SharedSettings,
    ApiSettings,
    CostReportSettings,
    UsageReplaySettings,
)
# What the usage-replay function cannot do without.
REPLAY_REQUIRED = {"LLM_PROXY__USAGE_TABLE": "usage", "LLM_PROXY__USAGE_DLQ_URL": "queue"}

SHARED_DEFAULTS: dict[str, Any] = {
    "aws_endpoint_url": None,
    "metrics_namespace": None,
    "service_name": "llm-proxy",
    "environment": "aws",
    "secret_id": None,
    "secret_ttl_s": 300,
    "secret_max_staleness_s": 86_400,
    "usage_table": None,
    "usage_retention_days": 90,
    "rollups_table": None,
    "keys_table": None,
    "usage_dead_letter_queue": None,
    "usage_quarantine_queue": None,
    "budget_alert_share": 0.8,
}
API_DEFAULTS: dict[str, Any] = {
    **SHARED_DEFAULTS,
    "config_path": None,
    "llm_mode": "config",
    "default_model": None,
    "litellm_proxy_url": None,
    "ollama_api_base": "http://localhost:11434",
    "detailed_debug": False,
    "counters_table": None,
    "cache_table": None,
    "responses_table": None,
    "responses_retention_days": 30,
    "responses_bucket": None,
    "max_body_bytes": 6 * 1024 * 1024,
    "api_timeout_ms": 29_000,
    "timeout_margin_ms": 2_000,
    "openapi": False,
    "key_management": True,
    "after_response_extension": True,
    "usage_batch_wait_ms": 200,
    "output_tokens_over_limit": "cap",
    "max_request_retries": 3,
    "mock_testing_params": "off",
    "jwt_public_key_url": None,
    "jwt_audience": None,
    "jwt_issuer": None,
    "lambda_function_name": None,
    "lambda_runtime_api": None,
    "snapstart_before_checkpoint_path": None,
    "snapstart_after_restore_path": None,
}

# A value other than the default for every variable of ApiSettings, as the environment has it.
API_VARIABLES = {
    "LLM_PROXY__AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
    "POWERTOOLS_METRICS_NAMESPACE": "LLMProxy",
    "POWERTOOLS_SERVICE_NAME": "llm-proxy-test",
    "LLM_PROXY__ENV": "Local",
    "LLM_PROXY__SECRET_ID": "llm-proxy/provider-keys",
    "LLM_PROXY__SECRET_TTL_S": "60",
    "LLM_PROXY__SECRET_MAX_STALENESS_S": "600",
    "LLM_PROXY__USAGE_TABLE": "usage",
    "LLM_PROXY__USAGE_RETENTION_DAYS": "7",
    "LLM_PROXY__ROLLUPS_TABLE": "rollups",
    "LLM_PROXY__KEYS_TABLE": "keys",
    "LLM_PROXY__USAGE_DLQ_URL": "http://127.0.0.1:4566/000000000000/dlq",
    "LLM_PROXY__USAGE_QUARANTINE_URL": "http://127.0.0.1:4566/000000000000/quarantine",
    "LLM_PROXY__BUDGET_ALERT_SHARE": "0.5",
    "LLM_PROXY__CONFIG_PATH": "/var/task/other.yaml",
    "LLM_PROXY__LLM_MODE": "OLLAMA",
    "LLM_PROXY__DEFAULT_MODEL": "coder",
    "LLM_PROXY__LITELLM_PROXY_URL": "http://127.0.0.1:4000",
    "OLLAMA_API_BASE": "http://127.0.0.1:11434",
    "LLM_PROXY__DETAILED_DEBUG": "yes",
    "LLM_PROXY__COUNTERS_TABLE": "counters",
    "LLM_PROXY__CACHE_TABLE": "cache",
    "LLM_PROXY__RESPONSES_TABLE": "responses",
    "LLM_PROXY__RESPONSES_RETENTION_DAYS": "3",
    "LLM_PROXY__RESPONSES_BUCKET": "bucket",
    "LLM_PROXY__MAX_BODY_BYTES": "1024",
    "LLM_PROXY__API_TIMEOUT_MS": "60000",
    "LLM_PROXY__TIMEOUT_MARGIN_MS": "5000",
    "LLM_PROXY__OPENAPI": "TRUE",
    "LLM_PROXY__KEY_MANAGEMENT": "false",
    "LLM_PROXY__AFTER_RESPONSE_EXTENSION": "0",
    "LLM_PROXY__USAGE_BATCH_WAIT_MS": "50",
    "LLM_PROXY__OUTPUT_TOKENS_OVER_LIMIT": "Refuse",
    "LLM_PROXY__MAX_REQUEST_RETRIES": "1",
    "LLM_PROXY__MOCK_TESTING_PARAMS": "on",
    "JWT_PUBLIC_KEY_URL": "https://idp.example/jwks.json",
    "JWT_AUDIENCE": "llm-proxy",
    "JWT_ISSUER": "https://idp.example/",
    "AWS_LAMBDA_FUNCTION_NAME": "llm-proxy-api",
    "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
    "AWS_LWA_SNAPSTART_BEFORE_CHECKPOINT_PATH": "/_snapstart/before",
    "AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH": "/_snapstart/after",
}


def all_variables() -> set[str]:
    return {name for model in MODELS for name in model.variables().values()}


def clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in all_variables():
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_functions_defaults() -> None:
    assert ApiSettings.from_env({}).model_dump() == API_DEFAULTS
    assert SharedSettings.from_env({}).model_dump() == SHARED_DEFAULTS
    report = CostReportSettings.from_env({})
    assert report.model_dump() == {
        **SHARED_DEFAULTS,
        "report_bucket": None,
        "report_topic_arn": None,
    }
    assert report.report_prefix == "reports"
    replay = UsageReplaySettings.from_env(REPLAY_REQUIRED)
    assert (replay.usage_table, replay.usage_dead_letter_queue) == ("usage", "queue")


def test_every_variable_is_read_and_typed() -> None:
    settings = ApiSettings.from_env(API_VARIABLES)
    assert set(settings.variables().values()) == set(API_VARIABLES)
    assert settings.model_dump() == {
        "aws_endpoint_url": "http://127.0.0.1:4566",
        "metrics_namespace": "LLMProxy",
        "service_name": "llm-proxy-test",
        "environment": "local",
        "secret_id": "llm-proxy/provider-keys",
        "secret_ttl_s": 60,
        "secret_max_staleness_s": 600,
        "usage_table": "usage",
        "usage_retention_days": 7,
        "rollups_table": "rollups",
        "keys_table": "keys",
        "usage_dead_letter_queue": "http://127.0.0.1:4566/000000000000/dlq",
        "usage_quarantine_queue": "http://127.0.0.1:4566/000000000000/quarantine",
        "budget_alert_share": 0.5,
        "config_path": Path("/var/task/other.yaml"),
        "llm_mode": "ollama",
        "default_model": "coder",
        "litellm_proxy_url": "http://127.0.0.1:4000",
        "ollama_api_base": "http://127.0.0.1:11434",
        "detailed_debug": True,
        "counters_table": "counters",
        "cache_table": "cache",
        "responses_table": "responses",
        "responses_retention_days": 3,
        "responses_bucket": "bucket",
        "max_body_bytes": 1024,
        "api_timeout_ms": 60_000,
        "timeout_margin_ms": 5_000,
        "openapi": True,
        "key_management": False,
        "after_response_extension": False,
        "usage_batch_wait_ms": 50,
        "output_tokens_over_limit": "refuse",
        "max_request_retries": 1,
        "mock_testing_params": "on",
        "jwt_public_key_url": "https://idp.example/jwks.json",
        "jwt_audience": "llm-proxy",
        "jwt_issuer": "https://idp.example/",
        "lambda_function_name": "llm-proxy-api",
        "lambda_runtime_api": "127.0.0.1:9001",
        "snapstart_before_checkpoint_path": "/_snapstart/before",
        "snapstart_after_restore_path": "/_snapstart/after",
    }


def test_the_process_environment_reads_as_a_mapping_does(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_environment(monkeypatch)
    for name, value in API_VARIABLES.items():
        monkeypatch.setenv(name, value)
    expected = ApiSettings.from_env(API_VARIABLES)
    assert ApiSettings() == ApiSettings.from_env() == expected
    # Names are case-sensitive, and a field's own name is no variable.
    clear_environment(monkeypatch)
    monkeypatch.setenv("llm_proxy__secret_id", "lower")
    monkeypatch.setenv("secret_id", "by-name")
    assert ApiSettings.from_env().secret_id is None


def test_a_mapping_or_fields_read_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROXY__USAGE_TABLE", "from-the-environment")
    monkeypatch.setenv("LLM_PROXY__SECRET_TTL_S", "abc")
    assert ApiSettings.from_env({}).usage_table is None
    assert ApiSettings.of(secret_id="s").model_dump() == {**API_DEFAULTS, "secret_id": "s"}
    assert ApiSettings.of(config_path=Path("x.yaml"), secret_ttl_s="5").secret_ttl_s == 5
    with pytest.raises(SettingsError, match="ApiSettings has no field report_bucket"):
        ApiSettings.of(report_bucket="b")


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_an_empty_variable_is_unset(
    model: type[EnvSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = REPLAY_REQUIRED if model is UsageReplaySettings else {}
    defaults = model.from_env(base)
    for name in model.variables().values():
        if name not in base:
            assert model.from_env({**base, name: ""}) == defaults, name
    # The same from the process environment, every variable empty at once.
    clear_environment(monkeypatch)
    for name in model.variables().values():
        monkeypatch.setenv(name, base.get(name, ""))
    assert model.from_env() == defaults


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LLM_PROXY__SECRET_TTL_S", "abc"),
        ("LLM_PROXY__SECRET_MAX_STALENESS_S", "1d"),
        ("LLM_PROXY__USAGE_RETENTION_DAYS", "ninety"),
        ("LLM_PROXY__BUDGET_ALERT_SHARE", "80%"),
        ("LLM_PROXY__MAX_BODY_BYTES", "6MB"),
        ("LLM_PROXY__API_TIMEOUT_MS", "29s"),
        ("LLM_PROXY__OPENAPI", "maybe"),
        ("LLM_PROXY__KEY_MANAGEMENT", "sometimes"),
        ("LLM_PROXY__AFTER_RESPONSE_EXTENSION", "later"),
        ("LLM_PROXY__USAGE_BATCH_WAIT_MS", "200ms"),
        ("LLM_PROXY__DETAILED_DEBUG", "verbose"),
    ],
)
def test_a_bad_value_fails_at_init_naming_the_variable(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = f"ApiSettings: {name}='{value}': Input should be a valid"
    with pytest.raises(SettingsError, match=re.escape(expected)):
        ApiSettings.from_env({name: value})
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=re.escape(expected)):
        ApiSettings.from_env()
    with pytest.raises(SettingsError, match=re.escape(expected)):
        ApiSettings()


def test_a_choice_names_its_values_and_mock_testing_takes_local_or_forced() -> None:
    with pytest.raises(
        SettingsError, match="OUTPUT_TOKENS_OVER_LIMIT='clip': Input should be 'cap' or 'refuse'"
    ):
        ApiSettings.from_env({"LLM_PROXY__OUTPUT_TOKENS_OVER_LIMIT": "clip"})
    with pytest.raises(SettingsError, match="LLM_PROXY__MAX_REQUEST_RETRIES='11'"):
        ApiSettings.from_env({"LLM_PROXY__MAX_REQUEST_RETRIES": "11"})
    with pytest.raises(SettingsError) as refused:
        ApiSettings.from_env({"LLM_PROXY__MOCK_TESTING_PARAMS": "on"})
    assert str(refused.value) == (
        "ApiSettings: LLM_PROXY__MOCK_TESTING_PARAMS=on takes LLM_PROXY__ENV=local; a "
        "deployment that means it sets `forced`"
    )
    local = {"LLM_PROXY__MOCK_TESTING_PARAMS": "on", "LLM_PROXY__ENV": "local"}
    assert ApiSettings.from_env(local).allows_mock_testing_params
    forced = ApiSettings.from_env({"LLM_PROXY__MOCK_TESTING_PARAMS": "Forced"})
    assert forced.allows_mock_testing_params
    assert not ApiSettings.from_env({}).allows_mock_testing_params


def test_the_scheduled_handlers_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_environment(monkeypatch)
    monkeypatch.setenv("LLM_PROXY__BUDGET_ALERT_SHARE", "most")
    with pytest.raises(SettingsError, match="LLM_PROXY__BUDGET_ALERT_SHARE='most'"):
        handler_module("cost_report").handler({}, None)
    with pytest.raises(SettingsError) as failed:
        handler_module("usage_replay").handler({}, None)
    assert str(failed.value) == (
        "UsageReplaySettings: LLM_PROXY__USAGE_TABLE must be set; "
        "LLM_PROXY__USAGE_DLQ_URL must be set; "
        "LLM_PROXY__BUDGET_ALERT_SHARE='most': Input should be a valid number, "
        "unable to parse string as a number"
    )


def handler_module(function: str) -> ModuleType:
    path = REPO / "functions" / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"{function}_settings_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_derived_settings() -> None:
    assert ApiSettings.of().provider_deadline_s == 27.0
    assert ApiSettings.of(api_timeout_ms=1500).provider_deadline_s == 1.0
    assert ApiSettings.of(api_timeout_ms=0).provider_deadline_s is None
    assert ApiSettings.from_env({"LLM_PROXY__ENV": " LOCAL "}).is_local
    assert not ApiSettings.from_env({"LLM_PROXY__ENV": "aws"}).is_local
    # Outside Lambda the usage item follows the response; in Lambda it precedes it.
    assert ApiSettings.of().outlives_response
    assert not ApiSettings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "api"}).outlives_response


def test_settings_read_where_used_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "")
    assert MetricsSettings.current() == MetricsSettings.of()
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LLMProxy")
    current = MetricsSettings.current()
    assert (current.metrics_namespace, current.service_name) == ("LLMProxy", "llm-proxy")
    assert MetricsSettings.current() is current
    monkeypatch.setenv("LLM_PROXY__AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert AwsSettings.current().aws_endpoint_url == "http://127.0.0.1:4566"


def test_every_field_reads_one_named_variable() -> None:
    for model in MODELS:
        for name, field in model.model_fields.items():
            assert isinstance(field.validation_alias, str), (model.__name__, name)
        variables = list(model.variables().values())
        assert len(variables) == len(set(variables)), model.__name__
        assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in variables)


# --- the README's table, the template, the handlers, the layers ------------------------------


def readme_table() -> dict[str, tuple[str, str]]:
    """Each variable of README's "Process settings" table -> its "read by" and "default"."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Process settings", 1)[1]
    table = section[section.index("\n|") + 1 :].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        name_cell, read_by, default, _ = (cell.strip() for cell in line.strip("|").split("|"))
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", name_cell):
            rows[name] = (read_by, default)
    return rows


def model_of(variable: str) -> type[EnvSettings]:
    return next(m for m in MODELS if variable in m.variables().values())


def is_platform(model: type[EnvSettings], variable: str) -> bool:
    name = next(field for field, alias in model.variables().items() if alias == variable)
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and extra.get("platform") is True


def documented_default(model: type[EnvSettings], variable: str) -> str:
    name = next(field for field, alias in model.variables().items() if alias == variable)
    default = model.model_fields[name].default
    if default is None:
        return "none"
    return str(default).lower() if isinstance(default, bool) else str(default)


# "read by" in README's table -> the functions whose models read the variable.
READ_BY = {
    "all": set(FUNCTION_SETTINGS),
    "api": {"api", "keys"},
    "cost_report": {"cost_report"},
    "usage_replay": {"usage_replay"},
}
# Defaults the README words for the operator rather than as the model's value.
WORDED_DEFAULTS = {"LLM_PROXY__CONFIG_PATH": "the function's config.yaml (Gateway.from_settings)"}


def test_the_readme_table_lists_every_operator_variable_as_the_models_read_it() -> None:
    table = readme_table()
    operator_variables = {
        name
        for model in MODELS
        for name in model.variables().values()
        if not is_platform(model, name)
    }
    assert set(table) == operator_variables
    for name, (read_by, default) in table.items():
        functions = {
            function
            for function, model in FUNCTION_SETTINGS.items()
            if name in model.variables().values()
        }
        assert functions == READ_BY[read_by.split(" ")[0]], name
        if name not in WORDED_DEFAULTS:
            shown = default.split(" ")[0].strip("`")
            assert shown == documented_default(model_of(name), name), name


# Variables the template gives functions that configure something other than our settings.
READ_BY_OTHERS = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "litellm",
    "POWERTOOLS_LOG_LEVEL": "Powertools' logger",
    "LLM_PROXY__MASTER_KEY": "an os.environ/ reference of the config (secret first)",
    "AWS_LAMBDA_EXEC_WRAPPER": "Lambda: starts Lambda Web Adapter",
    "AWS_LWA_INVOKE_MODE": "Lambda Web Adapter",
    "AWS_LWA_READINESS_CHECK_PATH": "Lambda Web Adapter",
    "AWS_LWA_REMOVE_BASE_PATH": "Lambda Web Adapter",
    "PORT": "Lambda Web Adapter and run.sh (uvicorn's port)",
}


def test_each_function_model_reads_what_the_template_gives_the_function() -> None:
    template = load_template()
    seen = set()
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        function = Path(properties["CodeUri"]).name
        seen.add(function)
        variables = set(properties.get("Environment", {}).get("Variables", {}))
        read = set(FUNCTION_SETTINGS[function].variables().values())
        assert variables - set(READ_BY_OTHERS) <= read, function
    assert seen == set(FUNCTION_SETTINGS)


@pytest.mark.parametrize("function", sorted(FUNCTION_SETTINGS))
def test_each_handler_builds_its_functions_settings(function: str) -> None:
    source = (REPO / "functions" / function / "app.py").read_text(encoding="utf-8")
    model = FUNCTION_SETTINGS[function].__name__
    assert f"{model}.from_env()" in source
    others = {m.__name__ for m in FUNCTION_SETTINGS.values()} - {model}
    assert not any(other in source for other in others)


# Core modules that may read the process environment, and why.
ENVIRONMENT_READERS = {
    "settings.py": "the settings models",
    "__init__.py": "litellm's own variables, set with os.environ.setdefault before its import",
    "config.py": "the config's os.environ/NAME references (after the secret) and its "
    "environment_variables, as the LiteLLM proxy resolves and sets them",
    "cli.py": "the operator's client: LLM_PROXY_URL and LLM_PROXY_MASTER_KEY",
}


def test_only_the_settings_read_the_environment() -> None:
    core = REPO / "layers" / "core" / "llm_proxy"
    readers = set()
    for path in core.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                readers.add(str(path.relative_to(core)))
    assert readers <= set(ENVIRONMENT_READERS)


# Imported where installed, not needed: the dev environment has them, the layer need not.
OPTIONAL_IMPORTS = {"certifi": "botocore's CA bundle when installed, else its own"}


@pytest.mark.parametrize("function", ["cost_report", "usage_replay"])
def test_the_ops_layer_holds_what_the_scheduled_functions_import(function: str) -> None:
    """The cost-report and replay functions run from the core layer and the ops layer (plus the
    runtime's boto3): every distribution their handler imports is in the ops lock."""
    code = (
        "import importlib.metadata, json, sys; sys.path[:0] = ['layers/core', 'functions/"
        + function
        + "']; import app; tops = {m.split('.')[0] for m in list(sys.modules)}; "
        "found = importlib.metadata.packages_distributions(); "
        "print(json.dumps(sorted({d for t in tops - set(sys.stdlib_module_names) "
        "for d in found.get(t, [])})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    imported = {normalized(name) for name in json.loads(result.stdout)}
    imported -= {"llm-proxy", *OPTIONAL_IMPORTS}
    assert "pydantic-settings" in imported
    lock = (REPO / "layers" / "ops" / "requirements.txt").read_text(encoding="utf-8")
    locked = {normalized(line.split("==")[0]) for line in lock.splitlines() if "==" in line}
    assert imported <= locked


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_the_module_documents_the_empty_variable_rule() -> None:
    assert "an empty variable is unset" in (settings_module.__doc__ or "")
