"""The one rule of "worse than a reference by more than a limit" (SPEC §2, §2a).

``trend.change`` (against the value ``over`` ago, or another period with ``vs``)
and ``trend.seasonal`` (against the usual value) all fire the same way: the value
is worse than the reference, in the KPI's direction, by more than ``max_pct``
percent of the reference or ``max_abs`` in the KPI's unit.
"""

from __future__ import annotations


def worse_beyond(
    value: float,
    reference: float,
    lower_is_better: bool,
    max_pct: float | None,
    max_abs: float | None,
) -> float | None:
    """How much worse ``value`` is than ``reference`` when it is worse by more than the
    limit: in percent of ``abs(reference)`` with ``max_pct``, in the unit with
    ``max_abs`` (``max_pct`` wins when both are given). None when it is not worse,
    is within the limit, or would be a percent of a zero reference."""
    delta = value - reference
    worse_by = delta if lower_is_better else -delta
    if worse_by <= 0:
        return None
    if max_pct is not None:
        if reference == 0:
            return None
        pct = worse_by / abs(reference) * 100.0
        return pct if pct > max_pct else None
    if max_abs is None or worse_by <= max_abs:
        return None
    return worse_by
