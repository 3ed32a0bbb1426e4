"""The environment variables the project's settings classes read, found by parsing the source.

Deployment files (compose, the chart) set variables by name; a misspelt one would be silently
ignored by pydantic-settings, so the tests check every name against this list. Parsing instead of
importing keeps TensorFlow and friends out of these fast tests.
"""

from __future__ import annotations

import ast
import tomllib
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Read by the code directly rather than through a settings class (README "Configuration").
OTHER_VARIABLES = frozenset({"RECOMMENDER_CACHE_DIR", "RECOMMENDER_STACK_STATE"})


def _packages() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["packages"]


@cache
def setting_names() -> frozenset[str]:
    """Upper-cased field names of every class whose base is a `...Settings` class."""
    names: set[str] = set()
    for package in _packages():
        for source in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                if not any(base.endswith("Settings") for base in bases):
                    continue
                for statement in node.body:
                    target = statement.target if isinstance(statement, ast.AnnAssign) else None
                    if isinstance(target, ast.Name) and not target.id.startswith("_"):
                        names.add(target.id.upper())
    return frozenset(names)


def known_setting(name: str, names: frozenset[str]) -> bool:
    """True when some component reads `name` (KAFKA_* go to librdkafka as properties)."""
    return name in names or name in OTHER_VARIABLES or name.startswith("KAFKA_")
