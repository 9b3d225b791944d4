"""Alembic's environment for the results database: the engine comes from the caller
(lockmaster/results/migrate.py), never from an ini file.

Several processes open the database at the same time (the orchestrator, the web server): the
migration runs in one transaction under the same write lock as every write (SQLite: BEGIN
IMMEDIATE; PostgreSQL: the advisory lock), so the second finds the schema at head and does
nothing instead of failing on tables the first has just created."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from lockmaster.results.db import _LOCK_KEY, _WRITE
from lockmaster.results.schema import Base

engine = context.config.attributes["engine"]
with engine.connect().execution_options(**{_WRITE: True}) as connection, connection.begin():
    if engine.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    context.configure(connection=connection, target_metadata=Base.metadata,
                      # SQLite cannot ALTER most things: batch mode copies the table.
                      render_as_batch=engine.dialect.name == "sqlite")
    with context.begin_transaction():  # (inside ours: a no-op)
        context.run_migrations()
