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
        with self._write(f"claim lease {name!r}") as connection:
            now = database_now(connection)
            row = _locked(connection, name)
            if row is None:
                if _exists(connection, name):
                    return None  # another replica holds the row lock this instant
                sql.insert_ignore_many(connection, leases_t, [_blank(name)])
                row = _locked(connection, name)
                if row is None:
                    return None
            if slot is not None and row.done_slot is not None and row.done_slot >= slot:
                return None
            busy = row.holder is not None and row.holder != holder
            if busy and row.expires_at is not None and row.expires_at > now:
                return None
            expires_at = now + ttl
            connection.execute(
                sa.update(leases_t)
                .where(leases_t.c.name == name)
                .values(holder=holder, expires_at=expires_at, claimed_slot=slot)
            )
            return Claim(name, holder, slot, expires_at, row.done_slot)

    def finish(self, claim: Claim) -> None:
        """The work of ``claim`` is done: record its slot and let go of the lease."""
        with self._write(f"finish lease {claim.name!r}") as connection:
            if claim.slot is not None:
                connection.execute(
                    sa.update(leases_t)
                    .where(leases_t.c.name == claim.name)
                    .where(_done_before(claim.slot))
                    .values(done_slot=claim.slot)
                )
            _let_go(connection, claim)

    def release(self, claim: Claim) -> None:
        """Let go without finishing (the work failed): another replica may take it now."""
        with self._write(f"release lease {claim.name!r}") as connection:
            _let_go(connection, claim)

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


def _locked(connection: Connection, name: str) -> sa.Row[Any] | None:
    """The lease row, locked for this transaction; None if absent or locked by another."""
    query = sa.select(leases_t).where(leases_t.c.name == name).with_for_update(skip_locked=True)
    return connection.execute(query).first()


def _exists(connection: Connection, name: str) -> bool:
    query = sa.select(leases_t.c.name).where(leases_t.c.name == name)
    return connection.execute(query).first() is not None


def _blank(name: str) -> dict[str, object]:
    return {"name": name, "holder": None, "expires_at": None,
            "claimed_slot": None, "done_slot": None}  # fmt: skip


def _done_before(slot: datetime | sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    return sa.or_(leases_t.c.done_slot.is_(None), leases_t.c.done_slot < slot)


def _let_go(connection: Connection, claim: Claim) -> None:
    # only our own claim: after an expiry another replica may hold it now
    connection.execute(
        sa.update(leases_t)
        .where(leases_t.c.name == claim.name)
        .where(leases_t.c.holder == claim.holder)
        .values(holder=None, expires_at=None)
    )
