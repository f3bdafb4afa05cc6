"""`make dev`: the API under uvicorn on 127.0.0.1, with AWS embedded (a moto server holding the
template's tables and secret) unless AWS_ENDPOINT_URL already points somewhere."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

import uvicorn
from botocore.exceptions import BotoCoreError, ClientError

from scripts.local_stack import (
    REPO_ROOT,
    TABLE_TYPE,
    create_resources,
    function_environment,
    load_template,
    port_is_free,
    provider_keys_from_env,
    start_moto,
)

MOTO_HOST = "127.0.0.1"
MOTO_PORT = 4566
DEFAULT_MASTER_KEY = "sk-1234"


def _table_env_name(logical_id: str) -> str:
    # UsageTable -> LLM_PROXY__USAGE_TABLE, the name template.yaml passes to the function.
    stem = logical_id.removesuffix("Table")
    snake = "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(stem)).upper()
    return f"LLM_PROXY__{snake}_TABLE"


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


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    moto = None
    try:
        if not os.environ.get("AWS_ENDPOINT_URL"):
            if not port_is_free(MOTO_PORT, MOTO_HOST):
                print(
                    f"error: port {MOTO_PORT} on {MOTO_HOST} is busy, so the embedded AWS (moto) "
                    "cannot start. Stop whatever listens there, or point at it with "
                    f"AWS_ENDPOINT_URL=http://{MOTO_HOST}:{MOTO_PORT} if it is LocalStack/moto.",
                    file=sys.stderr,
                )
                return 1
            moto = start_moto(MOTO_PORT, MOTO_HOST)
            os.environ["AWS_ENDPOINT_URL"] = f"http://{MOTO_HOST}:{MOTO_PORT}"
            aws = f"moto (embedded) at {os.environ['AWS_ENDPOINT_URL']}"
        else:
            aws = f"AWS_ENDPOINT_URL={os.environ['AWS_ENDPOINT_URL']}"

        # Dummy credentials: the local endpoint accepts any, and real ones must never be used.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

        template = load_template()
        provider_keys = provider_keys_from_env()
        try:
            names = create_resources(
                os.environ["AWS_ENDPOINT_URL"],
                provider_keys,
                region=os.environ["AWS_DEFAULT_REGION"],
                template=template,
            )
        except (BotoCoreError, ClientError) as exc:
            print(
                f"error: could not create the local tables and secret at "
                f"{os.environ['AWS_ENDPOINT_URL']}: {exc}",
                file=sys.stderr,
            )
            return 1

        os.environ["LLM_PROXY__ENV"] = "local"
        os.environ["LLM_PROXY__SECRET_ID"] = names["ProviderKeysSecret"]
        for logical_id, resource in template.get("Resources", {}).items():
            if resource.get("Type") == TABLE_TYPE:
                os.environ[_table_env_name(logical_id)] = names[logical_id]
        # The rollups table, the dead-letter queue: whatever the deployed function is given.
        os.environ.update(function_environment(template, names, "ApiFunction"))
        os.environ.setdefault("LLM_PROXY__CONFIG_PATH", str(REPO_ROOT / "config" / "local.yaml"))
        os.environ.setdefault("LLM_PROXY__MASTER_KEY", DEFAULT_MASTER_KEY)
        os.environ.setdefault("OLLAMA_API_BASE", "http://localhost:11434")
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

        # Lambda puts layer code on the path (/opt/python); do the same for the core layer.
        sys.path.insert(0, str(REPO_ROOT / "layers" / "core"))

        url = f"http://127.0.0.1:{port}"
        print(_banner(url, os.environ["LLM_PROXY__MASTER_KEY"], aws, names, provider_keys))
        uvicorn.run(
            "app:app",
            app_dir=str(REPO_ROOT / "functions" / "api"),
            host="127.0.0.1",
            port=port,
            lifespan="off",
        )
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if moto is not None:
            moto.stop()


if __name__ == "__main__":
    sys.exit(main())
