"""`make dev`: the API under uvicorn on 127.0.0.1, with AWS embedded (a moto server holding the
template's tables and secret) unless AWS_ENDPOINT_URL already points somewhere."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from contextlib import ExitStack

import uvicorn
from botocore.exceptions import BotoCoreError, ClientError

from devstack.aws import REPO_ROOT, LocalAWS, local_aws, port_is_free, provider_keys_from_env

MOTO_HOST = "127.0.0.1"
MOTO_PORT = 4566
DEFAULT_MASTER_KEY = "sk-1234"


def _banner(
    url: str, key: str, aws: str, names: dict[str, str], provider_keys: Iterable[str]
) -> str:
    written = ", ".join(provider_keys) or "none (set e.g. OPENAI_API_KEY before `make dev`)"
    resources = "\n".join(f"  {logical_id:<20} {name}" for logical_id, name in names.items())
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

  .venv/bin/llm-proxy keys create --agent coder --rpm 60    # a virtual key for one agent

  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="{key}")
  reply = client.chat.completions.create(
      model="demo", messages=[{{"role": "user", "content": "Say hello"}}]
  )
  print(reply.choices[0].message.content)

Ctrl-C stops the server.
"""


def _serve(aws: LocalAWS, described: str, provider_keys: Iterable[str], port: int) -> None:
    """The api app under uvicorn, with the deployed function's environment pointed at `aws`."""
    # AWS settings already in the environment win, but the endpoint is always the local one.
    os.environ["AWS_ENDPOINT_URL"] = aws.endpoint
    for name, value in aws.env.items():
        os.environ.setdefault(name, value)
    os.environ["LLM_PROXY__ENV"] = "local"
    # The tables, the secret, the dead-letter queue: whatever the deployed function is given.
    os.environ.update(aws.function_env("ApiFunction"))
    # One process serves the api and key management, with its OpenAPI schema at /docs.
    os.environ["LLM_PROXY__KEY_MANAGEMENT"] = "true"
    os.environ.setdefault("LLM_PROXY__OPENAPI", "true")
    os.environ.setdefault("LLM_PROXY__CONFIG_PATH", str(REPO_ROOT / "config" / "local.yaml"))
    os.environ.setdefault("LLM_PROXY__MASTER_KEY", DEFAULT_MASTER_KEY)
    os.environ.setdefault("OLLAMA_API_BASE", "http://localhost:11434")
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

    # Lambda puts layer code on the path (/opt/python); do the same for the core layer.
    sys.path.insert(0, str(REPO_ROOT / "layers" / "core"))

    url = f"http://127.0.0.1:{port}"
    key = os.environ["LLM_PROXY__MASTER_KEY"]
    print(_banner(url, key, described, aws.resources, provider_keys))
    uvicorn.run(
        "app:app",
        app_dir=str(REPO_ROOT / "functions" / "api"),
        host="127.0.0.1",
        port=port,
        lifespan="off",
    )


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    if endpoint is None and not port_is_free(MOTO_PORT, MOTO_HOST):
        print(
            f"error: port {MOTO_PORT} on {MOTO_HOST} is busy, so the embedded AWS (moto) "
            "cannot start. Stop whatever listens there, or point at it with "
            f"AWS_ENDPOINT_URL=http://{MOTO_HOST}:{MOTO_PORT} if it is LocalStack/moto.",
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
                        port=MOTO_PORT,
                        host=MOTO_HOST,
                        region=region,
                    )
                )
            except (BotoCoreError, ClientError) as exc:
                print(
                    f"error: could not create the local tables and secret at "
                    f"{endpoint or f'http://{MOTO_HOST}:{MOTO_PORT}'}: {exc}",
                    file=sys.stderr,
                )
                return 1
            if endpoint is None:
                described = f"moto (embedded) at {aws.endpoint}"
            else:
                described = f"AWS_ENDPOINT_URL={endpoint}"
            _serve(aws, described, provider_keys, port)
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
