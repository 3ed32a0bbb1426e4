import re
import subprocess
import sys
import traceback
from collections.abc import Iterator

import click
import pytest
from pydantic import Field, SecretStr

from common.settings import ConfigError, Settings, kafka_properties_from_env


class _PortSettings(Settings):
    port: int = Field(8080, ge=1, le=65535)


def test_kafka_prefix_maps_onto_librdkafka_properties():
    props = kafka_properties_from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "broker:9093",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_PASSWORD": "hunter2",
            "KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
            "MINIO_ENDPOINT": "x:1",
        }
    )
    assert props == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.password": "hunter2",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_bootstrap_has_a_default():
    assert kafka_properties_from_env({}) == {"bootstrap.servers": "127.0.0.1:9092"}


def test_secrets_never_show_in_repr(monkeypatch):
    monkeypatch.setenv("MINIO_SECRET_KEY", "s3cr3t-minio")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "access-id")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cr3t-kafka")
    settings = Settings.load()
    shown = repr(settings) + str(settings) + repr(settings.kafka) + str(settings.kafka)
    assert "s3cr3t-minio" not in shown
    assert "s3cr3t-kafka" not in shown
    assert settings.minio_secret_key.get_secret_value() == "s3cr3t-minio"
    assert settings.kafka["sasl.password"] == "s3cr3t-kafka"


def test_bad_value_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv("PORT", "seventy")
    with pytest.raises(ConfigError) as excinfo:
        _PortSettings.load()
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith("invalid configuration: PORT:")
    assert "'seventy'" in message


def test_out_of_range_value_is_reported(monkeypatch):
    monkeypatch.setenv("PORT", "70000")
    with pytest.raises(ConfigError, match=r"PORT: Input should be less than or equal to 65535"):
        _PortSettings.load()


class _StrictSecretSettings(Settings):
    minio_secret_key: SecretStr = Field(SecretStr("x" * 40), min_length=32)


def _everything_shown(error: BaseException) -> str:
    """The error as a user or a log could ever see it: message, repr and the formatted traceback."""
    return str(error) + repr(error) + "".join(traceback.format_exception(error))


def test_secret_values_are_not_echoed_in_errors(monkeypatch):
    # Real secrets are set and another variable is invalid: the error names that variable only.
    monkeypatch.setenv("MINIO_ACCESS_KEY", "access-id-4f1d")
    monkeypatch.setenv("MINIO_SECRET_KEY", "s3cr3t-minio-9b2e")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cr3t-kafka-77aa")
    monkeypatch.setenv("MINIO_SECURE", "maybe")
    with pytest.raises(ConfigError) as excinfo:
        Settings.load()
    shown = _everything_shown(excinfo.value)
    assert str(excinfo.value).startswith("invalid configuration: MINIO_SECURE:")
    assert "'maybe'" in shown  # a plain value is echoed...
    for secret in ("access-id-4f1d", "s3cr3t-minio-9b2e", "s3cr3t-kafka-77aa"):
        assert secret not in shown  # ...a secret never is


def test_an_invalid_secret_is_named_but_its_value_is_not_echoed(monkeypatch):
    monkeypatch.setenv("MINIO_SECRET_KEY", "too-short-s3cr3t")
    with pytest.raises(ConfigError) as excinfo:
        _StrictSecretSettings.load()
    shown = _everything_shown(excinfo.value)
    assert str(excinfo.value).startswith("invalid configuration: MINIO_SECRET_KEY:")
    assert "too-short-s3cr3t" not in shown


