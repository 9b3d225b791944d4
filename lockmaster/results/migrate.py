"""Alembic, driven from code: the migrations ship inside the package (migrations/), and
`ResultsDB.open` upgrades to head; `lockmaster results migrate` / `check` call these too."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic's `context` is one per process: two threads migrating at once (`lockmaster run` opens
# the database from the web server and the orchestrator) would mix their environments. Across
# processes the database's own lock serializes them (migrations/env.py).
_ALEMBIC = threading.Lock()


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    with _ALEMBIC:
        command.upgrade(alembic_config(engine), revision)


def head() -> str:
    script = ScriptDirectory.from_config(alembic_config_stub())
    current = script.get_current_head()
    assert current is not None
    return current


def alembic_config_stub() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def differences(engine: Engine) -> list[str]:
    """What the database's schema lacks or has beyond the models (empty: they agree)."""
    from alembic.autogenerate import compare_metadata

    from lockmaster.results.schema import Base

    script = ScriptDirectory.from_config(alembic_config_stub())
    found: list[str] = []
    with engine.connect() as conn, EnvironmentContext(alembic_config_stub(), script):
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        for diff in compare_metadata(context, Base.metadata):
            found.append(str(diff))
    return found
