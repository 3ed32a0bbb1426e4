"""`recommender client recommend|load`: one request and its reply, or generated load."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from client.core import ClientError, Progress, recommend, run_load, snapshot_users
from client.settings import ClientSettings
from common.progress import ProgressLine


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "client",
        help="send recommendation requests over Kafka and read the replies",
        description="Produce requests on TOPIC_REQUESTS and match replies on TOPIC_REPLIES by "
        "request_id (dead letters on TOPIC_DLQ are reported too).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    one = actions.add_parser(
        "recommend",
        help="send one request and print its items as a table",
        description="Send one request and wait for the reply with the same request_id.",
    )
    one.add_argument("--user", required=True, help="user id, as in the data")
    one.add_argument("--k", type=int, default=10, help="number of items, 1 to 100 (default 10)")
    one.add_argument("--timeout", type=float, help="seconds to wait for the reply (default CLIENT_TIMEOUT_S)")
    load = actions.add_parser(
        "load",
        help="generate load with users from the current snapshot and report what came back",
        description="Send requests at a fixed rate (or as fast as possible) for a duration, with "
        "users drawn from the current snapshot, then wait for the replies. Prints a live progress "
        "line and a summary; exits 1 if any request went unanswered.",
    )
    pace = load.add_mutually_exclusive_group(required=True)
    pace.add_argument("--rate", type=float, help="requests per second")
    pace.add_argument("--max", action="store_true", help="as fast as possible")
    load.add_argument("--duration", type=float, required=True, help="seconds of sending")
    load.add_argument("--k", type=int, default=10, help="items per request (default 10)")
    load.add_argument("--drain", type=float, help="seconds to wait for late replies (default CLIENT_DRAIN_S)")
    load.add_argument("--seed", type=int, help="seed of the user draw")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = ClientSettings.load()
    try:
        if args.action == "recommend":
            return _recommend(settings, args)
        return _load(settings, args)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _recommend(settings: ClientSettings, args: argparse.Namespace) -> int:
    if not 1 <= args.k <= 100:
        print("error: --k must be between 1 and 100", file=sys.stderr)
        return 2
    timeout = args.timeout or settings.client_timeout_s
    request, answer, dead, sent = recommend(settings, args.user, args.k, timeout)
    if answer is None:
        reason = f"it went to the DLQ: {dead}" if dead else f"no reply within {timeout:g}s"
        print(f"request {request.request_id} for user {args.user}: {reason}", file=sys.stderr)
        return 1
    try:
        reply = answer.reply
    except ValidationError as exc:
        print(f"request {request.request_id}: the reply does not match the schema: {exc}", file=sys.stderr)
        return 1
    print(
        f"user {reply.user}: {len(reply.items)} items from {reply.model.name} "
        f"instance {reply.model.instance} "
        f"v{reply.model.version} in {(answer.received - sent) * 1000:.0f} ms"
        + (f" ({reply.fallback})" if reply.fallback else "")
    )
    width = max([len("product")] + [len(str(item.product)) for item in reply.items])
    print(f"{'#':>3}  {'product':<{width}}  {'score':>10}")
    for rank, item in enumerate(reply.items, 1):
        print(f"{rank:>3}  {item.product!s:<{width}}  {item.score:>10.4f}")
    return 0


def _load(settings: ClientSettings, args: argparse.Namespace) -> int:
    users = snapshot_users(settings)
    rate = None if args.max else args.rate
    print(
        f"sending for {args.duration:g}s at {'max rate' if rate is None else f'{rate:g}/s'} "
        f"with {len(users)} users from the current snapshot",
        file=sys.stderr,
    )
    # No total: a terminal gets a live line, logs a line every 5 s, not a flood.
    with ProgressLine("load", every_s=5.0) as line:
        report = run_load(
            settings,
            users,
            duration_s=args.duration,
            rate=rate,
            k=args.k,
            drain_s=settings.client_drain_s if args.drain is None else args.drain,
            progress=lambda p: line.update(p.elapsed_s, _describe(p)),
            seed=args.seed,
        )
    print(report.summary())
    return 1 if report.unanswered else 0


def _describe(p: Progress) -> str:
    return (
        f"{'draining' if p.draining else 'sending'} {p.elapsed_s:6.1f}s  sent {p.sent}  "
        f"answered {p.answered}  dlq {p.dlq}  dup {p.duplicates}  "
        f"({p.sent / max(p.elapsed_s, 1e-9):.0f}/s)"
    )
