"""A key's per-model budgets, budget windows and budget fallbacks (its own, and the operator's
`router_settings.budget_fallbacks`), set with LiteLLM's field names and driven to exhaustion;
keys of a team or a user. Against the gateway under uvicorn, litellm, the OpenAI-format double
and DynamoDB (moto).

Prices: `big` and `other` cost 0.001 a prompt token and 0.002 a completion token, `small` a
tenth of that. The double answers 6 prompt + 5 completion tokens ($0.016 on `big`, $0.0016 on
`small`), and a request of MESSAGES with max_tokens 1 is reserved at 14 prompt tokens + 1
(the same $0.016 on `big`): one request spends a $0.016 budget exactly."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.configs import MASTER_KEY_FROM_SECRET, gateway_config, openai_double
from tests.support.gateway_http import generated, new_team, new_user, post
from tests.support.stack import MASTER_KEY, usage_item

MESSAGES = [{"role": "user", "content": "Write a haiku about gateways"}]
BIG_PRICE = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
SMALL_PRICE = {"input_cost_per_token": 0.0001, "output_cost_per_token": 0.0002}
ONE_BIG, ONE_SMALL = 0.016, 0.0016
DEPLOYMENTS = (
    openai_double("big", "openai/big-model", **BIG_PRICE),
    openai_double("other", "openai/other-model", **BIG_PRICE),
    openai_double("small", "openai/small-model", **SMALL_PRICE),
)
ROUTER = {"num_retries": 0, "cooldown_time": 0}
CONFIG = gateway_config(
    *DEPLOYMENTS, router_settings=ROUTER, general_settings=MASTER_KEY_FROM_SECRET
)
# The operator's downgrade: `big` served by the first of these the caller may use.
OPERATOR_FALLBACKS = {"big": ["other", "small"]}
CONFIG_WITH_FALLBACKS = gateway_config(
    *DEPLOYMENTS,
    router_settings={**ROUTER, "budget_fallbacks": OPERATOR_FALLBACKS},
    general_settings=MASTER_KEY_FROM_SECRET,
)


@pytest.fixture(scope="module")
def url(gateway_for: Callable[..., str]) -> str:
    return gateway_for(CONFIG)


@pytest.fixture(scope="module")
def downgrading_url(gateway_for: Callable[..., str]) -> str:
    return gateway_for(CONFIG_WITH_FALLBACKS)


def chat(url: str, key: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 1}
    return post(url, "/v1/chat/completions", body, key)


def info(url: str, token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{url}/key/info",
        params={"key": token},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()["info"]
    return shown


def settled(url: str, token: str, spend: float) -> dict[str, Any]:
    """The key's info once its spend reads `spend` (settled after the answer)."""
    deadline = time.monotonic() + 10
    while True:
        shown = info(url, token)
        if shown["spend"] == pytest.approx(spend) or time.monotonic() > deadline:
            assert shown["spend"] == pytest.approx(spend), shown
            return shown
        time.sleep(0.1)


