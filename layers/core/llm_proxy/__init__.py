"""LLM Proxy: the gateway's domain code, shared by the Lambda handlers.

"The seed" in this code is `llm-providers.md`, the document the gateway was built from: it
describes the LLM Proxy this replaces (`CodeLab -> LLM Proxy -> LiteLLM Proxy -> providers`)
with its config examples, `LLM_PROXY__*` variables, agent roles, price table and
troubleshooting cases. "The seed's X" means X as that document gives it.
"""

import os

# litellm reads these at import, and every module here may import it: keep it offline (no cost
# map fetch, which hangs in a VPC without NAT) and its caches on Lambda's only writable path.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# ...and every other catalogue litellm would fetch for itself (Anthropic's beta headers among
# them) comes from its bundled copy.
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ.setdefault("XDG_CACHE_HOME", "/tmp/.cache")  # noqa: S108 - Lambda writes only /tmp
