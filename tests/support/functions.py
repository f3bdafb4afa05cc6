"""The functions' handler modules (functions/<name>/app.py), imported as Lambda imports them."""

from __future__ import annotations

import importlib.util
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
