"""Agent sessions against a gateway with two deployments per model group, each on a double
with a prompt cache of its own (two Anthropic accounts, two OpenAI projects): the doubles, the
config, and the sessions as Claude Code and Codex send them, turn by turn, with what each turn
read from the provider's cache."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anthropic
import openai

from devstack.doubles.anthropic_upstream import AnthropicUpstream
from devstack.doubles.base import UpstreamDouble
from devstack.doubles.openai_upstream import OpenAIUpstream
from devstack.server import serving
from tests.support.configs import MASTER_KEY_FROM_SECRET, deployment, gateway_config
from tests.support.stack import MASTER_KEY, PROVIDER_KEYS, usage_item

INPUT, OUTPUT = Decimal("3e-6"), Decimal("15e-6")
WRITE, READ = Decimal("3.75e-6"), Decimal("0.3e-6")
AFFINITY = {
    "optional_pre_call_checks": ["session_affinity"],
    "num_retries": 2,
    # Each request meets the deployments as they are: a failure does not steer the next.
    "disable_cooldowns": True,
}
# A project's context: long enough to be cached (a token a word; 1,024 at least).
CONTEXT = " ".join(f"rule{n}" for n in range(1200))
TURNS = 20


@dataclass
class Doubles:
    claude: dict[str, AnthropicUpstream]
    codex: dict[str, OpenAIUpstream]

    def every(self) -> dict[str, UpstreamDouble[Any]]:
        """Each double by the id of its deployment."""
        return {**self.claude, **self.codex}

    def reset(self) -> None:
        for double in self.every().values():
            double.reset()

    def served(self) -> Counter[str]:
        """Requests each deployment received, by deployment id."""
        return Counter({name: len(double.requests) for name, double in self.every().items()})


@contextmanager
def served_doubles() -> Iterator[Doubles]:
    """Two Anthropic doubles (claude-a, claude-b) and two OpenAI doubles (codex-a, codex-b),
    served for the block's duration."""
    with ExitStack() as stack:
        claude = {
            name: stack.enter_context(
                serving(AnthropicUpstream(api_key=PROVIDER_KEYS["ANTHROPIC_API_KEY"]))
            )
            for name in ("claude-a", "claude-b")
        }
        codex = {
            name: stack.enter_context(
                serving(OpenAIUpstream(api_key=PROVIDER_KEYS["OPENAI_API_KEY"]))
            )
            for name in ("codex-a", "codex-b")
        }
        yield Doubles(claude, codex)


def config_for(
    doubles: Doubles, router_settings: dict[str, Any] = AFFINITY, claude: str = "claude"
) -> str:
    """Groups `claude` (or another name) and `codex`, a deployment on each double (its name
    as its id), at prices with cache prices of their own; `claude-plain` on claude-a with none
    (its cache reads and writes cost the input price)."""
    prices = {
        "input_cost_per_token": INPUT,
        "output_cost_per_token": OUTPUT,
        "cache_creation_input_token_cost": WRITE,
        "cache_read_input_token_cost": READ,
    }
    anthropic_group = [
        deployment(
            claude,
            "anthropic/claude-sonnet-4-5",
            model_info={"id": name},
            api_base=double.base_url,
            api_key="os.environ/ANTHROPIC_API_KEY",
            **prices,
        )
        for name, double in doubles.claude.items()
    ]
    codex = [
        deployment(
            "codex",
            "openai/gpt-5-mini",
            model_info={"id": name},
            api_base=f"{double.base_url}/v1",
            api_key="os.environ/OPENAI_API_KEY",
            **prices,
        )
        for name, double in doubles.codex.items()
    ]
    plain = deployment(
        "claude-plain",
        "anthropic/claude-sonnet-4-5",
        model_info={"id": "claude-plain"},
        api_base=doubles.claude["claude-a"].base_url,
        api_key="os.environ/ANTHROPIC_API_KEY",
        input_cost_per_token=INPUT,
        output_cost_per_token=OUTPUT,
    )
    return gateway_config(
        *anthropic_group,
        *codex,
        plain,
        router_settings=router_settings,
        general_settings=MASTER_KEY_FROM_SECRET,
    )


# -- agent sessions, as the clients send them ---------------------------------------------------


@dataclass
class Turn:
    request_id: str
    uncached: int
    written: int
    read: int


@dataclass
class ClaudeCodeSession:
    """The anthropic SDK as Claude Code uses it: its session header on every request, the
    system prompt and the newest message marked for caching, the whole conversation resent."""

    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    messages: list[dict[str, Any]] = field(default_factory=list)

    def turn(self, url: str, number: int, key: str = MASTER_KEY) -> Turn:
        client = anthropic.Anthropic(
            base_url=url,
            api_key=key,
            max_retries=0,
            default_headers={"X-Claude-Code-Session-Id": self.session_id},
        )
        words = " ".join(f"step{number}-{n}" for n in range(40))
        self.messages.append({"role": "user", "content": [{"type": "text", "text": words}]})
        marked = [*self.messages[:-1], _marked(self.messages[-1])]
        raw = client.messages.with_raw_response.create(
            model="claude",
            max_tokens=256,
            system=[{"type": "text", "text": CONTEXT, "cache_control": {"type": "ephemeral"}}],
            messages=marked,  # type: ignore[arg-type]
        )
        message = raw.parse()
        self.messages.append({"role": "assistant", "content": message.model_dump()["content"]})
        usage = message.usage
        return Turn(
            raw.headers["x-request-id"],
            usage.input_tokens,
            usage.cache_creation_input_tokens or 0,
            usage.cache_read_input_tokens or 0,
        )


def _marked(message: dict[str, Any]) -> dict[str, Any]:
    *before, last = message["content"]
    return {**message, "content": [*before, {**last, "cache_control": {"type": "ephemeral"}}]}


@dataclass
class CodexSession:
    """The openai SDK as Codex uses the Responses API: `prompt_cache_key` set to the
    conversation id, `store: false`, the whole input every turn."""

    conversation: str = field(default_factory=lambda: str(uuid.uuid4()))
    items: list[Any] = field(default_factory=list)

    def turn(self, url: str, number: int) -> Turn:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
        words = " ".join(f"step{number}-{n}" for n in range(40))
        self.items.append({"type": "message", "role": "user", "content": words})
        raw = client.responses.with_raw_response.create(
            model="codex",
            instructions=CONTEXT * 3,
            input=self.items,
            prompt_cache_key=self.conversation,
            store=False,
        )
        response = raw.parse()
        self.items += [item.model_dump(exclude_none=True) for item in response.output]
        usage = response.usage
        assert usage is not None
        read = usage.input_tokens_details.cached_tokens
        return Turn(raw.headers["x-request-id"], usage.input_tokens - read, 0, read)


def read_share(turns: list[Turn]) -> float:
    read = sum(turn.read for turn in turns)
    return read / sum(turn.read + turn.written + turn.uncached for turn in turns)


def served_by(aws: dict[str, str], turns: list[Turn]) -> set[str]:
    return {str(usage_item(aws["UsageTable"], turn.request_id)["deployment_id"]) for turn in turns}
