"""Click options made from settings fields, so a default and its variable are written once.

`settings_options(TrainerSettings, trainer_epochs="--epochs")` adds `--epochs` whose help is the
field's description followed by `[env: TRAINER_EPOCHS; default: 6]`. The command receives
`overrides`, the values given on the command line only, and calls `TrainerSettings.load(**overrides)`:
a flag beats the environment, which beats the field's default, and the settings class alone
validates, so a bad flag is the same one-line `ConfigError` (exit 2) as a bad variable.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import click
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

R = TypeVar("R")

_METAVARS = {int: "INTEGER", float: "FLOAT"}


class OrderedGroup(click.Group):
    """Lists its commands in the order they were added (click sorts them by name)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _metavar(field: FieldInfo) -> str:
    if typing.get_origin(field.annotation) is Literal:
        return "[" + "|".join(str(choice) for choice in typing.get_args(field.annotation)) + "]"
    return _METAVARS.get(field.annotation, "TEXT")  # type: ignore[arg-type]


def _help(field: FieldInfo, variable: str) -> str:
    default = "" if field.default is None else f"; default: {field.default}"
    return f"{field.description}  [env: {variable}{default}]"


def settings_options(
    settings: type[BaseSettings], **flags: str
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """One option per `field_name="--flag"`; the command gets them as `overrides: dict[str, Any]`."""
    prefix = settings.model_config.get("env_prefix", "")

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(command)
        def with_overrides(*args: Any, **kwargs: Any) -> R:
            given = {name: kwargs.pop(name) for name in flags}
            overrides = {name: value for name, value in given.items() if value is not None}
            return command(*args, overrides=overrides, **kwargs)

        for name, flag in reversed(flags.items()):  # click lists the last-added option first
            field = settings.model_fields[name]
            with_overrides = click.option(
                flag,
                name,
                # No default and no conversion here: an option not given leaves the field to the
                # environment, and the settings class converts and validates a flag like a variable.
                type=click.STRING,
                metavar=_metavar(field),
                help=_help(field, (prefix + name).upper()),
            )(with_overrides)
        return with_overrides

    return decorate
