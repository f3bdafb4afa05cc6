"""The litellm Router as the config describes it (`ModelRouter`), built once per container and
rebuilt only when the provider-keys secret changes (a rotation) or after a restore
(`CurrentRouter`), never per request; and litellm's process-wide settings."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import litellm
from litellm.router import Router

from llm_proxy.access.limits import Limits
from llm_proxy.accounting.price_table import PER_MILLION, SEED_PRICE_TABLE
from llm_proxy.config import ConfigError, ProxyConfig, resolve_references, secret_then_env
from llm_proxy.logs import enable_detailed_debug, logger, redactor
from llm_proxy.pipeline import litellm_hooks, session_affinity
from llm_proxy.provider_keys import ProviderKeys

ROUTER_PARAMS = frozenset(inspect.signature(Router.__init__).parameters) - {"self", "model_list"}
# litellm_settings that are plain module switches and safe to apply as they are.
LITELLM_MODULE_SETTINGS = frozenset(
    {"drop_params", "modify_params", "request_timeout", "force_ipv4", "suppress_debug_info"}
)
# The conventional variable per provider, used when a deployment names no api_key itself.
PROVIDER_KEY_VARIABLES: dict[str, dict[str, str]] = {
    "openai": {"api_key": "OPENAI_API_KEY"},
    "text-completion-openai": {"api_key": "OPENAI_API_KEY"},
    "anthropic": {"api_key": "ANTHROPIC_API_KEY"},
    "azure": {
        "api_key": "AZURE_API_KEY",
        "api_base": "AZURE_API_BASE",
        "api_version": "AZURE_API_VERSION",
    },
    "openrouter": {"api_key": "OPENROUTER_API_KEY"},
    "deepseek": {"api_key": "DEEPSEEK_API_KEY"},
    "gemini": {"api_key": "GEMINI_API_KEY"},
    "mistral": {"api_key": "MISTRAL_API_KEY"},
    "groq": {"api_key": "GROQ_API_KEY"},
}
OLLAMA_PROVIDERS = frozenset({"ollama", "ollama_chat"})
# Settings the gateway applies itself: the seed's shared rate limit, and the response cache
# (kept in DynamoDB, not in litellm's in-process cache).
GATEWAY_ROUTER_SETTINGS = frozenset({"rate_limit", "budget_fallbacks"})
GATEWAY_LITELLM_SETTINGS = frozenset({"cache", "cache_params"})


# Bare model names litellm cannot place any more (the seed's retired models), by prefix, and
# the provider they belong to.
BARE_NAME_PROVIDERS = (("claude-", "anthropic"), ("gpt-", "openai"), ("o1", "openai"))
AZURE_STREAM_OPTIONS_SINCE = "2024-09-01"
# litellm_params whose values are credentials: registered with the log redactor.
SECRET_PARAM_MARKERS = ("key", "token", "secret", "password", "credential")


@dataclass
class ModelRouter:
    """The litellm Router built from the config, with every deployment as resolved."""

    router: Router
    # model_id -> the resolved model_list entry (prices, provider, model) for metering.
    deployments: dict[str, dict[str, Any]]
    # model_name -> variables that are missing, for models left with no usable deployment.
    unavailable: dict[str, frozenset[str]] = field(default_factory=dict)
    # model_group_alias: a name a client may ask for -> the model group that serves it.
    aliases: dict[str, Any] = field(default_factory=dict)
    # deployment id -> its own rpm/tpm (counted in the counters table).
    deployment_limits: dict[str, Limits] = field(default_factory=dict)

    def group_of(self, model: str) -> str:
        """The model group a requested name (or alias) is served by."""
        group = self.aliases.get(model, model)
        return str(group.get("model", model) if isinstance(group, dict) else group)

    def is_alias(self, model: str) -> bool:
        return model in self.aliases

    def in_group(self, model: str) -> Iterable[dict[str, Any]]:
        group = self.group_of(model)
        return (d for d in self.deployments.values() if d.get("model_name") == group)

    def allowed_params(self, model: str) -> frozenset[str]:
        """Parameters the operator lets callers send to this group beyond the endpoint's API
        (`model_info.allowed_params` of its deployments: `top_k`, `thinking`, ...)."""
        return frozenset(
            str(name)
            for deployment in self.in_group(model)
            for name in deployment.get("model_info", {}).get("allowed_params") or ()
        )

    def max_output_tokens(self, model: str) -> int | None:
        """The most tokens the group's deployments may answer with, where known: the
        deployment's `max_output_tokens` (model_info), else litellm's model map."""
        limits = []
        for deployment in self.in_group(model):
            limit = deployment.get("model_info", {}).get("max_output_tokens")
            if limit is None:
                limit = _mapped_max_output(str(deployment["litellm_params"]["model"]))
            if limit is None:
                return None  # one deployment of unknown size: no bound can be told
            limits.append(int(limit))
        return max(limits, default=None)

    def is_mock(self, model: str) -> bool:
        """A `mock_response` deployment (a canned chat reply, no provider)."""
        return any(
            deployment.get("model_name") == model
            and "mock_response" in deployment["litellm_params"]
            for deployment in self.deployments.values()
        )

    def streams_usage(self, model: str) -> bool:
        """Whether every deployment of the group accepts `stream_options` (Azure API versions
        before 2024-09-01-preview refuse it; their streams are counted by the gateway)."""
        return not any(
            deployment["provider"] == "azure"
            and str(deployment["litellm_params"].get("api_version") or "9999")
            < AZURE_STREAM_OPTIONS_SINCE
            for deployment in self.in_group(model)
        )

    def fallbacks(self, model: str) -> list[str]:
        """The model groups the Router falls back to from `model`'s group (its own entry, else
        `*`)."""
        entries = getattr(self.router, "fallbacks", None) or []
        for name in (self.group_of(model), "*"):
            for entry in entries:
                if isinstance(entry, dict) and name in entry:
                    return [str(fallback) for fallback in entry[name]]
        return []


# litellm prints a provider list to stdout on every lookup miss otherwise.
litellm.suppress_debug_info = True


def provider_of(model: str) -> str | None:
    try:
        return str(litellm.get_llm_provider(model)[1])
    except Exception:
        return None


def _mapped_max_output(model: str) -> int | None:
    try:
        info = litellm.get_model_info(model)
    except Exception:
        return None
    limit = info.get("max_output_tokens") or info.get("max_tokens")
    return int(limit) if limit else None


def _bare_name_provider(model: str) -> str | None:
    for prefix, provider in BARE_NAME_PROVIDERS:
        if model.startswith(prefix):
            return provider
    return None


def _place(params: dict[str, Any], label: str) -> str:
    """The deployment's provider; a bare name litellm no longer places gets its prefix."""
    model = str(params["model"])
    provider = provider_of(model)
    if provider is None and (bare := _bare_name_provider(model)):
        params["model"], provider = f"{bare}/{model}", bare
    if provider is None:
        raise ConfigError(
            f"{label}: litellm_params.model: litellm cannot tell the provider of '{model}'; "
            "prefix it with one (openai/, anthropic/, azure/, ollama/, ...)"
        )
    return provider


