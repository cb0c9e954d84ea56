"""worker_presence: live workers and the queues they consume

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:45:00

Each worker process renews its row every few seconds, so readiness, ``GET /v1/queues`` and the
metrics can tell a queue that waits for a busy worker from one that no worker consumes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_presence",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_worker_presence"),
    )


def downgrade() -> None:
    op.drop_table("worker_presence")
