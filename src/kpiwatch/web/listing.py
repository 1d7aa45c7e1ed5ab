"""Which KPIs a page lists: the filters, the board's attention-first order, pages and
the API's cursors (SPEC §6, Scale).

A request at 10,000 KPIs must not read every KPI's full state and history. What
the order, the filters and the summary need comes from two cheap places:

* the rules, digested once per loaded :class:`RuleSet` (:func:`rule_index`): each
  KPI's position, its team's rank, its owner, labels and search text;
* the lean state snapshot (:class:`~kpiwatch.store.snapshot.StateSnapshots`, the
  exporter's: nine columns of every state, converted only when they changed):
  status, blind, escalated, when the review is due.

Only the KPIs on the page are then read in full (state, sparkline, ack), in a few
batched queries whatever their number.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.store.repository import Store
from kpiwatch.store.snapshot import ShownState, StateSnapshots

MAX_ID_GUESS = 255  # longer names are not ids: skip the did-you-mean work
MAX_SEARCH = 100  # characters of a search (``q``)
MAX_VALUE = 200  # characters of one filter value (a team, an owner, a label)
MAX_VALUES = 20  # values of one filter (``status=red&status=yellow``)

# The board's groups, in the order it lists them: what needs attention first.
RED, YELLOW, BLIND, UNKNOWN, ESCALATED, OVERDUE, GREEN = range(7)
GROUP_TITLES = (
    "Red",
    "Yellow",
    "Unknown: no fresh data",
    "Unknown",
    "Green, still escalated",
    "Green, review overdue",
    "Green",
)
GROUP_KEYS = ("red", "yellow", "blind", "unknown", "escalated", "overdue", "green")
STATUSES = ("red", "yellow", "unknown", "green")
# what the board's ``status`` filter takes: the statuses and three flags
BOARD_STATUSES = (*STATUSES, "blind", "escalated", "overdue")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``; did you mean 'growth'?`` for a name close to a known one, else ``""``."""
    if len(name) > MAX_ID_GUESS:
        return ""
    close = difflib.get_close_matches(name, sorted(known), n=3)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


# ---------------------------------------------------------------- the rules, digested


class Entry(NamedTuple):
    """One KPI as the filters and the order see it."""

    kpi: Kpi
    position: int  # in the rules: the API's order
    owner: str  # casefolded
    text: str  # id and name, casefolded: what a search looks in


@dataclass(frozen=True)
class RuleIndex:
    entries: tuple[Entry, ...]  # in rule order
    by_team: tuple[Entry, ...]  # declared teams in their order, then Unassigned; then rule order
    positions: dict[str, int]  # KPI id -> position


_last: tuple[RuleSet, RuleIndex] | None = None
_last_lock = threading.Lock()


def rule_index(rules: RuleSet) -> RuleIndex:
    """The rules digested for listing, built once per RuleSet object (a reload makes a new
    one) and kept for the requests that follow."""
    global _last
    last = _last
    if last is not None and last[0] is rules:
        return last[1]
    with _last_lock:
        entries = tuple(
            Entry(kpi, i, kpi.owner.casefold(), f"{kpi.id}\n{kpi.name.casefold()}")
            for i, kpi in enumerate(rules.kpis)
        )
        declared = {team: rank for rank, team in enumerate(rules.teams)}
        unassigned = len(declared) + 1

        def team_rank(entry: Entry) -> tuple[int, str]:
            team = entry.kpi.team
            if team is None:
                return (unassigned, "")
            return (declared.get(team, len(declared)), team.casefold())

        index = RuleIndex(
            entries=entries,
            by_team=tuple(sorted(entries, key=team_rank)),  # stable: rule order within a team
            positions={entry.kpi.id: entry.position for entry in entries},
        )
        _last = (rules, index)
    return index


