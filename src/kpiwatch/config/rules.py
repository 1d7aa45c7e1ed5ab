"""Rule-file models: every key of a rule file, typed and validated once.

Unknown keys are forbidden here; the loader turns pydantic's errors into
``file:line:col: path: message`` with a did-you-mean.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from kpiwatch.config.durations import parse_duration
from kpiwatch.config.written import written
from kpiwatch.model import Aggregate, Direction, NoData, Period, ReviewCadence, Status, Versus

BUILTIN_SOURCES = ("formula", "push")


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {written(value)}: expected text such as 30s, 5m, 7d")
    if isinstance(value, int | float):
        number = written(value)
        if not math.isfinite(value) or len(number) > 20:  # no unit can follow .nan or 1e+300
            raise ValueError(f"invalid duration {number}: expected text such as 30s, 5m, 7d")
        raise ValueError(
            f"invalid duration {number}: add a unit, e.g. {number}s, {number}m, {number}d"
        )
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except OverflowError:  # beyond timedelta; pydantic only turns ValueError into errors
            raise ValueError(f"invalid duration {written(value)}: too long") from None
    raise ValueError(f"invalid duration {written(value)}: expected text such as 30s, 5m, 7d")


def _cron(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(
            f"invalid cron expression {written(value)}: expected text such as '0 8 * * MON-FRI'"
        )
    fields = value.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron expression {written(value)}: "
            "expected 5 fields (minute hour day month weekday)"
        )
    from apscheduler.triggers.cron import CronTrigger  # validates exactly as it will run

    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {written(value)}: {exc}") from None
    return value


def _email_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


ALERTMANAGER_NAMES = ("default",)  # "default" is KPIWATCH_ALERTMANAGER_URL


def _alertmanager_name(value: Any) -> Any:
    # one Alertmanager for now; refusing other names at load keeps a typo from silently
    # routing nowhere (and leaves room for named Alertmanagers later)
    if value not in ALERTMANAGER_NAMES:
        raise ValueError(
            f"unknown Alertmanager {written(value)}: only 'default' "
            "(the Alertmanager at KPIWATCH_ALERTMANAGER_URL) is supported"
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
_UTC = ZoneInfo("UTC")
Cron = Annotated[str, BeforeValidator(_cron)]
EmailList = Annotated[list[str], BeforeValidator(_email_list)]
AlertmanagerName = Annotated[str, BeforeValidator(_alertmanager_name)]
Severity = Literal[Status.YELLOW, Status.RED]


class _Model(BaseModel):
    # NaN or ±inf as a threshold, target or limit would silently never (or always) fire
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


# ---------------------------------------------------------------- sources


class _SourceBase(_Model):
    owner: str | None = None  # who hears about this source's failures (else on-call)
    timeout: Duration = timedelta(seconds=30)
    # fetches from this source at once; the global pool (KPIWATCH_MAX_WORKERS) bounds all
    max_concurrency: int = Field(default=4, ge=1, le=64)


class Freshness(_Model):
    """A source-level check that its data is being loaded (SPEC §5a): a query giving the
    time of the last load, older than ``max_age`` opens the source's data incident."""

    query: str = Field(min_length=1)  # one timestamp, e.g. SELECT max(loaded_at) FROM etl_runs
    max_age: Duration
    every: Duration = timedelta(minutes=15)


class SqlSource(_SourceBase):
    type: Literal["sql"]
    url: str  # any SQLAlchemy URL
    # a role that can run programs or write files on the database server is refused unless
    # the operator says, here, that they accept it
    allow_privileged: bool = False
    freshness: Freshness | None = None


class HttpAuth(_Model):
    username: str | None = None
    password: SecretStr | None = None
    bearer: SecretStr | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> HttpAuth:
        if self.bearer is not None and self.username is not None:
            raise ValueError("give either username/password (basic) or bearer, not both")
        if self.bearer is None and self.username is None:
            raise ValueError("give username and password (basic auth) or bearer (a token)")
        return self


class HttpSource(_SourceBase):
    type: Literal["http"]
    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth | None = None
    verify: bool | str = True  # False, or a CA bundle path
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    retries: int = Field(default=3, ge=0, le=10)  # on connection errors and 5xx, with backoff
    # redirects to another host are refused unless allowed: they would carry the headers away
    follow_redirects: bool = False


