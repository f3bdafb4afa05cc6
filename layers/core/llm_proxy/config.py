"""The LiteLLM config file (`model_list`, `router_settings`, `litellm_settings`,
`general_settings`, `environment_variables`): what models there are and how to route them.

The file is parsed and validated once at start; a bad file fails there with a message that
names the file, the entry and the field. `os.environ/NAME` references are resolved later, per
secret refresh, from the provider-keys secret first and then the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

ENV_REFERENCE = "os.environ/"


class ConfigError(Exception):
    """The config file cannot be used; the message says where and why."""


class DeploymentParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    # Seconds a stream may wait for its first chunk, and between two (LiteLLM's name).
    stream_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    model_name: str = Field(min_length=1)
    litellm_params: DeploymentParams
    model_info: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _server_tools_can_be_metered(self) -> ModelEntry:
        """Provider-run tools (`model_info.server_tools`) only where their uses are priced."""
        if "server_tools" in self.model_info:
            # Imported here: it reads litellm's cost map, which only such a config needs.
            from llm_proxy.pipeline.server_tools import config_problem

            problem = config_problem(self.litellm_params.model_dump(), self.model_info)
            if problem:
                raise ValueError(problem)
        return self


class JwtAuthSettings(BaseModel):
    """`general_settings.litellm_jwtauth` (LiteLLM's `LiteLLM_JWTAuth`): the claims that name a
    token's user and team. LiteLLM's other fields (scopes, allowed routes, ...) are refused
    rather than silently ignored: an operator relying on one would be less safe than they think."""

    model_config = ConfigDict(extra="forbid")
    user_id_jwt_field: str = Field(default="sub", min_length=1)
    # None: tokens are not read for a team.
    team_id_jwt_field: str | None = Field(default=None, min_length=1)


class GeneralSettings(BaseModel):
    model_config = ConfigDict(extra="allow")
    master_key: str | None = None
    # Developers' JWTs from the company's IdP (access.jwt_auth; the JWT_* variables).
    enable_jwt_auth: bool = False
    litellm_jwtauth: JwtAuthSettings = Field(default_factory=JwtAuthSettings)

    @field_validator("enable_jwt_auth", "litellm_jwtauth", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            return value
        return {} if info.field_name == "litellm_jwtauth" else False


class ProxyConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_list: list[ModelEntry] = Field(default_factory=list)
    router_settings: dict[str, Any] = Field(default_factory=dict)
    litellm_settings: dict[str, Any] = Field(default_factory=dict)
    general_settings: GeneralSettings = Field(default_factory=GeneralSettings)
    environment_variables: dict[str, Any] = Field(default_factory=dict)

    @field_validator("router_settings", "litellm_settings", "environment_variables", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("router_settings")
    @classmethod
    def _stream_timeout_positive(cls, settings: dict[str, Any]) -> dict[str, Any]:
        value = settings.get("stream_timeout")
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value < float("inf")
        ):
            raise ValueError(f"stream_timeout must be a number of seconds above 0; got {value!r}")
        return settings

    @field_validator("router_settings")
    @classmethod
    def _budget_fallbacks_shape(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """`budget_fallbacks`: {model group: [cheaper groups, tried in order]}."""
        fallbacks = settings.get("budget_fallbacks")
        if fallbacks is None:
            return settings
        if not isinstance(fallbacks, dict):
            raise ValueError(
                "budget_fallbacks must map a model group to the groups that serve it once a "
                "budget is spent, e.g. {gpt-4o: [gpt-4o-mini]}"
            )
        for group, choices in fallbacks.items():
            if not isinstance(choices, list) or not choices:
                raise ValueError(
                    f"budget_fallbacks.{group} must be a non-empty list of model groups"
                )
            for choice in choices:
                if not isinstance(choice, str) or not choice:
                    raise ValueError(
                        f"budget_fallbacks.{group} must list model groups by name; got {choice!r}"
                    )
                if choice == group:
                    raise ValueError(f"budget_fallbacks.{group} lists '{group}' itself")
        return settings

    def model_names(self, default_model: str | None = None) -> list[str]:
        """The names a client may ask for (a wildcard entry is not one of them); the default
        model first where any model name is passed through."""
        names = list(dict.fromkeys(entry.model_name for entry in self.model_list))
        aliases = self.router_settings.get("model_group_alias") or {}
        listed = [
            name for name in names + [a for a in aliases if a not in names] if name != WILDCARD
        ]
        if default_model and self.accepts_any_model and default_model not in listed:
            listed.insert(0, default_model)
        return listed

    @property
    def accepts_any_model(self) -> bool:
        return any(entry.model_name == WILDCARD for entry in self.model_list)


def load_config(path: Path) -> ProxyConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    try:
        return ProxyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(path, data, exc)) from None


def _describe(path: Path, data: dict[str, Any], exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ".".join(str(part) for part in loc) or "(top level)"
        if len(loc) >= 2 and loc[0] == "model_list" and isinstance(loc[1], int):
            entry = (data.get("model_list") or [])[loc[1]]
            name = entry.get("model_name") if isinstance(entry, dict) else None
            label = f"model_list[{loc[1]}]" + (f" (model_name '{name}')" if name else "")
            field = ".".join(str(part) for part in loc[2:]) or "(entry)"
            where = f"{label}: {field}"
        problems.append(f"{where}: {error['msg']}")
    return f"config file {path}: " + "; ".join(problems)


@dataclass(frozen=True)
class Resolved:
    value: Any
    missing: frozenset[str]


def resolve_references(value: Any, lookup: Callable[[str], str | None]) -> Resolved:
    """Replace every `os.environ/NAME` string; names that resolve to nothing are reported."""
    missing: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str) and node.startswith(ENV_REFERENCE):
            name = node[len(ENV_REFERENCE) :]
            found = lookup(name)
            if found is None:
                missing.add(name)
            return found
        if isinstance(node, dict):
            return {key: walk(item) for key, item in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return Resolved(walk(value), frozenset(missing))


def apply_environment_variables(
    config: ProxyConfig, environ: MutableMapping[str, str] | None = None
) -> None:
    """The config's `environment_variables`, set in the process environment as the LiteLLM
    proxy sets them at start; `os.environ/NAME` references in the config then find them (after
    the provider-keys secret, which comes first)."""
    target = os.environ if environ is None else environ
    for name, value in config.environment_variables.items():
        if value is not None:
            target[str(name)] = str(value)


def secret_then_env(
    secret: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> Callable[[str], str | None]:
    def lookup(name: str) -> str | None:
        value = secret.get(name)
        if value is None or value == "":
            value = environ.get(name) or None
        return value

    return lookup


# The seed's LLM_PROXY__LLM_MODE: `config` serves the config file; `ollama` and `litellm` need
# no file and pass any model name through to Ollama or to an existing LiteLLM proxy.
WILDCARD = "*"
MODES = ("config", "ollama", "litellm")


def config_for_mode(
    mode: str,
    config_path: Path | None,
    default_config: Path,
    *,
    ollama_api_base: str,
    litellm_proxy_url: str | None,
) -> ProxyConfig:
    if mode not in MODES:
        raise ConfigError(f"LLM_PROXY__LLM_MODE={mode!r} is not one of {', '.join(MODES)}")
    if mode == "config":
        return load_config(config_path or default_config)
    config = load_config(config_path) if config_path else ProxyConfig()
    if mode == "ollama":
        params = {"model": "ollama_chat/*", "api_base": ollama_api_base}
    else:
        if not litellm_proxy_url:
            raise ConfigError(
                "LLM_PROXY__LLM_MODE=litellm needs LLM_PROXY__LITELLM_PROXY_URL (the proxy's URL)"
            )
        params = {
            "model": "litellm_proxy/*",
            "api_base": litellm_proxy_url,
            "api_key": f"{ENV_REFERENCE}LLM_PROXY__LITELLM_API_KEY",
        }
    entry = ModelEntry.model_validate({"model_name": WILDCARD, "litellm_params": params})
    config.model_list.append(entry)
    return config
