"""Slack Block Kit rendering: wording per event, escaping, Block Kit limits, the sparkline."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kpiwatch.config.rules import Kpi
from kpiwatch.model import (
    Ack,
    Annotation,
    DeliveryState,
    Event,
    EventKind,
    KpiState,
    Observation,
    OutboxMessage,
    ReviewCadence,
    Status,
)
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.render.slack import clip, escape, slack_message
from kpiwatch.notify.render.sparkline import sparkline

AT = datetime(2024, 6, 1, 12, tzinfo=UTC)


def make_kpi(**overrides: Any) -> Kpi:
    doc: dict[str, Any] = {
        "id": "wau",
        "name": "Weekly active users",
        "owner": "alice",
        "team": "growth",
        "direction": "higher_is_better",
        "source": "push",
        "unit": "users",
        "thresholds": {"yellow": 1500, "red": 1000},
        "target": {"value": 2000, "by": "2024-12-31"},
        "review": "monthly",
    }
    return Kpi.model_validate(doc | overrides)


def make_notice(
    kind: EventKind = EventKind.STATUS_CHANGED,
    data: dict[str, Any] | None = None,
    *,
    kpi: Kpi | None = None,
    with_kpi: bool = True,
    source: str | None = None,
    annotations: tuple[Annotation, ...] = (),
    ack: Ack | None = None,
    recent: tuple[float, ...] = (1800, 1700, 1400, 1200, 950),
    url: str = "https://kpi.example.com/kpis/wau",
) -> Notice:
    if data is None:
        data = {"from": "yellow", "to": "red", "value": 950.0, "unit": "users",
                "reasons": ["value 950 users < red 1000 users"], "first": False}  # fmt: skip
    kpi = kpi or make_kpi() if with_kpi else None
    kpi_id = None if source else (kpi.id if kpi else "wau")
    event = Event(kind=kind, key=f"k:{kind.value}", at=AT, kpi_id=kpi_id, source=source, data=data)
    state = None
    if kpi_id is not None:
        state = KpiState(
            kpi_id, Status.RED, AT, ReviewCadence.WEEKLY, value=950.0,
            reasons=("value 950 users < red 1000 users",), escalated_since=AT,
            next_review=AT + timedelta(days=7),
        )  # fmt: skip
    message = OutboxMessage(1, event, "slack", "#growth", DeliveryState.PENDING, 0, AT, AT)
    observations = tuple(
        Observation("wau", AT - timedelta(days=len(recent) - i), v) for i, v in enumerate(recent)
    )
    return Notice(message, kpi, None, state, observations, annotations, ack, url)


def all_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


def texts(payload: dict[str, Any]) -> list[str]:
    """Every text object's text in the blocks (header, section, fields, context)."""
    out: list[str] = []
    for block in payload["blocks"]:
        if "text" in block:
            out.append(block["text"]["text"])
        out.extend(f["text"] for f in block.get("fields", []))
        out.extend(e["text"] for e in block.get("elements", []) if "text" in e)
    return out


def test_red_status_change_reads_at_a_glance() -> None:
    payload = slack_message(make_notice())
    blocks = payload["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "🔴 Red · Weekly active users"},
    }
    body = "\n".join(texts(payload))
    assert "changed from yellow to *red*" in body
    assert "*Value*\n950 users" in body
    assert "*Target*\n2000 users by 2024-12-31" in body
    assert "*Thresholds*\nred &lt; 1000 users · yellow &lt; 1500 users" in body
    assert "*Owner*\nalice (growth)" in body
    assert "*Review*\nweekly `escalated`\nnext 2024-06-08 12:00 UTC" in body
    assert "• value 950 users &lt; red 1000 users" in body
    assert "<https://kpi.example.com/kpis/wau|Open in kpiwatch>" in body
    assert "`█▇▅▃▁`" in body  # the sparkline of recent values
    assert payload["text"].startswith("🔴 Weekly active users yellow → red: 950 users")


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (EventKind.STATUS_CHANGED, {"from": None, "to": "yellow", "first": True, "value": 1400},
         "is *yellow* on its first evaluation"),
        (EventKind.ESCALATED, {"review": "weekly", "from_review": "monthly", "status": "red",
                               "value": 950, "reasons": []},
         "*escalated* while red: reviews move from monthly to *weekly*"),
        (EventKind.DE_ESCALATED, {"review": "monthly", "from_review": "weekly",
                                  "escalated_since": AT.isoformat(),
                                  "green_since": AT.isoformat(), "green_count": 6},
         "*stable again* — green since 2024-06-01 12:00 UTC (6 checks in a row)"),
        (EventKind.REVIEW_DUE, {"cadence": "weekly", "escalated": True, "status": "red",
                                "value": 950, "reasons": ["r"]},
         "is due for its *weekly* review `escalated`"),
    ],
)  # fmt: skip
def test_wording_per_event_kind(kind: EventKind, data: dict[str, Any], expected: str) -> None:
    payload = slack_message(make_notice(kind, data))
    assert expected in "\n".join(texts(payload))
    assert payload["text"]


