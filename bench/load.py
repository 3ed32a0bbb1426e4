"""Open-loop load with per-request timestamps (client.core.run_load keeps only latencies).

The swap section needs to know *when* each request was sent to find those sent during a swap,
and the ramp needs the achieved send rate, so this keeps both.
"""

from __future__ import annotations

import gc
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from client.core import Answer, ReplyCollector, send
from common.kafka import make_producer
from common.schemas import RecommendationReply, RecommendationRequest
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
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(users), size=int(rate * duration_s) + 1)
    collector = ReplyCollector(settings)
    collector.start()
    producer = make_producer(settings, **{"linger.ms": 5})
    # One probe request first: the collector's first fetch and the producer's connections would
    # otherwise count as latency of the schedule's first requests.
    probe = RecommendationRequest(request_id=f"probe-{uuid.uuid4()}", user=users[0], k=k)
    send(producer, settings, probe)
    producer.flush(30)
    collector.wait_for(probe.request_id, 30)
    ids: list[str] = []
    result = TimedLoad(rate, duration_s)
    start = time.monotonic()
    try:
        total = len(picks) - 1
        while len(ids) < total:
            # Everything due by now goes out at once, then a sleep of at most 1 ms: a sleep per
            # request costs more CPU than the request at thousands per second.
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            if due <= len(ids):
                time.sleep(max(0.0, min(0.001, start + len(ids) / rate - time.monotonic())))
                continue
            for pick in picks[len(ids) : due]:
                request = RecommendationRequest(request_id=str(uuid.uuid4()), user=users[int(pick)], k=k)
                ids.append(request.request_id)
                result.sent_at.append(time.monotonic() - start)
                send(producer, settings, request)
        result.send_seconds = time.monotonic() - start
        producer.flush(60)
        until = time.monotonic() + drain_s
        while time.monotonic() < until and not collector.settled(ids):
            time.sleep(0.05)
    finally:
        collector.close()
    last, first = start, None
    for request_id, sent in zip(ids, result.sent_at, strict=True):
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
    result.duplicates = sum(collector.duplicates.values()) - collector.duplicates[probe.request_id]
    result.settle_seconds = max(0.0, last - start - result.send_seconds)
    result.reply_span_s = 0.0 if first is None else last - first
    return result
