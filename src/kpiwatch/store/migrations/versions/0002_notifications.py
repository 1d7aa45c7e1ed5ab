"""notifications: silences, acks, annotations, Slack threads, digest marks

Revision ID: 0002
Revises: 0001
Create Date: 2024-07-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from kpiwatch.store.types import (
    AUTHOR_LENGTH,
    ENUM_LENGTH,
    KPI_ID_LENGTH,
    MATCHER_VALUE_LENGTH,
    SLACK_CHANNEL_LENGTH,
    SLACK_TS_LENGTH,
    Id,
    UtcDateTime,
)

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("matcher", sa.String(ENUM_LENGTH), nullable=False),
        sa.Column("value", sa.String(MATCHER_VALUE_LENGTH), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=False),
        sa.Column("author", sa.String(AUTHOR_LENGTH), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expired_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_silences"),
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"])
    op.create_table(
        "acks",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=False),
        sa.Column("episode_since", UtcDateTime(), nullable=False),
        sa.Column("author", sa.String(AUTHOR_LENGTH), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_acks"),
        sa.UniqueConstraint("kpi_id", "episode_since", name="uq_acks_kpi_id_episode_since"),
    )
    op.create_table(
        "annotations",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(AUTHOR_LENGTH), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_annotations"),
    )
    op.create_index("ix_annotations_kpi_id_at", "annotations", ["kpi_id", "at"])
    op.create_table(
        "slack_threads",
        sa.Column("kpi_id", sa.String(KPI_ID_LENGTH), nullable=False),
        sa.Column("channel", sa.String(SLACK_CHANNEL_LENGTH), nullable=False),
        sa.Column("episode_since", UtcDateTime(), nullable=False),
        sa.Column("ts", sa.String(SLACK_TS_LENGTH), nullable=False),
        sa.PrimaryKeyConstraint("kpi_id", "channel", "episode_since", name="pk_slack_threads"),
    )
    op.create_table(
        "digest_marks",
        sa.Column("kind", sa.String(ENUM_LENGTH), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", name="pk_digest_marks"),
    )


def downgrade() -> None:
    op.drop_table("digest_marks")
    op.drop_table("slack_threads")
    op.drop_index("ix_annotations_kpi_id_at", table_name="annotations")
    op.drop_table("annotations")
    op.drop_table("acks")
    op.drop_index("ix_silences_ends_at", table_name="silences")
    op.drop_table("silences")
