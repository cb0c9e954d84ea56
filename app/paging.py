"""Keyset pagination of one key's rows, the one rule of every ``GET /v1/<collection>``.

Rows are ordered by ``(created_at, id)`` (oldest or newest first); a page's ``next_cursor`` is
the id of its last row, opaque to clients, and the next page starts strictly after that row.
A cursor that is not an id of one of the caller's rows is a 422, whatever it contains (a NUL
byte, another key's id, a number), so it is never sent to the database as anything but a
well-formed id of the caller's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

from fastapi import Query
from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session

from app.orm import Dataset, Job, Model
from app.problems import bad_input

ID_PATTERN = r"^[0-9a-f]{32}$"  # app.orm.new_id
Cursor = Annotated[
    str | None,
    Query(pattern=ID_PATTERN, description="next_cursor of the previous page (opaque)"),
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page.")]
RowId = Annotated[str | None, Query(pattern=ID_PATTERN)]  # an id filter (e.g. dataset_id)

Row = TypeVar("Row", Dataset, Job, Model)


def keyset_page(
    db: Session, row_type: type[Row], owner: str, query: Select[Row],
    after: str | None, limit: int, *, newest_first: bool,
) -> tuple[Sequence[Row], str | None]:
    """One page of ``query`` (already restricted to ``owner``'s rows and filtered): at most
    ``limit`` rows after the cursor row ``after``, and the cursor of the next page (None on the
    last page)."""
    key = tuple_(row_type.created_at, row_type.id)
    if after is not None:
        anchor = db.get(row_type, after)
        if anchor is None or anchor.owner_id != owner:
            raise bad_input(f"unknown cursor {after!r}")
        bound = (anchor.created_at, anchor.id)
        query = query.where(key < bound if newest_first else key > bound)
    order = (row_type.created_at.desc(), row_type.id.desc()) if newest_first else (
        row_type.created_at, row_type.id)
    rows = db.scalars(query.order_by(*order).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1].id if more else None
