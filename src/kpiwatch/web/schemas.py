"""The JSON API on the wire: request bodies, response models, and strict JSON parsing.

Response times are written like ``kpiwatch status --json`` writes them
(``datetime.isoformat()``, e.g. ``2026-03-02T08:00:00+00:00``), so the API and
the CLI give the same objects. Request bodies forbid unknown keys and bound
every string; numbers must be finite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol, cast, runtime_checkable

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from kpiwatch.model import Direction, EventKind, MatcherKind, ReviewCadence, Status
from kpiwatch.store.types import AUTHOR_LENGTH, KPI_ID_LENGTH, MATCHER_VALUE_LENGTH
from kpiwatch.web.limits import bounded_errors

TEXT_LENGTH = 2000  # comments and annotation texts: a paragraph, not a document


def _iso(moment: datetime) -> str:
    return moment.isoformat()


Time = Annotated[
    datetime,
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _to_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{moment.isoformat()} is out of range in UTC") from None


def _clean_text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    if "\x00" in text:  # PostgreSQL cannot store NUL in text columns
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a "\ud800" JSON escape
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return text


UtcTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Text = Annotated[str, Field(min_length=1, max_length=TEXT_LENGTH), AfterValidator(_clean_text)]
Author = Annotated[str, Field(min_length=1, max_length=AUTHOR_LENGTH), AfterValidator(_clean_text)]
Name = Annotated[
    str, Field(min_length=1, max_length=MATCHER_VALUE_LENGTH), AfterValidator(_clean_text)
]
# what parse_duration reads (it also takes non-ASCII digits, which the schema leaves out)
DURATION_PATTERN = r"^\s*([0-9]+(\.[0-9]+)?[smhdwSMHDW])+\s*$"
# strict: JSON true/false and "1" are not numbers here; non-finite ones never parse (below)
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]


# ---------------------------------------------------------------- errors


class Problem(BaseModel):
    detail: str = Field(examples=["no KPI 'churm' in the rules; did you mean 'churn'?"])


class ValidationIssue(BaseModel):
    model_config = ConfigDict(extra="allow")  # pydantic adds input, ctx, url
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """A request the API cannot use: pydantic's list of issues, or one sentence."""

    detail: str | list[ValidationIssue]


# ---------------------------------------------------------------- responses


class DataProblemOut(BaseModel):
    """Why a KPI's value cannot be had, since when, and whose problem it is (SPEC §5a)."""

    since: Time = Field(description="when the spell without usable data began")
    reason: str
    scope: Literal["source", "kpi"] = Field(
        description="source: the source as a whole fails (its data owner is told); "
        "kpi: only this KPI's query does (its owner is told)"
    )
    source: str
    owner_told_at: Time | None = Field(
        description="when the KPI's owner was told of this spell; null while they have not"
    )


