"""upload/schedule: the arguments given to kfp.Client (there is no KFP server on these machines)."""

import argparse
import socket
from types import SimpleNamespace

import pytest

from pipelines import cli


class RecordingClient:
    """Stands in for kfp.Client only: records the calls the commands make."""

    def __init__(self, existing_pipeline_id: str | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.existing_pipeline_id = existing_pipeline_id

    def get_pipeline_id(self, name):
        self.calls.append(("get_pipeline_id", {"name": name}))
        return self.existing_pipeline_id

    def upload_pipeline(self, path, **kwargs):
        self.calls.append(("upload_pipeline", {"path": path, **kwargs}))
        return SimpleNamespace(pipeline_id="p-1")

    def upload_pipeline_version(self, path, **kwargs):
        self.calls.append(("upload_pipeline_version", {"path": path, **kwargs}))

    def create_experiment(self, name):
        self.calls.append(("create_experiment", {"name": name}))
        return SimpleNamespace(experiment_id="e-1")

    def create_recurring_run(self, **kwargs):
        with open(kwargs["pipeline_package_path"]) as handle:
            kwargs["package_head"] = handle.read(200)
        self.calls.append(("create_recurring_run", kwargs))
        return SimpleNamespace(recurring_run_id="r-1")


def _args(argv: list[str]) -> argparse.Namespace:
    from recommender.cli import build_parser

    return build_parser().parse_args(argv)


def test_schedule_with_cron_never_overlaps_and_never_catches_up(capsys):
    client = RecordingClient()
    args = _args(
        ["pipeline", "schedule", "--cron", "0 0 * * * *", "--host", "http://kfp", "--param", "epochs=3"]
    )
    assert cli.run(args, client_factory=lambda host: client) == 0
    (name, call) = client.calls[-1]
    assert name == "create_recurring_run"
    assert call["cron_expression"] == "0 0 * * * *"
    assert call["interval_second"] is None
    assert call["max_concurrency"] == 1
    assert call["no_catchup"] is True
    assert call["experiment_id"] == "e-1"
    assert call["params"] == {"epochs": 3}
    assert "PIPELINE DEFINITION" in call["package_head"]
    assert "recurring run" in capsys.readouterr().out


def test_schedule_every_hour_uses_an_interval():
    client = RecordingClient()
    args = _args(["pipeline", "schedule", "--every", "1h", "--host", "http://kfp"])
    assert cli.run(args, client_factory=lambda host: client) == 0
    call = client.calls[-1][1]
    assert call["interval_second"] == 3600
    assert call["cron_expression"] is None
    assert call["max_concurrency"] == 1 and call["no_catchup"] is True


def test_upload_creates_then_adds_versions():
    new = RecordingClient()
    assert cli.run(_args(["pipeline", "upload", "--host", "http://kfp"]), client_factory=lambda h: new) == 0
    assert [c[0] for c in new.calls] == ["get_pipeline_id", "upload_pipeline"]
    assert new.calls[1][1]["pipeline_name"] == "streaming-recommender-training"

    existing = RecordingClient(existing_pipeline_id="p-9")
    argv = ["pipeline", "upload", "--host", "http://kfp", "--version", "v2"]
    assert cli.run(_args(argv), client_factory=lambda h: existing) == 0
    assert existing.calls[1] == (
        "upload_pipeline_version",
        {"path": existing.calls[1][1]["path"], "pipeline_version_name": "v2", "pipeline_id": "p-9"},
    )


@pytest.mark.parametrize("bad", ["epochs=three", "nonsense=1", "publish_new_data=maybe"])
def test_bad_parameters_are_one_line_errors(bad, capsys):
    args = _args(["pipeline", "schedule", "--every", "1h", "--host", "http://kfp", "--param", bad])
    assert cli.run(args, client_factory=lambda host: RecordingClient()) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_an_unreachable_endpoint_is_a_clear_error(capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = _args(["pipeline", "schedule", "--every", "1h", "--host", f"http://127.0.0.1:{port}"])
    assert cli.run(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot reach the KFP API at http://127.0.0.1:{port}")
    assert "\n" not in err


def test_no_endpoint_at_all(monkeypatch, capsys):
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert cli.run(_args(["pipeline", "upload"])) == 1
    assert "no KFP endpoint: pass --host or set KFP_HOST" in capsys.readouterr().err


def test_intervals():
    assert cli.parse_interval("10m") == 600
    assert cli.parse_interval("90s") == 90
    assert cli.parse_interval("1d") == 86400
    for bad in ("0m", "10", "1w", "m"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_interval(bad)
