"""`recommender modelserver` as a local process, for tests, benchmarks and the demo."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from common.retry import Backoff, poll
from local.stack.servers import HOST, ManagedServer, free_port, http_get


class ModelServerProcess(ManagedServer):
    """The model server in its own process group; ready when `/healthz` answers."""

    name = "modelserver"
    start_timeout = 120.0  # the gRPC protos import TensorFlow, slow on a busy machine

    def __init__(self, workdir: Path, env: dict[str, str], http_port: int | None = None) -> None:
        super().__init__(workdir)
        self.env = env
        self.http_port = http_port or free_port()

    def ports(self) -> list[int]:
        return [self.http_port]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [sys.executable, "-m", "recommender", "modelserver", "--port", str(self.http_port)]
        return cmd, {**self.env, "MODELSERVER_HTTP_HOST": HOST, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def get(self, path: str) -> tuple[int, bytes] | None:
        """(status, body) of a GET, or None when nothing answers."""
        response = http_get(f"{self.url}{path}", timeout=5)
        return None if response is None else (response.status_code, response.content)

    def get_json(self, path: str) -> tuple[int, dict] | None:
        answer = self.get(path)
        return None if answer is None else (answer[0], json.loads(answer[1] or b"{}"))

    def ready(self) -> bool:
        answer = self.get("/healthz")
        return answer is not None and answer[0] == 200

    def wait_route(self, timeout: float, cancel: threading.Event | None = None) -> dict | None:
        """Block until `/readyz` answers 200 (the server routes to a live model) and return its body,
        the route; None after `timeout` seconds or once `cancel` is set."""

        def route() -> dict | None:
            answer = self.get_json("/readyz")
            return answer[1] if answer is not None and answer[0] == 200 else None

        return poll(route, Backoff(0.5), timeout, cancel=cancel)
