"""Production code never imports test code: the packages the wheel ships (pyproject.toml
[tool.setuptools] packages) are read statically, every import statement of every module resolved,
and in a module that imports by name (`importlib.import_module`, `__import__`) every string naming
a module counts as an import too (the CLI finds its subcommands that way)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Local-mode code: the dev stack, the demo and the TF-Serving stand-in. They ship in the package
# today but are no production path; splitting them out is a later step.
LOCAL_MODE = {"localstack", "tfserving", "recommender.demo", "modelserver.local"}
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def shipped_packages() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["packages"]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_local_mode(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in LOCAL_MODE)


def production_modules() -> dict[str, Path]:
    modules = {}
    for package in shipped_packages():
        for path in sorted((REPO / package.replace(".", "/")).rglob("*.py")):
            name = module_name(path)
            if not is_local_mode(name):
                modules[name] = path
    return modules


def imported_modules(module: str, path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved; `from a import b` gives a and a.b."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                parent = ".".join([*base, node.module] if node.module else base)
            else:
                parent = node.module or ""
            found.add(parent)
            found.update(f"{parent}.{alias.name}" for alias in node.names)
    return found | imported_by_name(ast.parse(path.read_text(), str(path)))


def imported_by_name(tree: ast.AST) -> set[str]:
    """In a module calling importlib.import_module or __import__: the strings naming a module."""
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    if not any(
        (isinstance(f, ast.Attribute) and f.attr == "import_module")
        or (isinstance(f, ast.Name) and f.id in {"import_module", "__import__"})
        for f in calls
    ):
        return set()
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.fullmatch(node.value)
    }
    return {name for name in strings if is_test_code(name) or names_a_module(name)}


def names_a_module(name: str) -> bool:
    path = REPO / name.replace(".", "/")
    return "." in name and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file())


def imports_of(predicate) -> dict[str, list[str]]:
    return {
        module: sorted(name for name in imported_modules(module, path) if predicate(name))
        for module, path in production_modules().items()
        if any(predicate(name) for name in imported_modules(module, path))
    }


def is_test_code(module: str) -> bool:
    return module == "tests" or module.startswith("tests.")


def test_the_walk_sees_the_shipped_packages_and_resolves_imports():
    modules = production_modules()
    assert {"common.settings", "modelserver.loop", "recommender.cli"} <= set(modules)
    assert not any(is_local_mode(name) for name in modules)
    assert "recommender.demo" not in modules and "modelserver.local" not in modules
    # The walk is able to see an import of test code (else the test below could never fail).
    assert is_test_code("tests.serving_world") and not is_test_code("testsuite")
    assert "common.settings" in imported_modules("modelserver.settings", modules["modelserver.settings"])


def test_no_production_module_imports_test_code():
    offenders = imports_of(is_test_code)
    assert offenders == {}, f"production modules importing test code: {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        "import tests.waiting",
        "from tests import waiting",
        "from ..tests import x",
        "import tests",
        "import importlib\nPLUGINS = ['common.settings', 'tests.serving_world']\n"
        "[importlib.import_module(p) for p in PLUGINS]",
    ],
)
def test_an_import_of_test_code_is_caught(tmp_path, source):
    package = tmp_path / "common"
    package.mkdir()
    path = package / "bad.py"
    path.write_text(source + "\n")
    assert any(is_test_code(name) for name in imported_modules("common.bad", path))
