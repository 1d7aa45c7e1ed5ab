"""The outbox's side of the state store: due messages, claims by replicas, delivery
results, and what a notice shows, read for many KPIs at once.

Rows are written with the state change that caused them (:mod:`repository`);
this is how the notifiers read and finish them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from kpiwatch.errors import StoreError, redact
from kpiwatch.model import Ack, Annotation, DeliveryState, KpiState, Observation, OutboxMessage
from kpiwatch.store import rows
from kpiwatch.store.base import NOTICE_CHUNK, StoreBase, chunks, newest_observations
from kpiwatch.store.dbtime import utc_now
from kpiwatch.store.schema import acks as acks_t
from kpiwatch.store.schema import events as events_t
from kpiwatch.store.schema import kpi_annotations as annotations_t
from kpiwatch.store.schema import kpi_state as state_t
from kpiwatch.store.schema import outbox as outbox_t


class NoticeContext(NamedTuple):
    """What a notice about one KPI shows, read in bulk (:meth:`Store.notice_context`)."""

    state: KpiState | None
    recent: tuple[Observation, ...]  # oldest first
    annotations: tuple[Annotation, ...]  # by time, oldest first
    ack: Ack | None  # of the current episode


# The outbox joined with its event; event columns are prefixed to avoid clashes.
_EVENT_PREFIX = "event_"
_MESSAGE_COLUMNS = [
    *outbox_t.c,
    *(c.label(_EVENT_PREFIX + c.name) for c in events_t.c if c.name != "id"),
]


class OutboxStore(StoreBase):
    """Reading, claiming and finishing outbox messages."""

    def due_messages(self, now: datetime, *, limit: int = 100) -> list[OutboxMessage]:
        """Pending messages whose next attempt is due, oldest first, with their event."""
        query = (
            sa.select(*_MESSAGE_COLUMNS)
            .join_from(outbox_t, events_t, outbox_t.c.event_id == events_t.c.id)
            .where(outbox_t.c.state == DeliveryState.PENDING.value)
            .where(outbox_t.c.next_attempt_at <= now)
            .order_by(outbox_t.c.next_attempt_at, outbox_t.c.id)
            .limit(limit)
        )
        with self._read("read due messages") as connection:
            return [_message(row) for row in connection.execute(query).mappings()]

    def claim_due_messages(
        self,
        holder: str,
        *,
        now: datetime,
        lease: timedelta,
        limit: int = 100,
        per_target: Mapping[str, int] | None = None,
        skip: Collection[tuple[str, str]] = (),
    ) -> list[OutboxMessage]:
        """Claim due messages for ``holder`` until the lease ends; they come oldest first.

        One transaction. A message is claimed when it is pending, due at ``now``
        (the caller's clock, which wrote ``next_attempt_at``), not claimed by a
        live lease, and every earlier pending message of its conversation
        (channel, target, KPI) is claimed with it: a conversation is only ever
        worked on by one replica, and in order, so an escalation never
        overtakes the status change it replies to. Lease times are the
        database's clock (:func:`utc_now`), the one clock replicas share.

        Fair across recipients: at most ``per_target[channel]`` messages per
        (channel, target) (unlimited for other channels), taken round-robin
        (every target's first, then every second...) up to ``limit``.
        (channel, target) pairs in ``skip`` (paced by the caller) are left alone.
        Rows another replica is claiming at this moment are skipped
        (``FOR UPDATE SKIP LOCKED``; SQLite serialises the whole claim instead).
        """
        if limit <= 0:
            return []
        anything_due = (
            sa.select(outbox_t.c.id)
            .where(outbox_t.c.state == DeliveryState.PENDING.value)
            .where(outbox_t.c.next_attempt_at <= now)
            .limit(1)
        )
        with self._read("read due messages") as connection:  # idle passes stay reads
            if connection.execute(anything_due).first() is None:
                return []
        with self._write("claim outbox messages") as connection:

            def look() -> tuple[datetime, sa.ColumnElement[bool], Sequence[sa.Row[Any]]]:
                db_now: datetime = connection.execute(sa.select(utc_now())).scalar_one()
                ready = sa.and_(
                    outbox_t.c.state == DeliveryState.PENDING.value,
                    outbox_t.c.next_attempt_at <= now,
                    sa.or_(
                        outbox_t.c.claimed_until.is_(None), outbox_t.c.claimed_until <= db_now
                    ),
                )
                query = _claim_candidates(ready, limit, per_target or {}, skip)
                return db_now, ready, connection.execute(query).all()

            db_now, ready, candidates = look()
            if candidates and connection.dialect.name == "sqlite":
                # pysqlite begins the transaction at the first write: take the write lock
                # now and look again, so that reading the candidates and claiming them is
                # one unit. Not before the first look: passes with nothing to claim (all
                # recipients paced) must not queue for the lock behind evaluations.
                connection.execute(
                    sa.update(outbox_t).where(sa.false()).values(claimed_by=None)
                )
                db_now, ready, candidates = look()
            if not candidates:
                return []
            ids = [row.id for row in candidates]
            locked = set(
                connection.execute(
                    sa.select(outbox_t.c.id)
                    .where(outbox_t.c.id.in_(ids), ready)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            # a conversation's messages only while none before them slipped away
            # (locked by another replica this instant): order is kept per conversation
            broken: set[tuple[str, str, str | None]] = set()
            claim: list[int] = []
            for row in sorted(candidates, key=lambda r: r.id):
                key = (row.channel, row.target, row.kpi_id)
                if key in broken or row.id not in locked:
                    broken.add(key)
                    continue
                claim.append(row.id)
            if not claim:
                return []
            connection.execute(
                sa.update(outbox_t)
                .where(outbox_t.c.id.in_(claim), ready)
                .values(claimed_by=holder, claimed_until=db_now + lease)
            )
            query = (
                sa.select(*_MESSAGE_COLUMNS)
                .join_from(outbox_t, events_t, outbox_t.c.event_id == events_t.c.id)
                .where(outbox_t.c.id.in_(claim), outbox_t.c.claimed_by == holder)
                .order_by(outbox_t.c.id)
            )
            return [_message(row) for row in connection.execute(query).mappings()]

    def release_claims(self, holder: str, message_ids: Collection[int]) -> int:
        """Give up ``holder``'s claims on messages it did not finish (paced, held back).

        Others' claims are left alone; returns how many claims were released.
        """
        if not message_ids:
            return 0
        query = (
            sa.update(outbox_t)
            .where(outbox_t.c.id.in_(list(message_ids)), outbox_t.c.claimed_by == holder)
            .values(claimed_by=None, claimed_until=None)
        )
        with self._write("release outbox claims") as connection:
            return int(connection.execute(query).rowcount)

    def mark_sent(self, message_id: int, now: datetime) -> None:
        """A delivery succeeded (counts as an attempt)."""
        self._update_message(
            message_id,
            state=DeliveryState.SENT.value,
            sent_at=now,
            attempts=outbox_t.c.attempts + 1,
        )

    def mark_retry(
        self, message_id: int, now: datetime, *, error: str, next_attempt_at: datetime
    ) -> None:
        """A delivery failed and will be tried again at ``next_attempt_at``."""
        del now  # part of the contract for symmetry; the retry time is what matters
        self._update_message(
            message_id,
            last_error=redact(error),
            next_attempt_at=next_attempt_at,
            attempts=outbox_t.c.attempts + 1,
        )

    def mark_dead(self, message_id: int, now: datetime, *, error: str) -> None:
        """A delivery failed for good (retry budget spent or not retryable)."""
        del now
        self._update_message(
            message_id,
            state=DeliveryState.DEAD.value,
            last_error=redact(error),
            attempts=outbox_t.c.attempts + 1,
        )

    def messages(
        self, *, states: Collection[DeliveryState] | None = None, limit: int = 100
    ) -> list[OutboxMessage]:
        """Outbox messages, newest first, optionally only in ``states``."""
        query = sa.select(*_MESSAGE_COLUMNS).join_from(
            outbox_t, events_t, outbox_t.c.event_id == events_t.c.id
        )
        if states is not None:
            query = query.where(outbox_t.c.state.in_([state.value for state in states]))
        query = query.order_by(outbox_t.c.created_at.desc(), outbox_t.c.id.desc()).limit(limit)
        with self._read("read messages") as connection:
            return [_message(row) for row in connection.execute(query).mappings()]

    def pending_counts(self) -> dict[str, int]:
        """How many messages wait per channel (channels with none are absent)."""
        query = (
            sa.select(outbox_t.c.channel, sa.func.count())
            .where(outbox_t.c.state == DeliveryState.PENDING.value)
            .group_by(outbox_t.c.channel)
        )
        with self._read("count pending messages") as connection:
            return {channel: int(count) for channel, count in connection.execute(query)}

    def retry_dead(self, message_ids: Sequence[int] | None, now: datetime) -> int:
        """Make dead messages pending again, due ``now``; ``None`` means every dead one.

        Attempts are kept (they are history); ids that are not dead are left alone.
        Returns how many messages were revived.
        """
        if message_ids is not None and not message_ids:
            return 0
        query = (
            sa.update(outbox_t)
            .where(outbox_t.c.state == DeliveryState.DEAD.value)
            .values(state=DeliveryState.PENDING.value, next_attempt_at=now)
        )
        if message_ids is not None:
            query = query.where(outbox_t.c.id.in_(list(message_ids)))
        with self._write("retry dead messages") as connection:
            return int(connection.execute(query).rowcount)

    def mark_suppressed(self, message_id: int, now: datetime, *, reason: str) -> None:
        """A delivery was held back (silence or mute): recorded with why, never sent."""
        del now
        self._update_message(
            message_id, state=DeliveryState.SUPPRESSED.value, last_error=redact(reason)
        )

    # -- what a notice shows, for many KPIs at once ----------------------------

    def notice_context(
        self,
        kpi_ids: Collection[str],
        *,
        points: int,
        annotations_since: datetime | None,
    ) -> dict[str, NoticeContext]:
        """Per KPI: its state, its last ``points`` observations (oldest first), its
        annotations at or after ``annotations_since`` (by ``at``; None: none read) and
        the ack of its current episode. Four queries per 200 KPIs; KPIs without a
        state are present too (all empty).
        """
        ids = sorted(set(kpi_ids))
        if not ids:
            return {}
        states: dict[str, KpiState] = {}
        recent: dict[str, list[Observation]] = {kpi: [] for kpi in ids}
        notes: dict[str, list[Annotation]] = {kpi: [] for kpi in ids}
        acks: dict[str, Ack] = {}
        with self._read("read notice context") as connection:
            for chunk in chunks(ids, NOTICE_CHUNK):
                query = sa.select(state_t).where(state_t.c.kpi_id.in_(chunk))
                for row in connection.execute(query).mappings():
                    states[row["kpi_id"]] = rows.to_state(row)
                newest, params = newest_observations(
                    chunk, points, chunk=NOTICE_CHUNK, dialect=connection.dialect.name
                )
                for row in connection.execute(newest, params).mappings():
                    recent[row["kpi_id"]].append(rows.to_observation(row))
                if annotations_since is not None:
                    query = (
                        sa.select(annotations_t)
                        .where(annotations_t.c.kpi_id.in_(chunk))
                        .where(annotations_t.c.at >= annotations_since)
                        .order_by(annotations_t.c.at, annotations_t.c.id)
                    )
                    for row in connection.execute(query).mappings():
                        notes[row["kpi_id"]].append(rows.to_annotation(row))
                query = (
                    sa.select(acks_t)
                    .join_from(acks_t, state_t, sa.and_(
                        acks_t.c.kpi_id == state_t.c.kpi_id,
                        acks_t.c.episode_since == state_t.c.since,
                    ))
                    .where(acks_t.c.kpi_id.in_(chunk))
                )  # fmt: skip
                for row in connection.execute(query).mappings():
                    acks[row["kpi_id"]] = rows.to_ack(row)
        return {
            kpi: NoticeContext(
                state=states.get(kpi),
                recent=tuple(sorted(recent[kpi], key=lambda o: o.observed_at)),
                annotations=tuple(notes[kpi]),
                ack=acks.get(kpi),
            )
            for kpi in ids
        }

    def _update_message(self, message_id: int, **values: Any) -> None:
        with self._write("update outbox message") as connection:
            result = connection.execute(
                sa.update(outbox_t)
                .where(outbox_t.c.id == message_id)
                # finished (sent, retry later, dead, suppressed): the claim ends with it
                .values(**values, claimed_by=None, claimed_until=None)
            )
            if result.rowcount == 0:
                raise StoreError(f"no outbox message with id {message_id}")


def _claim_candidates(
    ready: sa.ColumnElement[bool],
    limit: int,
    per_target: Mapping[str, int],
    skip: Collection[tuple[str, str]],
) -> sa.Select[Any]:
    """What a claim may take: each conversation's ready prefix, fairly across targets.

    Rows (id, channel, target, kpi_id), round-robin over (channel, target).
    """
    o, e = outbox_t, events_t
    conversation = (o.c.channel, o.c.target, e.c.kpi_id)
    # how many messages up to this one (in its conversation) are not ready: 0 = a ready prefix
    not_ready = sa.func.sum(sa.case((ready, 0), else_=1)).over(
        partition_by=conversation, order_by=o.c.id
    )
    pending = (
        sa.select(o.c.id, o.c.channel, o.c.target, e.c.kpi_id, not_ready.label("not_ready"))
        .join_from(o, e, o.c.event_id == e.c.id)
        .where(o.c.state == DeliveryState.PENDING.value)
    )
    if skip:
        pending = pending.where(sa.tuple_(o.c.channel, o.c.target).not_in(list(skip)))
    p = pending.subquery("pending")
    rank = sa.func.row_number().over(partition_by=(p.c.channel, p.c.target), order_by=p.c.id)
    prefix = (
        sa.select(p.c.id, p.c.channel, p.c.target, p.c.kpi_id, rank.label("rank"))
        .where(p.c.not_ready == 0)
        .subquery("prefix")
    )
    query = sa.select(prefix.c.id, prefix.c.channel, prefix.c.target, prefix.c.kpi_id)
    if per_target:
        cap = sa.case(dict(per_target), value=prefix.c.channel, else_=limit)
        query = query.where(prefix.c.rank <= cap)
    # round-robin: every target's first message, then every second one...; a cut at
    # ``limit`` keeps each conversation a prefix, since ranks grow with ids in a target
    return query.order_by(prefix.c.rank, prefix.c.id).limit(limit)


def _message(row: sa.RowMapping) -> OutboxMessage:
    names = ("key", "kind", "kpi_id", "source", "at", "data")
    event = rows.to_event({name: row[_EVENT_PREFIX + name] for name in names})
    return rows.to_message(row, event)
