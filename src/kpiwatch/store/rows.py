"""Conversions between the model's dataclasses and table rows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kpiwatch.model import (
    Ack,
    Annotation,
    DataProblem,
    DeliveryState,
    Evaluation,
    Event,
    EventKind,
    KpiState,
    MatcherKind,
    Observation,
    OutboxMessage,
    ReviewCadence,
    Silence,
    Status,
    StatusChange,
)

Row = Mapping[Any, Any]  # SQLAlchemy's RowMapping is keyed by names or columns


def observation_row(observation: Observation) -> dict[str, Any]:
    return {
        "kpi_id": observation.kpi_id,
        "observed_at": observation.observed_at,
        "value": float(observation.value),
    }


def to_observation(row: Row) -> Observation:
    return Observation(kpi_id=row["kpi_id"], observed_at=row["observed_at"], value=row["value"])


def state_row(state: KpiState) -> dict[str, Any]:
    return {
        "kpi_id": state.kpi_id,
        "status": state.status.value,
        "since": state.since,
        "review": state.review.value,
        "pending_status": None if state.pending_status is None else state.pending_status.value,
        "pending_count": state.pending_count,
        "value": state.value,
        "observed_at": state.observed_at,
        "reasons": list(state.reasons),
        "last_evaluated": state.last_evaluated,
        "escalated_since": state.escalated_since,
        "green_since": state.green_since,
        "green_count": state.green_count,
        "last_review": state.last_review,
        "next_review": state.next_review,
        "error": state.error,
        "reminders_sent": state.reminders_sent,
        "verdict": None if state.verdict is None else state.verdict.value,
        "data_problem": None if state.data_problem is None else problem_json(state.data_problem),
        "plan": state.plan,
    }


def problem_json(problem: DataProblem) -> dict[str, Any]:
    """A data problem as JSON (the store's column, ``status --json``, the API)."""
    told = problem.told_at
    return {
        "since": problem.since.isoformat(),
        "reason": problem.reason,
        "scope": problem.scope,
        "source": problem.source,
        "told_at": None if told is None else told.isoformat(),
    }


def to_problem(data: Mapping[str, Any] | None) -> DataProblem | None:
    if not data:
        return None
    told = data.get("told_at")
    return DataProblem(
        since=datetime.fromisoformat(data["since"]),
        reason=str(data["reason"]),
        scope=str(data["scope"]),
        source=str(data["source"]),
        told_at=None if told is None else datetime.fromisoformat(told),
    )


def to_state(row: Row) -> KpiState:
    pending = row["pending_status"]
    return KpiState(
        kpi_id=row["kpi_id"],
        status=Status(row["status"]),
        since=row["since"],
        review=ReviewCadence(row["review"]),
        pending_status=None if pending is None else Status(pending),
        pending_count=row["pending_count"],
        value=row["value"],
        observed_at=row["observed_at"],
        reasons=tuple(row["reasons"] or ()),
        last_evaluated=row["last_evaluated"],
        escalated_since=row["escalated_since"],
        green_since=row["green_since"],
        green_count=row["green_count"],
        last_review=row["last_review"],
        next_review=row["next_review"],
        error=row["error"],
        reminders_sent=row["reminders_sent"],
        verdict=None if row["verdict"] is None else Status(row["verdict"]),
        data_problem=to_problem(row["data_problem"]),
        plan=row["plan"],
    )


def status_change_row(
    state: KpiState, at: datetime, previous: Status | None
) -> dict[str, Any]:
    return {
        "kpi_id": state.kpi_id,
        "at": at,
        "from_status": None if previous is None else previous.value,
        "to_status": state.status.value,
        "value": state.value,
        "reasons": list(state.reasons),
    }


def transition_row(
    evaluation: Evaluation, stored: Mapping[str, Status | None]
) -> dict[str, Any] | None:
    """The status-history row an evaluation adds: the first state of a KPI with none
    stored, or a change of its verdict (from the stored verdict); None otherwise, a
    blind spell included (it changes no verdict, SPEC §5a)."""
    state = evaluation.state
    if state.kpi_id not in stored:
        return status_change_row(state, evaluation.at, None)
    before = stored[state.kpi_id]
    after = state.episode_status
    if after is Status.UNKNOWN or after is before:
        return None
    return status_change_row(state, evaluation.at, before)


def to_status_change(row: Row) -> StatusChange:
    before = row["from_status"]
    return StatusChange(
        kpi_id=row["kpi_id"],
        at=row["at"],
        from_status=None if before is None else Status(before),
        to_status=Status(row["to_status"]),
        value=row["value"],
        reasons=tuple(row["reasons"] or ()),
    )


def event_row(event: Event) -> dict[str, Any]:
    return {
        "key": event.key,
        "kind": event.kind.value,
        "kpi_id": event.kpi_id,
        "source": event.source,
        "at": event.at,
        "data": dict(event.data),
    }


def to_event(row: Row) -> Event:
    return Event(
        kind=EventKind(row["kind"]),
        key=row["key"],
        at=row["at"],
        kpi_id=row["kpi_id"],
        source=row["source"],
        data=row["data"] or {},
    )


def to_message(row: Row, event: Event) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        event=event,
        channel=row["channel"],
        target=row["target"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        last_error=row["last_error"],
        sent_at=row["sent_at"],
    )


def to_silence(row: Row) -> Silence:
    return Silence(
        id=row["id"],
        matcher=MatcherKind(row["matcher"]),
        value=row["value"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        author=row["author"],
        comment=row["comment"],
        created_at=row["created_at"],
        expired_at=row["expired_at"],
    )


def to_ack(row: Row) -> Ack:
    return Ack(
        id=row["id"],
        kpi_id=row["kpi_id"],
        episode_since=row["episode_since"],
        author=row["author"],
        comment=row["comment"],
        at=row["at"],
    )


def to_annotation(row: Row) -> Annotation:
    return Annotation(
        id=row["id"],
        kpi_id=row["kpi_id"],
        at=row["at"],
        text=row["text"],
        author=row["author"],
        created_at=row["created_at"],
    )
