"""model_members.training: how each ensemble member was trained

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 16:20:00

Adds the training record of each member (trainer, device, the members trained together in one
stacked batch, seeds, torch version): retraining model k bit for bit on the same hardware needs
the same batch. Rows from before this revision have none (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("training", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_members", schema=None) as batch_op:
        batch_op.drop_column("training")
