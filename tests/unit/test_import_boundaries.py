"""Production code never imports test code or local-mode code, and the image ships none of either.

The production packages are those the image's wheel ships: pyproject.toml's [tool.setuptools]
packages once the Dockerfile has deleted the `# local mode` lines. They are read statically, every
import statement of every module resolved, and in a module that imports by name
(`importlib.import_module`, `__import__`) every string naming a module counts as an import too (the
CLI finds its subcommands that way). The Dockerfile's production stages must copy no local-mode
package.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Local mode: the dev stack, the model-server process helper and the demo (local/), and the
# TF-Serving stand-in (tfserving/). `recommender-local` runs them; production never imports them.
LOCAL_MODE = {"local", "tfserving"}
# The pyproject.toml lines the Dockerfile deletes before building the image's wheel.
LOCAL_MARKER = "# local mode"
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def pyproject(text: str | None = None) -> dict:
    return tomllib.loads(text if text is not None else (REPO / "pyproject.toml").read_text())


def image_pyproject() -> dict:
    """pyproject.toml as the image's wheel is built from it: without the local-mode lines."""
    lines = (REPO / "pyproject.toml").read_text().splitlines()
    return pyproject("\n".join(line for line in lines if not line.rstrip().endswith(LOCAL_MARKER)))


def shipped_packages() -> list[str]:
    return image_pyproject()["tool"]["setuptools"]["packages"]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_local_mode(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in LOCAL_MODE)


def is_test_code(module: str) -> bool:
    return module == "tests" or module.startswith("tests.")


def production_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in shipped_packages()
        for path in sorted((REPO / package.replace(".", "/")).rglob("*.py"))
    }


def imported_modules(module: str, path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved; `from a import b` gives a and a.b."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
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
    return found | imported_by_name(tree)


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
    return {name for name in strings if is_test_code(name) or is_local_mode(name) or names_a_module(name)}


def names_a_module(name: str) -> bool:
    path = REPO / name.replace(".", "/")
    return "." in name and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file())


def imports_of(predicate: Callable[[str], bool]) -> dict[str, list[str]]:
    found = {module: imported_modules(module, path) for module, path in production_modules().items()}
    return {
        module: sorted(name for name in names if predicate(name))
        for module, names in found.items()
        if any(predicate(name) for name in names)
    }


def test_the_walk_sees_the_shipped_packages_and_resolves_imports():
    modules = production_modules()
    assert {"common.settings", "modelserver.loop", "recommender.cli"} <= set(modules)
    assert not any(is_local_mode(name) for name in modules)
    # The walk is able to see an import of test or local-mode code (else the tests below could
    # never fail).
    assert is_test_code("tests.serving_world") and not is_test_code("testsuite")
    assert is_local_mode("local.stack.servers") and is_local_mode("tfserving") and not is_local_mode("locale")
    assert "common.settings" in imported_modules("modelserver.settings", modules["modelserver.settings"])


def test_no_production_module_imports_test_code():
    offenders = imports_of(is_test_code)
    assert offenders == {}, f"production modules importing test code: {offenders}"


def test_no_production_module_imports_local_mode_code():
    offenders = imports_of(is_local_mode)
    assert offenders == {}, f"production modules importing local-mode code: {offenders}"


@pytest.mark.parametrize(
    ("forbidden", "source"),
    [
        (is_test_code, "import tests.waiting"),
        (is_test_code, "from tests import waiting"),
        (is_test_code, "from ..tests import x"),
        (is_test_code, "import tests"),
        (
            is_test_code,
            "import importlib\nPLUGINS = ['common.settings', 'tests.serving_world']\n"
            "[importlib.import_module(p) for p in PLUGINS]",
        ),
        (is_local_mode, "import local.stack"),
        (is_local_mode, "from local.stack.servers import HOST"),
        (is_local_mode, "from local import demo"),
        (is_local_mode, "from ..local import modelserver"),
        (is_local_mode, "import tfserving.server"),
        (is_local_mode, "from tfserving.core import load_version"),
        (
            is_local_mode,
            "import importlib\nCOMMANDS = ['common.settings', 'tfserving']\n"
            "[importlib.import_module(c) for c in COMMANDS]",
        ),
        (is_local_mode, "__import__('local.cli')"),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path, forbidden, source):
    package = tmp_path / "common"
    package.mkdir()
    path = package / "bad.py"
    path.write_text(source + "\n")
    assert any(forbidden(name) for name in imported_modules("common.bad", path))


def test_the_image_wheel_leaves_exactly_local_mode_out():
    full, image = pyproject(), image_pyproject()
    dropped = set(full["tool"]["setuptools"]["packages"]) - set(shipped_packages())
    # Every local-mode package is dropped, and nothing else.
    assert {name.split(".")[0] for name in dropped} == LOCAL_MODE
    assert all(is_local_mode(name) for name in dropped)
    assert not any(is_local_mode(name) for name in shipped_packages())
    assert not any(is_local_mode(name) for name in image["tool"]["setuptools"]["package-data"])
    scripts = image["project"]["scripts"]
    assert "recommender" in scripts
    assert not any(is_local_mode(target.partition(":")[0]) for target in scripts.values())
    assert "recommender-local" in full["project"]["scripts"]


def dockerfile_stages(text: str) -> list[tuple[str, str, list[list[str]]]]:
    """(name, base, COPY argument lists) per stage of a Dockerfile; an unnamed stage is named by
    its index."""
    text = re.sub(r"\\\n", " ", text)
    stages: list[tuple[str, str, list[list[str]]]] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        instruction = words[0].upper()
        if instruction == "FROM":
            name = words[3] if len(words) >= 4 and words[2].upper() == "AS" else str(len(stages))
            stages.append((name, words[1], []))
        elif instruction == "COPY" and stages:
            stages[-1][2].append(words[1:])
    return stages


def production_copies(text: str) -> set[str]:
    """The build-context paths that the final stage, and every stage it builds on, copy."""
    stages = {name: (base, copies) for name, base, copies in dockerfile_stages(text)}
    todo, seen, sources = [dockerfile_stages(text)[-1][0]], set(), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in stages:
            continue  # an image, not a stage
        seen.add(name)
        base, copies = stages[name]
        todo.append(base)
        for args in copies:
            origin = next((a.split("=", 1)[1] for a in args if a.startswith("--from=")), None)
            paths = [a for a in args if not a.startswith("--")][:-1]  # the last one is the target
            if origin is None:
                sources.update(paths)
            else:
                todo.append(origin)
    return sources


def test_the_dockerfile_production_stages_copy_no_local_mode_package():
    text = (REPO / "Dockerfile").read_text()
    copied = {Path(path).parts[0] for path in production_copies(text)}
    assert not copied & LOCAL_MODE, f"the production image copies local-mode code: {copied & LOCAL_MODE}"
    assert {name.split(".")[0] for name in shipped_packages()} <= copied
    # The wheel is built from pyproject.toml with the local-mode lines deleted.
    assert f"sed -i '/{LOCAL_MARKER}$/d'" in text


def test_the_dockerfile_check_sees_copies_through_stages():
    text = (
        "FROM python AS deps\nCOPY common /src/common\nFROM deps AS wheel\nCOPY local \\\n  /src/local\n"
        "FROM python AS other\nCOPY tfserving /x\nFROM python\nCOPY --from=wheel /wheels /tmp\n"
    )
    assert production_copies(text) == {"common", "local"}
