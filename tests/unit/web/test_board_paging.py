"""The board and ``/api/v1/kpis`` for many KPIs: attention first, pages, filters, search,
bounds, the API's cursors, and reads that do not grow with the number of KPIs.

States are written straight into a real SQLite store (no evaluation): every status,
blind, escalated and overdue KPIs, KPIs never evaluated; the rules have three teams
and Unassigned, five owners, labels.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.model import Ack, DataProblem, KpiState, ReviewCadence, Status
from kpiwatch.runtime.runner import Runner
from kpiwatch.store import rows
from kpiwatch.store.repository import Store
from kpiwatch.store.schema import acks as acks_t
from kpiwatch.store.schema import kpi_state as state_t
from kpiwatch.store.schema import observations as observations_t
from kpiwatch.testing import FixedClock
from kpiwatch.web.api import api_router
from kpiwatch.web.context import WebContext
from kpiwatch.web.listing import decode_cursor, encode_cursor
from kpiwatch.web.pages import pages_router

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TEAMS = ("alpha", "beta", "gamma", None)  # declared in this order; None: Unassigned
POINTS = 5  # observations per KPI


def kpi_id(i: int) -> str:
    return f"k{i:03d}"


def rules_text(n: int) -> str:
    lines = ["sources:", '  wh: {type: sql, url: "sqlite://"}', "teams:"]
    lines += [f"  {team}: {{}}" for team in TEAMS if team]
    lines.append("kpis:")
    for i in range(n):
        team = TEAMS[i % 4]
        labels = {"region": "emea" if i % 2 else "apac", **({"tier": "1"} if i % 3 == 0 else {})}
        lines += [
            f"  - id: {kpi_id(i)}",
            f"    name: KPI {i:03d} {'Revenue' if i % 7 == 0 else 'Signups'}",
            f"    owner: Owner{i % 5}@Example.com",
            *([f"    team: {team}"] if team else []),
            "    direction: higher_is_better",
            "    source: wh",
            "    query: SELECT 1",
            "    thresholds: {yellow: 50, red: 20}",
            "    labels: {" + ", ".join(f"{k}: '{v}'" for k, v in labels.items()) + "}",
        ]
    return "\n".join(lines) + "\n"


def kind(i: int) -> str:
    """What KPI i is: red (escalated), yellow, blind, unknown, escalated (green), overdue
    (green), green; every 13th was never evaluated (unknown, no state)."""
    if i % 13 == 12:
        return "never"
    return ("red", "yellow", "blind", "unknown", "escalated", "overdue", "green", "green")[i % 8]


GROUP = {"red": 0, "yellow": 1, "blind": 2, "unknown": 3, "never": 3, "escalated": 4,
         "overdue": 5, "green": 6}  # fmt: skip


def state_of(i: int) -> KpiState | None:
    what = kind(i)
    if what == "never":
        return None
    status = {"red": Status.RED, "yellow": Status.YELLOW, "blind": Status.UNKNOWN,
              "unknown": Status.UNKNOWN}.get(what, Status.GREEN)  # fmt: skip
    blind = what == "blind"
    return KpiState(
        kpi_id=kpi_id(i),
        status=status,
        since=NOW - timedelta(days=2),
        review=ReviewCadence.WEEKLY if what in ("red", "escalated") else ReviewCadence.MONTHLY,
        value=None if what == "unknown" else float(i),
        observed_at=NOW - timedelta(hours=1),
        reasons=(f"reason of {i}",),
        last_evaluated=NOW - timedelta(minutes=5),
        escalated_since=NOW - timedelta(days=1) if what in ("red", "escalated") else None,
        next_review=NOW - timedelta(hours=1) if what == "overdue" else NOW + timedelta(days=3),
        error="timeout" if status is Status.UNKNOWN else None,
        verdict=Status.GREEN if blind else (None if status is Status.UNKNOWN else status),
        data_problem=DataProblem(NOW - timedelta(hours=2), "timeout", "source", "wh")
        if blind
        else None,
    )


def expected_order(n: int) -> list[str]:
    """The board's order: the group, then the team as declared (Unassigned last), then
    rule order."""
    return [kpi_id(i) for i in sorted(range(n), key=lambda i: (GROUP[kind(i)], i % 4, i))]


@dataclass
class Board:
    client: TestClient
    store: Store
    rules: list[RuleSet]  # [0] is what the app reads: replace it to reload
    n: int


def make_board(tmp_path: Path, n: int) -> Board:
    store = Store.open(f"sqlite:///{tmp_path}/board-{n}.db")
    states = [s for i in range(n) if (s := state_of(i)) is not None]
    with store.engine.begin() as connection:
        connection.execute(state_t.insert(), [rows.state_row(s) for s in states])
        connection.execute(observations_t.insert(), [
            {"kpi_id": kpi_id(i), "observed_at": NOW - timedelta(days=POINTS - d),
             "value": float(i + d)}
            for i in range(n) for d in range(POINTS)
        ])  # fmt: skip
    rules = [load_rule_text(rules_text(n)).rules]
    ctx = WebContext(
        store=store,
        rules=lambda: rules[0],
        settings=Settings(timezone="UTC"),
        clock=FixedClock(NOW),
        runner=cast(Runner, None),  # reads only
        registry=CollectorRegistry(),
        heartbeat=lambda: 0.0,
    )
    app = FastAPI()
    app.include_router(api_router(ctx))
    app.include_router(pages_router(ctx))
    return Board(TestClient(app), store, rules, n)


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    made = make_board(tmp_path, 60)
    yield made
    made.store.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    """One board for the tests that only read (the parametrized ones)."""
    made = make_board(tmp_path_factory.mktemp("shared"), 60)
    yield made
    made.store.close()


def ids_on(page: str) -> list[str]:
    return re.findall(r'<a class="name" href="/kpis/(\w+)">', page)


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]+)">', page)
    return htmllib.unescape(found.group(1)) if found else None


def notices(page: str) -> list[str]:
    return [htmllib.unescape(n) for n in re.findall(r'<div class="notice"[^>]*>(.*?)</div>', page)]


def walk(board: Board, url: str) -> tuple[list[str], list[str]]:
    """Every page of the board from ``url`` by its Next links: (ids, the URLs followed)."""
    seen: list[str] = []
    urls = [url]
    while True:
        response = board.client.get(urls[-1] if urls[-1].startswith("/") else "/" + urls[-1])
        assert response.status_code == 200
        seen += ids_on(response.text)
        following = link(response.text, "next")
        if following is None:
            return seen, urls
        urls.append(following)


# ---------------------------------------------------------------- the board


def test_board_pages_list_everything_attention_first_once(board: Board) -> None:
    first = board.client.get("/").text
    assert ids_on(first) == expected_order(60)[:50]  # 50 a page
    seen, urls = walk(board, "/?size=7")
    assert seen == expected_order(60)
    assert len(urls) == 9  # 60 KPIs, 7 a page
    assert all(dict(parse_qsl(urlsplit(u).query)).get("size") == "7" for u in urls)
    last = board.client.get(urls[-1]).text
    assert link(last, "next") is None
    assert link(last, "prev") == "?size=7&page=8"
    assert "KPIs 57–60 of 60 · page 9 of 9" in last
    assert link(board.client.get("/?size=7").text, "prev") is None
    # past the last page: the last page
    assert ids_on(board.client.get("/?size=7&page=99").text) == expected_order(60)[56:]


def test_board_groups_and_summary(board: Board) -> None:
    page = board.client.get("/?size=200").text
    groups = re.findall(r'<section class="group" aria-label="([^"]+)">', page)
    assert groups == ["red", "yellow", "blind", "unknown", "escalated", "overdue", "green"]
    kinds = [kind(i) for i in range(60)]
    summary = re.search(r'<div class="summary"[^>]*>(.*?)</div>', page, re.S)
    assert summary is not None
    red, yellow = kinds.count("red"), kinds.count("yellow")
    unknown = kinds.count("blind") + kinds.count("unknown") + kinds.count("never")
    green = 60 - red - yellow - unknown
    assert re.sub(r"<[^>]+>", "", summary.group(1)).split() == [
        "60", "KPIs:", str(red), "red", str(yellow), "yellow", str(unknown), "unknown",
        str(green), "green",
    ]  # fmt: skip
    flags = re.search(r'<div class="flags small"[^>]*>(.*?)</div>', page, re.S)
    assert flags is not None
    escalated = red + kinds.count("escalated")
    overdue, blind = kinds.count("overdue"), kinds.count("blind")
    assert " ".join(re.sub(r"<[^>]+>", "", flags.group(1)).split()) == (
        f"{escalated} escalated · {overdue} reviews overdue · {blind} blind (no fresh data)"
    )
    # what a card shows, for the KPIs on the page: sparkline, owner, team, cadence, note
    card = page[page.index('href="/kpis/k000"') :].split("</article>")[0]
    assert '<svg class="spark"' in card
    assert "Owner0@Example.com" in card
    assert ">alpha</a>" in card
    assert "reviewed weekly" in card
    assert 'class="badge escalated"' in card
    blind_card = page[page.index('href="/kpis/k002"') :].split("</article>")[0]
    assert "No fresh data since 2026-03-02 06:00 UTC" in blind_card
    assert page.count('<svg class="spark"') == 60


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ("status=red", lambda i: kind(i) == "red"),
        ("status=red&status=yellow", lambda i: kind(i) in ("red", "yellow")),
        ("status=unknown", lambda i: kind(i) in ("blind", "unknown", "never")),
        ("status=green", lambda i: kind(i) in ("escalated", "overdue", "green")),
        ("status=blind", lambda i: kind(i) == "blind"),
        ("status=escalated", lambda i: kind(i) in ("red", "escalated")),
        ("status=overdue", lambda i: kind(i) == "overdue"),
        ("status=RED", lambda i: kind(i) == "red"),
        ("team=beta", lambda i: i % 4 == 1),
        ("team=alpha&team=gamma", lambda i: i % 4 in (0, 2)),
        ("owner=owner3@example.com", lambda i: i % 5 == 3),  # any case
        ("owner=Owner3", lambda i: False),  # the whole address
        ("label=region%3Demea", lambda i: i % 2 == 1),
        ("label=tier", lambda i: i % 3 == 0),  # has the label
        ("label=tier%3D2", lambda i: False),
        ("label=tier%3D1&label=region%3Demea", lambda i: i % 3 == 0 or i % 2 == 1),
        ("q=revenue", lambda i: i % 7 == 0),  # the name, any case
        ("q=k04", lambda i: 40 <= i < 50),  # the id
        ("q=++KPI+++007++", lambda i: i == 7),  # spaces folded
        ("q=%3Cscript%3E", lambda i: False),
        ("team=beta&status=red&q=signups", lambda i: i % 4 == 1 and kind(i) == "red"),
    ],
)
def test_board_filters_and_search(shared: Board, query: str, wanted: Callable[[int], bool]) -> None:
    response = shared.client.get(f"/?size=200&{query}")
    assert response.status_code == 200
    assert ids_on(response.text) == [k for k in expected_order(60) if wanted(int(k[1:]))]
    assert notices(response.text) == []
    if not any(wanted(i) for i in range(60)):
        assert "No KPIs match these filters." in response.text


def test_board_links_keep_the_filters(board: Board) -> None:
    page = board.client.get("/?status=green&team=alpha&owner=owner0@example.com&size=2"
                            "&owner=OWNER4@example.com&label=region%3Dapac&q=kpi").text  # fmt: skip
    following = link(page, "next")
    assert following is not None
    assert parse_qsl(urlsplit(following).query) == [
        ("status", "green"), ("team", "alpha"), ("owner", "owner0@example.com"),
        ("owner", "OWNER4@example.com"), ("label", "region=apac"), ("q", "kpi"),
        ("size", "2"), ("page", "2"),
    ]  # fmt: skip
    seen, _ = walk(board, following)
    wanted = [k for k in expected_order(60) if (i := int(k[1:])) % 4 == 0 and i % 5 in (0, 4)
              and kind(i) in ("escalated", "overdue", "green")]  # fmt: skip
    assert len(wanted) == 3
    assert ids_on(page) + seen == wanted
    # the form shows the filters; Clear drops them (not the size)
    assert 'name="q" value="kpi"' in page
    assert '<option selected>alpha</option>' in page
    assert 'name="status" value="green" checked' in page
    assert 'name="owner" value="owner0@example.com"' in page
    assert 'name="label" value="region=apac"' in page
    assert '<input type="hidden" name="size" value="2">' in page
    assert '<a href="?size=2">Clear</a>' in page


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("size=500", "size is at most 200"),
        ("size=0", "size '0' is ignored: not a whole number from 1"),
        ("size=-3", "size '-3' is ignored: not a whole number from 1"),
        ("page=x", "page 'x' is ignored: not a whole number from 1"),
        ("page=1e3", "page '1e3' is ignored: not a whole number from 1"),
        ("page=%00", "page '\\x00' is ignored: not a whole number from 1"),
        ("size=" + "9" * 30, "size is at most 200"),
        ("page=--1", "page '--1' is ignored: not a whole number from 1"),
        (
            "status=%ff",
            "status '\ufffd' is ignored: it is one of red, yellow, unknown, green, blind, "
            "escalated, overdue",
        ),
        (
            "status=purple",
            "status 'purple' is ignored: it is one of red, yellow, unknown, green, blind, "
            "escalated, overdue",
        ),
        ("team=alhpa", "no team 'alhpa' in the rules; did you mean 'alpha'?"),
        ("q=" + "x" * 101, "the search is cut to its first 100 characters"),
        ("owner=" + "o" * 201, "a owner over 200 characters is ignored"),
        ("&".join(f"label=k{i}" for i in range(21)), "only the first 20 label filters are used"),
    ],
)
def test_board_bounds_its_inputs_and_says_so(shared: Board, query: str, said: str) -> None:
    response = shared.client.get(f"/?{query}")
    assert response.status_code == 200
    assert said in notices(response.text)
    assert "<script" not in response.text


def test_board_size_is_bounded(board: Board) -> None:
    page = board.client.get("/?size=100000").text
    assert len(ids_on(page)) == 60  # all of them: 60 < 200
    assert "size is at most 200" in notices(page)
    assert len(ids_on(board.client.get("/?size=3").text)) == 3
    assert len(ids_on(board.client.get("/?size=abc").text)) == 50  # the default
    for page in ("9" * 5000, "9" * 15):  # past the last page: the last page
        last = board.client.get(f"/?size=25&page={page}").text
        assert ids_on(last) == expected_order(60)[50:]
        assert notices(last) == []


def test_board_escapes_what_it_echoes(board: Board) -> None:
    evil = '"><script>alert(1)</script>'
    page = board.client.get("/", params={"q": evil, "status": evil, "owner": evil}).text
    assert "<script>" not in page
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page


# ---------------------------------------------------------------- the API


def api_walk(board: Board, query: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Every page of ``/api/v1/kpis?{query}`` by its Link headers: (objects, URLs)."""
    url = f"/api/v1/kpis?{query}"
    found: list[dict[str, Any]] = []
    urls = [url]
    while True:
        response = board.client.get(url)
        assert response.status_code == 200, response.text
        found += response.json()
        header = response.headers.get("Link")
        if header is None:
            assert "X-Next-Cursor" not in response.headers
            return found, urls
        match = re.fullmatch(r'<([^>]+)>; rel="next"', header)
        assert match, header
        parts = urlsplit(match.group(1))
        assert dict(parse_qsl(parts.query))["cursor"] == response.headers["X-Next-Cursor"]
        url = f"{parts.path}?{parts.query}"
        urls.append(url)


