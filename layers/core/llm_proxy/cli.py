"""`llm-proxy keys|teams|users ...`: the operator's command line over the management API.

It talks HTTPS to the gateway with the master key, so the same command serves the local stack
(`make dev`) and a deployed stack (its ApiUrl output and the master key from its secret)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import quote

import httpx

LOCAL_URL = "http://127.0.0.1:8000"
LOCAL_MASTER_KEY = "sk-1234"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-proxy", description=__doc__)
    parser.add_argument(
        "--url",
        default=os.environ.get("LLM_PROXY_URL", LOCAL_URL),
        help="the gateway's base URL (env LLM_PROXY_URL; default: make dev's)",
    )
    parser.add_argument(
        "--master-key",
        default=os.environ.get("LLM_PROXY_MASTER_KEY", LOCAL_MASTER_KEY),
        help="the master key (env LLM_PROXY_MASTER_KEY; default: make dev's)",
    )
    groups = parser.add_subparsers(dest="group", required=True)
    keys = groups.add_parser("keys", help="virtual keys").add_subparsers(
        dest="command", required=True
    )

    def settings(command: argparse.ArgumentParser) -> None:
        command.add_argument("--alias", dest="key_alias")
        command.add_argument("--agent", help="tags usage with this agent (metadata.agent)")
        command.add_argument("--team", help="metadata.team")
        command.add_argument("--team-id", help="a key of this team (llm-proxy teams new)")
        command.add_argument("--user-id", help="a key of this user (llm-proxy users new)")
        command.add_argument("--models", nargs="+", help="models the key may use (default: all)")
        command.add_argument("--rpm", dest="rpm_limit", type=int, help="requests per minute")
        command.add_argument("--tpm", dest="tpm_limit", type=int, help="tokens per minute")
        command.add_argument("--max-budget", type=float, help="USD")
        command.add_argument("--budget-duration", help="budget window: 30s, 15m, 1h, 30d")
        command.add_argument("--duration", help="the key expires after: 30s, 15m, 1h, 30d")

    settings(keys.add_parser("create", help="generate a key (shown once)"))
    update = keys.add_parser("update", help="change a key's settings")
    update.add_argument("key", help="the key (sk-...) or its token")
    settings(update)
    update.add_argument("--block", dest="blocked", action="store_const", const=True)
    update.add_argument("--unblock", dest="blocked", action="store_const", const=False)
    rotate = keys.add_parser(
        "rotate", help="the same key under a new secret (shown once); spend and limits stay"
    )
    rotate.add_argument("key", help="the key (sk-...) or its token")
    rotate.add_argument(
        "--grace-period", help="how long the old key keeps working: 30s, 15m, 1h (default: none)"
    )
    delete = keys.add_parser("delete", help="revoke keys")
    delete.add_argument("keys", nargs="+", help="keys (sk-...) or tokens")
    info = keys.add_parser("info", help="a key's settings, spend and remaining budget")
    info.add_argument("key")
    keys.add_parser("list", help="every key, without the keys themselves")
    _principals(groups, "teams", "team", "a team: its keys share its budget, limits and models")
    _principals(groups, "users", "user", "a developer: its keys share its budget and models")
    return parser


def _principals(groups: Any, group: str, kind: str, about: str) -> None:
    """`teams` or `users`: new, info, list, update, delete, with LiteLLM's field names."""
    commands = groups.add_parser(group, help=f"{group} ({about})").add_subparsers(
        dest="command", required=True
    )

    def settings(command: argparse.ArgumentParser) -> None:
        for name in OWN[kind]:
            command.add_argument(f"--{name.replace('_', '-')}", dest=name)
        command.add_argument("--models", nargs="+", help="models its keys may use (default: all)")
        command.add_argument("--max-budget", type=float, help="USD, shared by all its keys")
        command.add_argument("--budget-duration", help="budget window: 30s, 15m, 1h, 30d")
        command.add_argument("--rpm-limit", type=int, help="requests per minute, all its keys")
        command.add_argument("--tpm-limit", type=int, help="tokens per minute, all its keys")
        command.add_argument("--metadata", type=json.loads, help="a JSON object")

    new = commands.add_parser("new", help=f"make a {kind}")
    new.add_argument(f"--{kind}-id", dest="id", help="its id (default: a generated one)")
    settings(new)
    if kind == "user":
        new.add_argument(
            "--no-key",
            dest="auto_create_key",
            action="store_const",
            const=False,
            help="make no key for the user (by default one is made and shown once)",
        )
    update = commands.add_parser("update", help=f"change a {kind}'s settings")
    update.add_argument("id", help=f"the {kind}_id")
    settings(update)
    update.add_argument("--block", dest="blocked", action="store_const", const=True)
    update.add_argument("--unblock", dest="blocked", action="store_const", const=False)
    info = commands.add_parser("info", help=f"a {kind}'s settings, spend and keys")
    info.add_argument("id", help=f"the {kind}_id")
    delete = commands.add_parser("delete", help=f"delete {group} and their keys")
    delete.add_argument("ids", nargs="+", help=f"{kind}_ids")
    commands.add_parser("list", help=f"every {kind}")


