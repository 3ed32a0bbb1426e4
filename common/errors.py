"""Errors as one-line text: log lines, dead-letter reasons and CLI messages must stay one line."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError
from pydantic_core import ErrorDetails


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of the exception's message (at most `limit` characters); empty when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else ""


def describe_exception(exc: BaseException, limit: int | None = None) -> str:
    """`TypeError: first line of the message`, or the bare type name when there is no message."""
    text = first_line(exc, limit)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where_and_what(where: str, error: ErrorDetails) -> str:
    return f"{where}: {error['msg']}"


def describe_validation_error(
    exc: ValidationError, whole: str, clause: Callable[[str, ErrorDetails], str] = _where_and_what
) -> str:
    """One clause per problem joined by "; ", each naming its dotted location (else `whole`)."""
    return "; ".join(
        clause(".".join(str(part) for part in error["loc"]) or whole, error) for error in exc.errors()
    )
