"""The JSON API under ``/api/v1``: KPIs, silences and annotations to read; pushes,
silences, annotations and acks to write (bearer token, see :mod:`kpiwatch.web.auth`).

Handlers call what the CLI calls (``overview``, ``record_push``, the store), so
``GET /kpis`` and ``kpiwatch status --json`` give the same objects. They are plain
``def``: the store blocks, so FastAPI runs them in its thread pool.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from kpiwatch.config.durations import parse_duration
from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.errors import StoreError
from kpiwatch.model import Ack, Annotation, KpiState, MatcherKind, Silence, Status
from kpiwatch.notify import follow_ups
from kpiwatch.overview import overview
from kpiwatch.pushes import PushRejected, record_push
from kpiwatch.render_text import evaluation_json
from kpiwatch.store.repository import Store
from kpiwatch.web.auth import WRITER_RESPONSES, require_writer
from kpiwatch.web.context import WebContext
from kpiwatch.web.schemas import (
    AckIn,
    AckOut,
    AnnotationIn,
    AnnotationOut,
    EvaluationOut,
    JsonRoute,
    KpiDetail,
    KpiSummary,
    ObservationIn,
    Point,
    Problem,
    SilenceCreated,
    SilenceIn,
    SilenceOut,
    StatusChangeOut,
    ValidationProblem,
)

PREFIX = "/api/v1"
MAX_ID_GUESS = 255  # longer ids are not KPI ids: skip the did-you-mean work

Limit = Annotated[int, Query(ge=1, le=5000, description="newest N items of each list")]
Since = Annotated[
    datetime | None,
    Query(description="only items at or after this ISO 8601 time (no offset: KPIWATCH_TIMEZONE)"),
]
KpiId = Annotated[str, Path(description="the KPI's id in the rules")]

_404: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such KPI"}}
_415: dict[int | str, dict[str, Any]] = {
    415: {"model": Problem, "description": "The body is not JSON"}
}


def _store_errors() -> Iterator[None]:
    """A store failure is the database's fault, not the client's: 503, not 500."""
    try:
        yield
    except StoreError as exc:
        raise HTTPException(status_code=503, detail=f"the state store failed: {exc}") from exc


def api_router(ctx: WebContext) -> APIRouter:
    """Every ``/api/v1`` route; include it without a prefix (it carries its own)."""
    router = APIRouter(
        prefix=PREFIX,
        route_class=JsonRoute,
        dependencies=[Depends(_store_errors)],
        responses={
            422: {"model": ValidationProblem, "description": "The request cannot be used"},
            503: {"model": Problem, "description": "The state store is unavailable"},
        },
    )
    writer = [Depends(require_writer(ctx.settings))]
    write_responses = {**WRITER_RESPONSES, **_415}

    # -- reads ------------------------------------------------------------------------

    @router.get("/kpis", tags=["kpis"], summary="Every KPI, as `kpiwatch status --json`")
    def list_kpis(
        team: Annotated[str | None, Query(max_length=512)] = None,
        status: Annotated[list[Status] | None, Query(description="repeat for several")] = None,
    ) -> list[KpiSummary]:
        rules = ctx.rules()
        if team is not None and team not in rules.teams:
            raise HTTPException(422, f"no team {team!r} in the rules{_hint(team, rules.teams)}")
        states = ctx.store.states()
        rows = overview(rules, states, _current_acks(ctx.store, states))
        return [
            KpiSummary.model_validate(row.as_json())
            for row in rows
            if (team is None or row.team == team) and (not status or row.status in status)
        ]

    @router.get("/kpis/{kpi_id}", tags=["kpis"], responses=_404, summary="One KPI with history")
    def get_kpi(kpi_id: KpiId, limit: Limit = 365, since: Since = None) -> KpiDetail:
        kpi = _kpi(ctx.rules(), kpi_id)
        start = _query_time(ctx, since)
        state = ctx.store.get_state(kpi_id)
        ack = ctx.store.ack_for(kpi_id, state.since) if state is not None else None
        row = overview(
            RuleSet(kpis=(kpi,)),
            {kpi_id: state} if state is not None else {},
            {kpi_id: ack} if ack is not None else None,
        )[0]
        # status_changes has no ``since``: the newest N, then the ones after ``start``
        changes = ctx.store.status_changes(kpi_id, limit=limit)
        return KpiDetail.model_validate({
            **row.as_json(),
            "history": [
                Point(observed_at=o.observed_at, value=o.value)
                for o in ctx.store.history(kpi_id, since=start, limit=limit)
            ],
            "status_changes": [
                StatusChangeOut(
                    at=c.at, from_=c.from_status, to=c.to_status, value=c.value,
                    reasons=list(c.reasons),
                )
                for c in changes
                if start is None or c.at >= start
            ],
            "annotations": [
                _annotation(a) for a in ctx.store.annotations(kpi_id, since=start, limit=limit)
            ],
            "acknowledgement": _ack(ack) if ack is not None else None,
        })  # fmt: skip

    @router.get("/silences", tags=["silences"], summary="Silences, newest first")
    def list_silences(
        active: Annotated[bool, Query(description="false: include ended and expired")] = True,
    ) -> list[SilenceOut]:
        now = ctx.clock.now()
        found = ctx.store.silences(active_at=now if active else None)
        return [_silence(s, now) for s in found]

    @router.get("/annotations", tags=["annotations"], responses=_404, summary="A KPI's notes")
    def list_annotations(
        kpi: Annotated[str, Query(description="the KPI's id")], limit: Limit = 365,
        since: Since = None,
    ) -> list[AnnotationOut]:  # fmt: skip
        _kpi(ctx.rules(), kpi)
        found = ctx.store.annotations(kpi, since=_query_time(ctx, since), limit=limit)
        return [_annotation(a) for a in found]

    # -- writes -----------------------------------------------------------------------

    @router.post(
        "/kpis/{kpi_id}/observations", tags=["kpis"], status_code=201, dependencies=writer,
        responses={**write_responses, **_404}, summary="Push a value and evaluate it now",
    )  # fmt: skip
    def push_observation(kpi_id: KpiId, body: ObservationIn) -> EvaluationOut:
        kpi = _kpi(ctx.rules(), kpi_id)
        now = ctx.clock.now()
        previous = ctx.store.get_state(kpi_id)
        try:
            evaluation = record_push(ctx.runner, ctx.store, kpi, body.value, body.at or now, now)
        except PushRejected as exc:
            raise HTTPException(422, str(exc)) from exc
        return EvaluationOut.model_validate(evaluation_json(kpi, evaluation, previous))

    @router.post(
        "/silences", tags=["silences"], status_code=201, dependencies=writer,
        responses=write_responses, summary="Silence a KPI, a team or a label for a while",
    )  # fmt: skip
    def add_silence(body: SilenceIn) -> SilenceCreated:
        matcher, value = body.matcher
        warnings = _check_matcher(ctx.rules(), matcher, value)
        now = ctx.clock.now()
        try:
            ends_at = now + parse_duration(body.duration)
        except ValueError as exc:
            raise HTTPException(422, f"duration: {exc}") from exc
        except OverflowError as exc:
            raise HTTPException(422, f"duration: {body.duration!r} is too long") from exc
        added = ctx.store.add_silence(matcher, value, now, ends_at, body.author, body.comment, now)
        return SilenceCreated(**_silence(added, now).model_dump(), warnings=warnings)

    @router.delete(
        "/silences/{silence_id}", tags=["silences"], dependencies=writer,
        responses={**WRITER_RESPONSES, 404: {"model": Problem, "description": "No such silence"}},
        summary="End a silence now",
    )  # fmt: skip
    def expire_silence(
        silence_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    ) -> SilenceOut:
        now = ctx.clock.now()
        before = next((s for s in ctx.store.silences() if s.id == silence_id), None)
        if before is None:
            raise HTTPException(404, f"no silence with id {silence_id}")
        if not before.active(now) and now >= before.starts_at:
            return _silence(before, now)  # already over: keep when it really ended (as the CLI)
        return _silence(ctx.store.expire_silence(silence_id, now), now)

    @router.post(
        "/kpis/{kpi_id}/annotations", tags=["annotations"], status_code=201,
        dependencies=writer, responses={**write_responses, **_404},
        summary="Record why a KPI moved",
    )  # fmt: skip
    def annotate(kpi_id: KpiId, body: AnnotationIn) -> AnnotationOut:
        kpi = _kpi(ctx.rules(), kpi_id)
        now = ctx.clock.now()
        router = ctx.runner.workspace.router
        return _annotation(
            follow_ups.annotate(ctx.store, router, kpi, body.at or now, body.text, body.author, now)
        )

    @router.post(
        "/kpis/{kpi_id}/ack", tags=["kpis"], status_code=201, dependencies=writer,
        responses={
            **write_responses, **_404,
            409: {"model": Problem, "description": "Nothing red or yellow to acknowledge"},
        },
        summary="Acknowledge the current red or yellow episode",
    )  # fmt: skip
    def ack(kpi_id: KpiId, body: AckIn) -> AckOut:
        kpi = _kpi(ctx.rules(), kpi_id)
        state = ctx.store.get_state(kpi_id)
        if state is None:
            raise HTTPException(
                409, f"KPI {kpi_id!r} has not been evaluated yet: nothing to acknowledge"
            )
        if not state.ackable:
            raise HTTPException(
                409,
                f"KPI {kpi_id!r} is {state.status.value}: only red or yellow can be acknowledged",
            )
        now = ctx.clock.now()
        router = ctx.runner.workspace.router
        return _ack(
            follow_ups.acknowledge(ctx.store, router, kpi, state, body.author, body.comment, now)
        )

    return router


# ---------------------------------------------------------------- helpers


def _hint(name: str, known: Iterable[str]) -> str:
    if len(name) > MAX_ID_GUESS:
        return ""
    close = difflib.get_close_matches(name, sorted(known), n=3)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


def _kpi(rules: RuleSet, kpi_id: str) -> Kpi:
    kpi = rules.by_id.get(kpi_id)
    if kpi is None:
        raise HTTPException(404, f"no KPI {kpi_id!r} in the rules{_hint(kpi_id, rules.by_id)}")
    return kpi


def _check_matcher(rules: RuleSet, matcher: MatcherKind, value: str) -> list[str]:
    """Like the CLI: a KPI or team must exist; a label no KPI has is allowed, with a warning."""
    if matcher is MatcherKind.KPI and value not in rules.by_id:
        raise HTTPException(422, f"kpi: no KPI {value!r} in the rules{_hint(value, rules.by_id)}")
    if matcher is MatcherKind.TEAM and value not in rules.teams:
        raise HTTPException(422, f"team: no team {value!r} in the rules{_hint(value, rules.teams)}")
    if matcher is MatcherKind.LABEL:
        key, _, label_value = value.partition("=")
        if not any(k.labels.get(key) == label_value for k in rules.kpis):
            return [f"no KPI has the label {value} now"]
    return []


def _query_time(ctx: WebContext, moment: datetime | None) -> datetime | None:
    """A query's time in UTC; without an offset it is in KPIWATCH_TIMEZONE (like the CLI)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ctx.settings.tz)
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise HTTPException(422, f"since: {moment.isoformat()} is out of range") from exc


def _current_acks(store: Store, states: Mapping[str, KpiState]) -> dict[str, Ack]:
    return {kpi_id: ack for kpi_id, state in states.items()
            if (ack := store.ack_for(kpi_id, state.since)) is not None}  # fmt: skip


def _silence_state(s: Silence, now: datetime) -> Literal["active", "expired", "pending", "ended"]:
    # the CLI's wording (kpiwatch.cli.silences._silence_state)
    if s.active(now):
        return "active"
    if s.expired_at is not None and s.expired_at < s.ends_at:
        return "expired"
    return "pending" if now < s.starts_at else "ended"


def _silence(s: Silence, now: datetime) -> SilenceOut:
    return SilenceOut(
        id=s.id, matcher=s.matcher, value=s.value, starts_at=s.starts_at, ends_at=s.ends_at,
        author=s.author, comment=s.comment, created_at=s.created_at, expired_at=s.expired_at,
        state=_silence_state(s, now),
    )  # fmt: skip


def _annotation(a: Annotation) -> AnnotationOut:
    return AnnotationOut.model_validate(a)


def _ack(a: Ack) -> AckOut:
    return AckOut.model_validate(a)
