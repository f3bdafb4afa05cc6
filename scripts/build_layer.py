"""Builds the Lambda layers as they deploy, and measures them.

    python scripts/build_layer.py deps OUT   third-party dependencies into OUT/python
    python scripts/build_layer.py core OUT   the llm_proxy package into OUT/python
    python scripts/build_layer.py opt ROOT   both merged into ROOT/opt/python as Lambda merges
                                             them, and the runtime's boto3 into ROOT/runtime
    python scripts/build_layer.py size       both into build/layers, then prints the size

`sam build` calls the first two through layers/deps/Makefile and layers/core/Makefile; the
read-only-layer test (`opt`), the bench and `make size` call it directly, so none needs SAM.

The deps layer is installed from the hash-pinned lock, checked for `.pth` files that run code
at interpreter start (scripts/pth_check.py), trimmed (see TRIM), and compiled to
bytecode for the runtime's Python: Lambda's filesystem is read-only, so without shipped
bytecode every cold start compiles every imported module again in memory. Only the standard
library is used here, so any Python 3.12 runs it.
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import shutil
import struct
import subprocess
import sys
from collections.abc import Collection, Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPS_REQUIREMENTS = REPO_ROOT / "layers" / "deps" / "requirements.txt"
CORE_PACKAGE = REPO_ROOT / "layers" / "core" / "llm_proxy"
API_FUNCTION = REPO_ROOT / "functions" / "api"
BUILD_DIR = REPO_ROOT / "build" / "layers"
PTH_CHECK = REPO_ROOT / "scripts" / "pth_check.py"
RUNTIME_PYTHON = (3, 12)
# Lambda's python3.12 runtime runs on Amazon Linux 2023 (glibc 2.34), x86_64.
PLATFORM = "x86_64-manylinux_2_34"
MIB = 1024 * 1024
# The budget for the function and its layers, and the margin kept under it for what grows.
SIZE_BUDGET_MB = 150.0
SIZE_MARGIN_MB = 10.0
LAMBDA_LIMIT_MB = 250.0

# Distributions left out of the layer: (distribution, its top-level names, why).
EXCLUDED: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "boto3",
        ("boto3",),
        "the runtime's own boto3 is used (README, Deploying: Dependency layer)",
    ),
    ("botocore", ("botocore",), "the runtime's own, with boto3"),
    ("s3transfer", ("s3transfer",), "the runtime's own, with boto3"),
    (
        "tokenizers",
        ("tokenizers",),
        "litellm counts Hugging Face tokenizers with its Rust codec; the Python package is "
        "only its fallback for mutating a tokenizer, which the gateway never does",
    ),
    (
        "huggingface-hub",
        ("huggingface_hub",),
        "downloads tokenizers from the Hub: no internet from the function, and no caller",
    ),
    ("hf-xet", ("hf_xet",), "huggingface-hub's download backend"),
    ("fsspec", ("fsspec",), "used by huggingface-hub only"),
    ("tqdm", ("tqdm",), "huggingface-hub's progress bars"),
)

EXCLUDED_NAMES = frozenset(name for name, _, _ in EXCLUDED)
# What the python3.12 runtime itself provides, for running a built layer outside Lambda.
RUNTIME_SDK = frozenset({"boto3", "botocore", "s3transfer"})

# Paths under the layer's python/ removed after install: (glob, why).
TRIM: tuple[tuple[str, str], ...] = (
    ("bin", "console scripts, with the build machine's interpreter in their shebangs"),
    (".lock", "uv's lock on the target directory"),
    ("**/__pycache__", "bytecode of whatever Python installed it; compiled afresh below"),
    ("**/*.pyi", "type stubs: nothing type-checks in Lambda"),
    ("**/py.typed", "type-checker marker"),
    ("*.dist-info/sboms", "build provenance documents; RECORD and METADATA stay"),
    (
        "litellm/litellm_core_utils/tokenizers/deepseek_tokenizer.json",
        "counts DeepSeek tokens only for a reply without usage (DeepSeek sends it); litellm "
        "then falls back to tiktoken, as it does for the tokenizers it would download",
    ),
    ("aws_lambda_powertools/event_handler/openapi/swagger_ui", "Swagger UI assets, unused"),
    ("yaml/_yaml.*.so", "libyaml bindings: yaml.safe_load, the only loader used, is pure Python"),
    ("urllib3/contrib/emscripten", "urllib3 for browsers (Pyodide)"),
    ("jsonschema/tests", "test suites"),
    ("jsonschema_specifications/tests", "test suites"),
    ("referencing/tests", "test suites"),
    ("regex/tests", "test suites"),
    ("certifi/tests", "test suites"),
)
# litellm's proxy server ships its admin UI, Swagger assets, OpenAPI snapshot, guardrail
# policies and example configs as data files; the SDK reads none of them. Its Python modules
# stay: the SDK imports from litellm.proxy lazily in many places.
DATA_FREE = ("litellm/proxy",)


def _python_ok() -> None:
    if sys.version_info[:2] != RUNTIME_PYTHON:
        wanted = ".".join(map(str, RUNTIME_PYTHON))
        sys.exit(f"build the layers with Python {wanted}: bytecode is version-specific")


def _uv() -> str | None:
    """uv from PATH or the dev environment; None where there is neither (a fresh clone)."""
    found = shutil.which("uv") or str(REPO_ROOT / ".venv" / "bin" / "uv")
    return found if Path(found).exists() else None


def _installer(site: Path, requirements: Path) -> list[str]:
    """The install command: uv where it is at hand, else the pip of the Python running this
    (sam build's python3.12). Either way: the lock's wheels for Lambda's platform, hashes
    checked, no dependency resolution, files copied into `site`."""
    python_version = ".".join(map(str, RUNTIME_PYTHON))
    uv = _uv()
    if uv is not None:
        return [
            *(uv, "pip", "install", "--quiet", "--target", str(site)),
            *("--require-hashes", "--no-deps", "--only-binary", ":all:"),
            # Copies, not links into uv's cache: the files are compiled, trimmed, read-only.
            *("--link-mode", "copy", "--python-version", python_version),
            *("--python-platform", PLATFORM, "--python", sys.executable),
            *("-r", str(requirements)),
        ]
    # pip takes exact platform tags: every manylinux tag that glibc 2.34 runs.
    glibc = [f"manylinux_2_{minor}_x86_64" for minor in range(34, 4, -1)]
    legacy = ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    platforms = [option for tag in (*glibc, *legacy) for option in ("--platform", tag)]
    return [
        *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
        *("--target", str(site), "--require-hashes", "--no-deps", "--no-compile"),
        *("--only-binary", ":all:", "--implementation", "cp"),
        *("--python-version", python_version, *platforms),
        *("-r", str(requirements)),
    ]


def _select(lock: Path, into: Path, names: Collection[str], keep: bool) -> Path:
    """The lock's entries (each spans its hash lines) named in `names` (keep) or not."""
    kept: list[str] = []
    selected = False
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            selected = (line.split("==", 1)[0].strip().lower() in names) == keep
        if selected:
            kept.append(line)
    into.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return into


def install(site: Path, names: Collection[str] = EXCLUDED_NAMES, keep: bool = False) -> None:
    """The lock, hashes checked, as wheels for Lambda's platform; no dependency resolution.
    By default everything but the excluded distributions."""
    site.mkdir(parents=True, exist_ok=True)
    reqs = _select(DEPS_REQUIREMENTS, site.parent / f"requirements.{site.name}.txt", names, keep)
    command = _installer(site, reqs)
    subprocess.run(command, check=True, cwd=REPO_ROOT)
    reqs.unlink()
    refuse_startup_code(site)


def refuse_startup_code(site: Path) -> None:
    """Stops the build where an installed distribution ships a `.pth` file that runs code at
    interpreter start (scripts/pth_check.py), before anything compiles or imports the tree."""
    check = subprocess.run([sys.executable, "-I", str(PTH_CHECK), str(site)], check=False)
    if check.returncode != 0:
        raise SystemExit(f"refusing to build from {site}: a package runs code at start")


def _matches(site: Path, pattern: str) -> Iterable[Path]:
    return sorted(site.glob(pattern), key=lambda path: len(path.parts), reverse=True)


def trim(site: Path) -> None:
    for _, tops, _ in EXCLUDED:
        for top in tops:
            if (site / top).exists():
                raise RuntimeError(f"{top} was excluded from the lock but is installed")
    for pattern, _ in TRIM:
        for path in _matches(site, pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    for folder in DATA_FREE:
        for path in _matches(site / folder, "**/*"):
            if path.is_file() and path.suffix != ".py":
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


# ELF constants for strip_debug_info.
_SHF_ALLOC = 0x2
_SHF_INFO_LINK = 0x40
_SHT_SYMTAB, _SHT_NOBITS, _SHT_RELA, _SHT_REL = 2, 8, 4, 9
_SECTION = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SEGMENT = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr


def strip_debug_info(site: Path) -> int:
    """Debug information and symbol tables dropped from the shared libraries (what
    `strip --strip-debug --strip-unneeded` removes): nothing the loader reads. Several wheels
    ship their extensions unstripped. Pure Python, so the layer builds where binutils are
    missing. Returns the bytes saved."""
    return sum(_strip_elf(path) for path in sorted(site.rglob("*.so")) if path.is_file())


def _strip_elf(path: Path) -> int:
    data = path.read_bytes()
    # 64-bit little-endian ELF only (Lambda's x86_64); anything else is left as it is.
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return 0
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    if shnum == 0 or shstrndx >= shnum or shentsize != _SECTION.size:
        return 0
    sections = [list(_SECTION.unpack_from(data, shoff + i * shentsize)) for i in range(shnum)]
    names_at = sections[shstrndx][4]

    def name(section: list[int]) -> bytes:
        start = names_at + section[0]
        return data[start : data.index(b"\0", start)]

    removed = {
        index
        for index, section in enumerate(sections)
        if index not in (0, shstrndx)
        and not section[2] & _SHF_ALLOC
        and (
            section[1] == _SHT_SYMTAB
            or name(section) in (b".strtab",)
            or name(section).startswith(b".debug")
        )
    }
    loaded = [index for index, section in enumerate(sections) if section[2] & _SHF_ALLOC]
    # Only a tail of non-loaded sections goes: no loaded section's index may change, so the
    # dynamic symbols' section numbers stay right.
    if not removed or (loaded and min(removed) < max(loaded)):
        return 0
    end = phoff + phnum * phentsize
    for index in range(phnum):
        segment = _SEGMENT.unpack_from(data, phoff + index * phentsize)
        end = max(end, segment[2] + segment[5])  # p_offset + p_filesz
    for section in sections:
        if section[2] & _SHF_ALLOC and section[1] != _SHT_NOBITS:
            end = max(end, section[4] + section[5])
    out = bytearray(data[:end])
    renumbered: dict[int, int] = {}
    kept: list[list[int]] = []
    for index, section in enumerate(sections):
        if index in removed:
            continue
        renumbered[index] = len(kept)
        offset, size = section[4], section[5]
        if index and section[1] != _SHT_NOBITS and offset + size > end:
            # A kept section past the loaded part (.comment, .shstrtab): moved up.
            out += b"\0" * (-len(out) % max(section[8], 1))
            section[4] = len(out)
            out += data[offset : offset + size]
        kept.append(section)
    for section in kept:
        section[6] = renumbered.get(section[6], 0)
        if section[1] in (_SHT_REL, _SHT_RELA) or section[2] & _SHF_INFO_LINK:
            section[7] = renumbered.get(section[7], 0)
    out += b"\0" * (-len(out) % 8)
    struct.pack_into("<Q", out, 0x28, len(out))
    struct.pack_into("<HH", out, 0x3C, len(kept), renumbered[shstrndx])
    for section in kept:
        out += _SECTION.pack(*section)
    path.write_bytes(out)
    return len(data) - len(out)


def compile_tree(site: Path) -> None:
    """Bytecode in __pycache__ beside the sources, never checked against them: zip keeps
    timestamps to 2 s, so timestamp-checked .pyc files could look stale in Lambda and be
    compiled again, in memory, on every cold start."""
    ok = compileall.compile_dir(
        str(site),
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise RuntimeError(f"compiling {site} failed")


def compile_sourceless(site: Path) -> None:
    """Each module's bytecode where its source was (`module.pyc`), and the source removed:
    half the size of source plus bytecode. Tracebacks keep file names and line numbers but
    show no source lines. A file that does not compile (Python 2 leftovers) keeps its source."""
    for source in sorted(site.rglob("*.py")):
        try:
            py_compile.compile(
                str(source),
                cfile=str(source.with_suffix(".pyc")),
                # Where the file lies in Lambda, for tracebacks.
                dfile=f"/opt/python/{source.relative_to(site)}",
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
        except py_compile.PyCompileError:
            continue
        source.unlink()


def build_deps(out: Path, compiled: bool = True) -> Path:
    _python_ok()
    site = out / "python"
    if site.exists():
        shutil.rmtree(site)
    install(site)
    trim(site)
    strip_debug_info(site)
    if compiled:
        compile_sourceless(site)
    return site


def build_core(out: Path, compiled: bool = True) -> Path:
    _python_ok()
    site = out / "python"
    if site.exists():
        shutil.rmtree(site)
    shutil.copytree(CORE_PACKAGE, site / CORE_PACKAGE.name, ignore=_no_bytecode)
    if compiled:
        compile_tree(site)
    return site


def build_runtime_sdk(site: Path) -> Path:
    """The runtime's boto3 stand-in (the lock's version), to run a layer outside Lambda."""
    if site.exists():
        shutil.rmtree(site)
    install(site, RUNTIME_SDK, keep=True)
    compile_tree(site)  # the runtime's own copy comes compiled
    return site


def build_opt(root: Path, compiled: bool = True) -> tuple[Path, dict[str, float]]:
    """Both layers merged under root/opt/python as Lambda merges them into /opt, and the
    runtime's boto3 under root/runtime; returns the PYTHONPATH and the layers' sizes."""
    deps = build_deps(root / "opt", compiled=compiled)
    core = build_core(root / "core", compiled=compiled)
    figures = sizes(deps, core)
    shutil.copytree(core / CORE_PACKAGE.name, deps / CORE_PACKAGE.name)
    runtime = build_runtime_sdk(root / "runtime")
    return deps, figures | {"runtime_sdk": tree_size_mb(runtime)}


def _no_bytecode(_: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__" or name.endswith(".pyc")]


def tree_size_mb(root: Path, skip_bytecode: bool = False) -> float:
    """Sum of regular file sizes under `root`, in MiB (Lambda's 250 MB limit is 250 MiB)."""
    total = 0
    for directory, dirnames, filenames in os.walk(root):
        if skip_bytecode:
            dirnames[:] = [name for name in dirnames if name != "__pycache__"]
        for filename in filenames:
            path = Path(directory) / filename
            if not path.is_symlink():
                total += path.stat().st_size
    return total / MIB


def sizes(deps: Path, core: Path, function: Path = API_FUNCTION) -> dict[str, float]:
    figures = {
        "deps_layer": tree_size_mb(deps),
        "core_layer": tree_size_mb(core),
        "api_function": tree_size_mb(function, skip_bytecode=True),
    }
    figures["total"] = sum(figures.values())
    return figures


def build_all(root: Path = BUILD_DIR) -> tuple[Path, Path]:
    return build_deps(root / "deps"), build_core(root / "core")


def report(figures: dict[str, float]) -> str:
    total = figures["total"]
    margin = SIZE_BUDGET_MB - total
    verdict = "met" if margin >= SIZE_MARGIN_MB else "MISSED"
    return "\n".join(
        [
            f"deps layer     {figures['deps_layer']:8.1f} MB",
            f"core layer     {figures['core_layer']:8.2f} MB",
            f"api function   {figures['api_function']:8.2f} MB",
            f"total          {total:8.1f} MB unzipped (Lambda's limit {LAMBDA_LIMIT_MB:g} MB)",
            f"margin         {margin:8.1f} MB under the {SIZE_BUDGET_MB:g} MB budget "
            f"(at least {SIZE_MARGIN_MB:g} MB: {verdict})",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("what", choices=["deps", "core", "opt", "size"])
    parser.add_argument("out", nargs="?", type=Path, help="the layer's root (deps, core, opt)")
    args = parser.parse_args(argv)
    if args.what == "size":
        deps, core = build_all()
        print(report(sizes(deps, core)))
        return
    if args.out is None:
        parser.error(f"{args.what} needs the output directory")
    if args.what == "opt":
        _, figures = build_opt(args.out.resolve())
        print(report(figures))
        return
    build = build_deps if args.what == "deps" else build_core
    build(args.out.resolve())


if __name__ == "__main__":
    main()
