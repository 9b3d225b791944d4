"""From lockmaster.yaml's `results:` to an open ResultsDB: the default SQLite file under the
state directory, relative SQLite paths against the config file, and the PostgreSQL password
read from its file (it never appears in the config, a log line or a workflow history)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url

from lockmaster.config.models import LockmasterConfig
from lockmaster.results.db import ResultsDB, ResultsDBError


def results_url(config: LockmasterConfig) -> URL:
    settings = config.results
    if settings.url is None:
        return make_url(f"sqlite:///{config.state_path / 'results.db'}")
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not Path(url.database).is_absolute():
            url = url.set(database=str(config.resolve(url.database)))
        return url
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3, the driver installed
    if settings.password_file is not None:
        path = config.resolve(settings.password_file)
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise ResultsDBError(
                f"results password-file {path}: cannot read it ({exc.strerror}); create it "
                "with the database password, readable by this user") from None
        url = url.set(password=password)
    return url


def open_results(config: LockmasterConfig, migrate: bool = True) -> ResultsDB:
    """The configured results database, migrated to the newest schema (ResultsDBError if it
    cannot be reached, with the URL shown without its password)."""
    if not config.results.enabled:
        raise ResultsDBError("the results database is disabled (results.enabled: false)")
    return ResultsDB.open(results_url(config), migrate=migrate,
                          pool_size=config.results.pool_size)
