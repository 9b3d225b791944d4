"""A check whose job runs on a static host over SSH (real OpenSSH sshd on loopback, host key
checked): the speculative state arrives on the host and the command runs there."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from lockmaster.model.build import Result
from tests.deployment import deployment, make_config, unique_project
from tests.fixtures.sshd import running_sshd


async def test_check_runs_on_a_static_host(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    with running_sshd(tmp_path / "sshd") as sshd:
        config = make_config(
            tmp_path,
            providers=[{"name": "hosts", "driver": "static", "pools": [{"name": "main", "nodes": [{
                "name": "host1", "host": sshd.host, "port": sshd.port, "username": sshd.user,
                "key-file": str(sshd.client_key), "host-key": sshd.host_key,
                "labels": ["static"], "work-dir": str(tmp_path / "remote"),
            }]}]}],
            projects=[{"name": name, "connection": "local",
                       "pipelines": {"check": {"jobs": ["remote"]}}}],
            jobs=[{"name": "remote", "nodeset": "static",
                   "run": "test -f feature.txt && git log --oneline | head -3 && hostname"}],
        )
        async with deployment(client, config) as dep:
            dep.store.create_project(name, {"README": "x\n"})
            info, actions = await dep.upload(name, files={"feature.txt": "f\n"}, subject="F")
            outcome = await dep.outcome(actions[0].workflow_id or "")
    assert outcome.job_results == {"remote": Result.SUCCESS}, outcome.message
    [build] = outcome.builds
    assert build.node is not None and build.node.provider == "hosts"
    assert build.node.host == sshd.host
    log = (config.logs_root / build.log_url.removeprefix("http://logs.example.test/")  # type: ignore[union-attr]
           / "job-output.txt").read_text()
    # The host's checkout is the speculative merge commit the merger made, not the bare change.
    head = log.split("Head: ", 1)[1].split()[2]
    after_run = log.split("--- run:", 1)[1]
    assert f"{head[:7]} Merge change {info.number},1 into master" in after_run
    # The workspace on the host is removed after the job.
    assert not any((tmp_path / "remote").glob(f"{build.build_id}*"))
