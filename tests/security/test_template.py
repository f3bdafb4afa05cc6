"""The stack's hardening, read from template.yaml: API Gateway throttling, a log group with a
retention and a reserved-concurrency parameter per function, key management in a function of
its own (the only writer of the keys table), and the usage dead-letter queue's redrive into a
quarantine. Then end to end on the moto stack: the api functions' app, built with their
template environment, serves no key management and no schema, while the keys function's app
makes a key that the api accepts."""

from __future__ import annotations

import ast
import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from devstack.aws import LocalAWS, load_template
from devstack.server import BackgroundServer
from tests.support.functions import load_function
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY

FUNCTION_TYPE = "AWS::Serverless::Function"
API_FUNCTIONS = ("ApiFunction", "ApiStreamFunction")
# What no function but KeysFunction may do to the keys table: mint, change, delete or list keys.
KEY_MANAGEMENT_ACTIONS = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:Scan",
)
# SAM policy templates that only read a table.
READ_ONLY_POLICY_TEMPLATES = {"DynamoDBReadPolicy"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def properties(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = template["Resources"][logical_id].get("Properties", {})
    return props


def variables(template: Mapping[str, Any], function: str) -> dict[str, Any]:
    found: dict[str, Any] = properties(template, function)["Environment"]["Variables"]
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def mentions(value: Any, logical_id: str) -> bool:
    """Whether a (possibly intrinsic) value refers to a resource: Ref, GetAtt or Sub."""
    if isinstance(value, dict):
        if value.get("Ref") == logical_id:
            return True
        if "Fn::GetAtt" in value and as_list(value["Fn::GetAtt"])[0] == logical_id:
            return True
        return any(mentions(inner, logical_id) for inner in value.values())
    if isinstance(value, list):
        return any(mentions(inner, logical_id) for inner in value)
    return isinstance(value, str) and f"${{{logical_id}" in value


def statements(template: Mapping[str, Any], function: str) -> list[dict[str, Any]]:
    """Every IAM statement a function's role gets: inline, and from managed policies it names."""
    found: list[dict[str, Any]] = []
    for policy in as_list(properties(template, function).get("Policies", [])):
        if isinstance(policy, dict) and "Statement" in policy:
            found.extend(as_list(policy["Statement"]))
        elif isinstance(policy, dict) and set(policy) == {"Ref"}:
            document = properties(template, policy["Ref"])["PolicyDocument"]
            found.extend(as_list(document["Statement"]))
        elif isinstance(policy, dict):
            # A SAM policy template: it writes a table unless it is a read-only one.
            for name, arguments in policy.items():
                writes = name not in READ_ONLY_POLICY_TEMPLATES
                actions = ["dynamodb:*"] if writes else ["dynamodb:GetItem"]
                resource = "*" if mentions(arguments, "KeysTable") else "arn:other"
                found.append({"Effect": "Allow", "Action": actions, "Resource": resource})
    return found


def allows(statement: Mapping[str, Any], action: str, resource: str) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    if not any(fnmatchcase(action, pattern) for pattern in as_list(statement["Action"])):
        return False
    return any(
        value == "*" or mentions(value, resource) for value in as_list(statement["Resource"])
    )


def managers_of_keys(template: Mapping[str, Any]) -> dict[str, set[str]]:
    """Function -> the key-management actions its policies allow on the keys table."""
    held: dict[str, set[str]] = {}
    for function in resources(template, FUNCTION_TYPE):
        actions = {
            action
            for statement in statements(template, function)
            for action in KEY_MANAGEMENT_ACTIONS
            if allows(statement, action, "KeysTable")
        }
        if actions:
            held[function] = actions
    return held


# --- API Gateway --------------------------------------------------------------------------


def test_the_stage_is_throttled_by_parameters(template: dict[str, Any]) -> None:
    api = properties(template, "Api")
    assert {
        "ResourcePath": "/*",
        "HttpMethod": "*",
        "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
    } in api["MethodSettings"]
    parameters = template["Parameters"]
    rate = parameters["ThrottlingRateLimit"]["Default"]
    burst = parameters["ThrottlingBurstLimit"]["Default"]
    assert 0 < rate <= burst


def test_the_usage_plan_is_optional_and_off_by_default(template: dict[str, Any]) -> None:
    assert template["Parameters"]["UsagePlan"]["Default"] == "false"
    assert resources(template, "AWS::ApiGateway::UsagePlan"), "no usage plan to turn on"
    for resource_type in ("UsagePlan", "ApiKey", "UsagePlanKey"):
        for logical_id, resource in resources(
            template, f"AWS::ApiGateway::{resource_type}"
        ).items():
            assert resource.get("Condition") == "HasUsagePlan", logical_id
    # API Gateway keys are not required: x-api-key carries Anthropic clients' gateway key.
    assert "ApiKeyRequired" not in properties(template, "Api").get("Auth", {})


def test_key_management_routes_to_the_keys_function_only(template: dict[str, Any]) -> None:
    routes = {
        (event["Properties"]["Path"], function)
        for function, resource in resources(template, FUNCTION_TYPE).items()
        for event in resource["Properties"].get("Events", {}).values()
        if event["Type"] == "Api"
    }
    assert ("/key/{proxy+}", "KeysFunction") in routes
    # Teams and users are key management too.
    for prefix in ("/team", "/user"):
        assert [route for route in routes if route[0].startswith(prefix)] == [
            (f"{prefix}/{{proxy+}}", "KeysFunction")
        ]
    assert [route for route in routes if route[0].startswith("/key")] == [
        ("/key/{proxy+}", "KeysFunction")
    ]
    keys_event = properties(template, "KeysFunction")["Events"]["KeysAny"]["Properties"]
    assert keys_event["RestApiId"] == {"Ref": "Api"}
    assert keys_event["Method"] == "ANY"
    assert ("/{proxy+}", "ApiFunction") in routes


# --- functions ----------------------------------------------------------------------------


def test_every_function_logs_to_a_group_of_its_own_with_a_retention(
    template: dict[str, Any],
) -> None:
    functions = resources(template, FUNCTION_TYPE)
    groups = []
    for function in functions:
        group = properties(template, function)["LoggingConfig"]["LogGroup"]
        assert set(group) == {"Ref"}, function
        resource = template["Resources"][group["Ref"]]
        assert resource["Type"] == "AWS::Logs::LogGroup", function
        assert resource["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        groups.append(group["Ref"])
    assert len(set(groups)) == len(functions)
    assert template["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_every_function_has_a_reserved_concurrency_parameter(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    for function in resources(template, FUNCTION_TYPE):
        reserved = properties(template, function)["ReservedConcurrentExecutions"]
        condition, value, unset = reserved["Fn::If"]
        parameter = value["Ref"]
        assert unset == {"Ref": "AWS::NoValue"}, function
        # The default leaves it unset: the account's unreserved pool, as before.
        assert parameters[parameter]["Default"] == -1, function
        assert template["Conditions"][condition] == {
            "Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, "-1"]}]
        }
    assert {"KeysFunction", "UsageReplayFunction", "CostReportFunction", *API_FUNCTIONS} <= set(
        resources(template, FUNCTION_TYPE)
    )


def test_only_the_keys_function_may_write_the_keys_table(template: dict[str, Any]) -> None:
    held = managers_of_keys(template)
    assert set(held) == {"KeysFunction"}
    assert held["KeysFunction"] >= {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Scan",
    }
    # The api functions still read a key to authenticate it.
    for function in API_FUNCTIONS:
        assert any(
            allows(statement, "dynamodb:GetItem", "KeysTable")
            for statement in statements(template, function)
        )
    # No stand-alone IAM resource grants it to anyone else either.
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::Role"):
            pytest.fail(f"{logical_id}: roles come from the functions' Policies")


def test_the_keys_function_reads_the_master_key_and_the_spend(template: dict[str, Any]) -> None:
    keys = properties(template, "KeysFunction")
    assert {
        "AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": {"Ref": "ProviderKeysSecret"}}
    } in keys["Policies"]
    assert any(
        allows(statement, "dynamodb:GetItem", "CountersTable")
        for statement in statements(template, "KeysFunction")
    )
    env = variables(template, "KeysFunction")
    assert env["LLM_PROXY__KEYS_TABLE"] == {"Ref": "KeysTable"}
    assert env["LLM_PROXY__COUNTERS_TABLE"] == {"Ref": "CountersTable"}
    assert "LLM_PROXY__USAGE_TABLE" not in env


def test_the_api_functions_serve_no_key_management_and_no_schema(
    template: dict[str, Any],
) -> None:
    for function in API_FUNCTIONS:
        env = variables(template, function)
        assert env["LLM_PROXY__KEY_MANAGEMENT"] == "false", function
        assert env.get("LLM_PROXY__OPENAPI", "false") == "false", function


def test_the_keys_function_only_wires_the_key_routes() -> None:
    source = (REPO / "functions" / "keys" / "app.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 80
    tree = ast.parse(source)
    assert [node for node in tree.body if isinstance(node, ast.ClassDef | ast.FunctionDef)] == []
    assert "create_app(gateway, KEY_ROUTES)" in source
    assert 'Mangum(app, lifespan="off")' in source


def test_the_keys_function_takes_the_master_key_from_where_the_api_does() -> None:
    def master_key(function: str) -> str:
        config = yaml.safe_load((REPO / "functions" / function / "config.yaml").read_text())
        return str(config["general_settings"]["master_key"])

    assert master_key("keys") == master_key("api")


# --- usage dead letters -------------------------------------------------------------------


def test_the_dead_letter_queue_redrives_into_the_quarantine(template: dict[str, Any]) -> None:
    redrive = properties(template, "UsageDeadLetterQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["UsageQuarantineQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "UsageDeadLetterMaxReceives"}
    # Enough scheduled replays that an outage of DynamoDB sets no valid record aside.
    receives = template["Parameters"]["UsageDeadLetterMaxReceives"]
    assert 1 <= receives["Default"] <= receives["MaxValue"] <= 1000
    quarantine = properties(template, "UsageQuarantineQueue")
    assert quarantine["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert quarantine["SqsManagedSseEnabled"] is True
    tls_only = properties(template, "UsageDeadLetterQueuePolicy")
    assert {"Ref": "UsageQuarantineQueue"} in tls_only["Queues"]


@pytest.mark.parametrize("function", [*API_FUNCTIONS, "UsageReplayFunction"])
def test_writers_of_usage_may_quarantine_records(template: dict[str, Any], function: str) -> None:
    env = variables(template, function)
    assert env["LLM_PROXY__USAGE_QUARANTINE_URL"] == {"Ref": "UsageQuarantineQueue"}
    assert any(
        allows(statement, "sqs:SendMessage", "UsageQuarantineQueue")
        for statement in statements(template, function)
    )


def test_the_replay_still_drains_the_dead_letter_queue(template: dict[str, Any]) -> None:
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage"):
        assert any(
            allows(statement, action, "UsageDeadLetterQueue")
            for statement in statements(template, "UsageReplayFunction")
        )


# --- end to end, on the moto stack --------------------------------------------------------


def template_environment(stack: LocalAWS, function: str) -> dict[str, str]:
    """A function's environment as deployed: its plain values, and the stack's resources."""
    plain = {
        name: value
        for name, value in variables(stack.template, function).items()
        if isinstance(value, str)
    }
    return {**plain, **stack.function_env(function)}


@contextlib.contextmanager
def function_environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ with the gateway's settings replaced by `env`, for the block."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("LLM_PROXY__")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def import_function(function: str, module_name: str, env: Mapping[str, str]) -> ModuleType:
    """functions/<function>/app.py, imported as Lambda imports it, with `env` as its environment."""
    with function_environment(env):
        return load_function(function, module_name)


@pytest.fixture(scope="module")
def served(aws_stack: LocalAWS) -> Iterator[dict[str, str]]:
    """Base URLs of the three apps as deployed: logical id -> URL."""
    apps = {
        "ApiFunction": ("api", "api_app_as_deployed"),
        "ApiStreamFunction": ("api", "api_stream_app_as_deployed"),
        "KeysFunction": ("keys", "keys_app_as_deployed"),
    }
    servers = {
        logical_id: BackgroundServer(
            import_function(folder, name, template_environment(aws_stack, logical_id)).app
        ).start()
        for logical_id, (folder, name) in apps.items()
    }
    yield {logical_id: server.url for logical_id, server in servers.items()}
    for server in servers.values():
        server.stop()


def call(url: str, method: str, path: str, key: str = MASTER_KEY, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, f"{url}{path}", headers=headers, timeout=30, **kwargs)


@pytest.mark.parametrize("function", API_FUNCTIONS)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/key/generate"),
        ("GET", "/key/list"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ],
)
def test_the_api_app_as_deployed_has_no_key_management_and_no_schema(
    served: dict[str, str], function: str, method: str, path: str
) -> None:
    body = {"models": ["demo"]} if method == "POST" else None
    response = call(served[function], method, path, json=body)
    assert response.status_code == 404, response.text


def test_a_key_made_by_the_keys_function_authenticates_on_the_api(
    served: dict[str, str],
) -> None:
    made = call(served["KeysFunction"], "POST", "/key/generate", json={"models": ["demo"]})
    assert made.status_code == 200, made.text
    key = made.json()["key"]
    assert key.startswith("sk-")

    models = call(served["ApiFunction"], "GET", "/v1/models", key=key)
    assert models.status_code == 200, models.text
    chat = call(
        served["ApiFunction"],
        "POST",
        "/v1/chat/completions",
        key=key,
        json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 200, chat.text
    info = call(served["KeysFunction"], "GET", "/key/info", params={"key": key})
    assert info.status_code == 200, info.text
    assert info.json()["info"]["models"] == ["demo"]
    # Only the master key manages keys, on the keys function too.
    assert call(served["KeysFunction"], "GET", "/key/list", key=key).status_code == 403


def test_the_keys_app_serves_key_management_alone(served: dict[str, str]) -> None:
    keys = served["KeysFunction"]
    assert call(keys, "GET", "/health").status_code == 200
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]:
        assert call(keys, method, path).status_code == 404, path
    assert call(keys, "GET", "/openapi.json").status_code == 404


def test_the_keys_handler_answers_an_api_gateway_event(aws_stack: LocalAWS) -> None:
    module = import_function(
        "keys", "keys_handler_under_test", template_environment(aws_stack, "KeysFunction")
    )
    event = json.loads((REPO / "events" / "list_models.json").read_text())
    event.update(resource="/key/{proxy+}", path="/key/list", pathParameters={"proxy": "list"})
    event["requestContext"].update(resourcePath="/key/{proxy+}", path="/prod/key/list")
    headers = {**event["headers"], "Authorization": f"Bearer {MASTER_KEY}"}
    event.update(headers=headers, multiValueHeaders={k: [v] for k, v in headers.items()})
    response = module.handler(event, None)
    assert response["statusCode"] == 200, response["body"]
    assert "keys" in json.loads(response["body"])


def test_both_api_functions_start_from_a_snapshot(template: dict[str, Any]) -> None:
    for function in API_FUNCTIONS:
        props = properties(template, function)
        assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}, function
        assert props["AutoPublishAlias"], function
    # The streaming function's hooks need Lambda Web Adapter 1.1.0: layer version 30 or later.
    adapter = template["Parameters"]["LambdaAdapterLayerVersion"]
    assert adapter["Default"] >= 30 and adapter["MinValue"] >= 30
    hooks = {
        name: value
        for name, value in variables(template, "ApiStreamFunction").items()
        if name.startswith("AWS_LWA_SNAPSTART_")
    }
    assert set(hooks) == {
        "AWS_LWA_SNAPSTART_BEFORE_CHECKPOINT_PATH",
        "AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH",
    }
    assert not any(name.startswith("AWS_LWA_") for name in variables(template, "ApiFunction"))


@pytest.mark.parametrize("function", API_FUNCTIONS)
def test_no_invocation_reaches_a_snapstart_hook(
    template: dict[str, Any], served: dict[str, str], function: str
) -> None:
    stream_variables = variables(template, "ApiStreamFunction")
    for name in ("BEFORE_CHECKPOINT", "AFTER_RESTORE"):
        path = stream_variables[f"AWS_LWA_SNAPSTART_{name}_PATH"]
        # Every invocation Lambda Web Adapter relays carries x-amzn-lambda-context; the
        # buffered function has no hook routes at all.
        relayed = {"x-amzn-lambda-context": "{}", "Authorization": f"Bearer {MASTER_KEY}"}
        response = httpx.post(f"{served[function]}{path}", headers=relayed, timeout=30)
        assert response.status_code == 404, response.text
        if function == "ApiFunction":
            assert call(served[function], "POST", path).status_code == 404
