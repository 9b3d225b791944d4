"""`lockmaster signatures check` and `lockmaster signatures test` as a user runs them: a real
SQLite results database written by the results database's own code, logs in the logs root."""

from __future__ import annotations

import time
from pathlib import Path

from typer.testing import CliRunner

from lockmaster.cli.main import app
from lockmaster.model.build import KnownFailure
from lockmaster.model.change import ChangeRef
from lockmaster.model.results import BuildRecord
from lockmaster.results.db import ResultsDB

LOGS_URL = "http://logs.example.test/"
SSH = ("version: 1\nbug: https://bugs.launchpad.net/bugs/1253896\n"
       "regex: 'SSHTimeout: Connection to the .* via SSH timed out'\n")


def deployment(tmp_path: Path, builds: list[tuple[str, str, str, str, list[str]]],
               ages_days: dict[str, float] | None = None) -> Path:
    """A config file, a results database holding `builds` (uuid, job, result, log text,
    signatures recorded) and their logs; returns the config's path."""
    config = tmp_path / "lockmaster.yaml"
    config.write_text(f"state-dir: state\nlogs: {{url: '{LOGS_URL}', root: logs}}\n"
                      f"results: {{url: 'sqlite:///results.db'}}\n")
    db = ResultsDB.open(f"sqlite:///{tmp_path / 'results.db'}", migrate=True)
    now = time.time()
    try:
        records = []
        for uuid, job, result, text, known in builds:
            path = f"00/100/1/check/{job}/{uuid}"
            (tmp_path / "logs" / path).mkdir(parents=True)
            (tmp_path / "logs" / path / "job-output.txt").write_text(text)
            ended = now - (ages_days or {}).get(uuid, 0.01) * 86400
            records.append(BuildRecord(
                uuid=uuid, buildset_uuid=f"bs-{uuid}", pipeline="check",
                change=ChangeRef(connection="local", project="org/nova", branch="main",
                                 number=100, patchset=1),
                job=job, result=result, started=ended - 60, ended=ended,
                log_url=f"{LOGS_URL}{path}/",
                known_failures=[KnownFailure(signature=k, bug=f"https://b/{k}") for k in known]))
        db.record_builds(records)
    finally:
        db.close()
    return config


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_signatures_test_reports_hits_too_broad_and_new_classifications(tmp_path: Path) -> None:
    timeout = "2026-12-07 10:00:00.1 | SSHTimeout: Connection to the 10.1.0.4 via SSH timed out.\n"
    config = deployment(tmp_path, [
        ("f1", "tempest", "FAILURE", timeout, []),
        ("f2", "tempest", "FAILURE", timeout, ["older-sig"]),
        ("f3", "tempest", "FAILURE", "AssertionError\n", []),
        ("s1", "tempest", "SUCCESS", "retrying... " + timeout, []),
        ("old", "tempest", "FAILURE", timeout, []),
    ], ages_days={"old": 30})
    signature = tmp_path / "1253896.yaml"
    signature.write_text(SSH)
    code, output = run("signatures", "test", str(signature), "--config", str(config))
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].startswith("signature 1253896 (https://bugs.launchpad.net/bugs/1253896): "
                               "4 build(s) tried of 4 in the window")
    assert "hits on failed builds: 2" in lines
    assert any(f"{LOGS_URL}00/100/1/check/tempest/f1/" in line and "unclassified now" in line
               for line in lines)
    assert any("/f2/" in line and "already classified as older-sig" in line for line in lines)
    assert any(line.startswith("hits on successful builds: 1 — TOO BROAD") for line in lines)
    assert any("/s1/" in line and "(too broad)" in line for line in lines)
    assert "would classify 1 failure(s) that are unclassified now" in lines
    assert not any("/old/" in line for line in lines)  # outside the 14 days
    # A longer window takes the old failure in; --limit keeps the newest only.
    code, output = run("signatures", "test", str(signature), "--since", "60", "--config",
                       str(config))
    assert code == 0 and "hits on failed builds: 3" in output
    code, output = run("signatures", "test", str(signature), "--since", "60", "--limit", "1",
                       "--config", str(config))
    assert "1 build(s) tried of 1 in the window" in output


def test_signatures_test_exit_codes(tmp_path: Path) -> None:
    config = deployment(tmp_path, [("f1", "unit", "FAILURE", "AssertionError\n", [])])
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text(SSH)
    code, output = run("signatures", "test", str(nothing), "--config", str(config))
    assert code == 1
    assert "the signature matched nothing in 1 build(s)" in output
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nbug: https://b/1\nregex: '(('\nscope: x\n")
    code, output = run("signatures", "test", str(bad), "--config", str(config))
    assert code == 2
    assert f"{bad}:3: regex: the regex does not compile" in output
    assert f"{bad}:4: scope: unknown key" in output
    # No results database there: exit 1, saying so.
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    (empty / "lockmaster.yaml").write_text("state-dir: state\n")
    code, output = run("signatures", "test", str(nothing), "--config",
                       str(empty / "lockmaster.yaml"))
    assert code == 1
    assert f"no results database at {empty / 'state' / 'results.db'}" in output
    assert not (empty / "state").exists()  # nothing created by looking


def test_signatures_check(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "1253896.yaml").write_text(SSH)
    code, output = run("signatures", "check", str(good))
    assert code == 0 and "OK — 1 signature(s)" in output
    (good / "2.yaml").write_text("version: 1\nregex: x\n")
    code, output = run("signatures", "check", str(good))
    assert code == 2
    assert "2.yaml:1: bug: missing" in output and "1 of 2 signature file(s) are bad" in output
    code, output = run("signatures", "check", str(tmp_path / "none"))
    assert code == 2 and "no such directory" in output
    # The repository's own signatures pass.
    code, output = run("signatures", "check", str(Path(__file__).parent.parent / "signatures"))
    assert code == 0, output


def test_config_check_fails_with_the_bad_signature(tmp_path: Path) -> None:
    config = tmp_path / "lockmaster.yaml"
    config.write_text("state-dir: state\n")
    code, output = run("config", "check", str(config))
    assert code == 0, output
    (tmp_path / "signatures").mkdir()  # the default directory, beside the file
    (tmp_path / "signatures" / "1253896.yaml").write_text(SSH)
    code, output = run("config", "check", str(config))
    assert code == 0 and "1 known-failure signature(s)" in output
    (tmp_path / "signatures" / "bad.yaml").write_text(SSH.replace("version: 1", "version: 3"))
    code, output = run("config", "check", str(config))
    assert code == 2
    assert "bad.yaml:1: version: version 3 is not one this lockmaster reads" in output
