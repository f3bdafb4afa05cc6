"""`make dev`: the API under uvicorn on 127.0.0.1, with AWS embedded (a moto server in a process
of its own, holding the template's tables and secret) unless AWS_ENDPOINT_URL already points
somewhere. Ctrl-C or SIGTERM stops everything it started."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from types import FrameType

from botocore.exceptions import BotoCoreError, ClientError

from devstack.aws import LocalAWS, local_aws, provider_keys_from_env
from devstack.gateway import gateway_env, serve
from devstack.processes import port_is_free

MOTO_HOST = "127.0.0.1"
DEFAULT_MOTO_PORT = 4566


def _banner(
    url: str, key: str, aws: str, names: dict[str, str], provider_keys: Iterable[str]
) -> str:
    from datetime import UTC, datetime, timedelta

    written = ", ".join(provider_keys) or "none (set e.g. OPENAI_API_KEY before `make dev`)"
    resources = "\n".join(f"  {logical_id:<20} {name}" for logical_id, name in names.items())
    # The spend page's period: yesterday and today (UTC), where this stack's traffic is.
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    return f"""
LLM Proxy (local) on {url}
  master key           {key}
  AWS                  {aws}
{resources}
  provider keys        {written}
  config               {os.environ["LLM_PROXY__CONFIG_PATH"]}

Try it:
  curl -s {url}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo", "messages": [{{"role": "user", "content": "Say hello"}}]}}'

  curl -s {url}/v1/models -H "Authorization: Bearer {key}"

  # Spend, yesterday and today: the cost report's page (format=csv for its CSV)
  curl -s "{url}/spend/report?format=html&start={yesterday}&end={today}" \\
    -H "Authorization: Bearer {key}" -o spend.html    # then open spend.html in a browser

  .venv/bin/llm-proxy keys create --agent coder --rpm 60    # a virtual key for one agent

  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="{key}")
  reply = client.chat.completions.create(
      model="demo", messages=[{{"role": "user", "content": "Say hello"}}]
  )
  print(reply.choices[0].message.content)

Ctrl-C (or SIGTERM) stops the server and the local AWS.
"""


def _serve(aws: LocalAWS, described: str, provider_keys: Iterable[str], port: int) -> None:
    """The api app under uvicorn, with the deployed function's environment pointed at `aws`."""
    os.environ.update(gateway_env(aws, os.environ))
    url = f"http://127.0.0.1:{port}"
    key = os.environ["LLM_PROXY__MASTER_KEY"]
    print(_banner(url, key, described, aws.resources, provider_keys), flush=True)
    serve(port)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM stops the stack as Ctrl-C does: uvicorn shuts down, then the moto process.
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    port = int(os.environ.get("PORT", "8000"))
    moto_port = int(os.environ.get("MOTO_PORT", str(DEFAULT_MOTO_PORT)))
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    if endpoint is None and not port_is_free(moto_port, MOTO_HOST):
        print(
            f"error: port {moto_port} on {MOTO_HOST} is busy, so the embedded AWS (moto) "
            "cannot start. Stop whatever listens there, or point at it with "
            f"AWS_ENDPOINT_URL=http://{MOTO_HOST}:{moto_port} if it is LocalStack/moto.",
            file=sys.stderr,
        )
        return 1
    provider_keys = provider_keys_from_env()
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    try:
        with ExitStack() as running:
            try:
                aws = running.enter_context(
                    local_aws(
                        provider_keys,
                        endpoint=endpoint,
                        port=moto_port,
                        host=MOTO_HOST,
                        in_process=False,
                        region=region,
                    )
                )
            except (BotoCoreError, ClientError) as exc:
                print(
                    f"error: could not create the local tables and secret at "
                    f"{endpoint or f'http://{MOTO_HOST}:{moto_port}'}: {exc}",
                    file=sys.stderr,
                )
                return 1
            if endpoint is None:
                described = f"moto at {aws.endpoint} (pid {aws.pid})"
            else:
                described = f"AWS_ENDPOINT_URL={endpoint}"
            _serve(aws, described, provider_keys, port)
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
