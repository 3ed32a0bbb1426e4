"""The environment variables each `recommender <command>` reads, found by parsing the source.

Deployment files (compose, the chart) set variables by name; a misspelt one, or one set on a
service whose command never reads it, would be silently ignored by pydantic-settings, so the tests
check every name against what that service's own command reads. Parsing instead of importing keeps
TensorFlow and friends out of these fast tests.

`COMMAND_SETTINGS` says which settings classes each command loads; `test_settings_names.py` keeps
it honest against the `.load(` calls in each command's sources, and keeps `KAFKA_COMMANDS` equal to
the commands whose code reaches `common.kafka`.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_MODULE = "common.kafka"
KAFKA_PREFIX = "KAFKA_"

# Where each command's code lives (a package folder or one module), relative to the repo.
COMMAND_SOURCES: dict[str, tuple[str, ...]] = {
    "init": ("recommender/init.py",),
    "datapublisher": ("datapublisher",),
    "trainer": ("trainer",),
    "modelsync": ("modelsync",),
    "modelserver": ("modelserver",),
    "modelpublisher": ("modelpublisher",),
    "client": ("client",),
    "pipeline": ("pipelines",),
}

# The settings classes each command loads (its own and those of the code it calls in-process).
COMMAND_SETTINGS: dict[str, frozenset[str]] = {
    "init": frozenset({"InitSettings"}),
    "datapublisher": frozenset({"DataPublisherSettings"}),
    # trainer.upload settles a pending publish with plain Settings.
    "trainer": frozenset({"TrainerSettings", "Settings"}),
    "modelsync": frozenset({"ModelSyncSettings"}),
    "modelserver": frozenset({"ModelServerSettings"}),
    "modelpublisher": frozenset({"ModelPublisherSettings"}),
    "client": frozenset({"ClientSettings"}),
    # cli.py, bootstrap.py (InitSettings for the topics), steps.py (the local run's steps).
    "pipeline": frozenset({"PipelineSettings", "InitSettings", "Settings", "ModelPublisherSettings"}),
}
# Commands whose code reaches common.kafka, so librdkafka reads their KAFKA_* variables as
# properties. The trainer only through modelpublisher.settle_pending (a pending publish).
KAFKA_COMMANDS = frozenset({"init", "trainer", "modelserver", "modelpublisher", "client", "pipeline"})
# Read by the code directly rather than through a settings class (README "Configuration"), by module.
OTHER_VARIABLES = {
    "RECOMMENDER_CACHE_DIR": "local.stack.provision",
    "RECOMMENDER_STACK_STATE": "local.stack.cli",
}


@dataclass(frozen=True)
class SettingsClass:
    name: str
    module: str
    bases: tuple[str, ...]
    fields: frozenset[str]


def _packages() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["packages"]


def _module_name(source: Path) -> str:
    parts = source.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, ast.Module]:
    """Every module of the project's packages, parsed, by dotted name."""
    return {
        _module_name(source): ast.parse(source.read_text(), str(source))
        for package in _packages()
        for source in sorted((REPO / package).rglob("*.py"))
    }


def _base_name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


@cache
def settings_classes() -> dict[str, SettingsClass]:
    """Every class whose base is a `...Settings` class, with its own (not inherited) field names."""
    classes: dict[str, SettingsClass] = {}
    for module, tree in _modules().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = tuple(_base_name(b) for b in node.bases)
            if not any(base.endswith("Settings") for base in bases):
                continue
            fields = {
                statement.target.id.upper()
                for statement in node.body
                if isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and not statement.target.id.startswith("_")
            }
            assert node.name not in classes, f"two settings classes named {node.name}"
            classes[node.name] = SettingsClass(node.name, module, bases, frozenset(fields))
    return classes


def class_fields(name: str) -> frozenset[str]:
    """The variables settings class `name` reads: its fields and those of its settings bases."""
    classes = settings_classes()
    cls = classes[name]
    inherited = (class_fields(base) for base in cls.bases if base in classes)
    return cls.fields.union(*inherited)


def command_modules(command: str) -> frozenset[str]:
    """The modules of `command`'s own sources."""
    roots = [_module_name(REPO / source) for source in COMMAND_SOURCES[command]]
    return frozenset(m for m in _modules() if any(m == root or m.startswith(root + ".") for root in roots))


def _imports(module: str) -> set[str]:
    """Project modules `module` imports anywhere (also inside functions: the lazy imports)."""
    known = _modules()
    found: set[str] = set()
    for node in ast.walk(known[module]):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            package = module if module in known and _is_package(module) else module.rpartition(".")[0]
            for _ in range(max(node.level - 1, 0)):
                package = package.rpartition(".")[0]
            base = ".".join(p for p in (package if node.level else "", node.module or "") if p)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            # `import a.b.c` also runs a and a.b.
            parts = name.split(".")
            found.update(
                ".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in known
            )
    return found


def _is_package(module: str) -> bool:
    return (REPO / module.replace(".", "/") / "__init__.py").is_file()


def reachable_modules(command: str) -> frozenset[str]:
    """`command`'s own modules and every project module they import, transitively."""
    seen: set[str] = set()
    todo = list(command_modules(command))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_imports(module) - seen)
    return frozenset(seen)


def loaded_settings(modules: Iterable[str]) -> frozenset[str]:
    """Settings classes the given modules call `.load(` on."""
    classes = settings_classes()
    trees = _modules()
    return frozenset(
        node.func.value.id
        for module in modules
        for node in ast.walk(trees[module])
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in classes
    )


@cache
def command_variables(command: str) -> frozenset[str]:
    """The exact variable names `recommender <command>` reads (KAFKA_* aside: see `reads`)."""
    names = frozenset().union(*(class_fields(name) for name in COMMAND_SETTINGS[command]))
    reachable = reachable_modules(command)
    return names | {name for name, module in OTHER_VARIABLES.items() if module in reachable}


def reads(command: str, variable: str) -> bool:
    """True when `recommender <command>` reads `variable` (KAFKA_* go to librdkafka as properties)."""
    if variable.startswith(KAFKA_PREFIX) and len(variable) > len(KAFKA_PREFIX):
        return command in KAFKA_COMMANDS
    return variable in command_variables(command)


def unread(variables: Iterable[str], commands: Iterable[str]) -> list[str]:
    """The `variables` none of `commands` reads (an unknown command reads nothing)."""
    commands = [c for c in commands if c in COMMAND_SETTINGS]
    return sorted(v for v in set(variables) if not any(reads(c, v) for c in commands))


def recommender_command(command: list[str] | None, args: list[str] | None) -> str | None:
    """The `recommender` subcommand a container runs: the image's entrypoint is `recommender`, so
    it is the first argument unless the entrypoint (command) is replaced by something else."""
    if command:
        if command[0] != "recommender":
            return None
        rest = [*command[1:], *(args or [])]
    else:
        rest = list(args or [])
    return rest[0] if rest else None


def misplaced(environments: Mapping[str, tuple[str | None, Iterable[str]]]) -> list[str]:
    """`where: [VARIABLE, ...]` for each place whose command does not read variables set there.

    `environments` maps a place (a service, a container) to its command and its variable names.
    """
    problems = []
    for where, (command, variables) in environments.items():
        names = list(variables)
        if command is None:
            continue
        if command not in COMMAND_SETTINGS:
            problems.append(f"{where} runs `recommender {command}`, which is not in COMMAND_SETTINGS")
        elif wrong := unread(names, [command]):
            problems.append(f"{where} (recommender {command}) sets variables it never reads: {wrong}")
    return problems