def test_log_level_is_validated(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        Settings.load()


def test_cli_prints_one_line_and_exits_2_on_bad_config():
    env = {"PATH": "/usr/bin:/bin", "MINIO_ENDPOINT": "http://minio:9000"}
    result = subprocess.run(
        [sys.executable, "-m", "recommender", "init"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: invalid configuration: MINIO_ENDPOINT: Value error, expected host:port without a scheme, "
        "e.g. 127.0.0.1:9000 (got 'http://minio:9000')"
    ]
    assert "Traceback" not in result.stderr


def _commands(group: click.Group, path: str = "") -> Iterator[tuple[str, click.Command]]:
    """Every command under `group`, groups included, with its path ("trainer run")."""
    for name, command in group.commands.items():
        yield f"{path}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path}{name} ")


@pytest.mark.parametrize(
    ("package", "prog", "commands"),
    [
        ("recommender", "recommender", {"init", "modelserver", "pipeline"}),
        ("local", "recommender-local", {"stack", "cluster", "tfserving", "demo"}),
    ],
)
def test_every_subcommand_has_help(package: str, prog: str, commands: set[str]):
    import importlib

    group = importlib.import_module(f"{package}.cli").build_group()
    subcommands = set(group.commands)
    assert commands <= subcommands
    # Local mode's commands are `recommender-local` only, never `recommender`.
    assert package == "local" or not subcommands & {"stack", "cluster", "tfserving", "demo"}
    for name in subcommands:
        result = subprocess.run(
            [sys.executable, "-m", package, name, "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert f"Usage: {prog} {name}" in result.stdout


# The options made from settings fields (common.cli.settings_options): command -> flag -> variable.
SETTINGS_OPTIONS = {
    "modelserver": {
        "--protocol": "MODELSERVER_PROTOCOL",
        "--max-batch": "MODELSERVER_MAX_BATCH",
        "--max-wait-ms": "MODELSERVER_MAX_WAIT_MS",
        "--port": "MODELSERVER_HTTP_PORT",
    },
    "client recommend": {"--timeout": "CLIENT_TIMEOUT_S"},
    "client load": {"--drain": "CLIENT_DRAIN_S"},
    "datapublisher publish": {"--keep": "SNAPSHOTS_KEEP"},
    "trainer run": {
        "--epochs": "TRAINER_EPOCHS",
        "--embedding-dim": "TRAINER_EMBEDDING_DIM",
        "--batch-size": "TRAINER_BATCH_SIZE",
        "--learning-rate": "TRAINER_LEARNING_RATE",
    },
    "pipeline compile": {"--image": "PIPELINE_IMAGE"},
    "pipeline upload": {"--host": "KFP_HOST"},
    "pipeline schedule": {"--host": "KFP_HOST"},
}


def test_settings_options_name_their_variable_and_default():
    from recommender.cli import build_group

    named = {}
    for path, command in _commands(build_group()):
        for option in command.params:
            variable = re.search(r"\[env: ([A-Z0-9_]+)", getattr(option, "help", None) or "")
            if variable:
                named.setdefault(path, {})[option.opts[0]] = variable[1]
                # The option's field is the variable's: `settings.load(**{option.name: value})`.
                assert variable[1] == option.name.upper(), option.help
    assert named == SETTINGS_OPTIONS
    result = subprocess.run(
        [sys.executable, "-m", "recommender", "trainer", "run", "--help"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )  # fmt: skip
    assert "--epochs INTEGER" in result.stdout
    assert "Training epochs.  [env: TRAINER_EPOCHS; default: 8]" in result.stdout


def test_a_flag_beats_the_variable_which_beats_the_default(monkeypatch):
    from common.cli import settings_options

    loaded = []

    @click.command()
    @settings_options(_PortSettings, port="--port")
    def serve(overrides: dict) -> int:
        loaded.append(_PortSettings.load(**overrides).port)
        return 0

    for argv in ([], ["--port", "9000"]):
        assert serve.main(argv, standalone_mode=False) == 0
    monkeypatch.setenv("PORT", "8100")
    for argv in ([], ["--port", "9000"]):
        assert serve.main(argv, standalone_mode=False) == 0
    assert loaded == [8080, 9000, 8100, 9000]


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--epochs", "0"], {}, "TRAINER_EPOCHS: Input should be greater than or equal to 1 (got '0')"),
        ([], {"TRAINER_EPOCHS": "0"}, "TRAINER_EPOCHS: Input should be greater than or equal to 1 (got '0')"),
        (["--epochs", "many"], {}, "TRAINER_EPOCHS: Input should be a valid integer"),
        (["--learning-rate", "-1"], {}, "TRAINER_LEARNING_RATE: Input should be greater than 0 (got '-1')"),
    ],
)
def test_a_bad_flag_is_reported_like_a_bad_variable(argv: list[str], env: dict[str, str], expected: str):
    result = subprocess.run(
        [sys.executable, "-m", "recommender", "trainer", "run", *argv],
        env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: invalid configuration: {expected}"), line


def test_cli_names_unreachable_storage_in_one_line():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "MINIO_ENDPOINT": f"127.0.0.1:{port}"}
    result = subprocess.run(
        [sys.executable, "-m", "recommender", "init"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: object storage failed: MaxRetryError:")
    assert f"port={port}" in last and "Connection refused" in last
    assert "Traceback" not in result.stderr
