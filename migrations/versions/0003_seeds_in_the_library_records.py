"""jobs.seed dropped: every seed lives in the library's records (params / attack)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 11:00:00

A job now records two seeds where the library keeps two: the attack's (drawing the poisoned
rows) in ``attack.seed`` and the ensemble's (members' initialisation and noise) in
``params.seed``, both drawn fresh when a request leaves them out. Rows stored before this
revision used the one ``jobs.seed`` for both and the API's old attack names (``pattern``,
``poison_fraction``): they are rewritten into the library's names with that seed, in the jobs
and in their models, so that a worker rebuilds exactly what ran.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ATTACK_NAMES = {"pattern": "kind", "poison_fraction": "rate"}


def _attack(attack: dict[str, Any] | None, seed: int) -> dict[str, Any] | None:
    if attack is None:
        return None
    out = {_ATTACK_NAMES.get(key, key): value for key, value in attack.items()}
    out.setdefault("seed", seed)
    if out.get("positions") is None:
        out.pop("positions", None)
    return out


def _params(method: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    out = dict(params)
    if method == "ensemble":
        out.setdefault("seed", seed)
    return out


def upgrade() -> None:
    bind = op.get_bind()
    jobs = sa.table(
        "jobs", sa.column("id", sa.String), sa.column("method", sa.String),
        sa.column("params", sa.JSON), sa.column("attack", sa.JSON),
        sa.column("seed", sa.BigInteger),
    )
    models = sa.table(
        "models", sa.column("job_id", sa.String), sa.column("params", sa.JSON),
        sa.column("attack", sa.JSON),
    )
    for row in bind.execute(sa.select(jobs)).all():
        params, attack = _params(row.method, row.params, row.seed), _attack(row.attack, row.seed)
        bind.execute(sa.update(jobs).where(jobs.c.id == row.id)
                     .values(params=params, attack=attack))
        bind.execute(sa.update(models).where(models.c.job_id == row.id)
                     .values(params=params, attack=attack))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("seed")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("seed", sa.BigInteger(), nullable=False, server_default="0")
        )
