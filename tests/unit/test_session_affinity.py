"""Session affinity's choice (rendezvous hashing over the deployments the Router offers), the
session identifiers it reads, and the Router arguments it leaves LiteLLM."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any

import pytest
from llm_proxy.access.auth import Caller
from llm_proxy.pipeline.apis import APIS, ApiName
from llm_proxy.pipeline.request import GatewayRequest
from llm_proxy.pipeline.session_affinity import (
    AffinitySettings,
    Session,
    deployment_id,
    for_router,
    session_id,
    session_of,
)

ON = AffinitySettings(every_group=True)


def deployments(*ids: str, weights: dict[str, float] | None = None) -> list[dict[str, Any]]:
    weights = weights or {}
    return [
        {
            "model_name": "claude",
            "litellm_params": {
                "model": "anthropic/x",
                **({"weight": weights[i]} if i in weights else {}),
            },
            "model_info": {"id": i},
        }
        for i in ids
    ]


def chosen(session: Session, offered: list[dict[str, Any]], failed: Collection[str] = ()) -> str:
    narrowed = session.narrow("claude", offered, failed)
    assert len(narrowed) == 1
    return deployment_id(narrowed[0])


def test_a_session_gets_the_same_deployment_whatever_the_order_or_the_process() -> None:
    # Fresh objects each time, as another container would make them: nothing is remembered.
    first = chosen(Session("key-1", "s-1", ON), deployments("a", "b", "c"))
    for order in (("c", "b", "a"), ("b", "a", "c")):
        assert (
            chosen(Session("key-1", "s-1", AffinitySettings(every_group=True)), deployments(*order))
            == first
        )


def test_sessions_spread_over_the_deployments_by_weight() -> None:
    even = Counter(chosen(Session("k", f"s-{n}", ON), deployments("a", "b")) for n in range(2000))
    assert 900 < even["a"] < 1100
    weighted = deployments("a", "b", weights={"a": 3})
    heavy = Counter(chosen(Session("k", f"s-{n}", ON), weighted) for n in range(2000))
    assert 1400 < heavy["a"] < 1600


def test_two_keys_with_one_session_id_are_placed_independently() -> None:
    offered = deployments("a", "b")
    differ = sum(
        chosen(Session("key-1", f"s-{n}", ON), offered)
        != chosen(Session("key-2", f"s-{n}", ON), offered)
        for n in range(1000)
    )
    assert 400 < differ < 600


def test_a_deployment_out_of_the_draw_moves_only_its_own_sessions() -> None:
    everyone = deployments("a", "b", "c")
    for n in range(300):
        session = Session("k", f"s-{n}", ON)
        home = chosen(session, everyone)
        # Cooling down (not offered) or failed this request: the next in the session's order.
        others = [d for d in everyone if deployment_id(d) != home]
        elsewhere = chosen(session, others)
        assert elsewhere != home
        assert chosen(session, everyone, failed={home}) == elsewhere
        # One the session was not on leaves it where it was.
        gone = next(d for d in others if deployment_id(d) != elsewhere)
        assert chosen(session, [d for d in everyone if d is not gone]) == home


def test_with_every_deployment_failed_the_router_keeps_its_whole_choice() -> None:
    offered = deployments("a", "b")
    assert Session("k", "s", ON).narrow("claude", offered, {"a", "b"}) == offered
    assert Session("k", "s", ON).narrow("claude", [], set()) == []


def test_affinity_applies_to_the_groups_the_config_names() -> None:
    settings = AffinitySettings.from_router_settings(
        {
            "model_group_affinity_config": {
                "claude": ["session_affinity"],
                "gpt": ["deployment_affinity"],
            }
        }
    )
    assert settings.enabled and settings.applies_to("claude")
    assert not settings.applies_to("gpt") and not settings.applies_to("other")
    offered = deployments("a", "b")
    assert Session("k", "s", settings).narrow("gpt", offered, set()) == offered
    every = AffinitySettings.from_router_settings(
        {
            "optional_pre_call_checks": ["session_affinity"],
            "model_group_affinity_config": {"gpt": []},
        }
    )
    assert every.applies_to("claude") and not every.applies_to("gpt")
    assert not AffinitySettings.from_router_settings({}).enabled


@pytest.mark.parametrize(
    ("api", "body", "headers", "expected"),
    [
        (
            "messages",
            {"metadata": {"user_id": "user_ab_account_cd_session_s-9"}},
            {"x-claude-code-session-id": "h"},
            "h",
        ),
        (
            "responses",
            {"prompt_cache_key": "p", "metadata": {"session_id": "m"}, "user": "u"},
            {},
            "p",
        ),
        (
            "chat",
            {"metadata": {"session_id": "m"}, "user": "u"},
            {"x-litellm-session-id": "l"},
            "m",
        ),
        ("chat", {"user": "u"}, {"session_id": "codex"}, "u"),
        ("messages", {"metadata": {"user_id": "user_ab_account_cd_session_s-9"}}, {}, "s-9"),
        (
            "messages",
            {"metadata": {"user_id": '{"device_id": "d", "session_id": "s-10"}'}},
            {},
            "s-10",
        ),
        # Messages has no `user`, no prompt_cache_key; a user_id with no session names none.
        ("messages", {"metadata": {"user_id": "someone"}, "user": "u"}, {}, None),
        ("chat", {}, {"x-litellm-session-id": "l", "session_id": "c"}, "l"),
        ("responses", {}, {"session-id": "c"}, "c"),
        ("chat", {"prompt_cache_key": 5, "user": " "}, {}, None),
        ("embeddings", {"prompt_cache_key": "p", "user": "u"}, {}, "u"),
    ],
)
def test_the_first_session_identifier_present_names_the_session(
    api: str, body: dict[str, Any], headers: dict[str, str], expected: str | None
) -> None:
    assert session_id(api, body, headers) == expected


def test_the_router_gets_no_session_check_of_its_own_and_keeps_the_others() -> None:
    kwargs = for_router(
        {
            "optional_pre_call_checks": ["session_affinity", "prompt_caching"],
            "model_group_affinity_config": {
                "claude": ["session_affinity", "deployment_affinity"],
                "gpt": ["session_affinity"],
            },
            "deployment_affinity_ttl_seconds": 60,
        }
    )
    assert kwargs == {
        "optional_pre_call_checks": ["prompt_caching"],
        "model_group_affinity_config": {"claude": ["deployment_affinity"], "gpt": []},
        "deployment_affinity_ttl_seconds": 60,
    }
    assert for_router({"optional_pre_call_checks": ["session_affinity"]}) == {}


def request(
    api: ApiName, body: dict[str, Any], sent: dict[str, Any] | None = None
) -> GatewayRequest:
    return GatewayRequest(
        endpoint="/",
        api=APIS[api],
        caller=Caller(key_id="key-1"),
        body=body,
        request_id="r",
        model="claude",
        agent=None,
        sent=sent,
    )


def test_a_request_has_a_session_where_affinity_is_on_and_a_model_is_called() -> None:
    header = {"x-claude-code-session-id": "s-1"}
    assert session_of(request("chat", {}), header, ON) == Session("key-1", "s-1", ON)
    assert session_of(request("chat", {}), header, AffinitySettings()) is None
    assert session_of(request("chat", {}), {}, ON) is None
    # The count APIs call no model.
    assert session_of(request("count_tokens", {}), header, ON) is None
    # The Messages API is read as the client sent it, not as translated for the Router.
    sent = {"metadata": {"user_id": "user_a_account_b_session_s-2"}}
    assert session_of(request("messages", {"user": "x"}, sent), {}, ON) == Session(
        "key-1", "s-2", ON
    )