def test_api_pages_walk_every_kpi_once_in_rule_order(board: Board) -> None:
    everything = board.client.get("/api/v1/kpis").json()  # no limit, no cursor: as before
    assert [k["id"] for k in everything] == [kpi_id(i) for i in range(60)]
    found, urls = api_walk(board, "limit=7")
    assert found == everything  # the same objects, each once
    assert len(urls) == 9
    assert all("limit=7" in url for url in urls)
    first = board.client.get("/api/v1/kpis?limit=7")
    assert first.headers["Link"].startswith('<http://testserver/api/v1/kpis?limit=7&cursor=')
    last = board.client.get(urls[-1])
    assert len(last.json()) == 4
    assert "Link" not in last.headers
    # a cursor alone: pages of 100
    page = board.client.get(f"/api/v1/kpis?cursor={encode_cursor(9, kpi_id(9))}").json()
    assert [k["id"] for k in page] == [kpi_id(i) for i in range(10, 60)]
    # an empty cursor: the first page
    assert board.client.get("/api/v1/kpis?cursor=&limit=7").json() == everything[:7]
    # a page that ends exactly at the last KPI has no Link
    assert "Link" not in board.client.get("/api/v1/kpis?limit=60").headers


@pytest.mark.parametrize(
    "query",
    [
        "status=red",
        "status=unknown&status=yellow",
        "team=beta",
        "owner=OWNER2@example.com",
        "label=region%3Demea&label=tier",
        "q=revenue",
        "team=alpha&team=gamma&status=green&q=kpi",
    ],
)
def test_api_filters_paged_and_whole(shared: Board, query: str) -> None:
    whole = shared.client.get(f"/api/v1/kpis?{query}")
    assert whole.status_code == 200
    assert whole.json()  # each of these matches some
    paged, urls = api_walk(shared, f"{query}&limit=3")
    assert paged == whole.json()
    assert len(urls) == -(-len(paged) // 3)


def test_api_filters_match_what_they_say(board: Board) -> None:
    def ids(query: str) -> list[str]:
        response = board.client.get(f"/api/v1/kpis?{query}")
        assert response.status_code == 200, response.text
        return [k["id"] for k in response.json()]

    assert ids("status=red&limit=1000") == [kpi_id(i) for i in range(60) if kind(i) == "red"]
    assert ids("owner=owner1@EXAMPLE.com") == [kpi_id(i) for i in range(60) if i % 5 == 1]
    assert ids("label=tier%3D1&team=gamma") == [kpi_id(i) for i in range(60) if i % 12 == 6]
    assert ids("q=K05") == [kpi_id(i) for i in range(50, 60)]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=nonsense",
        "cursor=" + "A" * 201,
        f"cursor={encode_cursor(0, 'k000')}x",
        "cursor=WzEsMl0",  # [1,2]: JSON, but not a cursor
        "cursor=Wy0xLCJrMDAwIl0",  # [-1,"k000"]
        "q=" + "x" * 101,
        "owner=" + "o" * 201,
        "&".join(["team=alpha"] * 21),
        "team=alhpa&limit=5",
    ],
)
def test_api_refuses_what_it_cannot_use(shared: Board, query: str) -> None:
    response = shared.client.get(f"/api/v1/kpis?{query}")
    assert response.status_code == 422, response.text


