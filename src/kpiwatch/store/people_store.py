"""What people add to the state store: silences, acks and annotations.

An ack or an annotation of a running red or yellow episode is recorded with the
event that tells its Slack thread (:mod:`kpiwatch.notify.follow_ups`), in one
transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kpiwatch.errors import StoreError
from kpiwatch.model import Ack, Annotation, Delivery, Event, MatcherKind, Silence
from kpiwatch.store import rows, sql
from kpiwatch.store.base import StoreBase, chunks, new_id
from kpiwatch.store.schema import acks as acks_t
from kpiwatch.store.schema import kpi_annotations as annotations_t
from kpiwatch.store.schema import kpi_state as state_t
from kpiwatch.store.schema import silences as silences_t


class PeopleStore(StoreBase):
    """Silences, acks and annotations."""

    # -- silences ------------------------------------------------------------

    def add_silence(
        self,
        matcher: MatcherKind,
        value: str,
        starts_at: datetime,
        ends_at: datetime,
        author: str,
        comment: str,
        now: datetime,
    ) -> Silence:
        """Store a new silence; ``ends_at`` must be after ``starts_at``."""
        if ends_at <= starts_at:
            raise StoreError(
                f"a silence must end after it starts ({ends_at.isoformat()} "
                f"<= {starts_at.isoformat()})"
            )
        row = {
            "matcher": matcher.value,
            "value": value,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "author": author,
            "comment": comment,
            "created_at": now,
            "expired_at": None,
        }
        with self._write("add silence") as connection:
            result = connection.execute(sa.insert(silences_t).values(row))
            return self._silence(connection, new_id(result))

    def silences(self, *, active_at: datetime | None = None) -> list[Silence]:
        """Silences newest first: all of them, or those active at ``active_at``."""
        query = sa.select(silences_t)
        if active_at is not None:
            c = silences_t.c
            query = query.where(
                c.starts_at <= active_at,
                c.ends_at > active_at,
                sa.or_(c.expired_at.is_(None), c.expired_at > active_at),
            )
        query = query.order_by(silences_t.c.created_at.desc(), silences_t.c.id.desc())
        with self._read("read silences") as connection:
            return [rows.to_silence(row) for row in connection.execute(query).mappings()]

    def expire_silence(self, silence_id: int, now: datetime) -> Silence:
        """End a silence early at ``now``; expiring it again keeps the first time."""
        with self._write("expire silence") as connection:
            connection.execute(
                sa.update(silences_t)
                .where(silences_t.c.id == silence_id, silences_t.c.expired_at.is_(None))
                .values(expired_at=now)
            )
            return self._silence(connection, silence_id)

    @staticmethod
    def _silence(connection: Connection, silence_id: int) -> Silence:
        query = sa.select(silences_t).where(silences_t.c.id == silence_id)
        row = connection.execute(query).mappings().first()
        if row is None:
            raise StoreError(f"no silence with id {silence_id}")
        return rows.to_silence(row)

    # -- acks and annotations ------------------------------------------------

    def ack(
        self,
        kpi_id: str,
        episode_since: datetime,
        author: str,
        comment: str,
        now: datetime,
        *,
        events: Sequence[Event] = (),
        deliveries: Mapping[str, Sequence[Delivery]] | None = None,
    ) -> Ack:
        """Acknowledge a KPI's episode; acking it again replaces author, comment and time.
        ``events`` (telling the episode's thread) are stored in the same transaction."""
        row = {
            "kpi_id": kpi_id,
            "episode_since": episode_since,
            "author": author,
            "comment": comment,
            "at": now,
        }
        with self._write("save ack") as connection:
            sql.upsert_unique(connection, acks_t, row, ("kpi_id", "episode_since"))
            self._insert_events(connection, events, deliveries or {})
            found = self._ack(connection, kpi_id, episode_since)
        assert found is not None  # just written in this transaction
        return found

    def ack_for(self, kpi_id: str, episode_since: datetime) -> Ack | None:
        """The ack of one episode (``KpiState.since``), if someone gave one."""
        with self._read("read ack") as connection:
            return self._ack(connection, kpi_id, episode_since)

    def current_acks(self, kpi_ids: Collection[str] | None = None) -> dict[str, Ack]:
        """KPI id -> the ack of its current episode (its stored state's ``since``), for
        the KPIs acknowledged now among ``kpi_ids`` (None: every KPI); one query per
        few hundred KPIs, not one per KPI."""
        current = sa.select(acks_t).join_from(acks_t, state_t, sa.and_(
            acks_t.c.kpi_id == state_t.c.kpi_id, acks_t.c.episode_since == state_t.c.since,
        ))  # fmt: skip
        found: dict[str, Ack] = {}
        with self._read("read acks") as connection:
            if kpi_ids is None:
                queries = [current]
            else:
                dialect = connection.dialect.name
                queries = [
                    current.where(sql.one_of(acks_t.c.kpi_id, dialect, chunk))
                    for chunk in chunks(kpi_ids)
                ]
            for query in queries:
                for row in connection.execute(query).mappings():
                    found[row["kpi_id"]] = rows.to_ack(row)
        return found

    @staticmethod
    def _ack(connection: Connection, kpi_id: str, episode_since: datetime) -> Ack | None:
        query = sa.select(acks_t).where(
            acks_t.c.kpi_id == kpi_id, acks_t.c.episode_since == episode_since
        )
        row = connection.execute(query).mappings().first()
        return None if row is None else rows.to_ack(row)

    def annotate(
        self,
        kpi_id: str,
        at: datetime,
        text: str,
        author: str,
        now: datetime,
        *,
        events: Sequence[Event] = (),
        deliveries: Mapping[str, Sequence[Delivery]] | None = None,
    ) -> Annotation:
        """Record why a KPI moved at ``at``; ``events`` in the same transaction."""
        row = {"kpi_id": kpi_id, "at": at, "text": text, "author": author, "created_at": now}
        with self._write("add annotation") as connection:
            result = connection.execute(sa.insert(annotations_t).values(row))
            self._insert_events(connection, events, deliveries or {})
            return Annotation(
                id=new_id(result), kpi_id=kpi_id, at=at, text=text, author=author, created_at=now
            )

    def annotations(
        self, kpi_id: str, *, since: datetime | None = None, limit: int | None = None
    ) -> list[Annotation]:
        """A KPI's annotations by ``at``, oldest first; with ``limit``, the newest ones."""
        query = sa.select(annotations_t).where(annotations_t.c.kpi_id == kpi_id)
        if since is not None:
            query = query.where(annotations_t.c.at >= since)
        order = [annotations_t.c.at, annotations_t.c.id]
        found = self._read_last(query, order, limit, "read annotations")
        return [rows.to_annotation(row) for row in found]