def _fill_listed_price(deployment: dict[str, Any]) -> None:
    """The seed's price table for its models, unless the deployment sets its own prices.

    Applied whatever litellm's map says: litellm lacks some of these models, and a Router build
    registers them in its process-wide map without prices, so a rebuild would meter them at 0.
    """
    params, info = deployment["litellm_params"], deployment["model_info"]
    listed = SEED_PRICE_TABLE.get(str(params["model"]).split("/", 1)[-1])
    if listed is None:
        return
    params.setdefault("input_cost_per_token", listed.input_per_million * PER_MILLION)
    params.setdefault("output_cost_per_token", listed.output_per_million * PER_MILLION)
    if listed.max_output_tokens:
        info.setdefault("max_output_tokens", listed.max_output_tokens)


def _know_ollama_model(model: str, provider: str) -> None:
    """Put a local model in litellm's map before the Router registers it: otherwise litellm
    asks Ollama's /api/show for it, synchronously, at init (a hang where Ollama is down)."""
    if "*" not in model and model not in litellm.model_cost:
        litellm.model_cost[model] = {
            "litellm_provider": provider,
            "mode": "chat",
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
        }


def router_kwargs(config: ProxyConfig) -> dict[str, Any]:
    """Router arguments from litellm_settings, then router_settings (which win)."""
    kwargs: dict[str, Any] = {}
    for section in (config.litellm_settings, config.router_settings):
        for key, value in section.items():
            if key in ROUTER_PARAMS:
                kwargs[key] = copy.deepcopy(value)
    policy = kwargs.get("retry_policy")
    if isinstance(policy, dict) and {"max_retries", "delay", "backoff_factor"} & policy.keys():
        # The seed's form: {max_retries, delay, backoff_factor}; litellm's per-error keys stay.
        policy = dict(policy)
        kwargs.setdefault("num_retries", policy.pop("max_retries", None))
        delay = policy.pop("delay", None)
        if delay is not None:
            kwargs.setdefault("retry_after", delay)
        policy.pop("backoff_factor", None)
        kwargs["retry_policy"] = policy or None
    if kwargs.get("cooldown_time") == 0:
        # litellm reads 0 as "use the default"; what a config that says 0 means is "never".
        kwargs.pop("cooldown_time")
        kwargs.setdefault("disable_cooldowns", True)
    kwargs = session_affinity.for_router(kwargs)
    return {key: value for key, value in kwargs.items() if value is not None}


def configure_litellm(config: ProxyConfig, *, detailed_debug: bool) -> None:
    """litellm's process-wide state: its module settings from the config, verbose logging when
    asked for, and the gateway's hooks."""
    if detailed_debug:
        enable_detailed_debug()
    apply_litellm_settings(config)
    litellm_hooks.register()


def apply_litellm_settings(config: ProxyConfig) -> None:
    for key, value in config.litellm_settings.items():
        if key in LITELLM_MODULE_SETTINGS:
            setattr(litellm, key, value)
        elif key not in ROUTER_PARAMS and key not in GATEWAY_LITELLM_SETTINGS:
            logger.warning("litellm_settings key not applied", extra={"setting": key})
    for key in config.router_settings:
        if key not in ROUTER_PARAMS and key not in GATEWAY_ROUTER_SETTINGS:
            logger.warning("router_settings key not applied", extra={"setting": key})


