"""work_units: a job's units of work, each owned by a lease

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:40:00

A job is owned by leases, not by broker messages: every unit of its work (the K-NN run, a
chunk of ensemble members, the vote, a certification) has a row whose lease the worker running
it renews; a reaper re-queues the units of expired leases and re-sends pending units whose
message may be lost. Attempts are counted per unit. Jobs of earlier revisions have no units:
they finish (or not) as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_units",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_work_units_job_id_jobs"),
        sa.PrimaryKeyConstraint("job_id", "name", name="pk_work_units"),
    )
    op.create_index("ix_work_units_state", "work_units", ["state"])


def downgrade() -> None:
    op.drop_index("ix_work_units_state", table_name="work_units")
    op.drop_table("work_units")
