"""Model-server settings: defaults, and one readable line naming a bad variable."""

from __future__ import annotations

import pytest

from common.settings import ConfigError
from modelserver.settings import ModelServerSettings


def test_defaults_and_overrides(monkeypatch):
    monkeypatch.setenv("MODELSERVER_MAX_BATCH", "64")
    settings = ModelServerSettings.load()
    assert settings.modelserver_protocol == "grpc" and settings.modelserver_max_batch == 64
    assert ModelServerSettings.load(modelserver_protocol="rest").modelserver_protocol == "rest"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MODELSERVER_PROTOCOL", "http"), ("MODELSERVER_MAX_BATCH", "0"), ("MODELSERVER_MAX_WAIT_MS", "soon")],
)
def test_a_bad_variable_is_named_in_one_line(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        ModelServerSettings.load()
    assert variable in str(error.value) and "\n" not in str(error.value)
