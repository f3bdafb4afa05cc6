"""The functions' handler modules (functions/<name>/app.py), imported as Lambda imports them,
and the environment a block runs them with."""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

from tests.support.paths import REPO


def load_function(name: str, module_name: str | None = None) -> ModuleType:
    """functions/<name>/app.py, executed afresh as a module of its own (`module_name`, by
    default `<name>_function_under_test`) with the process's environment as it is now."""
    path = REPO / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(
        module_name or f"{name}_function_under_test", path
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_api_module(name: str) -> ModuleType:
    """functions/api/app.py as the module `name`."""
    return load_function("api", name)


class Env:
    """Environment variables set for a block, restored afterwards."""

    def __init__(self, **values: str) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        self.saved = {name: os.environ.get(name) for name in self.values}
        os.environ.update(self.values)

    def __exit__(self, *_: object) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def report_env(aws: dict[str, str], **extra: str) -> Env:
    return Env(
        LLM_PROXY__ROLLUPS_TABLE=aws["RollupsTable"],
        LLM_PROXY__REPORT_BUCKET=aws["ReportBucket"],
        LLM_PROXY__REPORT_TOPIC_ARN=aws["ReportTopic"],
        **extra,
    )
