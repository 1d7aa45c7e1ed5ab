"""initial schema: observations, state, history, events, outbox, source health

Revision ID: 0001
Revises:
Create Date: 2024-06-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from kpiwatch.store.types import (
    CHANNEL_LENGTH,
    ENUM_LENGTH,
    EVENT_KEY_LENGTH,
    KPI_ID_LENGTH,
    TARGET_LENGTH,
    Id,
    UtcDateTime,
)

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "observations",
        sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=False),
        sa.Column("observed_at", UtcDateTime(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("kpi_id", "observed_at", name="pk_observations"),
    )
    op.create_table(
        "kpi_state",
        sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=False),
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
        sa.PrimaryKeyConstraint("kpi_id", name="pk_kpi_state"),
    )
    op.create_table(
        "status_changes",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("from_status", sa.String(ENUM_LENGTH), nullable=True),
        sa.Column("to_status", sa.String(ENUM_LENGTH), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_status_changes"),
    )
    op.create_index("ix_status_changes_kpi_id_at", "status_changes", ["kpi_id", "at"])
    op.create_table(
        "events",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(EVENT_KEY_LENGTH), nullable=False),
        sa.Column("kind", sa.String(ENUM_LENGTH), nullable=False),
        sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=True),
        sa.Column("source", sa.String(KPI_ID_LENGTH), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("key", name="uq_events_key"),
    )
    op.create_index("ix_events_kpi_id_at", "events", ["kpi_id", "at"])
    op.create_index("ix_events_at", "events", ["at"])
    op.create_table(
        "outbox",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("event_id", Id, nullable=False),
        sa.Column("channel", sa.String(CHANNEL_LENGTH), nullable=False),
        sa.Column("target", sa.String(TARGET_LENGTH), nullable=False),
        sa.Column("state", sa.String(ENUM_LENGTH), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_outbox_event_id_events", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint(
            "event_id", "channel", "target", name="uq_outbox_event_id_channel_target"
        ),
    )
    op.create_index("ix_outbox_state_next_attempt_at", "outbox", ["state", "next_attempt_at"])
    op.create_table(
        "source_health",
        sa.Column("source", sa.String(KPI_ID_LENGTH), nullable=False),
        sa.Column("up", sa.Boolean(), nullable=False),
        sa.Column("since", UtcDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_checked", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_source_health"),
    )


def downgrade() -> None:
    op.drop_table("source_health")
    op.drop_index("ix_outbox_state_next_attempt_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_events_at", table_name="events")
    op.drop_index("ix_events_kpi_id_at", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_status_changes_kpi_id_at", table_name="status_changes")
    op.drop_table("status_changes")
    op.drop_table("kpi_state")
    op.drop_table("observations")
