"""BuildRunner on local nodes, with a simple workspace preparer (the git one lives elsewhere)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from lockmaster.config.models import LocalPool
from lockmaster.config.models import LocalProvider as LocalProviderConfig
from lockmaster.execution.logs import LogWriter, log_url
from lockmaster.execution.runner import BuildRunner
from lockmaster.execution.workspace import WorkspaceError
from lockmaster.model.build import BuildRequest, JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.state import ProjectState, SpeculativeState
from lockmaster.nodes.local import LocalProvider
from lockmaster.nodes.registry import NodeProviders
from tests.test_nodes_local import alive, exists, gone, listing, read, wait_for_file

PROJECT = "org/proj"
LOG_PATH = "42/3/check/unit/b1"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} \| "


class SimplePreparer:
    """Writes `src/<project>` with a couple of files for every project of the state."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[Path, list[str]]] = []
        self.fail = fail

    async def prepare(self, state: SpeculativeState, dest: Path, projects: list[str]) -> None:
        self.calls.append((dest, projects))
        if self.fail:
            raise WorkspaceError(self.fail)
        for name in [*state.projects, *projects]:
            src = dest / "src" / name
            src.mkdir(parents=True, exist_ok=True)
            (src / "README").write_text(f"{name}\n")
            (src / "test.sh").write_text("echo tests pass\n")


def change() -> ChangeRef:
    return ChangeRef(connection="local", project=PROJECT, branch="main", number=42, patchset=3)


def request(build_id: str = "b1", log_path: str = LOG_PATH, **job: object) -> BuildRequest:
    fields: dict[str, object] = {"name": "unit", "run": "bash test.sh"}
    fields.update(job)
    ahead = ChangeRef(connection="local", project=PROJECT, branch="main", number=41, patchset=1)
    return BuildRequest(
        build_id=build_id,
        pipeline="check",
        change=change(),
        job=JobSpec.model_validate(fields),
        state=SpeculativeState(
            changes=[ahead, change()],
            projects={
                PROJECT: ProjectState(
                    project=PROJECT,
                    connection="local",
                    branch="main",
                    base="1" * 40,
                    head="2" * 40,
                    merged=[ahead, change()],
                )
            },
        ),
        attempt=2,
        log_path=log_path,
    )


class Env:
    def __init__(self, tmp_path: Path, preparer: SimplePreparer | None = None) -> None:
        self.tmp = tmp_path
        self.nodes_root = tmp_path / "nodes"
        self.provider = LocalProvider(
            LocalProviderConfig(
                name="local", driver="local", pools=[LocalPool(labels=["local"], max_servers=2)]
            ),
            self.nodes_root,
        )
        self.preparer = preparer or SimplePreparer()
        self.runner = BuildRunner(
            NodeProviders([self.provider]),
            self.preparer,
            tmp_path / "logs",
            "http://logs.example.org/",
            tmp_path / "work",
            heartbeat_interval=0.05,
        )

    def log(self, log_path: str = LOG_PATH) -> str:
        return read(self.tmp / "logs" / log_path / "job-output.txt")

    def lines(self, log_path: str = LOG_PATH) -> list[str]:
        """Log lines without their timestamps (which every line must have)."""
        raw = self.log(log_path).splitlines()
        for line in raw:
            assert re.match(STAMP, line), line
        return [re.sub(f"^{STAMP}", "", line) for line in raw]

    def all_released(self) -> bool:
        return not exists(self.nodes_root) or listing(self.nodes_root) == []


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


