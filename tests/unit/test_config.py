from __future__ import annotations

from pathlib import Path

import pytest
from llm_proxy.accounting.pricing import cost_usd
from llm_proxy.config import (
    ConfigError,
    ProxyConfig,
    apply_environment_variables,
    load_config,
    resolve_references,
    secret_then_env,
)
from llm_proxy.gateway import Gateway
from llm_proxy.pipeline.model_router import ModelRouter, build_router, retire, router_kwargs
from llm_proxy.settings import ApiSettings

from tests.support.configs import deployment, gateway_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "litellm_config.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load() -> None:
    for path in (REPO / "functions" / "api" / "config.yaml", REPO / "config" / "local.yaml"):
        config = load_config(path)
        assert config.model_list and config.general_settings.master_key


def test_seed_basic_config_loads_unchanged(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: gpt-3.5-turbo
      api_key: sk-your-openai-key

general_settings:
  master_key: sk-1234
  database_url: "sqlite:///./litellm.db"
""",
        )
    )
    assert config.model_names() == ["gpt-3.5-turbo"]
    assert config.general_settings.master_key == "sk-1234"


def test_missing_field_names_file_entry_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model_list:
  - model_name: ok
    litellm_params: {model: gpt-4}
  - model_name: gpt-4
    litellm_params:
      api_key: sk-x
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert "model_list[1] (model_name 'gpt-4')" in message
    assert "litellm_params.model" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model_list: [", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("model_list:\n  - litellm_params: {model: x}\n", "model_list[0]: model_name"),
        ("router_settings: 5\n", "router_settings"),
        (
            "router_settings:\n  budget_fallbacks: [gpt-4o-mini]\n",
            "router_settings: Value error, budget_fallbacks must map a model group",
        ),
        (
            "router_settings:\n  budget_fallbacks: {gpt-4o: gpt-4o-mini}\n",
            "router_settings: Value error, budget_fallbacks.gpt-4o must be a non-empty list",
        ),
        (
            "router_settings:\n  budget_fallbacks: {gpt-4o: [5]}\n",
            "budget_fallbacks.gpt-4o must list model groups by name; got 5",
        ),
        (
            "router_settings:\n  budget_fallbacks: {gpt-4o: [gpt-4o]}\n",
            "budget_fallbacks.gpt-4o lists 'gpt-4o' itself",
        ),
        (
            "router_settings:\n  stream_timeout: 0\n",
            "router_settings: Value error, stream_timeout must be a number of seconds above 0",
        ),
        ("router_settings:\n  stream_timeout: soon\n", "got 'soon'"),
        (
            "model_list:\n  - model_name: m\n    litellm_params: {model: x, stream_timeout: -1}\n",
            "model_list[0] (model_name 'm'): litellm_params.stream_timeout",
        ),
    ],
)
def test_bad_files_fail_with_a_located_message(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=r"config file .*") as caught:
        load_config(write(tmp_path, text))
    assert expected in str(caught.value)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot be read"):
        load_config(tmp_path / "missing.yaml")


def test_references_resolve_from_secret_before_environment() -> None:
    lookup = secret_then_env(
        {"OPENAI_API_KEY": "from-secret"}, {"OPENAI_API_KEY": "from-env", "ONLY_ENV": "env-value"}
    )
    resolved = resolve_references(
        {
            "a": "os.environ/OPENAI_API_KEY",
            "b": ["os.environ/ONLY_ENV"],
            "c": "os.environ/NOPE",
            "d": "plain",
        },
        lookup,
    )
    assert resolved.value == {"a": "from-secret", "b": ["env-value"], "c": None, "d": "plain"}
    assert resolved.missing == {"NOPE"}


def test_seed_retry_policy_becomes_router_arguments(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
router_settings:
  routing_strategy: "simple-shuffle"
  fallbacks:
    - gpt-4: ["gpt-3.5-turbo"]
  retry_policy:
    max_retries: 3
    delay: 1.0
    backoff_factor: 2.0
litellm_settings:
  num_retries: 1
  timeout: 20
""",
        )
    )
    kwargs = router_kwargs(config)
    assert kwargs["num_retries"] == 1  # litellm_settings' explicit value is kept
    assert kwargs["retry_after"] == 1.0
    assert "retry_policy" not in kwargs
    assert kwargs["timeout"] == 20
    assert kwargs["fallbacks"] == [{"gpt-4": ["gpt-3.5-turbo"]}]


