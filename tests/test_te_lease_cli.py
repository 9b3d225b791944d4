"""`lockmaster te lease|renew|release|list` as a person types them: where the description and
the private key go (the state directory or a path the user names, mode 0600, never the current
directory), and that they are gone once the lease is over. The broker runs on the dev server
with `RecordingHost` standing in for the TE host (as in test_te_broker_workflow.py)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client
from typer.testing import CliRunner, Result

from lockmaster.cli import te_cmd
from lockmaster.config.models import LockmasterConfig
from tests.test_te_broker_workflow import RecordingHost, broker, te_config


def write_config(tmp_path: Path, config: LockmasterConfig, address: str) -> Path:
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["address"] = address
    path = tmp_path / "lockmaster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(te_cmd.app, [*args, "--config", str(config_file)])


async def te(config_file: Path, *args: str) -> Result:
    return await asyncio.to_thread(run, config_file, *args)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the person runs the commands from: nothing of a lease may land here."""
    where = tmp_path / "cwd"
    where.mkdir()
    monkeypatch.chdir(where)
    return where


async def test_lease_writes_under_the_state_dir_and_release_removes(
        client: Client, tmp_path: Path, cwd: Path) -> None:
    config = te_config(tmp_path, per_host=1)
    config_file = write_config(tmp_path, config, client.service_client.config.target_host)
    async with broker(client, config, RecordingHost()):
        leased = await te(config_file, "lease", "--id", "mine", "--ttl", "60", "--json")
        assert leased.exit_code == 0, leased.output
        desc = json.loads(leased.stdout)
        directory = config.state_path / "te-leases" / "mine"
        datafile, key = directory / "te.json", directory / "te.json.key"
        assert json.loads(datafile.read_text()) == desc
        assert key.read_text() == desc["ssh-key"] and "PRIVATE KEY" in desc["ssh-key"]
        assert desc["ssh-key-file"] == str(key)
        assert (mode(datafile), mode(key), mode(directory)) == (0o600, 0o600, 0o700)
        assert str(datafile) in leased.stderr and str(key) in leased.stderr
        assert list(cwd.iterdir()) == []
        # TripleO's keys are in the file the holder gets.
        assert desc["remote-operations"] == "1" and desc["remote-host"] == "tehost0"
        assert desc["baremetal-network"]["seed"]["ip"] == desc["seed-ip"]
        assert desc["nodes"][0]["pm_password"] == desc["ssh-key"]

        # A refused release (a mistyped generation) keeps the lease, and so its files.
        wrong = await te(config_file, "release", "mine", "--generation", "7")
        assert "stale generation 7" in one_line_error(wrong)
        assert datafile.exists() and key.exists()

        generation = str(desc["lease"]["generation"])
        released = await te(config_file, "release", "mine", "--generation", generation)
        assert released.exit_code == 0, released.output
        assert f"removed {datafile}, {key}" in released.stdout
        assert not directory.exists()
        assert list((config.state_path / "te-leases").iterdir()) == []
        assert list(cwd.iterdir()) == []


async def test_named_paths_and_removal_when_the_lease_ends_otherwise(
        client: Client, tmp_path: Path, cwd: Path) -> None:
    config = te_config(tmp_path, per_host=2)
    config_file = write_config(tmp_path, config, client.service_client.config.target_host)
    async with broker(client, config, RecordingHost()) as ops:
        # A named description (in a directory lockmaster makes) and a named key.
        datafile, key = tmp_path / "mine" / "env.json", tmp_path / "keys" / "te_key"
        named = await te(config_file, "lease", "--id", "named", "--datafile", str(datafile),
                         "--key-file", str(key))
        assert named.exit_code == 0, named.output
        desc = json.loads(datafile.read_text())
        assert desc["ssh-key-file"] == str(key) and key.read_text() == desc["ssh-key"]
        assert mode(datafile) == 0o600 and mode(key) == 0o600
        assert f"description in {datafile}, key in {key}" in named.stdout
        # Only a named description: the key goes beside it.
        beside = cwd / "te.json"
        relative = await te(config_file, "lease", "--id", "beside", "--datafile", "te.json")
        assert relative.exit_code == 0, relative.output
        assert sorted(p.name for p in cwd.iterdir()) == ["te.json", "te.json.key"]
        assert json.loads(beside.read_text())["ssh-key-file"] == str(cwd / "te.json.key")

        # An operator ends the first lease: the holder's next renew finds out and cleans up.
        assert (await ops.force_release(desc["te"])).ok
        renewed = await te(config_file, "renew", "named", "--generation",
                           str(desc["lease"]["generation"]))
        line = one_line_error(renewed)
        assert "force" in line and f"removed {datafile}, {key}" in line
        assert not datafile.exists() and not key.exists()
        assert not (config.state_path / "te-leases" / "named").exists()

        # The second ends too; `te list` notices and removes its files.
        other = json.loads(beside.read_text())
        assert (await ops.force_release(other["te"])).ok
        listed = await te(config_file, "list")
        assert listed.exit_code == 0, listed.output
        assert "lease beside has ended: removed" in listed.stderr
        assert list(cwd.iterdir()) == []
        assert list((config.state_path / "te-leases").iterdir()) == []


