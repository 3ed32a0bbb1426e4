"""Swap test: clients hammer the server while a new version appears; no request may fail."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

from tests.serving.tiny_model import save_tiny_model
from tfserving.server import TFServingServer

NAME = "recommender"
BODY = json.dumps(
    {"signature_name": "recommend", "inputs": {"users": ["u1", "u2", "nobody"], "k": [5, 5, 5]}}
).encode()


def test_new_version_swaps_in_without_a_failed_request(tmp_path):
    model_dir = tmp_path / "base" / NAME
    save_tiny_model(model_dir / "1", offset=0.0)
    server = TFServingServer(
        NAME, str(model_dir), grpc_port=0, rest_port=0, poll_seconds=0.1, host="127.0.0.1"
    )
    server.start()
    server.manager.poll_once()
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/{NAME}:predict"
    stop = threading.Event()
    failures: list[str] = []
    top_scores: list[float] = []

    def client() -> None:
        while not stop.is_set():
            try:
                request = urllib.request.Request(url, data=BODY, method="POST")
                with urllib.request.urlopen(request, timeout=30) as response:
                    top_scores.append(json.loads(response.read())["outputs"]["scores"][0][0])
            except Exception as exc:  # every failure counts, whatever its kind
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        # As model sync does it: write elsewhere, then rename into place in one step.
        staging = save_tiny_model(model_dir.parent / "staging-2", offset=10.0)
        os.rename(staging, model_dir / "2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (top_scores and top_scores[-1] > 10):
            time.sleep(0.1)
        time.sleep(1.0)  # keep hammering after the swap, while the old version is unloaded
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        server.stop()

    assert failures == []
    old = [s for s in top_scores if s < 10]
    new = [s for s in top_scores if s > 10]
    assert old and new, "the clients must have been answered by both versions"
    assert top_scores.index(new[0]) > top_scores.index(old[0])
    assert [v for v, state in server.manager.status(NAME, None) if state.state == "AVAILABLE"] == [2]
    print(f"{len(top_scores)} requests, {len(old)} by version 1, {len(new)} by version 2, 0 failed")
