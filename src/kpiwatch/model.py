"""The product's nouns as plain, immutable data: no I/O, no framework types.

Everything here crosses module boundaries (evaluation -> store -> notify -> web),
so it stays small and stable. The three types the evaluation core builds for
every KPI on every cycle (Finding, KpiState, Evaluation) are NamedTuples: as
immutable as frozen dataclasses and about five times cheaper to build, which
is a third of the core's time at 10,000 KPIs (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple


class Status(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"
    UNKNOWN = "unknown"  # no usable value: source error, no rows, non-numeric, stale

    @property
    def severity(self) -> int:
        """Order for "worst of": green < yellow < red; unknown sorts below green."""
        return _SEVERITY[self]


_SEVERITY = {Status.UNKNOWN: -1, Status.GREEN: 0, Status.YELLOW: 1, Status.RED: 2}


def worst(statuses: list[Status] | tuple[Status, ...]) -> Status:
    """The most severe of green/yellow/red; green when the list is empty."""
    result = Status.GREEN
    for status in statuses:
        if status.severity > result.severity:
            result = status
    return result


class Direction(StrEnum):
    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


class ReviewCadence(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"

    @property
    def rank(self) -> int:
        """0 is the most frequent cadence."""
        return _CADENCE_RANK[self]

    @property
    def nominal_seconds(self) -> int:
        """The average interval between reviews, for display and metrics."""
        return _CADENCE_SECONDS[self]


_CADENCE_RANK = {
    ReviewCadence.DAILY: 0,
    ReviewCadence.WEEKLY: 1,
    ReviewCadence.MONTHLY: 2,
    ReviewCadence.QUARTERLY: 3,
}
_CADENCE_SECONDS = {
    ReviewCadence.DAILY: 86_400,
    ReviewCadence.WEEKLY: 7 * 86_400,
    ReviewCadence.MONTHLY: 2_629_746,  # 365.2425 / 12 days
    ReviewCadence.QUARTERLY: 7_889_238,
}


class Period(StrEnum):
    """The calendar period a KPI is judged by (SPEC §2a), in KPIWATCH_TIMEZONE."""

    DAY = "day"
    WEEK = "week"  # Monday to Sunday
    MONTH = "month"
    QUARTER = "quarter"


class Aggregate(StrEnum):
    """How raw (timestamp, value) rows fold into one value per period."""

    SUM = "sum"
    AVG = "avg"
    LAST = "last"
    MIN = "min"
    MAX = "max"
    COUNT = "count"


class Versus(StrEnum):
    """What ``trend.change`` compares a period with, instead of a duration ago."""

    PREVIOUS_PERIOD = "previous_period"
    SAME_PERIOD_LAST_YEAR = "same_period_last_year"


class NoData(StrEnum):
    """What a KPI shows when its latest fetch gave no usable value."""

    UNKNOWN = "unknown"
    KEEP_LAST = "keep_last"
    RED = "red"


@dataclass(frozen=True, slots=True)
class Observation:
    """One value of a KPI at a time (timezone-aware, UTC in the store)."""

    kpi_id: str
    observed_at: datetime
    value: float


class Kept(NamedTuple):
    """A KPI's stored points the retention keeps (:mod:`kpiwatch.evaluation.retention`):
    every one observed at or after ``since``, and its ``newest`` points however old (a
    KPI polled monthly keeps its last value; one removed from the rules, none)."""

    since: datetime
    newest: int


class Finding(NamedTuple):
    """The verdict of one rule, with a reason worded for people."""

    rule: str  # threshold | worsening_streak | change | off_track | no_data | stale | source
    status: Status
    reason: str


class DataProblem(NamedTuple):
    """Why a KPI has no usable value, since when, and whose problem it is (SPEC §5a).

    ``scope`` is ``source`` when the source as a whole fails (cannot connect, auth,
    timeout, every KPI of it failing, its ``freshness`` check) and ``kpi`` when only
    this KPI's query does. ``told_at`` is when the KPI's owner heard about this
    spell (once per spell; None while they have not).
    """

    since: datetime
    reason: str
    scope: str  # source | kpi
    source: str
    told_at: datetime | None = None


class KpiState(NamedTuple):
    """What kpiwatch remembers about one KPI between evaluations.

    Like a Prometheus alert: an effective status plus the timestamps and
    counters that decide the next transition.
    """

    kpi_id: str
    status: Status  # effective status (after hysteresis)
    since: datetime  # start of the current episode
    review: ReviewCadence  # cadence in force (escalated or not)
    pending_status: Status | None = None  # a different raw status waiting for `for`
    pending_count: int = 0
    value: float | None = None  # the value the status is about
    observed_at: datetime | None = None
    reasons: tuple[str, ...] = ()
    last_evaluated: datetime | None = None
    escalated_since: datetime | None = None
    green_since: datetime | None = None  # start of the unbroken green run (de-escalation)
    green_count: int = 0  # evaluations in that run
    last_review: datetime | None = None
    next_review: datetime | None = None
    error: str | None = None  # the last source error, shown with unknown
    # reminders of this episode told so far (the schedule's position; 0 on a new episode)
    reminders_sent: int = 0
    # the last green/yellow/red (None before the first): while blind, ``status`` is
    # unknown and the episode (since, ack, escalation, thread) is this verdict's
    verdict: Status | None = None
    data_problem: DataProblem | None = None  # set while the value cannot be had
    plan: float | None = None  # the judged period's plan (a KPI with a per-period target)

    @property
    def escalated(self) -> bool:
        return self.escalated_since is not None

    @property
    def blind(self) -> bool:
        """No usable value, judged by nobody: shown unknown, the last verdict carried on."""
        return self.status is Status.UNKNOWN and self.data_problem is not None

    @property
    def ackable(self) -> bool:
        """Whether the running episode can be acknowledged: a red or yellow one, blind or not."""
        return self.episode_status in (Status.RED, Status.YELLOW)

    @property
    def episode_status(self) -> Status:
        """The status whose episode is running: the verdict carried through a blind spell."""
        if self.status is Status.UNKNOWN and self.verdict is not None:
            return self.verdict
        return self.status


class EventKind(StrEnum):
    STATUS_CHANGED = "status_changed"
    ESCALATED = "escalated"
    DE_ESCALATED = "de_escalated"
    REVIEW_DUE = "review_due"
    REMINDER = "reminder"  # an unacknowledged red (or yellow) episode, told again
    # a data problem: a source's incident (source set, no KPI), or one KPI's blind
    # spell told to its owner (kpi_id set; data["scope"] says which)
    DATA_INCIDENT = "data_incident"
    DATA_RECOVERED = "data_recovered"  # a source's incident is over
    # follow-ups people add to a red or yellow episode: told in its Slack thread
    ACKNOWLEDGED = "acknowledged"
    ANNOTATED = "annotated"
    # a closed period's value changed on a later poll (late data): recorded, shown; the
    # owner hears only when the verdict changes (as a status change)
    RESTATED = "restated"
    DELIVERY_FAILED = "delivery_failed"

    @classmethod
    def _missing_(cls, value: object) -> EventKind | None:
        # rows stored by 0.1 (source_down / source_recovered) read as their successors
        return _LEGACY_KINDS.get(str(value))


_LEGACY_KINDS = {
    "source_down": EventKind.DATA_INCIDENT,
    "source_recovered": EventKind.DATA_RECOVERED,
}


@dataclass(frozen=True, slots=True)
class Event:
    """Something people may need to hear about.

    ``key`` identifies the event: writing the same key twice stores it once,
    which is what makes a retried evaluation or a second replica harmless.
    """

    kind: EventKind
    key: str
    at: datetime
    kpi_id: str | None = None
    source: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)  # JSON-able details


class Evaluation(NamedTuple):
    """The result of applying a KPI's rules at one moment."""

    kpi_id: str
    at: datetime
    value: float | None
    observed_at: datetime | None
    raw_status: Status
    findings: tuple[Finding, ...]
    state: KpiState  # the state after this evaluation
    events: tuple[Event, ...] = ()

    @property
    def status(self) -> Status:
        return self.state.status

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(f.reason for f in self.findings)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One transition of a KPI's effective status, for history."""

    kpi_id: str
    at: datetime
    from_status: Status | None
    to_status: Status
    value: float | None
    reasons: tuple[str, ...] = ()


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"  # retry budget spent; counted, shown, retryable from the CLI
    SUPPRESSED = "suppressed"  # silenced or muted: recorded, not sent


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where one event goes: a channel and an address on it."""

    channel: str  # log | slack | email | webhook
    target: str  # channel name, email address, URL, or "" for the log


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One event waiting for (or done with) one delivery."""

    id: int
    event: Event
    channel: str
    target: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_error: str | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Annotation:
    """Why a KPI moved, recorded by a person (`kpiwatch annotate`)."""

    id: int
    kpi_id: str
    at: datetime  # the moment it explains
    text: str
    author: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Ack:
    """Someone owns the current red/yellow episode: reminders stop, reviews go on."""

    id: int
    kpi_id: str
    episode_since: datetime  # KpiState.since of the episode acknowledged
    author: str
    comment: str
    at: datetime


class SlackThread(NamedTuple):
    """The Slack message that opened an episode's thread in one channel."""

    ts: str
    # what chat.update needs to edit it: the channel's ID, the text and blocks as first
    # posted; None for a thread borrowed from a closed episode (nothing to edit)
    parent: Mapping[str, Any] | None = None


class MatcherKind(StrEnum):
    KPI = "kpi"
    TEAM = "team"
    LABEL = "label"  # value "key=value"


@dataclass(frozen=True, slots=True)
class Silence:
    """Suppresses delivery (not recording) for matching KPIs until it ends."""

    id: int
    matcher: MatcherKind
    value: str
    starts_at: datetime
    ends_at: datetime
    author: str
    comment: str
    created_at: datetime
    expired_at: datetime | None = None  # set when expired early from the CLI

    def active(self, now: datetime) -> bool:
        end = self.ends_at if self.expired_at is None else min(self.ends_at, self.expired_at)
        return self.starts_at <= now < end