# ---------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """What a page is filtered by. Values of one filter are alternatives (any of them);
    different filters must all match. Matching is on the rules, except ``statuses``."""

    statuses: tuple[str, ...] = ()  # STATUSES; on the board also blind, escalated, overdue
    teams: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()  # the whole address, any case
    labels: tuple[str, ...] = ()  # ``key=value``, or ``key``: the KPI has that label
    q: str = ""  # a part of the id or the name, any case
    _owners: frozenset[str] = field(init=False, repr=False, compare=False)
    _labels: tuple[tuple[str, str | None], ...] = field(init=False, repr=False, compare=False)
    _q: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_owners", frozenset(o.casefold() for o in self.owners))
        object.__setattr__(self, "_q", self.q.casefold())
        labels = []
        for label in self.labels:
            key, eq, value = label.partition("=")
            labels.append((key, value if eq else None))
        object.__setattr__(self, "_labels", tuple(labels))

    @property
    def on_rules(self) -> bool:
        """Whether any filter looks at the rules (not only at the status)."""
        return bool(self.teams or self.owners or self.labels or self.q)

    def matches(self, entry: Entry) -> bool:
        """Whether the KPI passes the filters on the rules (statuses aside)."""
        kpi = entry.kpi
        if self.teams and kpi.team not in self.teams:
            return False
        if self._owners and entry.owner not in self._owners:
            return False
        if self._labels and not any(
            (kpi.labels.get(key) == value) if value is not None else (key in kpi.labels)
            for key, value in self._labels
        ):
            return False
        return not self._q or self._q in entry.text

    def query(self) -> list[tuple[str, str]]:
        """The filters as query parameters, for links that keep them."""
        items = [("status", s) for s in self.statuses]
        items += [("team", t) for t in self.teams]
        items += [("owner", o) for o in self.owners]
        items += [("label", label) for label in self.labels]
        if self.q:
            items.append(("q", self.q))
        return items


class Flags(NamedTuple):
    """What the order and the summary need of one KPI's state."""

    status: str
    blind: bool
    escalated: bool
    overdue: bool  # its review's time has passed and no review tick has held it yet

    @property
    def group(self) -> int:
        if self.status == "red":
            return RED
        if self.status == "yellow":
            return YELLOW
        if self.status == "unknown":
            return BLIND if self.blind else UNKNOWN
        if self.escalated:
            return ESCALATED
        return OVERDUE if self.overdue else GREEN

    def any_of(self, statuses: Sequence[str]) -> bool:
        return any(
            self.status == s
            or (s == "blind" and self.blind)
            or (s == "escalated" and self.escalated)
            or (s == "overdue" and self.overdue)
            for s in statuses
        )


NEVER_EVALUATED = Flags("unknown", blind=False, escalated=False, overdue=False)


def flags(shown: ShownState | None, now: datetime) -> Flags:
    """A KPI's :class:`Flags` from its snapshot (None: never evaluated, unknown).

    Overdue: the review's time has come and the scheduler has not held it (each tick
    emits review_due and schedules the next): a daemon behind or stopped. Recorded
    reviews (SPEC §5b) will make this "due and not recorded within the grace".
    """
    if shown is None:
        return NEVER_EVALUATED
    due = shown.next_review
    return Flags(
        shown.status.value,
        shown.blind,
        shown.escalated,
        overdue=due is not None and due <= now,
    )


