"""One serving instance (`a` or `b`) as local processes: model sync + the TF-Serving stand-in.

This is what docker-compose's `serving-<instance>` + `modelsync-<instance>` pair is in local
mode. Both processes run `recommender ...` in their own process group on free loopback ports,
with MinIO settings taken from the environment (pass `env` to override).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.retry import Backoff, poll
from common.schemas import ModelMetrics, ModelUpdate
from local.stack.servers import HOST, ManagedServer, StackError, free_port, http_get
from tfserving.monitoring import DEFAULT_PROMETHEUS_PATH

DEFAULT_MODEL_NAME = "recommender"


class ModelSyncProcess(ManagedServer):
    """`recommender modelsync` for one instance; ready once it has created the model directory."""

    name = "modelsync"

    def __init__(self, workdir: Path, instance: str, base_path: Path, model_name: str, env: dict[str, str]):
        super().__init__(workdir)
        self.instance = instance
        self.base_path = base_path
        self.model_name = model_name
        self.env = env

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [sys.executable, "-m", "recommender", "modelsync", "--instance", self.instance,
               "--model-base-path", str(self.base_path)]  # fmt: skip
        return cmd, {**self.env, "MODEL_NAME": self.model_name}

    def ready(self) -> bool:
        return (self.base_path / self.model_name).is_dir()


class TFServingProcess(ManagedServer):
    """`recommender-local tfserving` on loopback; ready when the REST API answers (200, or 404 before
    a load). `monitoring`: TF-Serving's Prometheus metrics on, as docker compose turns them on."""

    name = "tfserving"
    start_timeout = 120.0  # importing TensorFlow takes a while on a busy machine

    def __init__(
        self, workdir: Path, model_dir: Path, model_name: str, poll_seconds: float,
        grpc_port: int | None = None, rest_port: int | None = None, env: dict[str, str] | None = None,
        monitoring: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(workdir)
        self.monitoring = monitoring
        self.model_dir = model_dir
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self.grpc_port = grpc_port or free_port()
        self.rest_port = rest_port or free_port()
        self.env = env or {}

    def ports(self) -> list[int]:
        return [self.grpc_port, self.rest_port]

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [
            sys.executable, "-m", "local", "tfserving", "--rest_api_host", HOST,
            "--port", str(self.grpc_port), "--rest_api_port", str(self.rest_port),
            "--model_name", self.model_name, "--model_base_path", str(self.model_dir),
            "--file_system_poll_wait_seconds", str(self.poll_seconds),
        ]  # fmt: skip
        if self.monitoring:
            config = self.workdir / "monitoring.config"
            config.write_text(f'prometheus_config {{ enable: true, path: "{DEFAULT_PROMETHEUS_PATH}" }}\n')
            cmd += ["--monitoring_config_file", str(config)]
        return cmd, {**self.env, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def model_status(self) -> tuple[int, dict] | None:
        """(HTTP status, JSON body) of `GET /v1/models/<name>`, or None when nothing answers."""
        response = http_get(f"{self.rest_url}/v1/models/{self.model_name}", timeout=2)
        if response is None:
            return None
        try:
            return response.status_code, json.loads(response.content or b"{}")
        except ValueError:
            return None

    def ready(self) -> bool:
        status = self.model_status()
        return status is not None and status[0] in (200, 404)


class ServingInstance:
    """Model sync + server for one instance, sharing `<workdir>/models` as the model base path."""

    def __init__(
        self,
        workdir: Path,
        instance: str,
        model_name: str = DEFAULT_MODEL_NAME,
        env: dict[str, str] | None = None,
        sync_poll_seconds: float = 0.5,
        server_poll_seconds: float = 0.5,
        keep_versions: int = 2,
    ) -> None:
        if instance not in ("a", "b"):
            raise ValueError(f"instance must be 'a' or 'b', got {instance!r}")
        self.instance = instance
        self.model_name = model_name
        self.base_path = workdir / "models"
        sync_env = {
            **(env or {}),
            "MODELSYNC_POLL_SECONDS": str(sync_poll_seconds),
            "MODELSYNC_KEEP_VERSIONS": str(keep_versions),
            "MODELSYNC_MAX_BACKOFF_SECONDS": "5",
        }
        self.sync = ModelSyncProcess(workdir / "modelsync", instance, self.base_path, model_name, sync_env)
        self.server = TFServingProcess(
            workdir / "tfserving", self.base_path / model_name, model_name, server_poll_seconds, env=env
        )

    @property
    def rest_url(self) -> str:
        return self.server.rest_url

    @property
    def grpc_target(self) -> str:
        return self.server.grpc_target

    def model_update(self, version: int, metrics: ModelMetrics | Mapping[str, Any]) -> ModelUpdate:
        """The update that routes model servers to `version` on this instance, as the publisher's."""
        return ModelUpdate(
            model=self.model_name,
            instance=self.instance,
            url=self.rest_url,
            grpc=self.grpc_target,
            version=version,
            metrics=metrics,
        )

    def env(self) -> dict[str, str]:
        """The ServingSettings variables that point clients at this instance."""
        key = self.instance.upper()
        return {
            f"SERVING_{key}_URL": self.rest_url,
            f"SERVING_{key}_GRPC": self.grpc_target,
            "MODEL_NAME": self.model_name,
        }

    def start(self) -> None:
        # Both start together: TensorFlow's import dominates, and the sync does not wait for it.
        try:
            self.sync.start()
            self.server.start()
        except BaseException:
            self.stop()
            raise

    def start_server(self) -> None:
        """Start (or restart) only the server, e.g. after `kill_server()` in a fault test."""
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.sync.stop()

    def kill(self) -> None:
        self.server.kill()
        self.sync.kill()

    def available_versions(self) -> list[int]:
        status = self.server.model_status()
        if status is None or status[0] != 200:
            return []
        return [
            int(entry["version"])
            for entry in status[1].get("model_version_status", [])
            if entry.get("state") == "AVAILABLE"
        ]

    def wait_available(self, version: int, timeout: float = 120.0) -> None:
        """Block until the server reports `version` AVAILABLE; StackError with the logs otherwise."""

        def available() -> bool:
            if version in self.available_versions():
                return True
            if not self.server.running():
                raise StackError(f"tfserving exited; last lines:\n{self.server.log_tail()}")
            return False

        if poll(available, Backoff(0.2), timeout):
            return
        raise StackError(
            f"version {version} of {self.model_name} not AVAILABLE on instance {self.instance} after "
            f"{timeout:.0f}s (available: {self.available_versions()});\nmodelsync log:\n"
            f"{self.sync.log_tail(10)}\ntfserving log:\n{self.server.log_tail(10)}"
        )

    def __enter__(self) -> ServingInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
