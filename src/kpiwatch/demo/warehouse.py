"""The demo's sample warehouse: a year of daily data for ten KPIs in SQLite.

Deterministic (seeded) so tests can rely on each KPI's status: most green,
conversion drifting behind its glide path, churn red, the invoice feed stale.
Two show SPEC §2a: monthly new business (daily order totals folded per month,
judged against a plan per month) and site visits (weekdays busy, weekends quiet,
judged against the usual same weekday).
"""

from __future__ import annotations

import random
import sqlite3
from datetime import date, timedelta
from pathlib import Path

DAYS = 365
STALE_DAYS = 5  # the invoice feed stopped this many days ago

SCHEMA = """
CREATE TABLE daily_growth (day DATE PRIMARY KEY, trial_signups INTEGER, new_customers INTEGER,
                           conversion_pct REAL);
CREATE TABLE marketing (day DATE PRIMARY KEY, spend REAL);
CREATE TABLE churn (day DATE PRIMARY KEY, churn_pct REAL);
CREATE TABLE nps (week DATE PRIMARY KEY, score REAL);
CREATE TABLE support (day DATE PRIMARY KEY, first_response_hours REAL);
CREATE TABLE revenue (day DATE PRIMARY KEY, mrr REAL);
CREATE TABLE invoices (day DATE PRIMARY KEY, backlog INTEGER);
CREATE TABLE orders (day DATE, amount REAL);
CREATE TABLE revenue_plan (month DATE PRIMARY KEY, target REAL);
CREATE TABLE visits (day DATE PRIMARY KEY, visits INTEGER);
"""


def build_warehouse(path: Path, today: date, seed: int = 42) -> None:
    """(Re)create the warehouse file with data ending ``today``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rng = random.Random(seed)
    days = [today - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.executemany(
            "INSERT INTO daily_growth VALUES (?, ?, ?, ?)",
            [
                (
                    d.isoformat(),
                    round(120 + 15 * rng.uniform(-1, 1)),
                    rng.randint(5, 7),
                    round(4.05 + rng.uniform(-0.08, 0.08), 2),
                )  # flat, while its glide path rises
                for d in days
            ],
        )
        db.executemany(
            "INSERT INTO marketing VALUES (?, ?)",
            [(d.isoformat(), round(7000 + rng.uniform(-600, 600), 2)) for d in days],
        )
        db.executemany(
            "INSERT INTO churn VALUES (?, ?)",
            [
                (d.isoformat(), round(_churn(i) + rng.uniform(-0.05, 0.05), 2))
                for i, d in enumerate(days)
            ],
        )
        db.executemany(
            "INSERT INTO nps VALUES (?, ?)",
            [(d.isoformat(), round(42 + rng.uniform(-3, 3), 1)) for d in days if d.weekday() == 0],
        )
        db.executemany(
            "INSERT INTO support VALUES (?, ?)",
            [(d.isoformat(), round(2.5 + rng.uniform(-0.3, 0.3), 2)) for d in days],
        )
        db.executemany(
            "INSERT INTO revenue VALUES (?, ?)",
            [
                # on track: from 900k towards 1.2M, a little ahead of the glide path
                (d.isoformat(), round(900_000 + 1000 * i + rng.uniform(-2000, 2000), 2))
                for i, d in enumerate(days)
            ],
        )
        db.executemany(
            "INSERT INTO invoices VALUES (?, ?)",
            [(d.isoformat(), rng.randint(20, 40)) for d in days[: DAYS - STALE_DAYS]],
        )
        db.executemany(
            "INSERT INTO orders VALUES (?, ?)",
            [(d.isoformat(), round(20_000 + rng.uniform(-2000, 2000), 2)) for d in days],
        )
        db.executemany("INSERT INTO revenue_plan VALUES (?, ?)", _plan(days))
        db.executemany(
            "INSERT INTO visits VALUES (?, ?)",
            # weekends are quiet: a fixed threshold would flap every week
            [(d.isoformat(), round(_usual_visits(d) * rng.uniform(0.96, 1.04))) for d in days],
        )


def _churn(index: int) -> float:
    """Steady near 3.9 %, then climbing over the last three weeks to about 6.2 %."""
    climb_start = DAYS - 21
    if index < climb_start:
        return 3.9
    return 3.9 + (index - climb_start + 1) * 0.11


def _plan(days: list[date]) -> list[tuple[str, float]]:
    """A plan for each month of the data and the next: 19,500 $ a day of the month, a
    little under what the orders bring in (about 20,000 $ a day)."""
    firsts = sorted({day.replace(day=1) for day in days})
    firsts.append(_next_month(firsts[-1]))  # the plan is set ahead of the month
    return [(first.isoformat(), 19_500.0 * (_next_month(first) - first).days) for first in firsts]


def _usual_visits(day: date) -> int:
    return 2400 if day.weekday() >= 5 else 5200


def _next_month(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)
