"""jobs.inputs_inline: a certify job's small inputs kept in its row

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 18:30:00

The npz of a certify job's inputs, when at most ``app.orm.INLINE_INPUTS_BYTES``, is kept in
the job's row (committed with it) instead of as an object in the artefact store: no object
row, no staged and synced file per online request, and no stored object whose existence
another key could probe. ``inputs_sha256`` names the bytes either way; rows from before this
revision, and larger inputs, have NULL here and their object in the store.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inputs_inline", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("inputs_inline")