# Each kind's own fields, besides those of every team and user.
OWN = {"team": ("team_alias",), "user": ("user_alias", "user_email", "user_role")}
PRINCIPAL_SETTINGS = (
    "models",
    "max_budget",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
    "metadata",
    "blocked",
    "auto_create_key",
)


SETTINGS = (
    "key_alias",
    "agent",
    "team",
    "team_id",
    "user_id",
    "models",
    "rpm_limit",
    "tpm_limit",
    "max_budget",
    "budget_duration",
    "duration",
    "blocked",
)


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """(method, path, body or query) for the command."""
    if args.group != "keys":
        return _principal_request(args)
    fields = {
        name: getattr(args, name) for name in SETTINGS if getattr(args, name, None) is not None
    }
    match args.command:
        case "create":
            return "POST", "/key/generate", fields
        case "update":
            return "POST", "/key/update", {"key": args.key, **fields}
        case "rotate":
            grace = {"grace_period": args.grace_period} if args.grace_period else {}
            return "POST", f"/key/{quote(args.key, safe='')}/regenerate", grace
        case "delete":
            return "POST", "/key/delete", {"keys": args.keys}
        case "info":
            return "GET", "/key/info", {"key": args.key}
        case _:
            return "GET", "/key/list", {"return_full_object": "true", "size": "100"}


def _principal_request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    kind = args.group.removesuffix("s")
    names = (*OWN[kind], *PRINCIPAL_SETTINGS)
    fields = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    match args.command:
        case "new":
            named = {f"{kind}_id": args.id} if args.id else {}
            return "POST", f"/{kind}/new", {**named, **fields}
        case "update":
            return "POST", f"/{kind}/update", {f"{kind}_id": args.id, **fields}
        case "delete":
            return "POST", f"/{kind}/delete", {f"{kind}_ids": args.ids}
        case "info":
            return "GET", f"/{kind}/info", {f"{kind}_id": args.id}
        case _:
            return "GET", f"/{kind}/list", {"page_size": "100"} if kind == "user" else {}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    method, path, payload = _request(args)
    headers = {"Authorization": f"Bearer {args.master_key}"}
    try:
        response = httpx.request(
            method,
            args.url.rstrip("/") + path,
            headers=headers,
            json=payload if method == "POST" else None,
            params=payload if method == "GET" else None,
            timeout=30,
        )
    except httpx.HTTPError as exc:
        print(f"llm-proxy: cannot reach {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 2
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text[:500]}}
    if response.is_error:
        message = (body.get("error") or {}).get("message") or response.reason_phrase
        print(f"llm-proxy: {response.status_code}: {message}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    if args.command in ("create", "rotate") or (args.command == "new" and body.get("key")):
        print("Store the key now: it is not shown again.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