def build_router(
    config: ProxyConfig, lookup: Callable[[str], str | None], ollama_api_base: str
) -> ModelRouter:
    entries: list[dict[str, Any]] = []
    deployments: dict[str, dict[str, Any]] = {}
    missing_by_model: dict[str, set[str]] = {}
    for index, entry in enumerate(config.model_list):
        raw = entry.model_dump(exclude_none=True)
        resolved = resolve_references(raw, lookup)
        deployment: dict[str, Any] = resolved.value
        params = deployment["litellm_params"]
        provider = _place(params, f"model_list[{index}] (model_name '{entry.model_name}')")
        for param, variable in PROVIDER_KEY_VARIABLES.get(provider, {}).items():
            if param not in raw["litellm_params"] and (found := lookup(variable)):
                params[param] = found
        if provider in OLLAMA_PROVIDERS:
            params.setdefault("api_base", ollama_api_base)
            _know_ollama_model(str(params["model"]), provider)
        if resolved.missing:
            missing_by_model.setdefault(entry.model_name, set()).update(resolved.missing)
            logger.warning(
                "deployment skipped: unresolved references",
                extra={"model_name": entry.model_name, "variables": sorted(resolved.missing)},
            )
            continue
        info = deployment.setdefault("model_info", {})
        info.setdefault("id", f"{entry.model_name}#{index}")
        _fill_listed_price(deployment)
        deployment["provider"] = provider
        entries.append({k: v for k, v in deployment.items() if k != "provider"})
        deployments[str(info["id"])] = deployment
    served = {entry["model_name"] for entry in entries}
    unavailable = {
        name: frozenset(names) for name, names in missing_by_model.items() if name not in served
    }
    router = Router(
        model_list=entries,
        fallback_access_check=litellm_hooks.HOOKS.fallback_allowed,
        **router_kwargs(config),
    )
    return ModelRouter(
        router=router,
        deployments=deployments,
        unavailable=unavailable,
        aliases=dict(config.router_settings.get("model_group_alias") or {}),
        deployment_limits=deployment_limits(deployments, config),
    )


def deployment_limits(
    deployments: dict[str, dict[str, Any]], config: ProxyConfig
) -> dict[str, Limits]:
    """Each deployment's rpm/tpm (in litellm_params or on the entry, LiteLLM's two places),
    else the seed's `router_settings.rate_limit`, which applies to every deployment."""
    default = config.router_settings.get("rate_limit") or {}
    limits = {}
    for deployment_id, deployment in deployments.items():
        params = deployment["litellm_params"]
        rpm = params.get("rpm") or deployment.get("rpm") or default.get("rpm")
        tpm = params.get("tpm") or deployment.get("tpm") or default.get("tpm")
        if rpm or tpm:
            limits[deployment_id] = Limits(int(rpm) if rpm else None, int(tpm) if tpm else None)
    return limits


def retire(model_router: ModelRouter) -> None:
    """Take a replaced Router's strategy handlers (least-busy, latency, usage) out of litellm's
    process-wide callback lists: litellm keeps one handler per class and arguments, so the new
    Router's own would be skipped as a duplicate and its strategy would run blind."""
    selection: Any = getattr(model_router.router, "_sel", None)
    try:
        handlers = [*selection.callback_selectors(), *selection.override_selectors()]
    except AttributeError:
        logger.warning("replaced router's strategy handlers not found; left registered")
        return
    for handler in handlers:
        if callable(getattr(handler, "retire", None)):
            handler.retire()  # stops the handler's background work
    litellm.logging_callback_manager.drop_callbacks(handlers)


class CurrentRouter:
    """The ModelRouter of this container: built from the config and the provider-keys secret,
    and built again when the secret's content changes (a rotation) or after a restore."""

    def __init__(self, config: ProxyConfig, provider_keys: ProviderKeys, ollama_api_base: str):
        self.config = config
        self.provider_keys = provider_keys
        self.ollama_api_base = ollama_api_base
        self._current: ModelRouter | None = None
        # The secret the router was built from: a different one rebuilds it.
        self._built_from: dict[str, str] | None = None

    @property
    def built(self) -> bool:
        return self._current is not None

    @property
    def last_built(self) -> ModelRouter | None:
        """The router as last built, without reading the secret (for failure metering)."""
        return self._current

    def get(self) -> ModelRouter:
        secret = self.provider_keys.get()
        if self._current is None or secret != self._built_from:
            if self._current is not None:
                retire(self._current)
            built = build_router(self.config, secret_then_env(secret), self.ollama_api_base)
            for deployment in built.deployments.values():
                redactor.register(
                    str(value)
                    for name, value in deployment["litellm_params"].items()
                    if any(marker in name for marker in SECRET_PARAM_MARKERS)
                )
            self._current, self._built_from = built, secret
        return self._current

    def rebuild(self) -> None:
        """Build afresh on next use, with new HTTP clients (after a restore)."""
        self._built_from = None
