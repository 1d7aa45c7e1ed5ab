"""Rule test files: their format, loading with located errors, and running the cases.

A file names rule files (relative to itself) and cases; each case feeds a series
to one KPI through :func:`kpiwatch.replay.replay` (one evaluation per step, at
``start + (N-1)·step``) and checks expectations at given steps. Expectations are
about the step itself: ``status`` is the effective status after it;
``reason_contains`` must be in one of its reasons; ``events`` and
``notifications`` each list what must have happened at that step (an event kind,
a route ``channel:target``), and an empty list means nothing did.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kpiwatch.config.document import Doc, DocPath, compose, format_path
from kpiwatch.config.loader import load_rule_files
from kpiwatch.config.problems import translate
from kpiwatch.config.rules import Duration, RuleSet
from kpiwatch.errors import RuleLoadError, RuleProblem
from kpiwatch.model import EventKind, Observation, Status
from kpiwatch.notify.routing import Router
from kpiwatch.replay import ALL_CHANNELS, Step, replay
from kpiwatch.ruletest.notation import parse_series

MAX_FILE_BYTES = 1024 * 1024  # a test file is written by hand


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Series(_Model):
    start: datetime | date  # a date is midnight in KPIWATCH_TIMEZONE
    step: Duration
    values: str


class Expectation(_Model):
    step: int = Field(ge=1)
    status: Status | None = None
    reason_contains: str | None = None
    events: list[EventKind] | None = None
    notifications: list[str] | None = None


class Case(_Model):
    name: str = Field(min_length=1)
    kpi: str
    series: Series
    expect: Annotated[list[Expectation], Field(min_length=1)]


class TestFile(_Model):
    rule_files: Annotated[list[str], Field(min_length=1)]
    now: datetime | date | None = None  # the clock at each case's last step
    cases: Annotated[list[Case], Field(min_length=1)]


@dataclass(frozen=True)
class LoadedCase:
    case: Case
    values: list[float | None]
    at: list[datetime]  # the clock at each step


@dataclass(frozen=True)
class LoadedTests:
    file: str
    rules: RuleSet
    cases: list[LoadedCase]


@dataclass(frozen=True)
class Failure:
    file: str
    case: str
    step: int
    messages: list[str]  # one line each: status, reason, events, notifications

    def __str__(self) -> str:
        where = f'{self.file}: case "{self.case}": step {self.step}: '
        return "\n".join(where + message for message in self.messages)


def load_tests(path: Path, tz: ZoneInfo, env: Mapping[str, str]) -> LoadedTests:
    """Read and check one test file and its rule files; RuleLoadError lists every problem."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RuleLoadError([RuleProblem(name, 0, 0, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise RuleLoadError([RuleProblem(name, 0, 0, "", "larger than 1 MiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleLoadError([RuleProblem(name, 0, 0, "", f"not UTF-8: {exc.reason}")]) from None
    doc = Doc(file=name, text=text)
    problems: list[RuleProblem] = []
    if not compose(doc, env, problems):
        raise RuleLoadError(problems)
    try:
        spec = TestFile.model_validate(doc.data)
    except ValidationError as exc:
        raise RuleLoadError(problems + translate(doc, exc.errors())) from None
    if problems:
        raise RuleLoadError(problems)
    rules = load_rule_files([path.parent / f for f in spec.rule_files], env).rules
    cases = list(_checked_cases(doc, spec, rules, tz, problems))
    if problems:
        raise RuleLoadError(problems)
    return LoadedTests(name, rules, cases)


def _checked_cases(
    doc: Doc, spec: TestFile, rules: RuleSet, tz: ZoneInfo, problems: list[RuleProblem]
) -> Iterator[LoadedCase]:
    def problem(path: DocPath, message: str) -> None:
        line, column = doc.where(path)
        problems.append(RuleProblem(doc.file, line, column, format_path(path), message))

    now = None if spec.now is None else _moment(spec.now, tz)
    for i, case in enumerate(spec.cases):
        if case.kpi not in rules.by_id:
            close = difflib.get_close_matches(case.kpi, list(rules.by_id), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problem(("cases", i, "kpi"), f"no KPI {case.kpi!r} in the rule files{hint}")
            continue
        try:
            values = parse_series(case.series.values)
        except ValueError as exc:
            problem(("cases", i, "series", "values"), str(exc))
            continue
        if case.series.step <= timedelta(0):
            problem(("cases", i, "series", "step"), "must be longer than 0s")
            continue
        start = _moment(case.series.start, tz)
        at = [start + n * case.series.step for n in range(len(values))]
        if now is not None:
            if now < at[-1]:
                last = at[-1].isoformat()
                problem(("now",), f"is before case {case.name!r}'s last step ({last})")
                continue
            at[-1] = now
        for j, expectation in enumerate(case.expect):
            if expectation.step > len(values):
                problem(
                    ("cases", i, "expect", j, "step"),
                    f"the series has {len(values)} steps",
                )
        yield LoadedCase(case, values, at)


def _moment(value: datetime | date, tz: ZoneInfo) -> datetime:
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0, 0))
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def run_tests(
    loaded: LoadedTests, *, tz: ZoneInfo, review_time: time, oncall_emails: list[str]
) -> tuple[int, list[Failure]]:
    """Run every case; (expectations checked, the failed ones)."""
    router = Router(loaded.rules, channels=ALL_CHANNELS, oncall_emails=oncall_emails)
    checks = 0
    failures: list[Failure] = []
    for item in loaded.cases:
        kpi = loaded.rules.by_id[item.case.kpi]
        observations = [
            Observation(kpi.id, at, value)
            for at, value in zip(item.at, item.values, strict=True)
            if value is not None
        ]
        steps = list(replay(kpi, observations, item.at, router, tz=tz, review_time=review_time))
        for expectation in item.case.expect:
            checks += 1
            messages = list(_mismatches(expectation, steps[expectation.step - 1]))
            if messages:
                failures.append(Failure(loaded.file, item.case.name, expectation.step, messages))
    return checks, failures


def _mismatches(expectation: Expectation, step: Step) -> Iterator[str]:
    state = step.state
    reasons = "; ".join(state.reasons)
    if expectation.status is not None and expectation.status is not state.status:
        yield f"expected {expectation.status.value}, got {state.status.value} ({reasons})"
    wanted = expectation.reason_contains
    if wanted is not None and not any(wanted in reason for reason in state.reasons):
        yield f"expected a reason containing {wanted!r}, got ({reasons})"
    if expectation.events is not None:
        kinds = [event.kind.value for event in step.events]
        missing = [k.value for k in expectation.events if k.value not in kinds]
        if missing or (not expectation.events and kinds):
            wanted_kinds = [kind.value for kind in expectation.events]
            yield f"expected events {_listed(wanted_kinds)}, got {_listed(kinds)}"
    if expectation.notifications is not None:
        routes = [notice.route for notice in step.notices if not notice.muted]
        missing = [r for r in expectation.notifications if r not in routes]
        if missing or (not expectation.notifications and routes):
            yield (
                f"expected notifications {_listed(expectation.notifications)}, "
                f"got {_listed(routes)}"
            )


def _listed(items: list[str]) -> str:
    shown = list(dict.fromkeys(items))
    return "[" + ", ".join(shown) + "]" if shown else "none"