async def test_success_with_header_and_timestamped_log(env: Env) -> None:
    before = time.time()
    result = await env.runner.run(request(run="bash test.sh; cat README"))
    assert result.result == Result.SUCCESS, env.log()
    assert result.build_id == "b1" and result.job == "unit" and result.attempt == 2
    assert result.log_url == "http://logs.example.org/42/3/check/unit/b1/"
    assert result.node is not None and result.node.provider == "local"
    assert result.started is not None and result.ended is not None
    assert before <= result.started <= result.ended <= time.time()
    lines = env.lines()
    for expected in (
        "Job: unit",
        "Build: b1",
        "Attempt: 2 of 3",
        "Pipeline: check",
        f"Node: {result.node.name} (provider local, label local host localhost)",
        "Changes: 41,1 42,3",
        f"Head: {PROJECT} main {'2' * 40} (base {'1' * 40}, merged 41,1 42,3)",
        "tests pass",
        f"{PROJECT}",
        "RESULT: SUCCESS",
    ):
        assert expected in lines, (expected, lines)
    assert env.all_released()
    assert listing(env.tmp / "work") == []  # the local preparation dir is gone too


async def test_failure(env: Env) -> None:
    result = await env.runner.run(request(run="echo failing; exit 2"))
    assert result.result == Result.FAILURE
    assert result.message == "run exited with status 2"
    assert "--- run exited with status 2" in env.lines()
    assert env.all_released()


async def test_pre_run_failure_is_retry_and_run_is_skipped(env: Env) -> None:
    marker = env.tmp / "ran"
    result = await env.runner.run(
        request(pre_run=["true", "echo setup broke; exit 4"], run=f"touch {marker}")
    )
    assert result.result == Result.RETRY
    assert result.message == "pre-run command 2 failed with status 4"
    assert not exists(marker)
    assert "setup broke" in env.lines()


async def test_pre_and_post_run_work_in_the_workspace_root(env: Env) -> None:
    out = env.tmp / "where"
    result = await env.runner.run(
        request(
            pre_run=[f"pwd > {out}.pre"], run=f"pwd > {out}.run", post_run=[f"pwd > {out}.post"]
        )
    )
    assert result.result == Result.SUCCESS
    workspace = str(env.nodes_root / "b1")
    assert read(Path(f"{out}.pre")) == workspace == read(Path(f"{out}.post"))
    assert read(Path(f"{out}.run")) == f"{workspace}/src/{PROJECT}"


async def test_post_run_runs_after_a_failure_and_its_failure_is_only_logged(env: Env) -> None:
    marker = env.tmp / "post"
    result = await env.runner.run(
        request(run="exit 1", post_run=["echo post failing; exit 9", f"echo done > {marker}"])
    )
    assert result.result == Result.FAILURE
    assert read(marker) == "done"
    assert "--- post-run 1 exited with status 9" in env.lines()
    ok = await env.runner.run(request(build_id="b2", run="true", post_run=["exit 9"]))
    assert ok.result == Result.SUCCESS


async def test_timeout_kills_the_command(env: Env) -> None:
    pid_file = env.tmp / "pid"
    started = time.monotonic()
    result = await env.runner.run(
        request(run=f"echo $$ > {pid_file}; sleep 30", timeout=0.5, post_run=["echo after"])
    )
    assert result.result == Result.TIMED_OUT
    assert time.monotonic() - started < 5
    assert await gone(int(read(pid_file)))
    lines = env.lines()
    assert "TIMED_OUT: the job exceeded its timeout of 0.5 s" in lines
    assert "after" in lines  # post-run still ran (to collect logs)
    assert env.all_released()


async def test_cancellation_kills_logs_aborted_releases_and_reraises(env: Env) -> None:
    pid_file = env.tmp / "pid"
    task = asyncio.create_task(env.runner.run(request(run=f"echo $$ > {pid_file}; sleep 30")))
    pid = int(await wait_for_file(pid_file))
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(pid)
    assert env.lines()[-1] == "ABORTED"
    assert env.all_released()
    again = await asyncio.wait_for(env.provider.acquire("local", "x"), 1)  # slot given back
    await env.provider.release(again)


async def test_no_node_for_label_is_node_failure(env: Env) -> None:
    result = await env.runner.run(request(nodeset=["gpu"]))
    assert result.result == Result.NODE_FAILURE
    assert result.message is not None and "gpu" in result.message
    assert result.node is None
    assert env.preparer.calls == []
    assert any(line.startswith("NODE_FAILURE: ") for line in env.lines())