def test_api_cursor_survives_a_reload(board: Board) -> None:
    first = board.client.get("/api/v1/kpis?limit=5")
    cursor = first.headers["X-Next-Cursor"]
    assert decode_cursor(cursor) == (4, "k004")
    rules = board.rules[0]

    def without(*gone: str) -> RuleSet:
        return RuleSet(sources=rules.sources, teams=rules.teams,
                       kpis=tuple(k for k in rules.kpis if k.id not in gone))  # fmt: skip

    def next_ids() -> list[str]:
        return [k["id"] for k in board.client.get(f"/api/v1/kpis?limit=3&cursor={cursor}").json()]

    board.rules[0] = without("k001")  # one before it went: found by its id
    assert next_ids() == ["k005", "k006", "k007"]
    board.rules[0] = without("k004")  # it went: on from where it was
    assert next_ids() == ["k005", "k006", "k007"]


def test_api_acks_come_in_one_read(board: Board) -> None:
    state = state_of(0)
    assert state is not None
    board.store.ack(kpi_id(0), state.since, "ann", "on it", NOW)
    board.store.ack(kpi_id(1), NOW - timedelta(days=30), "old", "an earlier episode", NOW)
    page = board.client.get("/api/v1/kpis?limit=2").json()
    assert [k["ack"] for k in page] == ["ann: on it", None]
    assert board.client.get("/api/v1/kpis").json()[0]["ack"] == "ann: on it"
    with board.store.engine.connect() as connection:
        assert connection.execute(acks_t.select()).all()  # both stored
    assert board.store.current_acks() == {
        kpi_id(0): Ack(1, kpi_id(0), state.since, "ann", "on it", NOW)
    }


