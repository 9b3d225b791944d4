"""`lockmaster results migrate|check|builds` on a fresh SQLite file and a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ChangeRef
from lockmaster.model.results import BuildRecord
from lockmaster.results.connect import open_results
from tests.fixtures.postgres import PostgresServer, fresh_database, postgresql_server  # noqa: F401

LOCKMASTER = str(Path(sys.executable).parent / "lockmaster")


def results(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LOCKMASTER, "results", *args], capture_output=True, text=True,
                          timeout=120)


def test_check_migrate_check_builds_on_sqlite(tmp_path: Path) -> None:
    config = tmp_path / "lockmaster.yaml"
    config.write_text(yaml.safe_dump({"state-dir": "state"}))
    before = results("check", "-c", str(config))
    assert before.returncode == 1
    assert "run `lockmaster results migrate`" in before.stderr
    migrated = results("migrate", "-c", str(config))
    assert migrated.returncode == 0, migrated.stderr
    assert "at revision 0001" in migrated.stdout
    after = results("check", "-c", str(config))
    assert after.returncode == 0 and "ok" in after.stdout
    cfg = LockmasterConfig.model_validate({"state-dir": str(tmp_path / "state")})
    db = open_results(cfg)
    change = ChangeRef(connection="local", project="org/app", branch="main", number=5,
                       patchset=2)
    db.record_builds([BuildRecord(uuid="b1", buildset_uuid="s", pipeline="check",
                                  change=change, job="unit", result="FAILURE", started=1e9,
                                  ended=1e9 + 42, log_url="http://logs/b1/")])
    db.close()
    listed = results("builds", "-c", str(config), "--result", "FAILURE")
    assert listed.returncode == 0, listed.stderr
    assert "org/app 5,2  unit  FAILURE in 42s  http://logs/b1/" in listed.stdout
    bad = results("builds", "-c", str(config), "--result", "PURPLE")
    assert bad.returncode == 2 and "result 'PURPLE' is not one of" in bad.stderr


def test_migrate_on_postgresql_with_a_password_file(
        tmp_path: Path, postgresql_server: PostgresServer) -> None:  # noqa: F811
    server = postgresql_server
    database = fresh_database(server)
    (tmp_path / "pw").write_text(server.password)
    config = tmp_path / "lockmaster.yaml"
    config.write_text(yaml.safe_dump({"results": {
        "url": server.url(database, with_password=False), "password-file": "pw"}}))
    migrated = results("migrate", "-c", str(config))
    assert migrated.returncode == 0, migrated.stderr
    assert server.password not in migrated.stdout + migrated.stderr
    assert results("check", "-c", str(config)).returncode == 0
    (tmp_path / "pw").write_text("wrong")
    refused = results("check", "-c", str(config))
    assert refused.returncode == 1 and "cannot be read" in refused.stderr
    assert "wrong" not in refused.stderr.replace("password authentication failed", "")


def test_the_compose_setup_script_makes_the_role_and_database_once(
        tmp_path: Path, postgresql_server: PostgresServer) -> None:  # noqa: F811
    """deploy/results/setup-postgres.sh (docker-compose.yml's results-db-setup) against a real
    PostgreSQL: the role and database, usable with the password file; run twice, the same."""
    import os

    from lockmaster.results import ResultsDB
    from tests.fixtures.postgres import postgres_bin

    server = postgresql_server
    (tmp_path / "password").write_text("results-role-password\n")
    env = {**os.environ, "PGHOST": server.host, "PGPORT": str(server.port),
           "PGUSER": server.user, "PGPASSWORD": server.password,
           "RESULTS_PASSWORD_FILE": str(tmp_path / "password"),
           "PATH": f"{postgres_bin()}:{os.environ['PATH']}"}
    script = Path(__file__).resolve().parent.parent / "deploy" / "results" / "setup-postgres.sh"
    for _ in range(2):
        ran = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True,
                             timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert "results-role-password" not in ran.stdout + ran.stderr
    db = ResultsDB.open(f"postgresql+psycopg://lockmaster_results:results-role-password@"
                        f"{server.host}:{server.port}/lockmaster_results")
    db.close()
    (tmp_path / "password").write_text("")
    empty = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True,
                           timeout=60)
    assert empty.returncode == 1 and "missing or empty" in empty.stderr
