"""The layout's rules, checked on the source: handlers only wire, modules and classes stay small
enough to read, the core has no import cycle, tests and scripts keep out of each other, and no
test file imports a test module or conftest.py (shared helpers live in tests/support)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "layers" / "core"
PACKAGE = CORE / "llm_proxy"
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
MAX_HANDLER_LINES = 80


def core_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(CORE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(path: Path, package: str) -> set[str]:
    """Modules a file imports when it is loaded (not those under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child)

    visit(tree)
    return found


def test_core_modules_and_classes_stay_readable() -> None:
    too_long = []
    for name, path in core_modules():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    too_long.append(f"class {name}.{node.name}: {length} lines")
    assert too_long == []


def test_the_core_has_no_import_cycle() -> None:
    modules = dict(core_modules())
    graph = {
        name: {
            imported
            for imported in imported_modules(path, package_of(name, path))
            if imported in modules and imported != name
        }
        for name, path in modules.items()
    }
    # A package's __init__ is loaded before its modules; it imports none of them here.
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def walk(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append([*visiting[visiting.index(name) :], name])
            return
        visiting.append(name)
        for dependency in sorted(graph[name]):
            walk(dependency)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        walk(name)
    assert cycles == []


@pytest.mark.parametrize("function", ["api", "cost_report", "usage_replay"])
def test_handlers_only_wire(function: str) -> None:
    handler = REPO / "functions" / function / "app.py"
    assert len(handler.read_text(encoding="utf-8").splitlines()) <= MAX_HANDLER_LINES
    tree = ast.parse(handler.read_text(encoding="utf-8"))
    defined = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert defined == [], "classes belong in llm_proxy"


def test_the_core_never_imports_functions_tests_or_scripts() -> None:
    for name, path in core_modules():
        imported = imported_modules(path, package_of(name, path))
        assert not {m for m in imported if m.split(".")[0] in ("functions", "tests", "scripts")}


@pytest.mark.parametrize(("folder", "forbidden"), [("tests", "scripts"), ("scripts", "tests")])
def test_tests_and_scripts_keep_out_of_each_other(folder: str, forbidden: str) -> None:
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / folder).rglob("*.py")
        if any(m.split(".")[0] == forbidden for m in imported_modules(path, folder))
    ]
    assert offenders == []


# What the HTTP layer may import from the core: the gateway (the facade, with its vocabulary),
# the errors it answers, the after-response work its middleware runs, and the logger.
HTTP_MAY_IMPORT = frozenset(
    {"llm_proxy.gateway", "llm_proxy.errors", "llm_proxy.after_response", "llm_proxy.logs"}
)


def test_the_http_layer_uses_the_core_through_the_gateway_only() -> None:
    offenders = []
    for name, path in core_modules():
        if not name.startswith("llm_proxy.http"):
            continue
        for imported in imported_modules(path, package_of(name, path)):
            module = ".".join(imported.split(".")[:2])
            core = imported.startswith("llm_proxy.") and not imported.startswith("llm_proxy.http")
            if core and module not in HTTP_MAY_IMPORT and imported not in HTTP_MAY_IMPORT:
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


def module_map() -> set[str]:
    """The core modules docs/development.md's module map lists, as paths under llm_proxy/."""
    text = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    block = text.split("## Module map", 1)[1].split("```", 2)[1]
    listed: set[str] = set()
    folders: list[tuple[int, str]] = []
    inside = False
    for line in block.splitlines():
        name = line.strip().split(" ", 1)[0]
        indent = len(line) - len(line.lstrip())
        if name == "layers/core/llm_proxy/":
            inside, folders = True, [(indent, "")]
            continue
        if not inside or not name:
            continue
        if indent <= folders[0][0]:
            break
        while folders and indent <= folders[-1][0]:
            folders.pop()
        path = folders[-1][1] + name
        if name.endswith("/"):
            folders.append((indent, path))
        elif name.endswith(".py"):
            listed.add(path)
    return listed


def test_the_module_map_lists_every_core_module() -> None:
    modules = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }
    listed = module_map()
    assert sorted(modules - listed) == [], "missing from the module map"
    assert sorted(listed - modules) == [], "in the module map, but gone"


def test_no_test_file_imports_a_test_module_or_conftest() -> None:
    """Helpers live in tests/support: conftest.py holds fixtures and test_* modules hold tests,
    and neither is imported by another file."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        package = ".".join(path.relative_to(REPO).parent.parts)
        for module in imported_modules(path, package):
            if any(part == "conftest" or part.startswith("test_") for part in module.split(".")):
                offenders.append(f"{path.relative_to(REPO)}: {module}")
    assert offenders == []


def test_test_files_have_names_of_their_own() -> None:
    # Test folders are not packages: pytest imports two files of one name as one module.
    names = [path.name for path in (REPO / "tests").rglob("test_*.py")]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []
