"""The tables of the state store (SQLAlchemy Core).

This is the target the Alembic migrations must reproduce exactly; a contract
test compares a migrated database with this metadata.
"""

from __future__ import annotations

import sqlalchemy as sa

from kpiwatch.store.types import (
    AUTHOR_LENGTH,
    CHANNEL_LENGTH,
    ENUM_LENGTH,
    EVENT_KEY_LENGTH,
    KPI_ID_LENGTH,
    LEASE_HOLDER_LENGTH,
    LEASE_NAME_LENGTH,
    MATCHER_VALUE_LENGTH,
    SLACK_CHANNEL_LENGTH,
    SLACK_TS_LENGTH,
    TARGET_LENGTH,
    Id,
    UtcDateTime,
)

# Deterministic constraint names: batch migrations on SQLite and later
# ALTERs on every backend need to name what they change.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

observations = sa.Table(
    "observations",
    metadata,
    # keyed by (kpi, time) so that re-reading a series stores each point once
    sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), primary_key=True),
    sa.Column("observed_at", UtcDateTime(), primary_key=True),
    sa.Column("value", sa.Double(), nullable=False),
)

kpi_state = sa.Table(
    "kpi_state",
    metadata,
    sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), primary_key=True),
    sa.Column("status", sa.String(ENUM_LENGTH), nullable=False),
    sa.Column("since", UtcDateTime(), nullable=False),
    sa.Column("review", sa.String(ENUM_LENGTH), nullable=False),
    sa.Column("pending_status", sa.String(ENUM_LENGTH), nullable=True),
    sa.Column("pending_count", sa.Integer(), nullable=False),
    sa.Column("value", sa.Double(), nullable=True),
    sa.Column("observed_at", UtcDateTime(), nullable=True),
    sa.Column("reasons", sa.JSON(), nullable=False),
    sa.Column("last_evaluated", UtcDateTime(), nullable=True),
    sa.Column("escalated_since", UtcDateTime(), nullable=True),
    sa.Column("green_since", UtcDateTime(), nullable=True),
    sa.Column("green_count", sa.Integer(), nullable=False),
    sa.Column("last_review", UtcDateTime(), nullable=True),
    sa.Column("next_review", UtcDateTime(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("reminders_sent", sa.Integer(), nullable=False, server_default="0"),
    # the last green/yellow/red, carried through a blind spell (SPEC §5a)
    sa.Column("verdict", sa.String(ENUM_LENGTH), nullable=True),
    # since, reason, scope, source, told_at
    sa.Column("data_problem", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("plan", sa.Double(), nullable=True),  # the judged period's plan (SPEC §2a)
)

status_changes = sa.Table(
    "status_changes",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("from_status", sa.String(ENUM_LENGTH), nullable=True),
    sa.Column("to_status", sa.String(ENUM_LENGTH), nullable=False),
    sa.Column("value", sa.Double(), nullable=True),
    sa.Column("reasons", sa.JSON(), nullable=False),
    sa.Index(None, "kpi_id", "at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    # the idempotency key: a retried evaluation or a second replica writes it once
    sa.Column("key", sa.String(EVENT_KEY_LENGTH), nullable=False),
    sa.Column("kind", sa.String(ENUM_LENGTH), nullable=False),
    sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=True),
    sa.Column("source", sa.String(KPI_ID_LENGTH), nullable=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("data", sa.JSON(), nullable=False),
    sa.UniqueConstraint("key"),
    sa.Index(None, "kpi_id", "at"),
    sa.Index(None, "at"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "event_id", Id, sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("channel", sa.String(CHANNEL_LENGTH), nullable=False),
    sa.Column("target", sa.String(TARGET_LENGTH), nullable=False),
    sa.Column("state", sa.String(ENUM_LENGTH), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("sent_at", UtcDateTime(), nullable=True),
    # a replica delivering this row; others leave it alone until claimed_until passes
    sa.Column("claimed_by", sa.String(LEASE_HOLDER_LENGTH), nullable=True),
    sa.Column("claimed_until", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("event_id", "channel", "target"),
    sa.Index(None, "state", "next_attempt_at"),  # the dispatcher's "what is due" query
)

source_health = sa.Table(
    "source_health",
    metadata,
    sa.Column("source", sa.String(KPI_ID_LENGTH), primary_key=True),
    sa.Column("up", sa.Boolean(), nullable=False),
    sa.Column("since", UtcDateTime(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_checked", UtcDateTime(), nullable=False),
)

# -- notifications: silences, acks, annotations, Slack threads, digest marks ---

silences = sa.Table(
    "silences",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("matcher", sa.String(ENUM_LENGTH), nullable=False),
    sa.Column("value", sa.String(MATCHER_VALUE_LENGTH), nullable=False),
    sa.Column("starts_at", UtcDateTime(), nullable=False),
    sa.Column("ends_at", UtcDateTime(), nullable=False),
    sa.Column("author", sa.String(AUTHOR_LENGTH), nullable=False),
    sa.Column("comment", sa.Text(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expired_at", UtcDateTime(), nullable=True),
    sa.Index(None, "ends_at"),  # "active now" only reads silences that have not ended
)

acks = sa.Table(
    "acks",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=False),
    sa.Column("episode_since", UtcDateTime(), nullable=False),
    sa.Column("author", sa.String(AUTHOR_LENGTH), nullable=False),
    sa.Column("comment", sa.Text(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("kpi_id", "episode_since"),  # one ack per episode; acking again replaces
)

# not "annotations": that name is taken by ``from __future__ import annotations``
kpi_annotations = sa.Table(
    "annotations",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("author", sa.String(AUTHOR_LENGTH), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index(None, "kpi_id", "at"),
)

slack_threads = sa.Table(
    "slack_threads",
    metadata,
    # one thread per KPI episode and channel: follow-ups reply in it
    sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), primary_key=True),
    sa.Column("channel", sa.String(SLACK_CHANNEL_LENGTH), primary_key=True),
    sa.Column("episode_since", UtcDateTime(), primary_key=True),
    sa.Column("ts", sa.String(SLACK_TS_LENGTH), nullable=False),
    # the parent message as posted (channel ID, text, blocks): edited as its episode goes on
    sa.Column("parent", sa.JSON(), nullable=True),
)

digest_marks = sa.Table(
    "digest_marks",
    metadata,
    sa.Column("kind", sa.String(ENUM_LENGTH), primary_key=True),
    sa.Column("sent_at", UtcDateTime(), nullable=False),
)

# -- replicas: who does which piece of work -----------------------------------

leases = sa.Table(
    "leases",
    metadata,
    # "kpi:<id>" for an evaluation, "job:<name>" for reviews, digests and the like
    sa.Column("name", sa.String(LEASE_NAME_LENGTH), primary_key=True),
    sa.Column("holder", sa.String(LEASE_HOLDER_LENGTH), nullable=True),
    # database time: replicas' clocks may differ, the database has one
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("claimed_slot", UtcDateTime(), nullable=True),  # the due time being worked on
    sa.Column("done_slot", UtcDateTime(), nullable=True),  # the newest due time finished
)