class KpiSummary(BaseModel):
    """One KPI as ``kpiwatch status --json`` shows it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "churn", "name": "Churn rate", "team": "growth",
                    "owner": "ben@example.com", "value": 6.2, "unit": "%",
                    "direction": "lower_is_better", "status": "red",
                    "since": "2026-03-02T08:00:00+00:00",
                    "reasons": ["value 6.2 % > red 5 %"], "target": None,
                    "thresholds": {"yellow": 3.0, "red": 5.0}, "review": "weekly",
                    "escalated": True, "next_review": "2026-03-09T09:00:00+00:00",
                    "last_evaluated": "2026-03-02T08:00:00+00:00",
                    "observed_at": "2026-03-02T08:00:00+00:00", "error": None,
                    "ack": "ben: looking into it", "verdict": "red", "data_problem": None,
                },
                {
                    "id": "signups", "name": "Weekly signups", "team": "growth",
                    "owner": "ava@example.com", "value": 130.0, "unit": "",
                    "direction": "higher_is_better", "status": "unknown",
                    "since": "2026-02-20T08:00:00+00:00",
                    "reasons": ["source 'wh': connection refused"], "target": None,
                    "thresholds": {"yellow": 100.0, "red": 80.0}, "review": "monthly",
                    "escalated": False, "next_review": "2026-03-20T09:00:00+00:00",
                    "last_evaluated": "2026-03-02T08:00:00+00:00",
                    "observed_at": "2026-03-01T08:00:00+00:00",
                    "error": "source 'wh': connection refused", "ack": None,
                    "verdict": "green",
                    "data_problem": {
                        "since": "2026-03-02T07:00:00+00:00",
                        "reason": "source 'wh': connection refused", "scope": "source",
                        "source": "wh", "owner_told_at": None,
                    },
                },
            ]
        }
    )  # fmt: skip

    id: str
    name: str
    team: str | None
    owner: str
    value: float | None
    unit: str
    direction: Direction
    status: Status
    since: Time | None
    reasons: list[str]
    target: float | None
    thresholds: dict[Literal["yellow", "red"], float]
    review: ReviewCadence
    escalated: bool
    next_review: Time | None
    last_evaluated: Time | None
    observed_at: Time | None
    error: str | None
    ack: str | None  # "author: comment" of the current episode's ack
    verdict: Literal["green", "yellow", "red"] | None = Field(
        description="the last green/yellow/red, carried while the KPI is blind (status "
        "unknown); null before the first"
    )
    data_problem: DataProblemOut | None = Field(
        description="set while the KPI's value cannot be had; with status unknown the KPI "
        "is blind (value and since are its verdict's)"
    )


class Point(BaseModel):
    observed_at: Time
    value: float


class StatusChangeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    at: Time
    from_: Status | None = Field(alias="from")
    to: Status
    value: float | None
    reasons: list[str]


class AnnotationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from kpiwatch.model.Annotation
    id: int
    kpi_id: str
    at: Time  # the moment it explains
    text: str
    author: str
    created_at: Time


class AckOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from kpiwatch.model.Ack
    id: int
    kpi_id: str
    episode_since: Time
    author: str
    comment: str
    at: Time


class KpiDetail(KpiSummary):
    """One KPI with its recent history (each list oldest first)."""

    history: list[Point]
    status_changes: list[StatusChangeOut]
    annotations: list[AnnotationOut]
    acknowledgement: AckOut | None  # the current episode's ack, in full


class FindingOut(BaseModel):
    rule: str
    status: Status
    reason: str


class EvaluationOut(BaseModel):
    """What a pushed value led to: the object ``kpiwatch push --json`` prints."""

    id: str
    name: str
    value: float | None
    unit: str
    observed_at: Time | None
    raw_status: Status
    status: Status
    previous_status: Status | None
    reasons: list[str]
    findings: list[FindingOut]
    review: ReviewCadence
    escalated: bool
    next_review: Time | None
    events: list[EventKind]
    evaluated_at: Time


class SilenceOut(BaseModel):
    id: int
    matcher: MatcherKind
    value: str
    starts_at: Time
    ends_at: Time
    author: str
    comment: str
    created_at: Time
    expired_at: Time | None
    state: Literal["active", "expired", "pending", "ended"]


class SilenceCreated(SilenceOut):
    warnings: list[str] = Field(examples=[["no KPI has the label region=emea now"]])


# ---------------------------------------------------------------- request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ObservationIn(_Body):
    value: FiniteNumber = Field(examples=[42.5])
    at: UtcTime | None = Field(default=None, description="when the value was true; default now")


_MATCHERS = ("kpi", "team", "label")


def _one_of(schema: dict[str, Any], names: tuple[str, ...]) -> None:
    """Document "exactly one of": null is taken as absent, but not advertised (no null
    type, no null default), so the oneOf of ``required`` is exact."""
    schema["oneOf"] = [{"required": [name]} for name in names]
    for name in names:
        schema["properties"][name].pop("default", None)


class SilenceIn(_Body):
    """Exactly one of ``kpi``, ``team`` or ``label`` (``key=value``), like the CLI."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _one_of(schema, _MATCHERS))

    kpi: Annotated[str, Field(min_length=1, max_length=KPI_ID_LENGTH)] | SkipJsonSchema[None] = None
    team: Name | SkipJsonSchema[None] = None
    label: Name | SkipJsonSchema[None] = Field(default=None, examples=["region=emea"])
    duration: Annotated[
        str,
        Field(
            max_length=32,
            examples=["2h", "1d", "1h30m"],
            json_schema_extra={"pattern": DURATION_PATTERN},
        ),
    ]
    comment: Text
    author: Author = "api"

    @field_validator("label")
    @classmethod
    def _key_value(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key, sep, label_value = value.partition("=")
        if not sep or not key.strip() or not label_value.strip():
            raise ValueError(f"{value!r}: write KEY=VALUE, e.g. region=emea")
        return f"{key.strip()}={label_value.strip()}"

    @model_validator(mode="after")
    def _one_matcher(self) -> SilenceIn:
        if sum(v is not None for v in (self.kpi, self.team, self.label)) != 1:
            raise ValueError("give exactly one of kpi, team or label")
        return self

    @property
    def matcher(self) -> tuple[MatcherKind, str]:
        for kind, value in (
            (MatcherKind.KPI, self.kpi), (MatcherKind.TEAM, self.team),
            (MatcherKind.LABEL, self.label),
        ):  # fmt: skip
            if value is not None:
                return kind, value
        raise AssertionError("validated: exactly one matcher")


class AnnotationIn(_Body):
    text: Text = Field(examples=["new pricing went live for SMB plans"])
    at: UtcTime | None = Field(default=None, description="the moment it explains; default now")
    author: Author = "api"


class AckIn(_Body):
    comment: Text = Field(examples=["pricing change, looking into it"])
    author: Author = "api"


# ---------------------------------------------------------------- strict JSON


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number: send finite numbers only")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text} is out of range")
    return number


