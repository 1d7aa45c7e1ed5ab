"""What `kpiwatch status` (and later the status page) shows for each KPI."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.evaluation.judging import resolved_thresholds
from kpiwatch.model import Ack, DataProblem, KpiState, Status


@dataclass(frozen=True, slots=True)
class KpiOverview:
    id: str
    name: str
    team: str | None
    owner: str
    unit: str
    direction: str
    value: float | None
    observed_at: datetime | None
    status: Status
    since: datetime | None
    reasons: tuple[str, ...]
    target: float | None
    thresholds: dict[str, float]
    review: str
    escalated: bool
    next_review: datetime | None
    last_evaluated: datetime | None
    error: str | None
    ack: str | None = None  # "author: comment" of the current episode's ack
    verdict: Status | None = None  # the last green/yellow/red (carried while blind)
    data_problem: DataProblem | None = None

    def as_json(self) -> dict[str, Any]:
        """The stable ``status --json`` object (documented in the README)."""
        return {
            "id": self.id,
            "name": self.name,
            "team": self.team,
            "owner": self.owner,
            "value": self.value,
            "unit": self.unit,
            "direction": self.direction,
            "status": self.status.value,
            "since": _iso(self.since),
            "reasons": list(self.reasons),
            "target": self.target,
            "thresholds": self.thresholds,
            "review": self.review,
            "escalated": self.escalated,
            "next_review": _iso(self.next_review),
            "last_evaluated": _iso(self.last_evaluated),
            "observed_at": _iso(self.observed_at),
            "error": self.error,
            "ack": self.ack,
            "verdict": None if self.verdict is None else self.verdict.value,
            "data_problem": _problem(self.data_problem),
        }


def overview(
    rules: RuleSet, states: Mapping[str, KpiState], acks: Mapping[str, Ack] | None = None
) -> list[KpiOverview]:
    """One row per KPI of the rules, in rule order; never-evaluated KPIs show unknown."""
    return overview_of(rules.kpis, states, acks)


def overview_of(
    kpis: Iterable[Kpi], states: Mapping[str, KpiState], acks: Mapping[str, Ack] | None = None
) -> list[KpiOverview]:
    """:func:`overview` of some KPIs (a page of them), in the order given."""
    rows = []
    for kpi in kpis:
        state = states.get(kpi.id)
        # in the KPI's unit: thresholds in % of the plan as they come to against the
        # judged period's plan (none while no plan is known), never the bare percents
        yellow, red = resolved_thresholds(kpi.thresholds, state.plan if state else None)
        thresholds = {k: v for k, v in (("yellow", yellow), ("red", red)) if v is not None}
        rows.append(
            KpiOverview(
                id=kpi.id,
                name=kpi.name,
                team=kpi.team,
                owner=kpi.owner,
                unit=kpi.unit,
                direction=kpi.direction.value,
                value=state.value if state else None,
                observed_at=state.observed_at if state else None,
                status=state.status if state else Status.UNKNOWN,
                since=state.since if state else None,
                reasons=state.reasons if state else ("not evaluated yet",),
                # a per-period target: the judged period's plan
                target=state.plan
                if state is not None and state.plan is not None
                else (kpi.target.value if kpi.target else None),
                thresholds=thresholds,
                review=(state.review if state else kpi.review).value,
                escalated=state.escalated if state else False,
                next_review=state.next_review if state else None,
                last_evaluated=state.last_evaluated if state else None,
                error=state.error if state else None,
                ack=_ack_text((acks or {}).get(kpi.id)),
                verdict=state.verdict if state else None,
                data_problem=state.data_problem if state else None,
            )
        )
    return rows


def _problem(problem: DataProblem | None) -> dict[str, Any] | None:
    """SPEC §5a's ``data_problem``: since, reason, scope, source (and when the owner heard)."""
    if problem is None:
        return None
    return {
        "since": problem.since.isoformat(),
        "reason": problem.reason,
        "scope": problem.scope,
        "source": problem.source,
        "owner_told_at": _iso(problem.told_at),
    }


def _ack_text(ack: Ack | None) -> str | None:
    return f"{ack.author}: {ack.comment}" if ack is not None else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
