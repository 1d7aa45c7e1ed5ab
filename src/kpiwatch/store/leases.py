"""Work leases: which replica does a piece of work, and which due times are done.

A lease row per piece of work ("kpi:<id>", "job:reviews", ...). A replica
claims it for one due time (a *slot*) by locking the row with
``FOR UPDATE SKIP LOCKED`` (a row another replica is claiming right now is
simply skipped), checking in Python that nobody holds an unexpired claim and
that the slot is not done yet, and writing its name and an expiry. Expiries
are compared with the database's clock, never a replica's: replicas' clocks
may differ, the database has one. A replica killed mid-work leaves its claim to
expire; :meth:`LeaseBook.abandoned` finds such claims so another replica can
finish the work.

SQLite renders no ``FOR UPDATE``; it serialises writers and kpiwatch runs one
instance on it (``store.lock``), so the same code is correct there.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kpiwatch.store import sql
from kpiwatch.store.dbtime import utc_now
from kpiwatch.store.schema import leases as leases_t
from kpiwatch.store.transactions import writing


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease this replica now holds, until ``expires_at`` (database time)."""

    name: str
    holder: str
    slot: datetime | None
    expires_at: datetime
    previous_done: datetime | None  # the newest slot finished before this claim


class LeaseBook:
    """Claim, finish and release leases; find the ones a dead replica left behind."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def claim(
        self, name: str, holder: str, ttl: timedelta, *, slot: datetime | None = None
    ) -> Claim | None:
        """Take ``name`` for ``ttl`` unless another holder has an unexpired claim, or
        ``slot`` is already done. ``slot=None`` asks for exclusion only."""
        claims = self.claim_many([name], holder, ttl, slot=slot)
        return claims[0] if claims else None

    def claim_many(
        self, names: Sequence[str], holder: str, ttl: timedelta, *, slot: datetime | None = None
    ) -> list[Claim]:
        """Take each of ``names`` that is free for ``slot``, in one transaction: the
        batched scheduler claims a batch of due KPIs at once (issue 15). A name another
        replica holds (or is claiming this instant), or whose slot is done, is left out."""
        if not names:
            return []
        label = names[0] if len(names) == 1 else f"{names[0]}, ... ({len(names)})"
        with self._write(f"claim lease {label!r}") as connection:
            now = database_now(connection)
            dialect = connection.dialect.name
            rows = {row.name: row for row in _locked(connection, dialect, names)}
            if len(rows) < len(names):
                missing = [n for n in names if n not in rows]
                # first claims of these names: their rows, then locked (in one order)
                absent = sorted(set(missing) - _existing(connection, dialect, missing))
                if absent:
                    sql.insert_ignore_many(connection, leases_t, [_blank(n) for n in absent])
                    rows.update((r.name, r) for r in _locked(connection, dialect, absent))
            expires_at = now + ttl
            claims = [
                Claim(name, holder, slot, expires_at, row.done_slot)
                for name in names
                if (row := rows.get(name)) is not None and _free(row, holder, slot, now)
            ]
            if claims:
                connection.execute(
                    sa.update(leases_t)
                    .where(sql.one_of(leases_t.c.name, dialect, [c.name for c in claims]))
                    .values(holder=holder, expires_at=expires_at, claimed_slot=slot)
                )
            return claims

    def finish(self, claim: Claim) -> None:
        """The work of ``claim`` is done: record its slot and let go of the lease."""
        self.finish_many([claim])

    def finish_many(self, claims: Sequence[Claim]) -> None:
        """The work of ``claims`` is done: record their slots and let go, in one transaction."""
        if not claims:
            return
        with self._write(f"finish lease {claims[0].name!r}") as connection:
            dialect = connection.dialect.name
            for slot, names in _by_slot(claims).items():
                if slot is not None:
                    connection.execute(
                        sa.update(leases_t)
                        .where(sql.one_of(leases_t.c.name, dialect, names))
                        .where(_done_before(slot))
                        .values(done_slot=slot)
                    )
            _let_go(connection, claims)

    def release(self, claim: Claim) -> None:
        """Let go without finishing (the work failed): another replica may take it now."""
        self.release_many([claim])

    def release_many(self, claims: Sequence[Claim]) -> None:
        if not claims:
            return
        with self._write(f"release lease {claims[0].name!r}") as connection:
            _let_go(connection, claims)

    def renew(self, names: Sequence[str], holder: str, ttl: timedelta) -> int:
        """Extend ``holder``'s claims on ``names`` to ``ttl`` from now (work still going);
        returns how many it still held."""
        if not names:
            return 0
        with self._write("renew leases") as connection:
            now = database_now(connection)
            result = connection.execute(
                sa.update(leases_t)
                .where(sql.one_of(leases_t.c.name, connection.dialect.name, names))
                .where(leases_t.c.holder == holder)
                .values(expires_at=now + ttl)
            )
            return int(result.rowcount or 0)

    def abandoned(self, prefix: str) -> list[tuple[str, datetime | None]]:
        """Expired claims under ``prefix`` whose slot was never finished: (name, slot).

        A replica that died mid-work leaves these; the caller claims and redoes them.
        """
        with self._write("read abandoned leases") as connection:
            now = database_now(connection)
            found = connection.execute(
                sa.select(leases_t.c.name, leases_t.c.claimed_slot)
                .where(leases_t.c.name.startswith(prefix, autoescape=True))
                .where(leases_t.c.holder.is_not(None))
                .where(leases_t.c.expires_at < now)
                .where(leases_t.c.claimed_slot.is_not(None))
                .where(_done_before(leases_t.c.claimed_slot))
            ).all()
        return [(row.name, row.claimed_slot) for row in found]

    def now(self) -> datetime:
        """The database's clock, the one all replicas agree on."""
        with self._write("read the database clock") as connection:
            return database_now(connection)

    def _write(self, action: str) -> AbstractContextManager[Connection]:
        return writing(self._engine, action)


