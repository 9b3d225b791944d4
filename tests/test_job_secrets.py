"""Secrets jobs need (`vars: {TOKEN: {secret: NAME}}`, `secrets: {NAME: {file: PATH}}`): only
the name travels in workflow inputs, so no history holds the value; the executor reads it when
the job starts, the job gets it as a variable, and its log shows ******** instead (issue 15)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from temporalio.client import Client

from lockmaster.config.base import ReferenceError_
from lockmaster.config.models import LockmasterConfig
from lockmaster.execution.logs import LogWriter
from lockmaster.execution.secrets import SecretMissing, config_secrets
from lockmaster.model.build import Result
from tests.deployment import deployment, make_config, unique_project
from tests.test_check_workflow import project, start

VALUE = "s3cr3t-t0ken-9f8e7d"


def with_secrets(config: LockmasterConfig, secrets: dict[str, object],
                 vars_: dict[str, object]) -> LockmasterConfig:
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["secrets"] = secrets
    data["jobs"][0]["vars"] = vars_
    return LockmasterConfig.model_validate(data)


async def test_a_secret_reaches_the_job_but_no_history_and_not_its_log(
        client: Client, tmp_path: Path) -> None:
    secret_file = tmp_path / "pypi-token"
    secret_file.write_text(VALUE + "\n")
    name = unique_project()
    # The job checks it has the value without naming it (its command is in the history).
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    run = (f'test "$(printf %s "$TOKEN" | sha256sum | cut -d" " -f1)" = {digest} && '
           'echo "the token is $TOKEN" && echo "$PLAIN"')
    config = with_secrets(
        make_config(tmp_path, projects=[project(name, ["upload"])],
                    jobs=[{"name": "upload", "run": run, "nodeset": "local"}]),
        {"pypi-token": {"file": str(secret_file)}},
        {"TOKEN": {"secret": "pypi-token"}, "PLAIN": "visible"})
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        _, wid = await start(dep, name)
        outcome = await dep.outcome(wid)
        assert outcome.job_results == {"upload": Result.SUCCESS}
        # The histories' raw bytes (payloads as stored; their JSON form would be base64).
        events = list((await dep.handle(wid).fetch_history()).events)
        for event in list(events):  # builds that run as children: their histories too
            if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
                child = event.start_child_workflow_execution_initiated_event_attributes
                events += (await client.get_workflow_handle(child.workflow_id)
                           .fetch_history()).events
        raw = b"".join(event.SerializeToString() for event in events)
        assert b"pypi-token" in raw  # the name travels (the check below can fail)
        assert VALUE.encode() not in raw
        build = outcome.builds[0]
        assert build.log_url is not None
        rel = build.log_url.removeprefix("http://logs.example.test/")
        log = (config.logs_root / rel / "job-output.txt").read_text()
        assert "the token is ********" in log and "visible" in log
        assert VALUE not in log


def test_a_job_naming_an_undefined_secret_is_a_config_error(tmp_path: Path) -> None:
    base = make_config(tmp_path, projects=[project(unique_project(), ["upload"])],
                       jobs=[{"name": "upload", "run": "true", "nodeset": "local"}])
    with pytest.raises(ValueError, match="names the secret 'nope', which is not defined; add "
                                         "it under `secrets:`") as raised:
        with_secrets(base, {}, {"TOKEN": {"secret": "nope"}})
    assert isinstance(raised.value, ReferenceError_) or "secret" in str(raised.value)


def test_an_executor_that_cannot_read_the_secret_says_which_and_where(tmp_path: Path) -> None:
    config = with_secrets(
        make_config(tmp_path, projects=[project(unique_project(), ["upload"])],
                    jobs=[{"name": "upload", "run": "true", "nodeset": "local"}]),
        {"pypi-token": {"file": str(tmp_path / "missing")}}, {"TOKEN": {"secret": "pypi-token"}})
    read = config_secrets(config)
    with pytest.raises(SecretMissing, match=f"'pypi-token' cannot be read from "
                                            f"{tmp_path / 'missing'} on this executor"):
        read("pypi-token")
    with pytest.raises(SecretMissing, match="does not define"):
        read("other")


def test_the_log_masks_a_secret_wherever_a_chunk_holds_it(tmp_path: Path) -> None:
    with LogWriter(tmp_path, "00/1/1/check/job/abc") as log:
        log.redact(VALUE)
        log.redact("t0ken")  # a shorter one inside it: the longer is masked whole
        log.write_sync(f"token={VALUE}\nagain {VALUE} and t0ken\n")
    text = (tmp_path / "00/1/1/check/job/abc/job-output.txt").read_text()
    assert VALUE not in text and "t0ken" not in text
    assert text.count("********") == 3
