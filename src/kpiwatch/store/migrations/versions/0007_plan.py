"""kpi_state keeps the judged period's plan

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("kpi_state") as batch:
        batch.add_column(sa.Column("plan", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kpi_state") as batch:
        batch.drop_column("plan")