class LazySnapshots:
    """A :class:`StateSnapshots` made on the first read: a router is built before its
    store is used (and, for the OpenAPI document alone, without one)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._snapshots: StateSnapshots | None = None

    def read(self) -> dict[str, ShownState]:
        if self._snapshots is None:
            self._snapshots = StateSnapshots(self._store)
        return self._snapshots.read()


# ---------------------------------------------------------------- the board


@dataclass(frozen=True)
class Summary:
    """The whole board, whatever the filters: KPIs by status, and the flags."""

    total: int = 0
    red: int = 0
    yellow: int = 0
    unknown: int = 0
    green: int = 0
    blind: int = 0
    escalated: int = 0
    overdue: int = 0

    def counts(self) -> dict[str, int]:
        return {s: getattr(self, s) for s in STATUSES}


@dataclass(frozen=True)
class BoardPage:
    summary: Summary
    matched: int  # KPIs that pass the filters
    group_totals: tuple[int, ...]  # of those, per group (GROUP_TITLES)
    page: int  # 1-based, within 1..pages
    pages: int
    size: int
    first: int  # the position of the page's first KPI among the matched, 0-based
    kpis: tuple[tuple[int, Kpi], ...]  # (group, KPI), in the board's order


def board_page(
    rules: RuleSet,
    shown: Mapping[str, ShownState],
    now: datetime,
    filters: Filters,
    *,
    page: int,
    size: int,
) -> BoardPage:
    """The summary, and the KPIs of page ``page`` (of ``size``; past the last page: the
    last) of those that pass ``filters``: red, yellow, unknown (blind first), green
    but escalated, green with a review overdue, green; within a group by team (as the
    rules declare them, Unassigned last), then in rule order."""
    index = rule_index(rules)
    groups: list[list[Kpi]] = [[] for _ in GROUP_TITLES]
    counts = dict.fromkeys((*STATUSES, "blind", "escalated", "overdue"), 0)
    on_rules, statuses = filters.on_rules, filters.statuses
    for entry in index.by_team:
        state = flags(shown.get(entry.kpi.id), now)
        counts[state.status] += 1
        counts["blind"] += state.blind
        counts["escalated"] += state.escalated
        counts["overdue"] += state.overdue
        if on_rules and not filters.matches(entry):
            continue
        if statuses and not state.any_of(statuses):
            continue
        groups[state.group].append(entry.kpi)
    summary = Summary(total=len(index.entries), **counts)
    matched = sum(map(len, groups))
    pages = max(1, -(-matched // size))
    page = min(max(page, 1), pages)
    first = (page - 1) * size
    listed: list[tuple[int, Kpi]] = []
    skip = first
    for group, kpis in enumerate(groups):
        if skip >= len(kpis):
            skip -= len(kpis)
            continue
        listed += [(group, kpi) for kpi in kpis[skip : skip + size - len(listed)]]
        skip = 0
        if len(listed) == size:
            break
    return BoardPage(
        summary=summary,
        matched=matched,
        group_totals=tuple(map(len, groups)),
        page=page,
        pages=pages,
        size=size,
        first=first,
        kpis=tuple(listed),
    )


# ---------------------------------------------------------------- the API's pages


def encode_cursor(position: int, kpi_id: str) -> str:
    """An opaque cursor: where the page after this KPI starts."""
    raw = json.dumps([position, kpi_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """(position, KPI id) of a cursor :func:`encode_cursor` gave; ValueError otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position, kpi_id = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError):
        raise ValueError("not a cursor this API gave") from None
    if type(position) is not int or position < 0 or not isinstance(kpi_id, str):
        raise ValueError("not a cursor this API gave")
    return position, kpi_id


def api_page(
    rules: RuleSet,
    filters: Filters,
    shown: Mapping[str, ShownState] | None,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Kpi], str | None]:
    """The next ``limit`` KPIs in rule order after ``cursor`` that pass ``filters``
    (statuses from ``shown``, needed only with them), and the cursor of the page after
    (None: this was the last). A cursor resumes after its KPI wherever the KPI is now
    (a reload may have moved it), else at the position it had (it was removed)."""
    index = rule_index(rules)
    start = 0
    if cursor:  # an empty one: the first page
        position, kpi_id = decode_cursor(cursor)
        now_at = index.positions.get(kpi_id)
        # gone: the KPI that followed it has moved up to its position
        start = position if now_at is None else now_at + 1
    statuses, on_rules = filters.statuses, filters.on_rules
    found: list[Kpi] = []
    last = None
    for entry in index.entries[start:]:
        if on_rules and not filters.matches(entry):
            continue
        if statuses:
            assert shown is not None  # read when statuses filter
            state = shown.get(entry.kpi.id)
            if (state.status.value if state is not None else "unknown") not in statuses:
                continue
        if len(found) == limit:
            assert last is not None
            return found, encode_cursor(last.position, last.kpi.id)
        found.append(entry.kpi)
        last = entry
    return found, None