def served(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def budget_exceeded(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["type"], error["code"]) == ("budget_exceeded", "budget_exceeded")
    return error


def cost_of(aws: dict[str, str], response: httpx.Response) -> float:
    item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
    return float(item["cost_usd"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- per-model budgets ---------------------------------------------------------------------------


def test_a_spent_per_model_budget_refuses_its_group_only(url: str) -> None:
    budgets = {"big": {"budget_limit": ONE_BIG, "time_period": "1d"}}
    made = generated(url, model_max_budget=budgets)
    assert made["model_max_budget"] == budgets
    served(chat(url, made["key"], "big"))
    settled(url, made["token"], ONE_BIG)

    error = budget_exceeded(chat(url, made["key"], "big"))
    assert "this key's budget for model 'big'" in error["message"]
    served(chat(url, made["key"], "other"))

    shown = settled(url, made["token"], 2 * ONE_BIG)
    assert shown["model_max_budget"] == budgets
    assert shown["model_spend"] == {"big": pytest.approx(ONE_BIG)}


def test_litellms_budget_config_names_are_taken_and_stored_as_ours(url: str) -> None:
    sent = {"big": {"max_budget": 2, "budget_duration": "30d"}, "small": {"budget_limit": 0}}
    made = generated(url, model_max_budget=sent)
    stored = {"big": {"budget_limit": 2.0, "time_period": "30d"}, "small": {"budget_limit": 0.0}}
    assert made["model_max_budget"] == stored
    # No time_period: one budget for ever; $0 refuses the group from the first request.
    budget_exceeded(chat(url, made["key"], "small"))
    served(chat(url, made["key"], "big"))


# -- the key's own budget fallbacks --------------------------------------------------------------


def test_a_keys_budget_fallback_serves_a_spent_group_at_the_fallbacks_price(
    url: str, aws: dict[str, str]
) -> None:
    made = generated(
        url,
        models=["big", "small"],
        model_max_budget={"big": {"budget_limit": ONE_BIG}, "small": {"budget_limit": 0.002}},
        # `other` is not among the key's models: skipped.
        budget_fallbacks={"big": ["other", "small"]},
    )
    first = chat(url, made["key"], "big")
    served(first)
    assert cost_of(aws, first) == pytest.approx(ONE_BIG)
    settled(url, made["token"], ONE_BIG)

    downgraded = chat(url, made["key"], "big")
    answer = served(downgraded)
    assert answer["model"] == "small-model"
    assert cost_of(aws, downgraded) == pytest.approx(ONE_SMALL)
    shown = settled(url, made["token"], ONE_BIG + ONE_SMALL)
    assert shown["model_spend"] == {
        "big": pytest.approx(ONE_BIG),
        "small": pytest.approx(ONE_SMALL),
    }

    # `small` has no room for another request within its own budget: nothing serves `big`.
    error = budget_exceeded(chat(url, made["key"], "big"))
    assert "model 'big'" in error["message"]


# -- several budget windows ----------------------------------------------------------------------


def test_each_budget_window_refuses_while_spent_and_resets_on_its_own(url: str) -> None:
    windows = [
        {"budget_duration": "3s", "max_budget": ONE_BIG},
        {"budget_duration": "30d", "max_budget": 2 * ONE_BIG},
    ]
    made = generated(url, budget_limits=windows)
    # Start at the beginning of a 3 s window: the first two requests fall in the same one.
    time.sleep(3 - time.time() % 3)
    served(chat(url, made["key"], "big"))
    shown = settled(url, made["token"], ONE_BIG)
    short = budget_exceeded(chat(url, made["key"], "big"))
    assert "3s budget" in short["message"]
    assert 1 <= int(post_retry_after(url, made["key"])) <= 3

    assert [
        {name: window[name] for name in ("budget_duration", "max_budget", "spend")}
        for window in shown["budget_limits"]
    ] == [{**window, "spend": pytest.approx(ONE_BIG)} for window in windows]
    assert all(window["reset_at"] for window in shown["budget_limits"])

    # The short window resets, the long one has room for one more.
    time.sleep(3 - time.time() % 3 + 0.2)
    served(chat(url, made["key"], "big"))
    settled(url, made["token"], 2 * ONE_BIG)
    time.sleep(3 - time.time() % 3 + 0.2)
    long = budget_exceeded(chat(url, made["key"], "big"))
    assert "30d budget" in long["message"]


def post_retry_after(url: str, key: str) -> str:
    response = chat(url, key, "big")
    budget_exceeded(response)
    return response.headers["retry-after"]


# -- the operator's budget fallbacks -------------------------------------------------------------


def test_the_operators_budget_fallback_serves_a_listed_group_past_a_spent_budget(
    downgrading_url: str, aws: dict[str, str]
) -> None:
    url = downgrading_url
    # `other` (listed first) is not among the key's models: `small` serves.
    made = generated(url, max_budget=ONE_BIG, models=["big", "small"])
    served(chat(url, made["key"], "big"))
    settled(url, made["token"], ONE_BIG)

    downgraded = chat(url, made["key"], "big")
    assert served(downgraded)["model"] == "small-model"
    assert cost_of(aws, downgraded) == pytest.approx(ONE_SMALL)
    # Counted in the key's spend, past its budget: the operator chose to serve it.
    settled(url, made["token"], ONE_BIG + ONE_SMALL)

    # `small` itself is not listed: the spent budget refuses it.
    budget_exceeded(chat(url, made["key"], "small"))


def test_the_operators_budget_fallback_still_holds_the_keys_rate_limit(
    downgrading_url: str,
) -> None:
    url = downgrading_url
    made = generated(url, max_budget=ONE_BIG, rpm_limit=2)
    served(chat(url, made["key"], "big"))
    served(chat(url, made["key"], "big"))
    limited = chat(url, made["key"], "big")
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


def test_an_answer_served_by_a_budget_fallback_is_not_cached_as_the_model_asked_for(
    gateway_for: Callable[..., str],
) -> None:
    url = gateway_for(
        gateway_config(
            *DEPLOYMENTS,
            router_settings={**ROUTER, "budget_fallbacks": OPERATOR_FALLBACKS},
            litellm_settings={"cache": True},
            general_settings=MASTER_KEY_FROM_SECRET,
        )
    )
    made = generated(url, max_budget=ONE_BIG, models=["big", "small"])
    served(chat(url, made["key"], "big"))
    question = {
        "model": "big",
        "messages": [{"role": "user", "content": f"A new question {uuid.uuid4().hex}"}],
        "max_tokens": 1,
    }
    downgraded = post(url, "/v1/chat/completions", question, made["key"])
    assert served(downgraded)["model"] == "small-model"
    # With room in the budget again, the same question to `big` is `big`'s to answer.
    assert post(url, "/key/update", {"key": made["token"], "max_budget": 1}).status_code == 200
    again = post(url, "/v1/chat/completions", question, made["key"])
    assert served(again)["model"] == "big-model"
    assert again.headers["x-litellm-cache-hit"] == "false"


# -- keys of a team or a user ---------------------------------------------------------------------


def test_a_key_of_a_team_needs_the_team_and_its_models(url: str) -> None:
    unknown = post(url, "/key/generate", {"team_id": unique("no-team")})
    assert unknown.status_code == 404, unknown.text
    assert (unknown.json()["error"]["code"], unknown.json()["error"]["param"]) == (
        "team_not_found",
        "team_id",
    )
    team = new_team(url, unique("team"), models=["big", "small"])
    gone = new_team(url, unique("team"), deleted=True)
    assert post(url, "/key/generate", {"team_id": gone}).status_code == 404

    outside = post(url, "/key/generate", {"team_id": team, "models": ["big", "other"]})
    assert outside.status_code == 403, outside.text
    error = outside.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_allowed", "models")
    assert "may not use model(s) other," in error["message"]

    made = generated(url, team_id=team, models=["big"])
    assert made["team_id"] == team
    update = post(url, "/key/update", {"key": made["token"], "models": ["other"]})
    assert update.status_code == 403 and update.json()["error"]["code"] == "model_not_allowed"
    moved = post(url, "/key/update", {"key": made["token"], "team_id": unique("no-team")})
    assert moved.status_code == 404 and moved.json()["error"]["code"] == "team_not_found"
    assert info(url, made["token"])["team_id"] == team
    # A key with no models of its own takes the team's.
    assert generated(url, team_id=team)["models"] == []


def test_a_keys_user_is_a_tag_unless_it_names_a_deleted_user(url: str) -> None:
    assert generated(url, user_id=unique("dev"))["user_id"]
    user = new_user(url, unique("dev"))
    assert generated(url, user_id=user)["user_id"] == user
    gone = new_user(url, unique("dev"), deleted=True)
    refused = post(url, "/key/generate", {"user_id": gone})
    assert refused.status_code == 404, refused.text
    assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == (
        "user_not_found",
        "user_id",
    )


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"model_max_budget": ["big"]}, "invalid_value", "model_max_budget"),
        ({"model_max_budget": {"big": 5}}, "invalid_value", "model_max_budget.big"),
        ({"model_max_budget": {"big": {}}}, "invalid_value", "model_max_budget.big.budget_limit"),
        (
            {"model_max_budget": {"big": {"budget_limit": -1}}},
            "invalid_value",
            "model_max_budget.big.budget_limit",
        ),
        (
            {"model_max_budget": {"big": {"budget_limit": "5"}}},
            "invalid_value",
            "model_max_budget.big.budget_limit",
        ),
        (
            {"model_max_budget": {"big": {"budget_limit": 1, "time_period": "soon"}}},
            "invalid_duration",
            "model_max_budget.big.time_period",
        ),
        (
            {"model_max_budget": {"big": {"budget_limit": 1, "max_budget": 2}}},
            "invalid_value",
            "model_max_budget.big.max_budget",
        ),
        (
            {"model_max_budget": {"big": {"budget_limit": 1, "rpm_limit": 2}}},
            "invalid_value",
            "model_max_budget.big.rpm_limit",
        ),
        ({"budget_limits": {"budget_duration": "1d"}}, "invalid_value", "budget_limits"),
        (
            {"budget_limits": [{"max_budget": 1}]},
            "invalid_value",
            "budget_limits[0].budget_duration",
        ),
        (
            {"budget_limits": [{"budget_duration": "1d"}]},
            "invalid_value",
            "budget_limits[0].max_budget",
        ),
        (
            {"budget_limits": [{"budget_duration": "1 week", "max_budget": 1}]},
            "invalid_duration",
            "budget_limits[0].budget_duration",
        ),
        (
            {"budget_limits": [{"budget_duration": "1d", "max_budget": 1, "soft_budget": 1}]},
            "invalid_value",
            "budget_limits[0].soft_budget",
        ),
        (
            {
                "budget_limits": [
                    {"budget_duration": "60s", "max_budget": 1},
                    {"budget_duration": "1m", "max_budget": 2},
                ]
            },
            "invalid_value",
            "budget_limits[1].budget_duration",
        ),
        (
            {
                "budget_limits": [
                    {"budget_duration": f"{n + 1}d", "max_budget": 1} for n in range(11)
                ]
            },
            "invalid_value",
            "budget_limits",
        ),
        ({"budget_fallbacks": {"big": "small"}}, "invalid_value", "budget_fallbacks.big"),
        ({"budget_fallbacks": {"big": []}}, "invalid_value", "budget_fallbacks.big"),
        ({"budget_fallbacks": {"big": ["big"]}}, "invalid_value", "budget_fallbacks.big"),
        ({"budget_fallbacks": {"big": [""]}}, "invalid_value", "budget_fallbacks.big"),
        ({"budget_fallbacks": {"big": ["small"] * 6}}, "invalid_value", "budget_fallbacks.big"),
        ({"budget_fallbacks": ["small"]}, "invalid_value", "budget_fallbacks"),
    ],
)
def test_a_malformed_budget_field_is_refused_naming_it(
    url: str, fields: dict[str, Any], code: str, param: str
) -> None:
    for path, body in (
        ("/key/generate", fields),
        ("/key/update", {"key": generated(url)["token"], **fields}),
    ):
        response = post(url, path, body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == (code, param), error
        assert param.split(".")[0].split("[")[0] in error["message"]


def test_budget_fields_are_updated_echoed_and_cleared(url: str) -> None:
    made = generated(url)
    fields = {
        "model_max_budget": {"big": {"budget_limit": 1.5, "time_period": "1h"}},
        "budget_limits": [{"budget_duration": "1d", "max_budget": 3.0}],
        "budget_fallbacks": {"big": ["small"]},
    }
    updated = post(url, "/key/update", {"key": made["token"], **fields})
    assert updated.status_code == 200, updated.text
    assert {name: updated.json()[name] for name in fields} == fields
    shown = info(url, made["token"])
    assert shown["model_max_budget"] == fields["model_max_budget"]
    assert shown["budget_fallbacks"] == fields["budget_fallbacks"]
    assert shown["budget_limits"][0]["max_budget"] == 3.0
    assert shown["model_spend"] == {"big": 0.0}

    rotated = post(url, f"/key/{made['token']}/regenerate", {"budget_fallbacks": None})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["budget_fallbacks"] == {}
    assert rotated.json()["model_max_budget"] == fields["model_max_budget"]
