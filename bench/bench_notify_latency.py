"""Latency from evaluation to Slack for a burst of 1,000 status transitions over 50 channels.

Run:  .venv/bin/python bench/bench_notify_latency.py [--kpis 1000] [--channels 50]
      [--layout grouped|interleaved] [--deadline 90] [--profile] [--tick 1] [--senders 4]

Wires what the daemon wires (App): a SQLite store, the Runner over a workspace
(a fake source: the values are set here), ``build_channels`` with
KPIWATCH_SLACK_TOKEN / KPIWATCH_SLACK_API_URL pointing at the local Slack Web API
server of the tests (``tests/integration/slack_api.py``), the NoticeBuilder,
the Suppressor and the Outbox, delivered as App does: every
OUTBOX_TICK_SECONDS (1 s; ``--tick``), ``deliver_due()`` until it sends fewer
than 100.

Every KPI is first evaluated green (states exist), then every value moves to
yellow (red would add an escalation message per KPI) and one
``Runner.evaluate_all`` makes the burst: one status change per KPI, each routed
to its team's Slack channel. The delivery ticks run all along,
as in the daemon. Latency = the server's receipt of the chat.postMessage minus
the event's evaluation time (``event.at``, a system clock). Slack pacing (one
message a second per channel) spreads a channel's queue over time, so the
table also gives latency minus the message's pacing slot (its 0-based position
in its channel's queue, in seconds).

Layouts: ``grouped`` (default) -- each team's KPIs are consecutive, as when each
team has its own rule file; ``interleaved`` -- KPI i belongs to team i % 50.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

# the local Slack Web API server of the tests lives in tests/integration
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

import structlog
from local_http import serving
from slack_api import SlackApi

from kpiwatch.clock import SystemClock
from kpiwatch.config.settings import Settings
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import DEFAULT_SENDERS, Outbox
from kpiwatch.notify.suppression import Suppressor
from kpiwatch.runtime.app import OUTBOX_TICK_SECONDS
from kpiwatch.runtime.channels import build_channels
from kpiwatch.runtime.runner import Runner
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, fake_workspace

TOKEN = "xoxb-bench-token"
NAME = re.compile(r"Metric M(\d{5})")
TARGET_S = 1.0


class TimedSlackApi(SlackApi):
    """The tests' Slack server, stamping each request with its time of receipt."""

    def record(
        self, method: str, body: dict[str, Any], authorization: str | None
    ) -> dict[str, Any]:
        call = super().record(method, body, authorization)
        call["received"] = time.time()
        return call