def test_the_document_describes_pages(board: Board) -> None:
    document = cast(FastAPI, board.client.app).openapi()
    operation = document["paths"]["/api/v1/kpis"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert names == {"team", "status", "owner", "label", "q", "limit", "cursor"}
    headers = operation["responses"]["200"]["headers"]
    assert set(headers) == {"Link", "X-Next-Cursor"}


# ---------------------------------------------------------------- reads per request


def count_statements(store: Store) -> list[str]:
    """Every SQL statement SQLite runs from now on (raw DB-API cursors too)."""
    statements: list[str] = []

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    from sqlalchemy import event

    event.listen(store.engine, "connect", trace)
    store.engine.dispose()  # new connections, traced
    return statements


PER_REQUEST = (
    "/",
    "/?status=yellow&team=beta",
    "/?q=revenue&page=2&size=5",
    "/api/v1/kpis?limit=50",
    "/api/v1/kpis?limit=50&status=green",
)


def test_reads_per_request_do_not_grow_with_the_kpis(tmp_path: Path) -> None:
    counts: dict[int, dict[str, int]] = {}
    for n in (60, 600):
        board = make_board(tmp_path, n)
        try:
            statements = count_statements(board.store)
            counts[n] = {}
            for path in PER_REQUEST:
                assert board.client.get(path).status_code == 200  # the pool warm
                statements.clear()
                assert board.client.get(path).status_code == 200
                counts[n][path] = len(statements)
                # history and whole states only of the KPIs on the page, by their ids;
                # of every KPI only the lean snapshot's columns
                for sql in statements:
                    assert sql.count("'k") <= 200, sql[:200]
                    if "FROM observations" in sql:
                        assert "'k" in sql, sql[:200]
                    if "FROM kpi_state" in sql and "'k" not in sql:
                        assert "has_data_problem" in sql, sql[:200]
        finally:
            board.store.close()
    assert counts[60] == counts[600]
    assert max(counts[600].values()) <= 6, counts[600]
