"""api_keys.operator: keys that may read /metrics and the detailed readiness

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:00:00

Every existing key becomes an ordinary (non-operator) key; operators are made with
``rab keys create --operator``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("operator", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("operator")
