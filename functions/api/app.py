"""The api Lambda function: the gateway from the environment, its FastAPI app, the SnapStart
hooks and the Mangum handler. Everything else lives in `llm_proxy`."""

from __future__ import annotations

from pathlib import Path

from llm_proxy import snapstart
from llm_proxy.gateway import Gateway
from llm_proxy.http.app import create_app
from mangum import Mangum

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")

gateway = Gateway.from_env(DEFAULT_CONFIG)
app = create_app(gateway)
snapstart.register(gateway, app)
# lifespan "off": Mangum would otherwise run startup/shutdown on every invocation.
handler = Mangum(app, lifespan="off")

__all__ = ["DEFAULT_CONFIG", "app", "create_app", "gateway", "handler"]
