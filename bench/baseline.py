"""The original design's serving path, as the baseline: one REST predict per request, one row
per candidate product (every product of the catalogue), no batching.

It consumes the same requests topic and answers on the same replies topic as the model server,
so the same load generator measures both. Run: `python -m bench.baseline --products-file F`.
"""

from __future__ import annotations

import argparse
import heapq
import json
import signal
import sys
import threading

import httpx

from common.kafka import make_consumer, make_producer
from common.schemas import ModelRef, RecommendationReply, RecommendationRequest, ScoredItem
from common.settings import ServingSettings


class BaselineSettings(ServingSettings):
    """The serving instance it calls is the one of SERVING_A_URL (REST)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--products-file", required=True, help="JSON list of every product id")
    parser.add_argument("--version", type=int, required=True, help="model version on instance a")
    parser.add_argument("--group", default="bench-baseline", help="consumer group")
    args = parser.parse_args(argv)
    settings = BaselineSettings.load()
    with open(args.products_file) as f:
        products = [str(p) for p in json.load(f)]
    halt = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: halt.set())
    consumer = make_consumer(settings, args.group)
    consumer.subscribe([settings.topic_requests])
    producer = make_producer(settings)
    url = f"{settings.serving_a_url}/v1/models/{settings.model_name}/versions/{args.version}:predict"
    model = ModelRef(name=settings.model_name, instance="a", version=args.version)
    print("baseline ready", flush=True)
    with httpx.Client(timeout=30) as client:
        while not halt.is_set():
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            request = RecommendationRequest.model_validate_json(message.value())
            user = str(request.user)
            # One row per candidate product: the shape of the original design's predict call.
            body = {"instances": [{"users": user, "products": p} for p in products]}
            scores = client.post(url, json=body).json()["predictions"]
            top = heapq.nlargest(request.k, zip(scores, products, strict=True))
            reply = RecommendationReply(
                request_id=request.request_id,
                user=request.user,
                items=[ScoredItem(product=p, score=float(s)) for s, p in top],
                model=model,
                fallback=None,
            )
            producer.produce(settings.topic_replies, key=request.request_id.encode(), value=reply.to_bytes())
            producer.poll(0)
    producer.flush(10)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