def rules_yaml(n: int, channels: int, layout: str) -> tuple[str, dict[int, int]]:
    per = -(-n // channels)
    team_of = {i: (i // per if layout == "grouped" else i % channels) for i in range(n)}
    lines = [
        "sources:",
        '  wh: {type: sql, url: "sqlite://", owner: data@example.com}',
        "teams:",
        *(f'  t{t}: {{slack: "#kpi-team-{t}"}}' for t in range(channels)),
        "kpis:",
    ]
    for i in range(n):
        lines.append(
            f"  - {{id: kpi_{i}, name: Metric M{i:05d}, owner: owner@example.com,"
            f" team: t{team_of[i]}, direction: lower_is_better, source: wh, query: SELECT 1,"
            " thresholds: {yellow: 50, red: 80}}"
        )
    return "\n".join(lines) + "\n", team_of


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kpis", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--layout", choices=("grouped", "interleaved"), default="grouped")
    parser.add_argument("--deadline", type=float, default=90.0, help="seconds to wait at most")
    parser.add_argument("--profile", action="store_true", help="cProfile the delivery thread")
    parser.add_argument("--tick", type=float, default=OUTBOX_TICK_SECONDS,
                        help="seconds between delivery passes (default: the daemon's)")
    parser.add_argument("--senders", type=int, default=DEFAULT_SENDERS,
                        help="recipients worked on side by side (1: all in the delivery thread)")
    args = parser.parse_args(argv)
    n = args.kpis
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))

    with tempfile.TemporaryDirectory(prefix="kpiwatch-notify-") as tmp, \
            serving(TimedSlackApi(TOKEN)) as slack:  # fmt: skip
        url = f"sqlite:///{tmp}/state.db"
        settings = Settings(database_url=url, rules_dir=Path(tmp), slack_token=TOKEN,
                            slack_api_url=slack.base_url)  # fmt: skip
        store = Store.open(url)
        clock = SystemClock()
        channels = build_channels(settings, store)
        source = FakeSource("wh")
        text, _ = rules_yaml(n, args.channels, args.layout)
        workspace = fake_workspace(text, store.latest, {"wh": source},
                                   channels=frozenset(channels))  # fmt: skip
        runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=dtime(9, 0))
        notices = NoticeBuilder(store, lambda: runner.workspace.rules, settings.base_url)
        outbox = Outbox(store, channels, clock, notices, senders=args.senders,
                        suppress=Suppressor(store, settings.tz).reason)  # fmt: skip

        for i in range(n):
            source.set(f"kpi_{i}", 10.0)  # green
        runner.evaluate_all()
        for i in range(n):
            source.set(f"kpi_{i}", 60.0)  # yellow: one transition each (red adds an escalation)

        stop = threading.Event()
        ticks: list[tuple[float, float, int]] = []  # (start, seconds, sent)

        profiler = cProfile.Profile() if args.profile else None

        def deliver_loop() -> None:  # App._deliver on a 1 s interval job
            if profiler is not None:
                profiler.enable()  # this thread only: the outbox's own work
            next_tick = time.monotonic()
            while not stop.is_set():
                t0 = time.monotonic()
                sent = 0
                while True:
                    batch = outbox.deliver_due()
                    sent += batch
                    if batch < 100:
                        break
                ticks.append((t0, time.monotonic() - t0, sent))
                next_tick += args.tick
                stop.wait(max(0.0, next_tick - time.monotonic()))
            if profiler is not None:
                profiler.disable()

        thread = threading.Thread(target=deliver_loop, name="outbox", daemon=True)
        thread.start()
        t_burst = time.time()
        stats = runner.evaluate_all()
        t_evaluated = time.time()
        deadline = time.monotonic() + args.deadline
        while time.monotonic() < deadline and len(slack.posts()) < n:
            time.sleep(0.2)
        stop.set()
        thread.join()
        t_end = time.time()

        sent_msgs = store.messages(limit=10 * n)
        at_of = {m.event.kpi_id: m.event.at.timestamp() for m in sent_msgs
                 if m.channel == "slack"}  # fmt: skip
        posts = slack.posts()
        per_channel: dict[str, int] = defaultdict(int)
        raw: list[float] = []
        net: list[float] = []
        for post in sorted(posts, key=lambda p: p["received"]):
            found = NAME.search(json.dumps(post))
            if found is None:
                continue
            kpi = f"kpi_{int(found.group(1))}"
            slot = per_channel[post["channel"]]
            per_channel[post["channel"]] += 1
            latency = post["received"] - at_of[kpi]
            raw.append(latency)
            net.append(latency - slot)
        pending = sum(store.pending_counts().values())
        store.close()
        workspace.close()

    busy = [s for _, s, sent in ticks if sent]
    print(f"\n{n:,} status transitions over {args.channels} Slack channels ({args.layout}),"
          f" a pass every {args.tick:g} s, {args.senders} sender(s),"
          f" Python {sys.version.split()[0]}\n")  # fmt: skip
    print(
        f"burst evaluated in {t_evaluated - t_burst:.2f} s ({stats.evaluated} KPIs);"
        f" {len(posts)} chat.postMessage received, {pending} still pending after"
        f" {t_end - t_burst:.1f} s; busiest channel got {max(per_channel.values(), default=0)}"
    )
    print(
        f"delivery ticks with sends: {len(busy)}, time per tick median"
        f" {statistics.median(busy) if busy else 0:.2f} s, max {max(busy, default=0):.2f} s\n"
    )
    if not raw:
        print("no posts received")
        return
    print(f"{'latency (s)':<40} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
    for label, values in (("raw: receipt - evaluation", raw),
                          ("minus pacing slot (position in channel)", net)):  # fmt: skip
        print(f"{label:<40} {percentile(values, .5):>7.2f} {percentile(values, .9):>7.2f}"
              f" {percentile(values, .99):>7.2f} {max(values):>7.2f}")  # fmt: skip
    if profiler is not None:
        print("\nprofile of the delivery thread (own time, then cumulative):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    verdict = "met" if percentile(net, 0.99) < TARGET_S and pending == 0 else "MISSED"
    print(f"\ntarget: p99 minus pacing under {TARGET_S:g} s: {verdict}")
    print(f"ideal last delivery (pacing only): {max(per_channel.values()) - 1} s after the burst")


if __name__ == "__main__":
    main()
