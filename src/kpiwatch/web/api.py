"""The JSON API under ``/api/v1``: KPIs, silences and annotations to read; pushes,
silences, annotations and acks to write (bearer token, see :mod:`kpiwatch.web.auth`).

Handlers call what the CLI calls (``overview``, ``record_push``, the store), so
``GET /kpis`` and ``kpiwatch status --json`` give the same objects. They are plain
``def``: the store blocks, so FastAPI runs them in its thread pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import StringConstraints

from kpiwatch.config.durations import parse_duration
from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.errors import StoreError
from kpiwatch.model import Ack, Annotation, MatcherKind, Silence, Status
from kpiwatch.notify import follow_ups
from kpiwatch.overview import overview, overview_of
from kpiwatch.pushes import PushRejected, record_push
from kpiwatch.render_text import evaluation_json
from kpiwatch.web.auth import WRITER_RESPONSES, require_writer
from kpiwatch.web.context import WebContext
from kpiwatch.web.listing import (
    MAX_SEARCH,
    MAX_VALUE,
    MAX_VALUES,
    Filters,
    LazySnapshots,
    api_page,
    did_you_mean,
    rule_index,
)
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
PAGE_LIMIT = 100  # KPIs on a page of /kpis when a cursor comes without a limit
MAX_PAGE_LIMIT = 1000
MAX_CURSOR = 200  # characters: a cursor this API gives is far shorter

Limit = Annotated[int, Query(ge=1, le=5000, description="newest N items of each list")]
Since = Annotated[
    datetime | None,
    Query(description="only items at or after this ISO 8601 time (no offset: KPIWATCH_TIMEZONE)"),
]
KpiId = Annotated[str, Path(description="the KPI's id in the rules")]

Value = Annotated[str, StringConstraints(max_length=MAX_VALUE)]
Values = Annotated[
    list[Value] | None,
    Query(max_length=MAX_VALUES, description="repeat for several: any of them"),
]
_KPI_PAGES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The KPIs, in rule order. A page with more KPIs after it has these "
        "headers; the last page has neither.",
        "headers": {
            "Link": {
                "description": 'The next page: `<http://…/api/v1/kpis?…&cursor=…>; rel="next"`',
                "schema": {"type": "string"},
            },
            "X-Next-Cursor": {
                "description": "The next page's `cursor`",
                "schema": {"type": "string"},
            },
        },
    }
}
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
    snapshots = LazySnapshots(ctx.store)

    # -- reads ------------------------------------------------------------------------

    @router.get(
        "/kpis", tags=["kpis"], responses=_KPI_PAGES,
        summary="Every KPI, or a page of them, as `kpiwatch status --json`",
        description="Without `limit` and `cursor`: every KPI that passes the filters. "
        "With either: a page of at most `limit` (default 100); while more follow, the "
        '`Link: <…>; rel="next"` header (and `X-Next-Cursor`) gives the next page, with '
        "the same filters. Filters: any of the values of one, and all of them together.",
    )  # fmt: skip
    def list_kpis(
        request: Request,
        response: Response,
        team: Values = None,
        status: Annotated[
            list[Status] | None, Query(max_length=MAX_VALUES, description="repeat for several")
        ] = None,
        owner: Values = None,
        label: Annotated[
            list[Value] | None,
            Query(max_length=MAX_VALUES, description="`key=value`, or `key`: has that label"),
        ] = None,
        q: Annotated[
            str | None,
            Query(max_length=MAX_SEARCH, description="a part of the id or name, any case"),
        ] = None,
        limit: Annotated[
            int | None,
            Query(ge=1, le=MAX_PAGE_LIMIT, description=f"a page of at most this many (default "
                                                       f"{PAGE_LIMIT} with a cursor)"),
        ] = None,
        cursor: Annotated[
            str | None,
            Query(max_length=MAX_CURSOR, description="where the page starts: a previous "
                                                     "page's X-Next-Cursor"),
        ] = None,
    ) -> list[KpiSummary]:  # fmt: skip
        rules = ctx.rules()
        for name in team or ():
            if name not in rules.teams:
                raise HTTPException(422, f"no team {name!r} in the rules{_hint(name, rules.teams)}")
        filters = Filters(
            statuses=tuple(s.value for s in status or ()), teams=tuple(team or ()),
            owners=tuple(owner or ()), labels=tuple(label or ()), q=q or "",
        )  # fmt: skip
        if limit is None and cursor is None:  # every KPI, as before pages
            kpis = [e.kpi for e in rule_index(rules).entries if filters.matches(e)]
            rows = overview_of(kpis, ctx.store.states(), ctx.store.current_acks())
            return [
                KpiSummary.model_validate(row.as_json())
                for row in rows
                if not status or row.status in status
            ]
        shown = snapshots.read() if status else None
        try:
            kpis, after = api_page(
                rules, filters, shown, limit=limit or PAGE_LIMIT, cursor=cursor
            )
        except ValueError as exc:
            raise HTTPException(422, f"cursor: {exc}") from exc
        ids = [kpi.id for kpi in kpis]
        states = ctx.store.states_of(ids)
        rows = overview_of(kpis, states, ctx.store.current_acks(ids) if states else {})
        if after is not None:
            following = str(request.url.include_query_params(cursor=after))
            response.headers["Link"] = f'<{following}>; rel="next"'
            response.headers["X-Next-Cursor"] = after
        return [
            KpiSummary.model_validate(row.as_json())
            for row in rows
            # the page's states are newer than the snapshot it was chosen by
            if not status or row.status in status
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
    return did_you_mean(name, known)


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
