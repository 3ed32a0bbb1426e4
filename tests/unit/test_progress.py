"""The CLIs' progress helper away from a terminal: plain lines, never a carriage return."""

import io

from common.progress import ProgressLine


def test_a_non_terminal_gets_one_plain_line_per_step():
    stream = io.StringIO()
    with ProgressLine("reading x.csv", stream=stream, every_percent=10, every_s=3600) as line:
        for done in (25, 50, 75, 100):
            line.update(done, f"{done:,} rows", total=100)
    out = stream.getvalue()
    assert "\r" not in out and "\x1b" not in out
    assert out.splitlines() == [
        "reading x.csv: 25 rows ( 25.0%)",
        "reading x.csv: 50 rows ( 50.0%)",
        "reading x.csv: 75 rows ( 75.0%)",
        "reading x.csv: 100 rows (100.0%)",
    ]


def test_updates_within_one_step_and_interval_print_nothing_more():
    stream = io.StringIO()
    with ProgressLine("load", stream=stream, every_percent=10, every_s=3600) as line:
        for done in (1, 2, 3, 9):
            line.update(done, f"{done}", total=100)
        for seconds in range(5):  # no total: only time brings a new line
            line.update(seconds, f"{seconds}s")
    assert stream.getvalue().splitlines() == ["load: 1 (  1.0%)"]
