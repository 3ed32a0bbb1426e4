"""The Prometheus text format as Prometheus reads it: families by their TYPE lines, samples by their
exact names. (prometheus_client's parser names a counter's samples NAME_total even where the page
says NAME, as TF-Serving's does, so it cannot tell which names a query may use.)"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"(?P<name>{NAME})(?:\{{(?P<labels>[^}}]*)\}})?\s+(?P<value>\S+)(?:\s+-?[0-9]+)?")
LABEL = re.compile(r'\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)')
ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
# The series a family of each type is queried by, as suffixes of its name.
SERIES_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "untyped": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def families(text: str) -> dict[str, str]:
    """Each family's name and type, from its `# TYPE` line."""
    declared = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            declared[name] = kind
    return declared


def samples(text: str) -> list[Sample]:
    """Every sample line; a line that is not one fails the caller's test with the line."""
    found = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        labels = {}
        for label in LABEL.finditer(match["labels"] or ""):
            labels[label["name"]] = re.sub(r'\\[\\"n]', lambda m: ESCAPES[m[0]], label["value"])
        found.append(Sample(match["name"], labels, float(match["value"])))
    return found


def family_of(series: str, declared: Mapping[str, str]) -> str | None:
    """The family a series name belongs to (its name less the suffix its type gives it: _bucket only
    for a histogram, _sum and _count for a histogram or a summary), or None if none serves it."""
    for name, kind in declared.items():
        if any(series == name + suffix for suffix in SERIES_SUFFIXES.get(kind, ("",))):
            return name
    return None


def unserved(series: Iterable[str], declared: Mapping[str, str]) -> set[str]:
    """The series names that no declared family serves, so a query for them finds nothing."""
    return {name for name in series if family_of(name, declared) is None}
