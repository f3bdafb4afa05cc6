"""errors: the catalogue of error codes. The README's error table lists every code a client can
get, under the status the catalogue answers it with, and the core makes its errors from the
catalogue only."""

from __future__ import annotations

import ast
import re

import pytest
from llm_proxy import errors
from llm_proxy.errors import CATALOGUE, DomainError, ErrorCode, ProxyError, as_proxy_error

from tests.support.paths import REPO

CORE = REPO / "layers" / "core" / "llm_proxy"
# What a usage item records for a client that hung up: never answered to anyone.
NEVER_SENT = {"client_disconnected"}


def readme_table() -> dict[str, int]:
    """Each code the README's error table lists, with the status of its row."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Errors", 1)[1].split("\n\n", 3)[2]
    listed: dict[str, int] = {}
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            for code in re.findall(r"`([a-z_]+)`", cells[2]):
                assert code not in listed, f"{code} is listed twice"
                listed[code] = int(cells[0])
    return listed


def test_the_readme_lists_every_code_under_its_status() -> None:
    listed = readme_table()
    catalogue = {code: kind.status for code, kind in CATALOGUE.items() if code not in NEVER_SENT}
    assert listed == catalogue


def test_each_code_is_one_entry_and_makes_its_error() -> None:
    entries = [value for value in vars(errors).values() if isinstance(value, ErrorCode)]
    assert len({entry.code for entry in entries}) == len(entries) == len(CATALOGUE)
    made = errors.MODEL_NOT_FOUND("No such model.", param="model", headers={"x": "1"})
    assert (made.status, made.error_type, made.code, made.param) == (
        404,
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    assert made.body() == {
        "error": {
            "message": "No such model.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert made.headers == {"x": "1"}


def test_a_domain_error_is_answered_with_its_entry() -> None:
    error = DomainError(errors.INVALID_PERIOD, "'end' is before 'start'.", param="end")
    assert isinstance(error, ValueError) and str(error) == "'end' is before 'start'."
    answered = as_proxy_error(error, "any-model")
    assert (answered.status, answered.code, answered.param) == (400, "invalid_period", "end")


def test_errors_keep_their_code_in_anthropics_envelope() -> None:
    body = errors.anthropic_body(errors.RATE_LIMIT_EXCEEDED("Slow down."))
    assert body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Slow down.",
            "code": "rate_limit_exceeded",
            "param": None,
        },
    }


@pytest.mark.parametrize(
    ("status", "code"), [(400, "invalid_value"), (502, "provider_error"), (429, "budget_exceeded")]
)
def test_a_failure_after_a_stream_started_is_the_providers(status: int, code: str) -> None:
    late = errors.late_failure(CATALOGUE[code]("failed"))
    assert late.status == (502 if status == 400 else status)


def test_no_module_but_the_catalogue_makes_a_proxy_error() -> None:
    offenders = []
    for path in CORE.rglob("*.py"):
        if path == CORE / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "ProxyError":
                offenders.append(f"{path.relative_to(CORE)}:{node.lineno}")
    assert offenders == []


def test_a_proxy_error_without_an_entry_is_no_part_of_the_api() -> None:
    # Only a status the web framework raises on its own falls outside the catalogue; it keeps
    # its number as the code.
    framework = errors.framework_error(418, "I'm a teapot.", {})
    assert isinstance(framework, ProxyError) and framework.code == "418"