def strict_json(raw: bytes) -> Any:
    """RFC 8259 JSON: UTF-8, no NaN/Infinity (Python's json takes both), finite numbers.

    Errors are JSONDecodeError, which FastAPI answers with a 422 ``json_invalid``.
    """
    try:
        return json.loads(
            raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # not UTF-8, a refused number, an over-long integer
        raise json.JSONDecodeError(str(exc), "", 0) from exc


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


@runtime_checkable
class BeforeBody(Protocol):
    """A route dependency with a check that must run before the body is read: FastAPI
    reads and parses a body before it solves dependencies (the write token's check)."""

    def before_body(self, request: Request) -> None: ...


class JsonRoute(APIRoute):
    """Bodies must be strict JSON. FastAPI would otherwise validate a text body as bytes
    and fail to echo invalid UTF-8 in its 422 (a 500), and would echo a NaN it cannot
    serialise (another 500). A 422 quotes no long input (:func:`bounded_errors`), and
    :class:`BeforeBody` dependencies run before a byte of the body is read."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None
        # cast: mypy does not narrow a Callable to a protocol; isinstance checked it
        early = [
            cast(BeforeBody, d.dependency)
            for d in self.dependencies
            if isinstance(d.dependency, BeforeBody)
        ]

        async def strict(request: Request) -> Response:
            for check in early:
                check.before_body(request)
            request = _StrictJsonRequest(request.scope, request.receive)
            if (
                takes_body
                and await request.body()
                and not _is_json(request.headers.get("content-type"))
            ):
                detail = "send the body as JSON with Content-Type: application/json"
                return JSONResponse({"detail": detail}, status_code=415)
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = bounded_errors(jsonable_encoder(exc.errors()))
                return JSONResponse({"detail": errors}, status_code=422)

        return strict
