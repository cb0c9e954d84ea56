"""certificates.poison_count / poison_modifications / count_prediction: poison-count certificates

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 15:00:00

A certificate may carry a poison-count certificate beside its radius (``rab.partition``): the
number of training points inserted or deleted (``poison_count``) or changed
(``poison_modifications``) that provably leave ``count_prediction`` unchanged. Partition jobs
and K-NN jobs (the plain K-NN's count) fill them in; rows from before this revision, and
ensembles' rows, have none (NULL). Partition base models are ``model_members`` rows like
ensemble members (index = partition, the subset's hash in ``training``): no new table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("poison_count", "poison_modifications", "count_prediction")


def upgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
