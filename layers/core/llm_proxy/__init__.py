"""LLM Proxy: the gateway's domain code, shared by the Lambda handlers."""

import os

# litellm reads these at import, and every module here may import it: keep it offline (no cost
# map fetch, which hangs in a VPC without NAT) and its caches on Lambda's only writable path.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ.setdefault("XDG_CACHE_HOME", "/tmp/.cache")  # noqa: S108 - Lambda writes only /tmp
