"""Two replicas' outboxes on one PostgreSQL store, delivering at once to a local Slack
Web API: every message arrives once, escalations in their status change's thread, and
what a killed replica had claimed is delivered by the others once its lease ends."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

import pytest
from slack_api import SlackApi, slack_api

from kpiwatch.config.loader import load_rule_text
from kpiwatch.model import DeliveryState
from kpiwatch.notify.channels.slack import SlackChannel
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import Outbox
from kpiwatch.notify.routing import Router
from kpiwatch.runtime.channels import StoreThreads
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock

pytestmark = pytest.mark.postgres

KPIS = 24
TEAMS = 4
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NAME = re.compile(r"Metric M(\d{3})")


def _rules() -> str:
    lines = [
        'sources: {wh: {type: sql, url: "sqlite://"}}',
        "teams:",
        *(f'  t{t}: {{slack: "#team-{t}"}}' for t in range(TEAMS)),
        "kpis:",
    ]
    for i in range(KPIS):
        lines.append(
            f"  - {{id: kpi_{i}, name: Metric M{i:03d}, owner: o@example.com, team: t{i % TEAMS},"
            " direction: lower_is_better, source: wh, query: SELECT 1,"
            " thresholds: {yellow: 4.5, red: 5.5}}"
        )
    return "\n".join(lines) + "\n"


def _outbox(store: Store, slack: SlackApi, clock: FixedClock, rules: object, name: str) -> Outbox:
    channel = SlackChannel(token=slack.token, webhook_url=None, api_url=slack.base_url,
                           threads=StoreThreads(store), timeout=5.0)  # fmt: skip
    ticks = itertools.count(step=10.0)  # pacing never waits: the test is about sharing
    notices = NoticeBuilder(store, lambda: rules, "http://kpiwatch.test")  # type: ignore[arg-type,return-value]
    return Outbox(store, {"slack": channel}, clock, notices, holder=name, senders=2,
                  monotonic=lambda: next(ticks))  # fmt: skip


def test_two_replicas_deliver_every_message_once_and_in_thread_order(postgres_url: str) -> None:
    clock = FixedClock(START)
    store = Store.open(postgres_url)
    loaded = load_rule_text(_rules(), "rules.yaml")
    source = FakeSource("wh")
    router = Router(loaded.rules, channels=frozenset({"slack"}))
    runner = Runner(store, clock, Workspace(loaded, {"wh": source}, router),
                    tz=ZoneInfo("UTC"), review_time=dtime(9, 0))  # fmt: skip
    for value in (3.9, 6.2):  # green, then red: a status change and an escalation per KPI
        clock.advance(timedelta(hours=1))
        for i in range(KPIS):
            source.set(f"kpi_{i}", value)
        runner.evaluate_all()
    queued = store.messages(states=[DeliveryState.PENDING], limit=1000)
    assert len(queued) == 2 * KPIS

    # a replica killed with SIGKILL mid-pass: its claims stay until the lease ends
    crashed = store.claim_due_messages("crashed", now=clock.now(), lease=timedelta(seconds=2),
                                       limit=6)  # fmt: skip
    assert crashed

    with slack_api() as slack:
        outboxes = [_outbox(store, slack, clock, loaded.rules, f"replica-{n}") for n in (1, 2)]
        sent = Counter[str]()
        errors: list[BaseException] = []
        start = threading.Barrier(len(outboxes), timeout=30)

        def replica(outbox: Outbox) -> None:
            try:
                start.wait()
                deadline = time.monotonic() + 60  # bounded; done in a few seconds
                while time.monotonic() < deadline and store.pending_counts():
                    sent[outbox.holder] += outbox.deliver_due(limit=5)
                    time.sleep(0.01)
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=replica, args=(o,)) for o in outboxes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        posts = [p for p in slack.posts() if "ts" in p]

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert store.pending_counts() == {}
    assert all(m.state is DeliveryState.SENT for m in store.messages(limit=1000))
    assert len(posts) == len(slack.posts()) == 2 * KPIS  # nothing failed, nothing twice
    assert sum(sent.values()) == 2 * KPIS
    assert all(sent[o.holder] > 0 for o in outboxes), sent  # the work was shared
    by_kpi: dict[int, list[dict[str, object]]] = {}
    for post in posts:
        found = NAME.search(str(post.get("text")) + str(post.get("blocks")))
        assert found is not None, post
        by_kpi.setdefault(int(found.group(1)), []).append(post)
    assert sorted(by_kpi) == list(range(KPIS))
    for i, pair in by_kpi.items():
        top = [p for p in pair if not p.get("thread_ts")]
        replies = [p for p in pair if p.get("thread_ts")]
        # the escalation was sent after its status change, in that message's thread
        assert len(top) == len(replies) == 1, (i, pair)
        assert replies[0]["thread_ts"] == top[0]["ts"]
        assert top[0]["channel"] == replies[0]["channel"] == f"#team-{i % TEAMS}"
    store.close()
