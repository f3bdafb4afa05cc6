"""LiteLLM config files as the tests feed them to the gateway: deployments (`model_list`
entries) and the YAML text of a whole config, `model_list`, `router_settings`,
`litellm_settings` and `general_settings`.

`os.environ/NAME` values are kept as they are: the gateway resolves them, from the
provider-keys secret first and then the environment."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import yaml

# The session's OpenAI-format double (the `upstream` fixture) and the key it accepts.
OPENAI_DOUBLE_BASE = "os.environ/TEST_OPENAI_BASE"
OPENAI_KEY = "os.environ/OPENAI_API_KEY"
# router_settings without retries: each failure reaches the client once.
NO_RETRIES: dict[str, Any] = {"num_retries": 0}
# general_settings with the master key read from the provider-keys secret, as deployed.
MASTER_KEY_FROM_SECRET: dict[str, Any] = {"master_key": "os.environ/LLM_PROXY__MASTER_KEY"}


def deployment(
    name: str, model: str, *, model_info: dict[str, Any] | None = None, **litellm_params: Any
) -> dict[str, Any]:
    """One `model_list` entry: `model_name` and its `litellm_params` (`model` first, then the
    others in the order given), with `model_info` where given."""
    entry: dict[str, Any] = {
        "model_name": name,
        "litellm_params": {"model": model, **litellm_params},
    }
    if model_info is not None:
        entry["model_info"] = model_info
    return entry


def openai_double(
    name: str = "gpt-3.5-turbo",
    model: str | None = None,
    *,
    model_info: dict[str, Any] | None = None,
    **litellm_params: Any,
) -> dict[str, Any]:
    """A deployment on the session's OpenAI-format double with the key it accepts;
    `openai/<name>` unless another model is given. By default the catalogue's gpt-3.5-turbo."""
    return deployment(
        name,
        model or f"openai/{name}",
        model_info=model_info,
        api_base=OPENAI_DOUBLE_BASE,
        api_key=OPENAI_KEY,
        **litellm_params,
    )


def gateway_config(
    *deployments: dict[str, Any],
    router_settings: dict[str, Any] | None = None,
    litellm_settings: dict[str, Any] | None = None,
    general_settings: dict[str, Any] | None = None,
    **sections: Any,
) -> str:
    """A config file's text: these deployments as the `model_list`, then each section given
    (a section left at None is left out)."""
    config: dict[str, Any] = {"model_list": list(deployments)}
    given = {
        "router_settings": router_settings,
        "litellm_settings": litellm_settings,
        "general_settings": general_settings,
        **sections,
    }
    config.update({name: body for name, body in given.items() if body is not None})
    return yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False, width=1000)


def one_deployment_config(name: str = "gpt-3.5-turbo") -> str:
    """The catalogue's gpt-3.5-turbo deployment on the OpenAI-format double alone (under
    another model name if given): no retries, the master key from the secret."""
    return gateway_config(
        openai_double(name, "openai/gpt-3.5-turbo"),
        router_settings=NO_RETRIES,
        general_settings=MASTER_KEY_FROM_SECRET,
    )


class _ConfigDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing a Decimal as its text, unquoted, as an f-string would: it
    reads back as YAML reads that text (a float where the text has a dot, as 0.000003 has; a
    string otherwise, as 1E-7 is)."""


def _decimal(dumper: yaml.SafeDumper, value: Decimal) -> yaml.ScalarNode:
    text = str(value)
    return dumper.represent_scalar(dumper.resolve(yaml.ScalarNode, text, (True, False)), text)


_ConfigDumper.add_representer(Decimal, _decimal)
