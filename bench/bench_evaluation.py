"""Benchmark of kpiwatch.evaluation.evaluate() against a plain loop and the Prometheus reference.

Run:  .venv/bin/python bench/bench_evaluation.py [--kpis 10000] [--rounds 7] [--profile] [--digest]

Builds KPIs with every rule on (thresholds, a target with a glide path,
worsening_streak, change, off_track, ``for: 2``, escalation), each with 52
weekly observations, and times full evaluate() calls over all of them with the
previous state of an earlier evaluation (the daemon's steady state). Prints the
median of several rounds.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import pstats
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation import evaluate
from kpiwatch.model import Direction, KpiState, Observation

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
WEEKS = 52
# Reference numbers quoted in the issue (not measured here): Prometheus rule
# evaluation of 10,000 series, and the plain loop's rate on this 2-core machine.
PROMETHEUS_THRESHOLDS_MS = 100.0
PROMETHEUS_ONE_RULE_MS = 600.0
ISSUE_PLAIN_LOOP_PER_S = 250_000.0


def build(n: int, mode: str = "mixed", seed: int = 7) -> list[tuple[Kpi, list[Observation]]]:
    """``n`` KPIs with mixed directions and 52 weekly observations each.

    ``mode``: ``mixed`` -- every rule on, about three in four KPIs healthy (the
    usual picture); ``alerting`` -- every rule on, thresholds and targets set so
    that nearly every KPI has findings (the worst case: all reasons worded);
    ``thresholds`` -- thresholds only.
    """
    rng = random.Random(seed)
    kpis: list[tuple[Kpi, list[Observation]]] = []
    for i in range(n):
        lower = i % 2 == 0
        better = -1.0 if lower else 1.0  # the sign of an improvement
        healthy = mode != "alerting" and i % 20 < 15
        kpi_id = f"kpi_{i}"
        level = rng.uniform(2.0, 8.0)
        drift = better * rng.uniform(0.0, 0.03) if healthy else rng.uniform(-0.05, 0.05)
        values: list[float] = []
        for _ in range(WEEKS):
            level = max(0.1, level + drift + rng.gauss(0.0, 0.1 if healthy else 0.2))
            values.append(round(level, 3))
        start = NOW - timedelta(hours=rng.randint(1, 48)) - timedelta(weeks=WEEKS - 1)
        history = [Observation(kpi_id, start + timedelta(weeks=w), v) for w, v in enumerate(values)]
        last = values[-1]
        worst_seen = max(values) if lower else min(values)
        target: dict[str, object]
        if healthy:  # comfortable thresholds; a target already met, glide path above the data
            yellow, red = last * (1 - better * 0.3), last * (1 - better * 0.5)
            target = {
                "value": worst_seen * (1 - better * 0.15),
                "baseline": worst_seen * (1 - better * 0.3),
                "baseline_date": start.date().isoformat(),
                "by": "2027-06-30",
            }
        else:  # thresholds around the value, a target out of reach
            yellow = last * rng.uniform(0.9, 1.1)
            red = last * (1 - better * rng.uniform(-0.05, 0.25))
            if lower == (red < yellow):
                yellow = red  # keep the config valid: yellow never beyond red
            target = {"value": last * (1 + better * 0.2), "by": "2027-06-30"}
        spec: dict[str, object] = {
            "id": kpi_id,
            "name": f"KPI {i}",
            "owner": "owner@example.com",
            "unit": "%",
            "direction": "lower_is_better" if lower else "higher_is_better",
            "source": "push",
            "thresholds": {"yellow": yellow, "red": red},
        }
        if mode != "thresholds":
            spec |= {
                "target": target,
                "trend": {
                    "worsening_streak": 3,
                    "change": (
                        {"max_pct": 20, "over": "7d"} if i % 3 else {"max_abs": 0.5, "over": "28d"}
                    ),
                    "off_track": "red" if i % 4 == 1 else "yellow",
                },
                "for": 2,
                "review": "monthly",
                "escalation": {"review": "weekly", "stable_for": 3 if i % 2 else "14d"},
            }
        kpis.append((Kpi.model_validate(spec), history))
    return kpis


def warm_states(
    kpis: Sequence[tuple[Kpi, list[Observation]]],
) -> list[KpiState | None]:
    """States after two earlier evaluations, so hysteresis and escalation are live."""
    states: list[KpiState | None] = []
    for kpi, history in kpis:
        state = evaluate(kpi, history, None, NOW - timedelta(hours=2)).state
        state = evaluate(kpi, history, state, NOW - timedelta(hours=1)).state
        states.append(state)
    return states


def run_evaluate(
    kpis: Sequence[tuple[Kpi, list[Observation]]], states: Sequence[KpiState | None]
) -> int:
    events = 0
    for (kpi, history), state in zip(kpis, states, strict=True):
        events += len(evaluate(kpi, history, state, NOW).events)
    return events


def run_plain_loop(kpis: Sequence[tuple[Kpi, list[Observation]]]) -> int:
    """The issue's baseline: thresholds + a 3-step streak + a 26-point slope, nothing else."""
    worse = 0
    for kpi, history in kpis:
        lower = kpi.direction is Direction.LOWER_IS_BETTER
        t = kpi.thresholds
        assert t is not None
        assert t.yellow is not None
        assert t.red is not None
        value = history[-1].value
        if lower:
            status = 2 if value > t.red else 1 if value > t.yellow else 0
        else:
            status = 2 if value < t.red else 1 if value < t.yellow else 0
        tail = history[-4:]
        streak = all(
            (b.value > a.value) if lower else (b.value < a.value) for a, b in pairwise(tail)
        )
        recent = history[-26:]
        xs = [o.observed_at.timestamp() for o in recent]
        ys = [o.value for o in recent]
        mx = sum(xs) / len(xs)
        my = sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        worse += status + streak + (slope > 0)
    return worse