def database_now(connection: Connection) -> datetime:
    """The database server's current time as an aware UTC datetime."""
    now: datetime = connection.execute(sa.select(utc_now())).scalar_one()
    return now


def _locked(connection: Connection, dialect: str, names: Sequence[str]) -> list[sa.Row[Any]]:
    """The lease rows of ``names``, locked for this transaction; a row absent or locked
    by another transaction is left out."""
    query = (
        sa.select(leases_t)
        .where(sql.one_of(leases_t.c.name, dialect, names))
        .with_for_update(skip_locked=True)
    )
    return list(connection.execute(query).all())


def _existing(connection: Connection, dialect: str, names: Sequence[str]) -> set[str]:
    query = sa.select(leases_t.c.name).where(sql.one_of(leases_t.c.name, dialect, names))
    return set(connection.execute(query).scalars())


def _free(row: sa.Row[Any], holder: str, slot: datetime | None, now: datetime) -> bool:
    """Whether the lease in ``row`` can be claimed by ``holder`` for ``slot``: the slot is
    not done yet, and nobody else holds an unexpired claim."""
    if slot is not None and row.done_slot is not None and row.done_slot >= slot:
        return False
    busy = row.holder is not None and row.holder != holder
    return not (busy and row.expires_at is not None and row.expires_at > now)


def _by_slot(claims: Sequence[Claim]) -> dict[datetime | None, list[str]]:
    grouped: dict[datetime | None, list[str]] = {}
    for claim in claims:
        grouped.setdefault(claim.slot, []).append(claim.name)
    return grouped


def _blank(name: str) -> dict[str, object]:
    return {"name": name, "holder": None, "expires_at": None,
            "claimed_slot": None, "done_slot": None}  # fmt: skip


def _done_before(slot: datetime | sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    return sa.or_(leases_t.c.done_slot.is_(None), leases_t.c.done_slot < slot)


def _let_go(connection: Connection, claims: Sequence[Claim]) -> None:
    # only our own claims: after an expiry another replica may hold one now
    dialect = connection.dialect.name
    for holder, names in _by_holder(claims).items():
        connection.execute(
            sa.update(leases_t)
            .where(sql.one_of(leases_t.c.name, dialect, names))
            .where(leases_t.c.holder == holder)
            .values(holder=None, expires_at=None)
        )


def _by_holder(claims: Sequence[Claim]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for claim in claims:
        grouped.setdefault(claim.holder, []).append(claim.name)
    return grouped
