"""replicas: work leases and outbox claims

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from kpiwatch.store.types import LEASE_HOLDER_LENGTH, LEASE_NAME_LENGTH, UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(LEASE_NAME_LENGTH), nullable=False),
        sa.Column("holder", sa.String(LEASE_HOLDER_LENGTH), nullable=True),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("claimed_slot", UtcDateTime(), nullable=True),
        sa.Column("done_slot", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(LEASE_HOLDER_LENGTH), nullable=True))
        batch.add_column(sa.Column("claimed_until", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
    op.drop_table("leases")
