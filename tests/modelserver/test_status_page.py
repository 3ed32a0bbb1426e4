"""The status page in headless Chromium against a real model server under load: its charts come from
the server's history (a page opened late draws the minutes before it), gain points while the load
runs, mark a publish and a rollback, and the page logs no error and fetches nothing elsewhere.

The screenshot is kept as status-page.png in the test's tmp_path (its path is printed; pytest keeps
the last three runs' folders under its basetemp).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from client.core import LoadReport, run_load, snapshot_users
from common.kafka import make_producer
from common.settings import Settings
from tests.modelserver.browser import CHROMIUM, IN_CI, NO_CHROMIUM, Browser
from tests.serving_world import publish_update
from tests.waiting import wait_until

pytestmark = pytest.mark.stack

CHARTS = ("chart-rate", "chart-latency", "chart-dlq", "chart-lag", "chart-predict")
# What the test reads of the rendered page: each chart's points, series and switch markers, and the
# switches and quality tables.
PAGE = """(() => {
  const rows = (selector) => [...document.querySelectorAll(selector)].map(
    (tr) => [...tr.cells].map((td) => td.textContent));
  const chart = (svg) => ({
    points: Number(svg.dataset.points || 0),
    series: Object.fromEntries([...svg.querySelectorAll("path.series")].map(
      (path) => [path.dataset.series, Number(path.dataset.points)])),
    markers: [...svg.querySelectorAll("line.switch")].map((line) => line.dataset.label),
  });
  return {
    charts: Object.fromEntries(
      [...document.querySelectorAll("svg.chart")].map((svg) => [svg.id, chart(svg)])),
    switches: rows("#switch-list tr"),
    quality: rows("#quality tr"),
    model: document.getElementById("model").textContent,
    published: document.getElementById("published").textContent,
  };
})()"""


def rendered(browser: Browser, condition: Callable[[dict], bool], what: str, timeout: float = 90) -> dict:
    """What PAGE reads of the page, once `condition` holds of it."""

    def check() -> dict | None:
        page = browser.evaluate(PAGE)
        return page if condition(page) else None

    return wait_until(check, timeout, what)


def test_the_status_page_charts_the_load_and_marks_each_switch(world, start_modelserver, tmp_path: Path):
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail(f"{NO_CHROMIUM}; CI=true, where scripts/install-test-extras.sh installs it")
        pytest.skip(NO_CHROMIUM)
    publish_update(world.update("a"))
    server = start_modelserver()
    wait_until(lambda: server.get_json("/readyz")[0] == 200, 60, "/readyz 200")
    settings = Settings.load()
    stop = threading.Event()
    reports: list[LoadReport] = []
    load = threading.Thread(
        target=lambda: reports.append(
            run_load(settings, snapshot_users(settings), 600, rate=40, k=5, stop=stop, seed=5)
        ),
        daemon=True,
    )
    load.start()
    a, b = f"a v{world.versions['a']}", f"b v{world.versions['b']}"
    browser = None
    try:
        # History from before any page is open: the page draws it at once, not only what follows.
        wait_until(
            lambda: sum(p["replies_per_s"] > 0 for p in server.get_json("/history")[1]["points"]) >= 5,
            90,
            "five points of history with replies",
        )
        browser = Browser(tmp_path / "chromium")
        browser.open(f"{server.url}/")
        first = rendered(browser, lambda page: page["charts"]["chart-rate"]["points"], "the first render", 30)
        rate = first["charts"]["chart-rate"]
        assert set(first["charts"]) == set(CHARTS)
        assert rate["points"] >= 5 and rate["series"]["replies/s"] >= 5, rate
        assert first["charts"]["chart-predict"]["series"].keys() == {"instance a"}
        assert first["model"] == f"a / v{world.versions['a']}" and first["published"] != "—"
        assert first["switches"] == [["none yet"]] and len(first["quality"]) == 1

        # Malformed requests give the DLQ chart a kind; then a publish to b (better figures).
        producer = make_producer(settings)
        for i in range(20):
            producer.produce(settings.topic_requests, key=b"bad", value=f"not json {i}".encode())
        assert producer.flush(10) == 0
        better = world.metrics | {"hr_at_10": min(1.0, world.metrics["hr_at_10"] + 0.01)}
        publish_update(world.instances["b"].model_update(world.versions["b"], better))
        swapped = rendered(
            browser,
            lambda page: (
                page["charts"]["chart-rate"]["markers"] == [b]
                and page["charts"]["chart-predict"]["series"].get("instance b", 0) >= 3
            ),
            f"a marker for the switch to {b}, and {b} answering for three points",
        )
        assert all(swapped["charts"][chart]["markers"] == [b] for chart in CHARTS), swapped["charts"]
        assert swapped["switches"][0][1:4] == ["publish", a, b]
        assert [row[:2] for row in swapped["quality"]] == [
            [f"live {b}", f"{better['hr_at_10']:.3f}"],
            [f"previous {a}", f"{world.metrics['hr_at_10']:.3f}"],
        ]

        # Back to a: a rollback (an older version, and one served before).
        publish_update(world.update("a"))
        last = rendered(
            browser,
            lambda page: (
                page["charts"]["chart-rate"]["markers"] == [b, f"rollback to {a}"]
                and page["charts"]["chart-rate"]["points"] >= swapped["charts"]["chart-rate"]["points"] + 3
                and "not-json" in page["charts"]["chart-dlq"]["series"]
            ),
            "the rollback's marker, three more points and the dead letters",
        )
        assert [row[1:4] for row in last["switches"]] == [["rollback", b, a], ["publish", a, b]]
        assert last["charts"]["chart-predict"]["series"].keys() == {"instance a", "instance b"}
        # The charts gained points while the load ran, and every point is drawn.
        rate = last["charts"]["chart-rate"]
        assert rate["points"] > first["charts"]["chart-rate"]["points"]
        assert rate["series"]["replies/s"] == rate["series"]["requests/s"] == rate["points"]
        assert (
            last["charts"]["chart-latency"]["series"]["p99"]
            > first["charts"]["chart-latency"]["series"]["p99"]
        )

        shot = browser.screenshot(tmp_path / "status-page.png")
        print(f"\nstatus page screenshot: {shot}")
        assert browser.console_errors() == []
        # Nothing but this server (an air-gapped user has nothing else); the favicon is inline.
        hosts = {urlsplit(url).netloc for url in browser.requested_urls() if not url.startswith("data:")}
        assert hosts == {urlsplit(server.url).netloc}
    finally:
        if browser is not None:
            browser.close()
        stop.set()
        load.join(120)
    assert reports and reports[0].unanswered == [], reports[0].summary() if reports else "the load failed"
