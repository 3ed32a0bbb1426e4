"""Open-loop load with per-request timestamps (client.core.run_load keeps only latencies).

The load itself is `client.core.OpenLoop`'s, as `client load` sends it. The swap section needs to
know *when* each request was sent to find those sent during a swap, and the ramp needs the
achieved send rate, so this report keeps both.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from client.core import Answer, OpenLoop
from common.schemas import RecommendationReply
from common.settings import Settings


@dataclass
class TimedLoad:
    offered_rate: float
    duration_s: float
    send_seconds: float = 0.0  # how long sending took: above duration_s, the client fell behind
    sent_at: list[float] = field(default_factory=list)  # seconds since the load started
    latency_ms: list[float | None] = field(default_factory=list)  # None: no reply
    dead_lettered: int = 0
    invalid: int = 0  # replies with our id that break the schema: counted as lost, not answered
    duplicates: int = 0
    settle_seconds: float = 0.0  # from the last send to the last reply
    reply_span_s: float = 0.0  # from the first reply to the last: the answered rate's denominator

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    @property
    def answered(self) -> int:
        return sum(1 for value in self.latency_ms if value is not None)

    @property
    def lost(self) -> int:
        """Neither answered nor dead-lettered."""
        return self.sent - self.answered - self.dead_lettered

    @property
    def answered_rate(self) -> float:
        """Replies per second while they flowed; the pipeline's fixed latency cancels out."""
        return self.answered / max(self.reply_span_s, self.send_seconds, 1e-9) if self.answered > 1 else 0.0

    def percentile(self, q: float) -> float | None:
        values = [v for v in self.latency_ms if v is not None]
        return float(np.percentile(values, q)) if values else None

    def summary(self) -> dict:
        return {
            "offered_rate": self.offered_rate,
            "achieved_send_rate": round(self.sent / self.send_seconds, 1) if self.send_seconds else None,
            "sent": self.sent,
            "answered": self.answered,
            "dead_lettered": self.dead_lettered,
            "lost": self.lost,
            "invalid_replies": self.invalid,
            "duplicates": self.duplicates,
            "answered_rate": round(self.answered_rate, 1),
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "max_ms": max((v for v in self.latency_ms if v is not None), default=None),
            "settle_seconds": round(self.settle_seconds, 2),
        }


def _meets_schema(answer: Answer) -> bool:
    # Checked once the timed window is over (validating under load took CPU the load measures),
    # and not kept: a million cached replies would stay in memory through the later steps.
    try:
        RecommendationReply.model_validate_json(answer.raw)
    except ValidationError:
        return False
    return True


def timed_load(
    settings: Settings,
    users: list[str],
    rate: float,
    duration_s: float,
    k: int = 10,
    drain_s: float = 30.0,
    seed: int = 0,
) -> TimedLoad:
    """Send `rate` requests/s for `duration_s` (paced by schedule, not by replies), then wait up
    to `drain_s` for the replies."""
    # The bench process holds TensorFlow and pandas: a full cyclic-GC pass (~200 ms) while
    # replies arrive would be counted as their latency. Collected first, so earlier steps'
    # garbage is freed rather than frozen.
    gc.collect()
    gc.freeze()
    result = TimedLoad(rate, duration_s)
    with OpenLoop(settings, **{"linger.ms": 5}) as load:
        probe = load.probe(users[0], k)
        # A fixed number of requests, however long sending takes (`send_seconds` shows a client that
        # fell behind). Ahead of the schedule the sender sleeps at most 1 ms: everything due by then
        # goes out at once, as a sleep per request costs more CPU than the request at thousands/s.
        load.send(users, rate, k, count=int(rate * duration_s), seed=seed, max_sleep_s=0.001)
        result.send_seconds = time.monotonic() - load.start
        load.flush(60)
        load.drain(drain_s, every_s=0.05)
    start, collector = load.start, load.collector
    last, first = start, None
    for request_id, sent_at in zip(load.ids, load.sent_at, strict=True):
        sent = sent_at - start
        result.sent_at.append(sent)
        answer = collector.answers.get(request_id)
        if answer is None:
            result.latency_ms.append(None)
            result.dead_lettered += request_id in collector.dead_letters
            continue
        if not _meets_schema(answer):
            result.latency_ms.append(None)
            result.invalid += 1
            continue
        result.latency_ms.append((answer.received - start - sent) * 1000)
        last = max(last, answer.received)
        first = answer.received if first is None else min(first, answer.received)
    result.duplicates = sum(collector.duplicates.values()) - collector.duplicates[probe]
    result.settle_seconds = max(0.0, last - start - result.send_seconds)
    result.reply_span_s = 0.0 if first is None else last - first
    return result
