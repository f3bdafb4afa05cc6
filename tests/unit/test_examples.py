"""The seed's YAML examples in examples/: each loads unchanged, names the models the seed names,
and litellm's Router accepts what the gateway makes of its settings, without touching a network."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import litellm
import litellm.utils
import pytest
from litellm.router import Router
from llm_proxy.access.auth import check_master_key
from llm_proxy.accounting.pricing import cost_usd
from llm_proxy.config import ProxyConfig, load_config, resolve_references
from llm_proxy.errors import ProxyError
from llm_proxy.pipeline.model_router import build_router, router_kwargs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Per file: (model_name, litellm_params.model) for each deployment, in the seed's order.
SEED_MODELS: dict[str, list[tuple[str, str]]] = {
    "basic.yaml": [("gpt-3.5-turbo", "gpt-3.5-turbo"), ("gpt-4", "gpt-4")],
    "openai.yaml": [
        ("gpt-3.5-turbo", "gpt-3.5-turbo"),
        ("gpt-4", "gpt-4"),
        ("gpt-4-turbo", "gpt-4-turbo-preview"),
    ],
    "anthropic.yaml": [
        ("claude-3-haiku", "claude-3-haiku-20240307"),
        ("claude-3-sonnet", "claude-3-sonnet-20240229"),
        ("claude-3-opus", "claude-3-opus-20240229"),
    ],
    "ollama.yaml": [
        ("llama2", "ollama/llama2"),
        ("mistral", "ollama/mistral"),
        ("qwen", "ollama/qwen:0.5b"),
    ],
    "azure.yaml": [("gpt-35-turbo", "azure/gpt-35-turbo"), ("gpt-4", "azure/gpt-4")],
    "openrouter.yaml": [
        ("openrouter-gpt-4", "openrouter/openai/gpt-4"),
        ("openrouter-claude", "openrouter/anthropic/claude-3-opus"),
    ],
    "deepseek.yaml": [("deepseek-coder", "deepseek/deepseek-coder")],
    "fallbacks.yaml": [],
    "rate-limit.yaml": [],
    "load-balancing.yaml": [("gpt-4", "gpt-4"), ("gpt-4", "gpt-4")],
    "cache.yaml": [],
    "agents.yaml": [
        ("gpt-3.5-turbo", "gpt-3.5-turbo"),
        ("gpt-4", "gpt-4"),
        ("gpt-4-turbo", "gpt-4-turbo-preview"),
        ("claude-3-opus", "claude-3-opus-20240229"),
    ],
}
# The seed's AGENT_MODELS.
AGENT_MODELS = {
    "orchestrator": "gpt-3.5-turbo",
    "coder": "gpt-4",
    "architect": "claude-3-opus",
    "debug": "gpt-4-turbo",
    "ask": "gpt-3.5-turbo",
}
# The provider the gateway meters each deployment under, per file with a model_list.
PROVIDERS = {
    "basic.yaml": ["openai", "openai"],
    "openai.yaml": ["openai", "openai", "openai"],
    "anthropic.yaml": ["anthropic", "anthropic", "anthropic"],
    "ollama.yaml": ["ollama", "ollama", "ollama"],
    "azure.yaml": ["azure", "azure"],
    "openrouter.yaml": ["openrouter", "openrouter"],
    "deepseek.yaml": ["deepseek"],
    "load-balancing.yaml": ["openai", "openai"],
    "agents.yaml": ["openai", "openai", "openai", "anthropic"],
}
# The cost map litellm ships; anything else in litellm.model_cost was registered at run time.
SHIPPED_MODELS = frozenset(
    json.loads(
        files("litellm").joinpath("model_prices_and_context_window_backup.json").read_bytes()
    )
)
OLLAMA_API_BASE = "http://127.0.0.1:11434"


def load(name: str) -> ProxyConfig:
    return load_config(EXAMPLES / name)


def test_every_example_file_is_covered() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("*.yaml")) == sorted(SEED_MODELS)
    assert not [p.name for p in EXAMPLES.iterdir() if p.suffix not in (".yaml", ".md")]


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_example_loads_with_the_seeds_models(name: str) -> None:
    config = load(name)
    deployments = [(e.model_name, e.litellm_params.model) for e in config.model_list]
    assert deployments == SEED_MODELS[name]


def test_basic_keeps_the_seeds_general_settings() -> None:
    config = load("basic.yaml")
    assert config.general_settings.master_key == "sk-1234"
    assert config.general_settings.model_extra == {"database_url": "sqlite:///./litellm.db"}
    assert {e.litellm_params.model_extra["api_key"] for e in config.model_list} == {
        "sk-your-openai-key"
    }
    # The seed's key serves locally only.
    assert check_master_key("sk-1234", local=True) == "sk-1234"
    with pytest.raises(ProxyError):
        check_master_key("sk-1234", local=False)


def test_azure_names_deployment_base_and_api_version() -> None:
    for entry in load("azure.yaml").model_list:
        params = entry.litellm_params.model_extra
        assert params == {
            "api_key": "your-azure-key",
            "api_base": "https://your-resource.openai.azure.com",
            "api_version": "2023-05-15",
        }


def test_ollama_deployments_name_the_local_server() -> None:
    bases = {e.litellm_params.model_extra["api_base"] for e in load("ollama.yaml").model_list}
    assert bases == {"http://localhost:11434"}


def test_deepseek_key_is_a_reference_to_the_secret() -> None:
    (entry,) = load("deepseek.yaml").model_list
    assert entry.litellm_params.model_extra == {"api_key": "os.environ/DEEPSEEK_API_KEY"}


def test_rate_limit_and_cache_keep_the_seeds_values() -> None:
    assert load("rate-limit.yaml").router_settings == {"rate_limit": {"rpm": 60, "tpm": 100000}}
    assert load("cache.yaml").general_settings.model_extra == {
        "cache": {"type": "redis", "host": "redis", "port": 6379, "ttl": 3600}
    }


def test_agents_alias_every_role_to_a_defined_model() -> None:
    config = load("agents.yaml")
    assert config.router_settings == {"model_group_alias": AGENT_MODELS}
    defined = {entry.model_name for entry in config.model_list}
    assert set(AGENT_MODELS.values()) <= defined
    assert set(AGENT_MODELS) <= set(config.model_names())


# -- litellm's Router, built from the examples ---------------------------------------------


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Connections and name lookups the test's own thread attempts: recorded, and refused.

    Routers are built in that thread; servers other tests left running keep their sockets."""
    attempts: list[Any] = []
    test_thread = threading.get_ident()

    def guard(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != test_thread:
                return original(*args, **kwargs)
            attempts.append(args)
            raise OSError("network access in a unit test")

        return call

    for owner, name in (
        (socket.socket, "connect"),
        (socket.socket, "connect_ex"),
        (socket, "create_connection"),
        (socket, "getaddrinfo"),
    ):
        monkeypatch.setattr(owner, name, guard(getattr(owner, name)))
    return attempts


@pytest.fixture
def cold_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm as a fresh container has it: no models registered by Routers built earlier."""
    for key in [key for key in litellm.model_cost if key not in SHIPPED_MODELS]:
        monkeypatch.delitem(litellm.model_cost, key)
    litellm.utils._cached_get_model_info.cache_clear()


def secret_stand_in(name: str) -> str:
    return f"sk-test-{name.lower()}"


def model_list(config: ProxyConfig) -> list[dict[str, Any]]:
    """The model_list as litellm takes it, `os.environ/NAME` references as literal keys."""
    raw = [entry.model_dump(exclude_none=True) for entry in config.model_list]
    resolved = resolve_references(raw, secret_stand_in)
    assert not resolved.missing
    entries: list[dict[str, Any]] = resolved.value
    return entries


def router_for(name: str) -> Router:
    config = load(name)
    return Router(model_list=model_list(config), **router_kwargs(config))


def test_fallbacks_and_the_seeds_retry_policy_reach_the_router(network: list[Any]) -> None:
    fallbacks = [{"gpt-4": ["gpt-3.5-turbo"]}, {"claude-3-opus": ["claude-3-sonnet", "gpt-4"]}]
    assert router_kwargs(load("fallbacks.yaml")) == {
        "routing_strategy": "simple-shuffle",
        "fallbacks": fallbacks,
        "num_retries": 3,
        "retry_after": 1.0,
    }
    settings = router_for("fallbacks.yaml").settings().as_dict()
    assert settings["routing_strategy"] == "simple-shuffle"
    assert settings["fallbacks"] == fallbacks
    assert (settings["num_retries"], settings["retry_after"]) == (3, 1.0)
    assert network == []


def test_rate_limit_settings_build_a_router(network: list[Any]) -> None:
    # litellm's Router has no rate_limit parameter: it is not among the Router's arguments.
    assert "rate_limit" not in router_kwargs(load("rate-limit.yaml"))
    assert router_for("rate-limit.yaml").registry().names() == []
    assert network == []


def test_load_balancing_spreads_one_group_over_both_keys(network: list[Any]) -> None:
    router = router_for("load-balancing.yaml")
    assert router.settings().routing_strategy == "least-busy"
    deployments = router.registry().all()
    assert [d["model_name"] for d in deployments] == ["gpt-4", "gpt-4"]
    assert [d["litellm_params"]["api_key"] for d in deployments] == ["sk-key-1", "sk-key-2"]
    assert network == []


def test_agent_roles_resolve_to_their_model_groups(network: list[Any]) -> None:
    # Through the gateway's build: litellm alone cannot place the seed's bare model names.
    routes = build_router(load("agents.yaml"), secret_stand_in, OLLAMA_API_BASE)
    registry = routes.router.registry()
    for role, model in AGENT_MODELS.items():
        assert registry.resolve(role, kind="group") == model
    assert registry.resolve("no-such-role", kind="recognized") is False
    assert network == []


@pytest.mark.parametrize("name", sorted(PROVIDERS))
@pytest.mark.usefixtures("cold_litellm")
def test_gateway_builds_routes_offline_for_the_example(name: str, network: list[Any]) -> None:
    """The gateway's own router build, as at a cold start with every key in the secret."""
    config = load(name)
    routes = build_router(config, secret_stand_in, OLLAMA_API_BASE)
    assert routes.unavailable == {}
    assert [d["provider"] for d in routes.deployments.values()] == PROVIDERS[name]
    names = {d["model_name"] for d in routes.router.registry().all()}
    assert names == {model_name for model_name, _ in SEED_MODELS[name]}
    assert network == []


@pytest.mark.usefixtures("cold_litellm")
def test_seed_prices_survive_a_router_rebuild() -> None:
    config = load("anthropic.yaml")
    for _build in ("cold start", "key rotation"):
        routes = build_router(config, secret_stand_in, OLLAMA_API_BASE)
        # The seed's table: Claude 3 Opus at $15 / $75 per million tokens.
        opus = routes.deployments["claude-3-opus#2"]
        assert cost_usd(opus, 1_000_000, 1_000_000) == pytest.approx(90.0), _build
