"""Upkeep of the tables every request rewrites: the service vacuums and analyzes ``jobs`` and
``work_units`` itself when the database server has not.

Each certify request inserts a job and its unit and updates both as they run and finish. None
of those updates is HOT (the state is indexed: the partial indexes of the unfinished jobs, the
units' state index), so every request served leaves dead row versions and dead index entries
that the next submissions' quota count and cover, the claims and the successes read through
until a ``VACUUM`` removes them; and their plans are chosen on statistics only ``ANALYZE``
refreshes (on statistics of a table taken when it was empty, the unclaimed success read all of
a model's 1,170 jobs to find one, measured with ``auto_explain``). Measured on PostgreSQL 15,
one K-NN model, autovacuum off (``/tmp`` script, not committed; 4 s ``wrk`` phases, a
sequential one after each of three 32-client ones): PostgreSQL's CPU per sequential certify
request grew 0.96 -> 2.41 -> 3.79 -> 4.96 ms and the p50 9.4 -> 18.6 ms; with this upkeep, in
the same hour, 0.87 -> 1.18 -> 1.11 -> 1.19 ms and 9.9 -> 10.9 ms.

PostgreSQL's autovacuum does this where it runs, on its own schedule (by default a table is
vacuumed once a fifth of it is dead, each database visited once a minute); where it is off, as
on the machine the tests run on, nothing did. So each API process runs :func:`upkeep` every
``RAB_UPKEEP_INTERVAL_S`` (``app.main``; one statistics query when nothing is due): a table
with at least ``RAB_UPKEEP_ROWS`` plus :data:`UPKEEP_FRACTION` of its live rows dead is
vacuumed (and analyzed), one with that many rows changed since its last analysis is analyzed.
Both skip a table another process is vacuuming or analyzing (``SKIP_LOCKED``: autovacuum,
another API process), take no lock that blocks reads or writes, and run on an autocommit
connection (``VACUUM`` cannot run in a transaction). A table the service's role does not own
(nor a role it is a member of) cannot be vacuumed or analyzed by it: PostgreSQL would skip it
with a warning in its own log and the statistics would stay as they were, so the upkeep would
try again at every interval; it leaves such a table to autovacuum and says so once. SQLite
needs none of it.
"""

from __future__ import annotations

import logging
from typing import Literal

from sqlalchemy import bindparam, text

from app.db import Database
from app.orm import Job, WorkUnit

__all__ = ["UPKEEP_FRACTION", "UPKEPT_TABLES", "due", "upkeep"]

log = logging.getLogger(__name__)

#: The tables every request rewrites.
UPKEPT_TABLES = (Job.__tablename__, WorkUnit.__tablename__)
#: The share of a table's live rows that may be dead (or changed since its last analysis)
#: beyond ``RAB_UPKEEP_ROWS`` before it is vacuumed (analyzed): a large table is not read
#: through after every few thousand requests.
UPKEEP_FRACTION = 0.05

Command = Literal["VACUUM (ANALYZE, SKIP_LOCKED)", "ANALYZE (SKIP_LOCKED)"]

# the tables as the service's own statements name them (its search path)
_STATISTICS = text(
    "SELECT s.relname, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze, "
    "pg_has_role(c.relowner, 'USAGE') AS owned "
    "FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid "
    "WHERE s.relid IN (SELECT to_regclass(name) FROM unnest(CAST(:tables AS text[])) AS name)"
).bindparams(bindparam("tables"))
#: The tables this process found it does not own (said once: see the module's docstring).
_NOT_OWNED: set[str] = set()


def due(live: int, dead: int, changed: int, rows: int) -> Command | None:
    """What a table with ``live`` rows, ``dead`` dead versions and ``changed`` rows changed
    since its last analysis needs, ``rows`` being ``RAB_UPKEEP_ROWS``."""
    threshold = rows + UPKEEP_FRACTION * live
    if dead >= threshold:
        return "VACUUM (ANALYZE, SKIP_LOCKED)"
    if changed >= threshold:
        return "ANALYZE (SKIP_LOCKED)"
    return None


def upkeep(db: Database, rows: int) -> dict[str, Command]:
    """Vacuum or analyze the :data:`UPKEPT_TABLES` that need it (see the module's docstring);
    the commands run, by table. ``rows`` = 0, or SQLite: nothing."""
    if rows == 0 or db.engine.dialect.name != "postgresql":
        return {}
    done: dict[str, Command] = {}
    with db.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        found = connection.execute(_STATISTICS, {"tables": list(UPKEPT_TABLES)}).all()
        for table, live, dead, changed, owned in found:
            if not owned:
                if table not in _NOT_OWNED:
                    _NOT_OWNED.add(table)
                    log.warning("upkeep: this role does not own %s, so it cannot vacuum or "
                                "analyze it; left to autovacuum", table)
                continue
            command = due(live, dead, changed, rows)
            if command is not None:
                connection.exec_driver_sql(f'{command} "{table}"')
                log.info("upkeep: %s %s (%d live rows, %d dead, %d changed since analyzed)",
                         command, table, live, dead, changed)
                done[table] = command
    return done
