"""The keys Lambda function: key management (`/key/*`, master key only) on its own, the only
function that may write the keys table. The gateway from the environment (the api function's
settings: the same app), an app with the key routes alone, and the Mangum handler. Everything
else lives in `llm_proxy`."""

from __future__ import annotations

from pathlib import Path

from llm_proxy.gateway import Gateway
from llm_proxy.http.app import KEY_ROUTES, create_app
from llm_proxy.settings import ApiSettings
from mangum import Mangum

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")

gateway = Gateway.from_settings(ApiSettings.from_env(), DEFAULT_CONFIG)
app = create_app(gateway, KEY_ROUTES)
# lifespan "off": Mangum would otherwise run startup/shutdown on every invocation.
handler = Mangum(app, lifespan="off")

__all__ = ["DEFAULT_CONFIG", "app", "gateway", "handler"]