def test_source_events_render_without_a_kpi() -> None:
    down = slack_message(
        make_notice(EventKind.DATA_INCIDENT, {"reason": "connection refused", "count": 1,
                                              "kpis": ["wau"]}, with_kpi=False,
                    source="warehouse", recent=(), url="https://kpi.example.com/")
    )  # fmt: skip
    assert down["blocks"][0]["text"]["text"] == "🚫 Data incident · warehouse"
    assert (
        "data incident on source warehouse: connection refused; 1 KPI blind: wau"
        in texts(down)[1]
    )
    assert not any("fields" in b for b in down["blocks"])
    assert "warehouse" in down["text"]
    up = slack_message(
        make_notice(EventKind.DATA_RECOVERED, {"duration": "3d2h", "count": 1}, with_kpi=False,
                    source="warehouse", recent=())
    )  # fmt: skip
    assert up["blocks"][0]["text"]["text"] == "✅ Source recovered · warehouse"
    assert "works again after 3d2h (1 KPI)" in texts(up)[1]


def test_annotations_latest_three_and_ack() -> None:
    notes = tuple(
        Annotation(i, "wau", AT - timedelta(days=5 - i), f"note {i}", "bob", AT) for i in range(5)
    )
    ack = Ack(1, "wau", AT, "carol", "looking into the signup funnel", AT)
    body = "\n".join(texts(slack_message(make_notice(annotations=notes, ack=ack))))
    assert "note 0" not in body
    assert "note 1" not in body
    assert "• 2024-05-29 — note 2 _(bob)_" in body
    assert "note 4" in body
    assert "🙋 *Acknowledged* by carol: looking into the signup funnel" in body


def test_hostile_text_is_escaped_everywhere() -> None:
    kpi = make_kpi(name="<!channel> R&D > plan", owner="<@U123>", unit="<!here>")
    notice = make_notice(
        data={"from": "yellow", "to": "red", "value": 1, "reasons": ["<!everyone> & <b>"]},
        kpi=kpi,
        annotations=(Annotation(1, "wau", AT, "see <https://evil|here> & >", "<!subteam^S1>", AT),),
        ack=Ack(1, "wau", AT, "<@U1>", "<!channel>", AT),
    )
    payload = slack_message(notice)
    rendered = all_text(payload)
    for raw in ("<!", "<@", "<https://evil", "<b>"):
        assert raw not in rendered, raw
    assert "&lt;!channel&gt; R&amp;D &gt; plan" in payload["blocks"][0]["text"]["text"]
    assert "&lt;!channel&gt;" in payload["text"]
    assert "• &lt;!everyone&gt; &amp; &lt;b&gt;" in "\n".join(texts(payload))
    # the only link is ours
    assert rendered.count("<https://") == 1


def test_link_only_for_http_urls_and_escaped() -> None:
    assert "Open in kpiwatch" not in all_text(slack_message(make_notice(url="javascript:x")))
    weird = slack_message(make_notice(url="https://k.example/a?x=1&y=|>"))
    assert "<https://k.example/a?x=1&amp;y=%7C&gt;|Open in kpiwatch>" in all_text(weird)


def test_block_kit_limits_hold_with_huge_input() -> None:
    huge = "x&" * 5000
    kpi = make_kpi(name="N" * 500, owner="o" * 3000)
    notice = make_notice(
        data={"from": "yellow", "to": "red", "value": 1, "reasons": [huge] * 200},
        kpi=kpi,
        annotations=tuple(Annotation(i, "wau", AT, huge, "a" * 500, AT) for i in range(100)),
        ack=Ack(1, "wau", AT, "b", huge, AT),
        recent=tuple(float(i) for i in range(1000)),
    )
    payload = slack_message(notice)
    blocks = payload["blocks"]
    assert len(blocks) <= 50
    assert len(payload["text"]) <= 4000
    assert payload["text"].endswith("…")
    assert len(blocks[0]["text"]["text"]) <= 150
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
        fields = block.get("fields", [])
        assert len(fields) <= 10
        assert all(len(f["text"]) <= 2000 for f in fields)
    for text in texts(payload):
        assert not text.endswith(("&…", "&a…", "&am…", "&amp…")), "entity cut in half"


