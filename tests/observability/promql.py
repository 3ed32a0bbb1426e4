"""The series names a PromQL expression selects, found by tokenizing it as Prometheus's lexer does
(promql/parser/lex.go) and telling metric names from functions, aggregations, keywords and label
names by where they stand. Anything it does not recognise (an unknown function, an unbalanced
parenthesis, a stray character) raises PromQLError, so a typo cannot pass for a metric.

Grafana's interval variables ($__rate_interval...) stand for a duration; its other variables may
appear only inside label values (strings), where nothing is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any


class PromQLError(ValueError):
    pass


AGGREGATIONS = {
    "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",
    "count_values", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg", "delta",
    "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg", "histogram_count",
    "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum",
    "holt_winters", "hour", "idelta", "increase", "info", "irate", "label_join", "label_replace",
    "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute",
    "month", "pi", "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc",
    "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp",
    "vector", "year",
    "start", "end",  # the @ modifier's
}  # fmt: skip
# Followed by a parenthesised list of label names (optional after group_left/group_right).
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "atan2", "bool", "offset"}
NUMBERS = {"inf", "nan"}

DURATION = r"(?:[0-9]+(?:ms|[smhdwy]))+"
INTERVALS = "rate_interval|interval|range"
GRAFANA_INTERVAL = re.compile(rf"\$(?:__(?:{INTERVALS})\b|\{{__(?:{INTERVALS})\}})")
STRING = r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`"""
TOKEN = re.compile(
    rf"""
      (?P<space>\s+)
    | (?P<string>{STRING})
    | (?P<duration>{DURATION})(?![a-zA-Z0-9_:])
    | (?P<number>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
    | (?P<identifier>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<brace>\{{)
    | (?P<bracket>\[)
    | (?P<operator>==|!=|<=|>=|[-+*/%^<>,()@])
    """,
    re.VERBOSE,
)
# Inside a vector selector: label matchers; inside brackets: a range or a subquery's range:step.
MATCHER = re.compile(rf"\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>{STRING})\s*")
RANGE = re.compile(rf"\[\s*{DURATION}\s*(?::\s*(?:{DURATION})?\s*)?\]")
CLOSE_BRACE = re.compile(r"\s*\}")


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1]) if literal[0] != "`" else literal[1:-1]


def _selector(expr: str, start: int) -> tuple[str | None, int]:
    """The metric name a `{...}` at `start` gives with __name__="..." (None without one), and the
    position after its closing brace."""
    position, name = start + 1, None
    while True:
        if (close := CLOSE_BRACE.match(expr, position)) is not None:
            return name, close.end()
        matcher = MATCHER.match(expr, position)
        if matcher is None:
            raise PromQLError(f"bad label matcher at {position}: {expr[position : position + 30]!r}")
        if matcher["label"] == "__name__":
            if matcher["op"] != "=":
                raise PromQLError(f"cannot tell the metrics a {matcher['op']} on __name__ selects")
            name = _unquote(matcher["value"])
        position = matcher.end()
        if expr.startswith(",", position):
            position += 1


def _tokens(expr: str) -> Iterator[tuple[str, str]]:
    """(kind, text) tokens; a whole vector selector is one ("selector", name or "") token."""
    position = 0
    while position < len(expr):
        match = TOKEN.match(expr, position)
        if match is None:
            raise PromQLError(f"unexpected character at {position}: {expr[position : position + 30]!r}")
        kind = match.lastgroup
        if kind == "brace":
            name, position = _selector(expr, position)
            yield "selector", name or ""
            continue
        if kind == "bracket":
            bracket = RANGE.match(expr, position)
            if bracket is None:
                raise PromQLError(f"bad range at {position}: {expr[position : position + 30]!r}")
            position = bracket.end()
            yield "range", bracket[0]
            continue
        position = match.end()
        if kind != "space":
            yield kind, match[0]


def series_names(expr: str) -> set[str]:
    """The series names `expr` selects, as written (e.g. x_bucket for a histogram's buckets)."""
    tokens = list(_tokens(GRAFANA_INTERVAL.sub("5m", expr)))
    names: set[str] = set()
    depth, index = 0, 0
    while index < len(tokens):
        kind, text = tokens[index]
        word = text.lower()  # keywords, aggregations and inf/nan are case-insensitive; names are not
        following = tokens[index + 1] if index + 1 < len(tokens) else ("end", "")
        if kind == "identifier" and word in GROUPING:
            if following == ("operator", "("):
                index = _after_label_list(tokens, index + 1)
                continue
            if word not in ("group_left", "group_right"):
                raise PromQLError(f"{text} needs a list of labels")
        elif kind == "identifier" and word in AGGREGATIONS:
            if following != ("operator", "(") and following[1].lower() not in ("by", "without"):
                raise PromQLError(f"aggregation {text} without its argument")
        elif kind == "identifier" and word in KEYWORDS | NUMBERS:
            pass
        elif kind == "identifier" and following == ("operator", "("):
            if text not in FUNCTIONS:
                raise PromQLError(f"unknown function {text}()")
        elif kind == "identifier":
            names.add(text)
            if following[0] == "selector" and following[1]:
                raise PromQLError(f"{text} also names a metric with __name__")
            if following[0] == "selector":
                index += 1  # its selector belongs to it
        elif kind == "selector":
            if not text:
                raise PromQLError("a vector selector without a metric name")
            names.add(text)
        elif (kind, text) == ("operator", "("):
            depth += 1
        elif (kind, text) == ("operator", ")"):
            depth -= 1
            if depth < 0:
                raise PromQLError(f"unbalanced ')' in {expr!r}")
        index += 1
    if depth:
        raise PromQLError(f"unclosed '(' in {expr!r}")
    return names


def _after_label_list(tokens: list[tuple[str, str]], start: int) -> int:
    """The index after the `(label, ...)` list that opens at `start`."""
    index = start + 1
    while index < len(tokens) and tokens[index] != ("operator", ")"):
        if tokens[index][0] != "identifier" and tokens[index] != ("operator", ","):
            raise PromQLError(f"not a label list: {tokens[start : index + 1]}")
        index += 1
    if index == len(tokens):
        raise PromQLError("unclosed label list")
    return index + 1


GRAFANA_QUERIES = (
    re.compile(r"\s*label_values\((?P<expr>.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*"),
    re.compile(r"\s*query_result\((?P<expr>.+)\)\s*"),
)


def variable_expression(query: str) -> str:
    """The PromQL inside a Grafana Prometheus variable's query."""
    for pattern in GRAFANA_QUERIES:
        if match := pattern.fullmatch(query):
            return match["expr"]
    raise PromQLError(f"not a label_values(expr, label) or query_result(expr) query: {query!r}")


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a Grafana dashboard: its panels' targets (rows included) and its
    query variables."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            found.append(variable_expression(query["query"] if isinstance(query, dict) else query))
    return found