def test_a_model_litellm_cannot_place_fails_naming_the_entry(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, gateway_config(deployment("mystery", "mystery-model-9000", api_key="sk-x")))
    )
    with pytest.raises(
        ConfigError,
        match=r"model_list\[0\] \(model_name 'mystery'\): "
        r"litellm_params.model: litellm cannot tell the provider",
    ):
        build_router(config, lambda name: None, "http://127.0.0.1:11434")


def test_seed_names_litellm_dropped_get_their_provider_and_seed_prices(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            gateway_config(
                deployment("gpt-4-turbo", "gpt-4-turbo-preview", api_key="sk-your-openai-key"),
                deployment(
                    "claude-3-haiku", "claude-3-haiku-20240307", api_key="sk-ant-your-anthropic-key"
                ),
            ),
        )
    )
    routes = build_router(config, lambda name: None, "http://127.0.0.1:11434")
    turbo, haiku = routes.deployments["gpt-4-turbo#0"], routes.deployments["claude-3-haiku#1"]
    assert (turbo["provider"], turbo["litellm_params"]["model"]) == (
        "openai",
        "openai/gpt-4-turbo-preview",
    )
    assert haiku["litellm_params"]["model"] == "anthropic/claude-3-haiku-20240307"
    # The seed's table: Claude 3 Haiku $0.25 / $1.25 per million tokens, 4096 output tokens.
    assert cost_usd(haiku, 1_000_000, 1_000_000) == pytest.approx(1.50)
    assert haiku["model_info"]["max_output_tokens"] == 4096


def test_a_replaced_router_hands_its_strategy_handlers_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """litellm keeps one strategy handler per class and arguments in process-wide callback
    lists: unless the replaced Router's is dropped, a rebuilt Router's strategy runs blind."""
    import litellm

    # Lists of this test's own, as in a fresh container (they are capped in size, and other
    # tests' Routers fill them).
    for name in (
        "callbacks",
        "input_callback",
        "success_callback",
        "failure_callback",
        "service_callback",
        "_async_success_callback",
        "_async_failure_callback",
    ):
        monkeypatch.setattr(litellm, name, [])

    config = load_config(
        write(
            tmp_path,
            gateway_config(
                deployment("m", "openai/gpt-4", api_key="sk-x", api_base="http://127.0.0.1:9"),
                router_settings={
                    "routing_strategy": "latency-based-routing",
                    "routing_strategy_args": {"ttl": 3597},
                },
            ),
        )
    )

    def handler(routes: ModelRouter) -> object:
        return routes.router._sel.callback_selectors()[0]

    def registered(routes: ModelRouter) -> bool:
        return any(callback is handler(routes) for callback in litellm.callbacks)

    first = build_router(config, lambda name: None, "http://127.0.0.1:11434")
    blind = build_router(config, lambda name: None, "http://127.0.0.1:11434")
    assert registered(first) and not registered(blind)

    retire(first)
    rebuilt = build_router(config, lambda name: None, "http://127.0.0.1:11434")
    assert registered(rebuilt) and not registered(first)
    retire(rebuilt)


def test_environment_variables_are_set_as_the_litellm_proxy_sets_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Registered with monkeypatch first, so the process environment is restored afterwards.
    monkeypatch.setenv("HOUSE_API_BASE", "unset")
    config = ProxyConfig.model_validate(
        {
            "environment_variables": {"HOUSE_API_BASE": "http://127.0.0.1:9/v1", "EMPTY": None},
            "model_list": [
                {
                    "model_name": "house",
                    "litellm_params": {
                        "model": "openai/house",
                        "api_base": "os.environ/HOUSE_API_BASE",
                        "api_key": "not-a-secret",
                    },
                }
            ],
        }
    )
    isolated: dict[str, str] = {}
    apply_environment_variables(config, isolated)
    assert isolated == {"HOUSE_API_BASE": "http://127.0.0.1:9/v1"}

    gateway = Gateway(ApiSettings.of(), config)
    [house] = gateway.model_router().deployments.values()
    assert house["litellm_params"]["api_base"] == "http://127.0.0.1:9/v1"
