"""`recommender client recommend|load`: one request and its reply, or generated load."""

from __future__ import annotations

import sys
from typing import Any

import click
from click_option_group import RequiredMutuallyExclusiveOptionGroup, optgroup
from pydantic import ValidationError

from client.core import ClientError, Progress, recommend, run_load, snapshot_users
from client.settings import ClientSettings
from common.cli import OrderedGroup, settings_options
from common.progress import ProgressLine

command = OrderedGroup(
    "client",
    short_help="send recommendation requests over Kafka and read the replies",
    help="Produce requests on TOPIC_REQUESTS and match replies on TOPIC_REPLIES by request_id (dead "
    "letters on TOPIC_DLQ are reported too).",
)


@command.command(
    "recommend",
    short_help="send one request and print its items as a table",
    help="Send one request and wait for the reply with the same request_id.",
)
@click.option("--user", required=True, help="user id, as in the data")
@click.option("--k", type=int, default=10, help="number of items, 1 to 100 (default 10)")
@settings_options(ClientSettings, client_timeout_s="--timeout")
def recommend_command(user: str, k: int, overrides: dict[str, Any]) -> int:
    settings = ClientSettings.load(**overrides)
    try:
        return _recommend(settings, user, k)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


@command.command(
    "load",
    short_help="generate load with users from the current snapshot and report what came back",
    help="Send requests at a fixed rate (or as fast as possible) for a duration, with users drawn from "
    "the current snapshot, then wait for the replies. Prints a live progress line and a summary; exits 1 "
    "if any request went unanswered.",
)
@optgroup.group("pace", cls=RequiredMutuallyExclusiveOptionGroup)
@optgroup.option("--rate", type=float, help="requests per second")
@optgroup.option("--max", "max_rate", is_flag=True, help="as fast as possible")
@click.option("--duration", type=float, required=True, help="seconds of sending")
@click.option("--k", type=int, default=10, help="items per request (default 10)")
@settings_options(ClientSettings, client_drain_s="--drain")
@click.option("--seed", type=int, help="seed of the user draw")
def load_command(
    rate: float | None, max_rate: bool, duration: float, k: int, seed: int | None, overrides: dict[str, Any]
) -> int:
    settings = ClientSettings.load(**overrides)
    try:
        return _load(settings, None if max_rate else rate, duration, k, seed)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _recommend(settings: ClientSettings, user: str, k: int) -> int:
    if not 1 <= k <= 100:
        print("error: --k must be between 1 and 100", file=sys.stderr)
        return 2
    timeout = settings.client_timeout_s
    request, answer, dead, sent = recommend(settings, user, k, timeout)
    if answer is None:
        reason = f"it went to the DLQ: {dead}" if dead else f"no reply within {timeout:g}s"
        print(f"request {request.request_id} for user {user}: {reason}", file=sys.stderr)
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


def _load(settings: ClientSettings, rate: float | None, duration: float, k: int, seed: int | None) -> int:
    users = snapshot_users(settings)
    print(
        f"sending for {duration:g}s at {'max rate' if rate is None else f'{rate:g}/s'} "
        f"with {len(users)} users from the current snapshot",
        file=sys.stderr,
    )
    # No total: a terminal gets a live line, logs a line every 5 s, not a flood.
    with ProgressLine("load", every_s=5.0) as line:
        report = run_load(
            settings,
            users,
            duration_s=duration,
            rate=rate,
            k=k,
            drain_s=settings.client_drain_s,
            progress=lambda p: line.update(p.elapsed_s, _describe(p)),
            seed=seed,
        )
    print(report.summary())
    return 1 if report.unanswered else 0


def _describe(p: Progress) -> str:
    return (
        f"{'draining' if p.draining else 'sending'} {p.elapsed_s:6.1f}s  sent {p.sent}  "
        f"answered {p.answered}  dlq {p.dlq}  dup {p.duplicates}  "
        f"({p.sent / max(p.elapsed_s, 1e-9):.0f}/s)"
    )