async def test_multi_node_nodeset_runs_on_the_first_and_releases_all(env: Env) -> None:
    seen = env.tmp / "seen"
    result = await env.runner.run(
        request(nodeset=["local", "local"], run=f"ls {env.nodes_root} > {seen}")
    )
    assert result.result == Result.SUCCESS, env.log()
    assert read(seen).split() == ["b1", "b1-1"]
    assert result.node is not None and result.node.name.endswith("-b1")
    assert env.all_released()
    # Both slots came back: two nodes can be had at once again.
    nodes = [await asyncio.wait_for(env.provider.acquire("local", n), 1) for n in ("p", "q")]
    for node in nodes:
        await env.provider.release(node)


async def test_env_vars_visible_to_commands(env: Env) -> None:
    result = await env.runner.run(
        request(
            run="env | grep -E '^(LOCKMASTER_|MY_VAR)' | sort",
            vars={"MY_VAR": "x y", "LOCKMASTER_JOB": "spoofed", "bad-name": "v"},
        )
    )
    assert result.result == Result.SUCCESS
    lines = env.lines()
    workspace = env.nodes_root / "b1"
    for expected in (
        "LOCKMASTER_BRANCH=main",
        "LOCKMASTER_BUILD=b1",
        "LOCKMASTER_CHANGE=42",
        "LOCKMASTER_JOB=unit",
        f"LOCKMASTER_LOG_URL={result.log_url}",
        "LOCKMASTER_PATCHSET=3",
        "LOCKMASTER_PIPELINE=check",
        f"LOCKMASTER_PROJECT={PROJECT}",
        f"LOCKMASTER_WORKSPACE={workspace}",
        f"LOCKMASTER_ARTIFACTS={workspace}/artifacts",
        f"LOCKMASTER_ARTIFACTS_FILE={workspace}/artifacts.in.json",
        "MY_VAR=x y",
    ):
        assert expected in lines, (expected, lines)
    assert any("'bad-name' ignored" in line for line in lines)


async def test_required_projects_reach_the_preparer(env: Env) -> None:
    result = await env.runner.run(request(required_projects=["org/lib"], run="cat ../lib/README"))
    assert result.result == Result.SUCCESS
    assert env.preparer.calls[0][1] == ["org/lib"]
    assert "org/lib" in env.lines()


async def test_workspace_error_is_error(tmp_path: Path) -> None:
    env = Env(tmp_path, SimplePreparer(fail="head mismatch"))
    result = await env.runner.run(request())
    assert result.result == Result.ERROR
    assert result.message == "workspace preparation failed: head mismatch"
    assert env.all_released()


async def test_heartbeats_while_running(env: Env) -> None:
    details: list[str] = []
    result = await env.runner.run(request(run="sleep 0.5"), heartbeat=details.append)
    assert result.result == Result.SUCCESS
    assert len(details) >= 5
    assert "run: sleep 0.5" in details


async def test_a_retried_build_starts_the_log_anew(env: Env) -> None:
    await env.runner.run(request(run="echo attempt-one"))
    await env.runner.run(request(run="echo attempt-two"))
    lines = env.lines()
    assert "attempt-two" in lines and "attempt-one" not in lines
    assert lines.count("Build: b1") == 1


def test_log_writer_stamps_lines_not_chunks(tmp_path: Path) -> None:
    with LogWriter(tmp_path, "a/b") as log:
        log.write_sync("par")
        log.write_sync("tial\nnext")
        log.line("whole")
        log.write_sync("\n\nend\n")
    lines = read(tmp_path / "a" / "b" / "job-output.txt").splitlines()
    assert [re.sub(f"^{STAMP}", "", line) for line in lines] == [
        "partial", "next", "whole", "", "", "end",
    ]  # fmt: skip
    assert all(re.match(STAMP, line) for line in lines)
    with pytest.raises(ValueError):
        LogWriter(tmp_path, "../outside")
    assert log_url("http://h/logs", "/x/y/") == "http://h/logs/x/y/"
