"""Alembic's environment for the results database: the engine comes from the caller
(lockmaster/results/migrate.py), never from an ini file."""

from __future__ import annotations

from alembic import context

from lockmaster.results.schema import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      # SQLite cannot ALTER most things: batch mode copies the table.
                      render_as_batch=engine.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