@pytest.mark.parametrize("option", ["--datafile", "--key-file"])
def test_bad_paths_exit_2_before_anything_is_leased(tmp_path: Path, cwd: Path,
                                                     option: str) -> None:
    """Nothing answers at this Temporal address: a command that got as far as leasing would
    exit 1 ("cannot reach Temporal"); a bad path is refused first, with exit 2."""
    config = te_config(tmp_path, per_host=1)
    config_file = write_config(tmp_path, config, "127.0.0.1:1")
    existing = tmp_path / "existing.json"
    existing.write_text("mine\n")
    existing.chmod(0o644)
    cases = {
        str(tmp_path): "is a directory",
        str(existing / "te.json"): "is not a directory",
        str(existing): "already exists",
    }
    for path, message in cases.items():
        line = one_line_error(run(config_file, "lease", option, path))
        assert message in line and path in line, line
    assert existing.read_text() == "mine\n" and mode(existing) == 0o644
    same = one_line_error(run(config_file, "lease", "--datafile", "a.json", "--key-file",
                              "a.json"))
    assert "both name" in same
    bad_id = one_line_error(run(config_file, "lease", "--id", "../escape"))
    assert "--id '../escape'" in bad_id
    assert not (config.state_path / "te-leases").exists()
    assert list(cwd.iterdir()) == []
    # And the same paths would have gone on to Temporal had they been fine:
    fine = run(config_file, "lease", option, str(tmp_path / "new.json"))
    assert fine.exit_code == 1 and "cannot reach Temporal" in fine.stderr, fine.output


async def test_drain_and_force_release_say_who_and_why_in_te_list(
        client: Client, tmp_path: Path, cwd: Path) -> None:
    """Issue 15: `te list` showed a host draining and a TE force-released, not by whom or
    why."""
    config = te_config(tmp_path, per_host=2)
    config_file = write_config(tmp_path, config, client.service_client.config.target_host)
    async with broker(client, config, RecordingHost()):
        leased = await te(config_file, "lease", "--id", "held", "--json")
        assert leased.exit_code == 0, leased.output
        held = json.loads(leased.stdout)["te"]
        host = held.split("/")[0]
        released = await te(config_file, "force-release", held, "--reason", "the job hung",
                            "--user", "bob")
        assert released.exit_code == 0, released.output
        drained = await te(config_file, "drain", host, "--reason", "disk replacement",
                           "--user", "alice")
        assert drained.exit_code == 0, drained.output
        listed = await te(config_file, "list")
        assert listed.exit_code == 0, listed.output
        text = " ".join(listed.stdout.split())
        assert f"draining {host} (drained by alice: disk replacement, " in text
        assert "force-released by bob: the job hung (" in text
        answer = await te(config_file, "list", "--json")
        [status] = json.loads(answer.stdout)
        assert status["drained_by"][host]["by"] == "alice"
        [view] = [t for t in status["tes"] if t["key"] == held]
        assert (view["operator"]["by"], view["operator"]["reason"], view["operator_action"]) \
            == ("bob", "the job hung", "force-released")
