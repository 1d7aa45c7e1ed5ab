"""slack threads remember their parent message, to edit it as the episode goes on

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("slack_threads") as batch:
        batch.add_column(sa.Column("parent", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("slack_threads") as batch:
        batch.drop_column("parent")
