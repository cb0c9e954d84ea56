"""Alembic revisions of the SQL schema (shipped in the package, so an installed service can
migrate its database without the source tree)."""
