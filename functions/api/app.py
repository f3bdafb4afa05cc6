"""The api Lambda function: its settings and the gateway from the environment, its FastAPI
app, the SnapStart hooks and the Mangum handler. Everything else lives in `llm_proxy`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_proxy import snapstart
from llm_proxy.gateway import Gateway
from llm_proxy.http.app import create_app
from llm_proxy.http.lambda_events import with_routed_host
from llm_proxy.lambda_extension import AfterResponseExtension
from llm_proxy.settings import ApiSettings
from mangum import Mangum

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")

settings = ApiSettings.from_env()
# Registered during init, as Lambda requires of extensions; None outside Lambda.
extension = AfterResponseExtension.start_in_lambda(settings)
gateway = Gateway.from_settings(settings, DEFAULT_CONFIG)
if extension is not None:
    gateway.meter_in_extension()
app = create_app(gateway, extension=extension)
# SnapStart's hooks: the runtime's in the Mangum function, Lambda Web Adapter's under run.sh.
snapstart.register(gateway, app)
snapstart.add_adapter_hooks(gateway, app)
# lifespan "off": Mangum would otherwise run startup/shutdown on every invocation.
mangum = Mangum(app, lifespan="off")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The function's entry point: the app under Mangum, at the host API Gateway routed on."""
    response: dict[str, Any] = mangum(with_routed_host(event), context)
    return response


__all__ = ["DEFAULT_CONFIG", "app", "create_app", "gateway", "handler"]
