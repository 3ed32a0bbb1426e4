"""HTTP endpoints of the model server (FastAPI + uvicorn in a background thread)."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from common.retry import Backoff, poll
from modelserver.history import History
from modelserver.metrics import Metrics
from modelserver.processing import DeadLetter, Incoming, Reply, Valid, parse
from modelserver.routing import Route, Router

log = logging.getLogger(__name__)

# A static page with no build step and no fetch beyond this server: its script polls /state and
# /history once a second and draws the charts as inline SVG.
STATUS_PAGE = (Path(__file__).parent / "status.html").read_text(encoding="utf-8")


class Server(Protocol):
    """What the endpoints need of the model server (modelserver.loop.ModelServer)."""

    router: Router
    metrics: Metrics
    history: History

    def state(self) -> dict[str, Any]: ...

    def answer(
        self, batch: list[Valid], route: Route
    ) -> tuple[list[tuple[Valid, Reply]], list[DeadLetter]]: ...


def build_app(server: Server) -> FastAPI:
    app = FastAPI(title="recommender model server", docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def status_page() -> str:
        return STATUS_PAGE

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        route = server.router.current
        if route is None:
            return JSONResponse({"ready": False, "reason": "no model known yet"}, status_code=503)
        if not route.client.available():
            reason = f"instance {route.update.instance} does not answer for v{route.update.version}"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse(
            {"ready": True, "instance": route.update.instance, "version": route.update.version}
        )

    @app.get("/state")
    def state() -> dict[str, Any]:
        return server.state()

    @app.get("/history")
    def history(since: float | None = None) -> dict[str, Any]:
        # `since`: the `at` of a page's newest point, so a page polls only for the points after it.
        return {
            "every_s": server.history.every_s,
            "span_s": server.history.span_s,
            "points": server.history.points(since),
            "switches": [switch.to_json() for switch in server.router.history],
        }

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(server.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/recommend")
    def recommend(body: dict[str, Any] = Body(...)) -> JSONResponse:  # noqa: B008 (FastAPI idiom)
        # Same validation and routing as the Kafka path; request_id is optional here.
        body = {"request_id": str(uuid.uuid4()), **body}
        item = parse(Incoming(json.dumps(body).encode(), None, "http", -1, -1))
        if isinstance(item, DeadLetter):
            return JSONResponse({"error": item.error, "error_kind": item.kind.value}, status_code=422)
        route = server.router.current
        if route is None:
            return JSONResponse({"error": "no model known yet"}, status_code=503)
        answered, dead = server.answer([item], route)
        if dead:
            return JSONResponse({"error": dead[0].error, "error_kind": dead[0].kind.value}, status_code=502)
        return Response(answered[0][1].to_bytes(), media_type="application/json")

    return app


class HttpServer:
    """uvicorn in a daemon thread; the Kafka loop owns the main thread and the signals."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="http", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        self.thread.start()
        # Until it has started, or its thread has died (e.g. on a taken port): no use waiting longer.
        poll(lambda: self.server.started or not self.thread.is_alive(), Backoff(0.05), timeout)
        if not self.server.started:
            raise RuntimeError("the HTTP server did not start (is the port free?)")
        log.info("HTTP on port %d: /healthz /readyz /state /history /metrics /recommend", self.port)

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