def test_clip_and_escape() -> None:
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert clip("abc", 3) == "abc"
    assert clip("abcdef", 4) == "abc…"
    assert clip("ab&amp;cd", 5) == "ab…"  # "ab&a" would cut the entity


@pytest.mark.parametrize(
    ("values", "width", "expected"),
    [
        ([], 20, ""),
        ([5.0], 20, "▄"),
        ([3.0, 3.0, 3.0], 20, "▄▄▄"),
        ([0, 1, 2, 3, 4, 5, 6, 7], 20, "▁▂▃▄▅▆▇█"),
        ([7, 0], 20, "█▁"),
        ([0, 100, 1, 2], 2, "▁█"),  # the last `width` values
        ([1.0, float("nan"), 2.0, float("inf")], 20, "▁█"),
        ([-1e308, 1e308], 20, "▁█"),  # the span overflows a float
    ],
)
def test_sparkline(values: list[float], width: int, expected: str) -> None:
    assert sparkline(values, width) == expected


def test_sparkline_rejects_zero_width() -> None:
    with pytest.raises(ValueError, match="width"):
        sparkline([1.0], 0)


def test_a_reminder_says_what_it_is_and_how_to_stop_it() -> None:
    since = AT - timedelta(days=3, hours=2)
    data = {"since": since.isoformat(), "number": 2, "status": "red", "value": 950.0,
            "reasons": ["value 950 users < red 1000 users"]}  # fmt: skip
    payload = slack_message(make_notice(EventKind.REMINDER, data))
    assert payload["blocks"][0]["text"]["text"] == "🔴 Red · Weekly active users"
    assert payload["text"] == (
        "⏰ Weekly active users is still red (since 3d2h): 950 users — not acknowledged"
        " — value 950 users &lt; red 1000 users"
    )
    body = "\n".join(texts(payload))
    assert (
        "⏰ *Weekly active users* is *still red* after 3d 2h and nobody has acknowledged it. "
        "Acknowledge to stop the reminders: `kpiwatch ack wau --comment '…'`"
    ) in body
    assert "*Red since*\n2024-05-29 10:00 UTC" in body


# -- a KPI judged per period with a plan (SPEC §2a) ------------------------------------------


def _planned_notice(*, plan: float | None, data_plan: object = "absent") -> Notice:
    """Monthly revenue, thresholds in % of the plan, red for May 2024 at 26,000 $."""
    kpi = make_kpi(
        id="revenue", name="Monthly revenue", unit="$", period="month", aggregate="sum",
        target={"plan": {"2024-05": 33000}}, thresholds={"yellow": "95%", "red": "90%"},
    )  # fmt: skip
    data: dict[str, Any] = {"from": "green", "to": "red", "value": 26000.0, "unit": "$",
                            "reasons": ["May 2024: value 26,000 $ < red 29,700 $"]}  # fmt: skip
    if data_plan != "absent":
        data["plan"] = data_plan
    notice = make_notice(data=data, kpi=kpi)
    assert notice.state is not None
    return dataclasses.replace(notice, state=notice.state._replace(value=26000.0, plan=plan))


def test_a_plan_is_the_target_and_percent_thresholds_say_what_they_come_to() -> None:
    body = "\n".join(texts(slack_message(_planned_notice(plan=33000.0))))
    assert "*Target*\n33,000 $ (monthly plan)" in body
    assert "*Thresholds*\nred &lt; 90 % of plan (29,700 $) · yellow &lt; 95 % of plan (31,350 $)" \
        in body  # fmt: skip
    assert "• May 2024: value 26,000 $ &lt; red 29,700 $" in body


def test_the_events_own_plan_wins_over_the_states() -> None:
    # the state moved on to a later month (its plan 40,000 $); the event judged May
    body = "\n".join(texts(slack_message(_planned_notice(plan=40000.0, data_plan=33000))))
    assert "*Target*\n33,000 $ (monthly plan)" in body
    assert "yellow &lt; 95 % of plan (31,350 $)" in body
    body = "\n".join(texts(slack_message(_planned_notice(plan=40000.0, data_plan=None))))
    assert "*Target*\nno monthly plan for the month judged" in body


def test_without_a_plan_for_the_period_percent_thresholds_stay_percents() -> None:
    body = "\n".join(texts(slack_message(_planned_notice(plan=None))))
    assert "*Target*\nno monthly plan for the month judged" in body
    assert "*Thresholds*\nred &lt; 90 % of plan · yellow &lt; 95 % of plan" in body
    assert "&lt; 95\n" not in body
    assert "&lt; 90 " not in body.replace("&lt; 90 % of plan", "")
