"""The TF-Serving stand-in as local mode runs it (local.stack.serving.TFServingProcess), optionally
with tensorflow_model_server's --monitoring_config_file, for the monitoring tests."""

from __future__ import annotations

from pathlib import Path

import httpx

from common.retry import Backoff, poll
from local.stack.servers import StackError
from local.stack.serving import DEFAULT_MODEL_NAME, TFServingProcess


class MonitoredStandIn(TFServingProcess):
    """`recommender-local tfserving` on loopback, serving `<model_dir>`'s versions."""

    def __init__(self, workdir: Path, model_dir: Path, monitoring_config: Path | None) -> None:
        super().__init__(workdir, model_dir, DEFAULT_MODEL_NAME, poll_seconds=0.2, monitoring=False)
        self.monitoring_config = monitoring_config

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command()
        if self.monitoring_config is not None:
            cmd += ["--monitoring_config_file", str(self.monitoring_config)]
        return cmd, env

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.rest_url}{path}", timeout=10)

    def wait_available(self, version: int, timeout: float = 120) -> None:
        def available() -> bool:
            status = self.model_status()
            return (
                status is not None
                and status[0] == 200
                and any(
                    entry["version"] == str(version) and entry["state"] == "AVAILABLE"
                    for entry in status[1]["model_version_status"]
                )
            )

        if not poll(available, Backoff(0.2), timeout):
            raise StackError(f"version {version} not AVAILABLE after {timeout:.0f}s:\n{self.log_tail()}")
