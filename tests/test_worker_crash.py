"""A worker killed during a job: the build runs again on another worker, and the check's result
arrives, and is reported, exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from lockmaster.model.build import Result
from tests.deployment import deployment, make_config, unique_project
from tests.test_check_workflow import _wait_running

pytestmark = pytest.mark.slow


def start_executor(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    lockmaster = Path(sys.executable).parent / "lockmaster"
    return subprocess.Popen(
        [lockmaster, "worker", "executor", "--config", str(config_file)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )


async def test_executor_killed_mid_job(
    temporal_env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    name = unique_project()
    runs = tmp_path / "runs"
    config = make_config(
        tmp_path,
        projects=[{"name": name, "connection": "local",
                   "pipelines": {"check": {"jobs": ["long"]}}}],
        jobs=[{"name": "long", "run": f"echo run >> {runs}; sleep 4; echo finished",
               "nodeset": "local"}],
    )
    # The executor runs in its own process, configured like this test's deployment.
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["address"] = temporal_env.client.service_client.config.target_host
    config_file = tmp_path / "lockmaster.yaml"
    config_file.write_text(yaml.safe_dump(data))
    log = tmp_path / "executor.log"
    async with deployment(client, config, executor=False, heartbeat_timeout=3) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        first = start_executor(config_file, log)
        try:
            info, actions = await dep.upload(name, files={"a": "a\n"}, subject="A")
            wid = actions[0].workflow_id
            assert wid is not None
            await _wait_running(dep, wid, "long", timeout=60)
            for _ in range(50):  # the command has started on the first worker
                if runs.exists():
                    break
                await asyncio.sleep(0.1)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            second = start_executor(config_file, log)
            try:
                outcome = await dep.outcome(wid, timeout=90)
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait(30)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
        assert outcome.result == "SUCCESS", log.read_text()
        assert outcome.job_results == {"long": Result.SUCCESS}
        # The job ran twice (the first run died with its worker), and is reported once.
        assert runs.read_text().count("run") == 2
        assert len([b for b in outcome.builds if b.job == "long"]) == 1
        assert len(dep.reports(info.number)) == 1
