"""kpi_state keeps the last verdict and the data problem of a blind KPI

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("kpi_state") as batch:
        batch.add_column(sa.Column("verdict", sa.String(32), nullable=True))
        batch.add_column(sa.Column("data_problem", sa.JSON(none_as_null=True), nullable=True))
    # a state stored before: its status is its verdict, unless it is unknown (no verdict)
    op.execute(
        "UPDATE kpi_state SET verdict = status WHERE status IN ('green', 'yellow', 'red')"
    )


def downgrade() -> None:
    with op.batch_alter_table("kpi_state") as batch:
        batch.drop_column("data_problem")
        batch.drop_column("verdict")