class PrometheusSource(_SourceBase):
    type: Literal["prometheus"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    step: Duration | None = None  # range queries (KPI `range:`); default: range / 500, >= 1m
    # as HttpSource's: a redirect to another origin would carry the headers away
    follow_redirects: bool = False


class CsvSource(_SourceBase):
    type: Literal["csv"]
    path: str | None = None
    url: str | None = None
    timestamp_column: str | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # for ``url``. On by default, unlike http and prometheus sources: a CSV source sends
    # no headers or credentials that a redirect could carry away, and published
    # spreadsheets redirect to a content host. ``false`` keeps downloads on the URL's origin.
    follow_redirects: bool = True

    @model_validator(mode="after")
    def _path_or_url(self) -> CsvSource:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path or url")
        return self


Source = Annotated[
    SqlSource | HttpSource | PrometheusSource | CsvSource, Field(discriminator="type")
]


class Reminders(_Model):
    """How an unacknowledged episode is told again; each key unset here falls back to
    the team's, then to the settings (KPIWATCH_REMINDER_*)."""

    first: Duration | None = None  # after the episode started
    factor: float | None = Field(default=None, ge=1, le=100)  # each gap this times the last
    max: Duration | None = None  # the longest gap
    yellow: bool | None = None  # remind yellow episodes too (red ones always)

    @field_validator("first", "max")
    @classmethod
    def _at_least_a_minute(cls, value: timedelta | None) -> timedelta | None:
        # the reminder tick runs once a minute: a shorter gap could never be kept
        if value is not None and value < timedelta(minutes=1):
            raise ValueError("must be at least 1m")
        return value


class Team(_Model):
    slack: str | None = None
    email: EmailList = Field(default_factory=list)
    webhook: str | None = None  # a URL that receives every event as signed JSON
    alertmanager: AlertmanagerName | None = None  # red/yellow episodes become alerts there
    reminders: Reminders | None = None  # for the team's KPIs without their own


# ---------------------------------------------------------------- KPI parts


_PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%\s*$")


class Thresholds(_Model):
    """The minimum acceptable performance: numbers in the KPI's unit, or, written
    ``95%``, percents of the judged period's plan (``percent`` is then true)."""

    yellow: float | None = None
    red: float | None = None
    percent: bool = False  # both thresholds are percents of the period's plan

    @model_validator(mode="before")
    @classmethod
    def _percents(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        written = {
            k: data[k] for k in ("yellow", "red")
            if isinstance(data.get(k), str) and data[k].rstrip().endswith("%")
        }  # fmt: skip
        if not written:
            return data  # numbers (YAML reads 1e-7 as text: pydantic makes it one)
        parsed = dict(data)
        for key, text in written.items():
            match = _PERCENT.match(text)
            if match is None:
                raise ValueError(
                    f"thresholds.{key} {text!r}: a number, or a percent of the plan like 95%"
                )
            parsed[key] = float(match.group(1))
            if parsed[key] <= 0:
                raise ValueError(f"thresholds.{key} {text!r}: a percent of the plan above 0")
        given = [k for k in ("yellow", "red") if data.get(k) is not None]
        if len(written) != len(given):
            raise ValueError("give both thresholds in % of the plan, or neither")
        parsed["percent"] = True
        return parsed


def _plan_keys(value: Any) -> Any:
    # YAML reads 2026-11-03 as a date: a day's plan key; 2026-11 stays text
    if isinstance(value, dict):
        return {k.isoformat() if isinstance(k, date) else str(k): v for k, v in value.items()}
    return value


class Target(_Model):
    value: float | None = None  # one number; or a plan per period
    by: date | None = None
    baseline: float | None = None  # default: the first observation
    baseline_date: date | None = None
    # per-period targets (a KPI with `period`): {2026-11: 1200000, ...}, or rows
    # (period_start, target) from the KPI's source
    plan: Annotated[dict[str, float] | None, BeforeValidator(_plan_keys)] = None
    plan_query: str | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> Target:
        if self.value is None and self.plan is None and self.plan_query is None:
            raise ValueError("a target needs a value, a plan or a plan_query")
        if self.plan is not None and self.plan_query is not None:
            raise ValueError("give either plan or plan_query, not both")
        if self.by is not None and self.value is None:
            raise ValueError("target.by needs target.value: the value to reach by then")
        if self.by and self.baseline_date and self.baseline_date >= self.by:
            raise ValueError(f"baseline_date {self.baseline_date} must be before by {self.by}")
        return self


class StreakRule(_Model):
    count: int = Field(ge=1)
    severity: Severity = Status.YELLOW


class ChangeRule(_Model):
    max_pct: float | None = Field(default=None, gt=0)
    max_abs: float | None = Field(default=None, gt=0)
    over: Duration | None = None
    vs: Versus | None = None  # a KPI with `period`: the previous period, or last year's
    severity: Severity = Status.YELLOW

    @model_validator(mode="after")
    def _one_limit(self) -> ChangeRule:
        if (self.max_pct is None) == (self.max_abs is None):
            raise ValueError("give exactly one of max_pct or max_abs")
        if (self.over is None) == (self.vs is None):
            raise ValueError("give exactly one of over (a duration) or vs (previous_period, "
                             "same_period_last_year)")  # fmt: skip
        return self


class SeasonalRule(_Model):
    """Worse than the median of the same point 1..``seasons`` seasons back."""

    season: Duration
    seasons: int = Field(default=4, ge=1, le=52)
    max_pct: float | None = Field(default=None, gt=0)
    max_abs: float | None = Field(default=None, gt=0)
    severity: Severity = Status.YELLOW

    @model_validator(mode="after")
    def _one_limit(self) -> SeasonalRule:
        if (self.max_pct is None) == (self.max_abs is None):
            raise ValueError("give exactly one of max_pct or max_abs")
        return self


def _streak(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"count": value}
    return value


def _off_track(value: Any) -> Any:
    if value is True:
        return Status.YELLOW
    if value is False:
        return OFF
    return value


OFF = "off"  # off_track: false, said in so many words: a dated target nobody judges


class Trend(_Model):
    worsening_streak: Annotated[StreakRule | None, BeforeValidator(_streak)] = None
    change: ChangeRule | None = None
    # None (not given): yellow for a target with `by` (SPEC §2a); false turns it off
    off_track: Annotated[Severity | Literal["off"] | None, BeforeValidator(_off_track)] = None
    seasonal: SeasonalRule | None = None


class Mute(_Model):
    cron: Cron
    for_: Duration = Field(alias="for")
    comment: str | None = None


def _stable_for(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(
                f"stable_for {written(value)}: a count of evaluations must be at least 1"
            )
        return value
    return _duration(value)


class Escalation(_Model):
    review: ReviewCadence = ReviewCadence.WEEKLY
    # a duration of unbroken green, or a count of green evaluations
    stable_for: Annotated[timedelta | int, BeforeValidator(_stable_for)] = timedelta(days=14)


class Notify(_Model):
    slack: str | None = None
    email: EmailList = Field(default_factory=list)
    webhook: str | None = None
    alertmanager: AlertmanagerName | None = None


class Kpi(_Model):
    id: str = Field(pattern=r"^[a-z0-9_]+$", max_length=120)
    name: str = Field(min_length=1)
    description: str = ""
    owner: str = Field(min_length=1)  # one accountable person
    team: str | None = None
    unit: str = ""
    direction: Direction
    source: str
    query: str | None = None
    params: dict[str, str] = Field(default_factory=dict)  # http: added to the source's
    range: Duration | None = None  # prometheus: history to backfill
    every: Duration | None = None
    cron: Cron | None = None
    review: ReviewCadence = ReviewCadence.MONTHLY
    review_time: time | None = None  # daily reviews; else KPIWATCH_REVIEW_TIME
    thresholds: Thresholds | None = None
    target: Target | None = None
    trend: Trend | None = None
    for_: int = Field(default=1, ge=1, alias="for")
    max_age: Duration | None = None
    no_data: NoData = NoData.UNKNOWN
    escalation: Escalation = Field(default_factory=Escalation)
    mute: list[Mute] = Field(default_factory=list)
    notify: Notify | None = None
    reminders: Reminders | None = None  # overrides the team's, key by key
    # a blind spell of source scope told to the owner after this (KPIWATCH_BLIND_NOTICE_AFTER)
    blind_notice_after: Duration | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    leading: list[str] = Field(default_factory=list)
    # periods (SPEC §2a): judge closed days/weeks/months/quarters, not the last row
    period: Period | None = None
    aggregate: Aggregate | None = None  # raw (timestamp, value) rows folded per period
    complete_after: Duration = timedelta(0)  # a period is closed this long after its end
    judge: Literal["closed", "current"] = "closed"  # current: the open period, on pace

    @field_validator("review_time", mode="before")
    @classmethod
    def _review_time(cls, value: Any) -> Any:
        # YAML reads 09:00 as the sexagesimal integer 540
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < 24 * 60:  # else time() may raise OverflowError, not ValueError
                raise ValueError(
                    f"invalid review_time {written(value)}: expected HH:MM, e.g. 09:00"
                )
            return time(value // 60, value % 60)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Kpi:
        if self.every is not None and self.cron is not None:
            raise ValueError("give either every or cron, not both")
        t = self.thresholds
        if t is not None and t.yellow is not None and t.red is not None:
            lower = self.direction is Direction.LOWER_IS_BETTER
            if (lower and t.yellow > t.red) or (not lower and t.yellow < t.red):
                side = "above" if lower else "below"
                pct = "%" if t.percent else ""
                raise ValueError(
                    f"thresholds: yellow {t.yellow:g}{pct} is on the wrong side of red "
                    f"{t.red:g}{pct} for {self.direction.value} (yellow must not be {side} red)"
                )
        self._periods_consistent()
        if self.source == "push":
            if self.query:
                raise ValueError(
                    "a push KPI takes no query: values arrive by API or `kpiwatch push`"
                )
        elif not self.query:
            raise ValueError(f"query is required for source {self.source!r}")
        wants_track = self.trend is not None and self.trend.off_track not in (None, OFF)
        if wants_track and (self.target is None or self.target.by is None):
            raise ValueError("trend.off_track needs a target with a date: target: {value, by}")
        if self.range is not None and self.source in BUILTIN_SOURCES:
            raise ValueError(f"range applies to prometheus sources, not {self.source!r}")
        return self

    def _periods_consistent(self) -> None:
        """The period keys only mean something together (SPEC §2a)."""
        if self.period is None:
            for key in ("aggregate", "complete_after", "judge"):
                if key in self.model_fields_set:
                    raise ValueError(f"{key} needs a period: day, week, month or quarter")
        target, trend, limits = self.target, self.trend, self.thresholds
        plan = target is not None and (target.plan is not None or target.plan_query is not None)
        if plan and self.period is None:
            raise ValueError("a plan needs a period: day, week, month or quarter")
        if limits is not None and limits.percent and not plan:
            raise ValueError("thresholds in % of the plan need target.plan or target.plan_query")
        versus = trend is not None and trend.change is not None and trend.change.vs is not None
        if versus and self.period is None:
            raise ValueError("trend.change.vs needs a period: day, week, month or quarter")
        if target is not None and target.plan is not None and self.period is not None:
            # imported here: the evaluation package imports these models
            from kpiwatch.evaluation.periods import parse_plan_key

            for key in target.plan:
                parse_plan_key(key, self.period, _UTC)  # ValueError names the bad key

    @property
    def off_track_severity(self) -> Status | None:
        """The severity ``off_track`` judges a dated target with: the rule's, yellow when
        not given (a target counts, SPEC §2a), None when turned off or without a date."""
        if self.target is None or self.target.by is None or self.target.value is None:
            return None
        given = self.trend.off_track if self.trend is not None else None
        if given == OFF:
            return None
        return Status.YELLOW if given is None else Status(given)

    @property
    def schedule_every(self) -> timedelta | None:
        """The poll interval: ``every``, or 1h when neither every nor cron is given."""
        if self.cron is not None:
            return None
        return self.every or timedelta(hours=1)


class RuleFile(_Model):
    """One rule file; every key optional."""

    sources: dict[str, Source] = Field(default_factory=dict)
    teams: dict[str, Team] = Field(default_factory=dict)
    kpis: list[Kpi] = Field(default_factory=list)


def formula_names(expression: str) -> frozenset[str]:
    """The KPI ids a formula refers to; raises SyntaxError for a malformed one."""
    tree = ast.parse(expression, mode="eval")
    # min(a, b): "min" is a function, not a KPI
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return frozenset(
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called
    )


@dataclass(frozen=True)
class RuleSet:
    """All rule files merged and cross-checked: what the daemon runs."""

    sources: dict[str, SqlSource | HttpSource | PrometheusSource | CsvSource] = field(
        default_factory=dict
    )
    teams: dict[str, Team] = field(default_factory=dict)
    kpis: tuple[Kpi, ...] = ()

    @cached_property
    def by_id(self) -> dict[str, Kpi]:
        return {k.id: k for k in self.kpis}

    @cached_property
    def kpis_of_source(self) -> dict[str, tuple[str, ...]]:
        """For each source, the ids of the KPIs it feeds, in rule order."""
        fed: dict[str, list[str]] = {}
        for kpi in self.kpis:
            fed.setdefault(kpi.source, []).append(kpi.id)
        return {source: tuple(ids) for source, ids in fed.items()}

    @cached_property
    def formula_inputs(self) -> dict[str, frozenset[str]]:
        """For each formula KPI, the ids it reads."""
        return {k.id: formula_names(k.query or "0") for k in self.kpis if k.source == "formula"}

    @cached_property
    def dependents(self) -> dict[str, tuple[str, ...]]:
        """For each KPI, the formula KPIs that read it (directly), in evaluation order."""
        order = {kpi_id: i for i, kpi_id in enumerate(self.evaluation_order)}
        result: dict[str, list[str]] = {}
        for formula, inputs in self.formula_inputs.items():
            for name in inputs:
                result.setdefault(name, []).append(formula)
        return {k: tuple(sorted(v, key=order.__getitem__)) for k, v in result.items()}

    @cached_property
    def evaluation_order(self) -> tuple[str, ...]:
        """KPI ids with every formula after its inputs (the loader rejects cycles)."""
        done: list[str] = []
        seen: set[str] = set()

        def visit(kpi_id: str) -> None:
            if kpi_id in seen:
                return
            seen.add(kpi_id)
            for name in sorted(self.formula_inputs.get(kpi_id, ())):
                if name in self.by_id:
                    visit(name)
            done.append(kpi_id)

        for kpi in self.kpis:
            visit(kpi.id)
        return tuple(done)