Prepared = tuple[bool, float, float, list[float], list[float]]


def prepare_floats(kpis: Sequence[tuple[Kpi, list[Observation]]]) -> list[Prepared]:
    """The plain loop's inputs as bare floats, extracted before the clock starts."""
    prepared: list[Prepared] = []
    for kpi, history in kpis:
        t = kpi.thresholds
        assert t is not None
        assert t.yellow is not None
        assert t.red is not None
        recent = history[-26:]
        prepared.append(
            (
                kpi.direction is Direction.LOWER_IS_BETTER,
                t.yellow,
                t.red,
                [o.observed_at.timestamp() for o in recent],
                [o.value for o in recent],
            )
        )
    return prepared


def run_plain_floats(prepared: Sequence[Prepared]) -> int:
    """The same plain loop on pre-extracted floats (no datetimes, no objects)."""
    worse = 0
    for lower, yellow, red, xs, ys in prepared:
        value = ys[-1]
        if lower:
            status = 2 if value > red else 1 if value > yellow else 0
        else:
            status = 2 if value < red else 1 if value < yellow else 0
        a, b, c, d = ys[-4:]
        streak = (b > a and c > b and d > c) if lower else (b < a and c < b and d < c)
        n = len(xs)
        mx = sum(xs) / n
        my = sum(ys) / n
        sxx = sum([(x - mx) * (x - mx) for x in xs])
        slope = sum([(x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)]) / sxx
        worse += status + streak + (slope > 0)
    return worse


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds of ``rounds`` calls (GC off during each, like a tight daemon tick)."""
    samples = []
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return statistics.median(samples)


def status_mix(
    kpis: Sequence[tuple[Kpi, list[Observation]]], states: Sequence[KpiState | None]
) -> str:
    counts = Counter(
        evaluate(kpi, history, state, NOW).raw_status.value
        for (kpi, history), state in zip(kpis, states, strict=True)
    )
    return ", ".join(f"{counts[s]} {s}" for s in ("green", "yellow", "red") if counts[s])


def digest(
    sets: dict[str, list[tuple[Kpi, list[Observation]]]],
    states: dict[str, list[KpiState | None]],
) -> str:
    """A SHA-256 of every evaluate() result of the timed rounds (findings, state, events).

    Equal digests before and after a change of the core mean identical outputs on
    this data set, to the last bit of every float (``repr`` round-trips).
    """
    sha = hashlib.sha256()
    for mode, kpis in sets.items():
        for (kpi, history), state in zip(kpis, states[mode], strict=True):
            sha.update(repr(evaluate(kpi, history, state, NOW)).encode())
    return sha.hexdigest()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kpis", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile one round of evaluate()")
    parser.add_argument(
        "--digest", action="store_true", help="print a SHA-256 of all outputs (compare runs)"
    )
    args = parser.parse_args(argv)
    n = args.kpis

    print(f"building {n:,} KPIs x {WEEKS} weekly observations, three sets ...", file=sys.stderr)
    sets = {mode: build(n, mode) for mode in ("mixed", "alerting", "thresholds")}
    states = {mode: warm_states(kpis) for mode, kpis in sets.items()}

    if args.digest:
        print(f"outputs sha256 {digest(sets, states)} ({n:,} KPIs x 3 sets)")
        return

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_evaluate(sets["mixed"], states["mixed"])
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return

    rows = []
    for mode, label in (
        ("mixed", "evaluate(), all rules, mixed"),
        ("alerting", "evaluate(), all rules, all alerting"),
        ("thresholds", "evaluate(), thresholds only"),
    ):
        seconds = timed(partial(run_evaluate, sets[mode], states[mode]), args.rounds)
        rows.append((label, seconds, status_mix(sets[mode], states[mode])))
    plain = timed(partial(run_plain_loop, sets["mixed"]), args.rounds)
    rows.append(("plain loop: thresholds + streak + slope", plain, "same data as mixed"))
    floats = prepare_floats(sets["mixed"])
    plain_floats = timed(partial(run_plain_floats, floats), args.rounds)
    rows.append(("plain loop on pre-extracted floats", plain_floats, "same data as mixed"))

    print(f"\n{n:,} KPIs, median of {args.rounds} rounds, Python {sys.version.split()[0]}\n")
    print(f"{'what':<40} {'ms / 10,000':>12} {'evals/s':>10}  raw statuses")
    for label, seconds, note in rows:
        per_10k = seconds / n * 10_000 * 1000
        print(f"{label:<40} {per_10k:>12.1f} {n / seconds:>10,.0f}  {note}")
    for label, ms in (
        ("Prometheus reference: thresholds (best)", PROMETHEUS_THRESHOLDS_MS),
        ("Prometheus reference: one rule per KPI", PROMETHEUS_ONE_RULE_MS),
        ("plain loop as quoted in the issue", 10_000 / ISSUE_PLAIN_LOOP_PER_S * 1000),
    ):
        print(f"{label:<40} {ms:>12.1f} {10_000 / ms * 1000:>10,.0f}  quoted, not measured")


if __name__ == "__main__":
    main()
