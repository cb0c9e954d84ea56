"""Drop the full index on the jobs' model

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:30:00

Every statement that looks jobs up by their model asks for its unfinished certify jobs, which
``ix_jobs_unfinished_model`` (revision 0009) holds. ``ix_jobs_model_id`` served none of them,
yet took an entry for every version of every job a model ever had (none of a job's updates is
HOT), and on statistics taken when the table was empty the planner chose it for the unclaimed
success (``workers.successes``): 1,170 of a model's jobs read to find one, 0.27 -> 0.93 ms per
request as they accumulated, measured with ``auto_explain``.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_jobs_model_id", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_model_id", "jobs", ["model_id"], unique=False)
