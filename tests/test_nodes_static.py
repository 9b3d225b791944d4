"""Static nodes over SSH, against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockmaster.config.models import StaticNode, StaticPool
from lockmaster.config.models import StaticProvider as StaticProviderConfig
from lockmaster.execution.runner import BuildRunner
from lockmaster.model.build import BuildRequest, JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.state import ProjectState, SpeculativeState
from lockmaster.nodes.base import DownloadError, NodeError
from lockmaster.nodes.local import TreeWriter
from lockmaster.nodes.registry import NodeProviders
from lockmaster.nodes.static import SSHNode, StaticProvider, _untar
from tests.fixtures.sshd import SSHServer, keygen, running_sshd
from tests.test_nodes_local import (
    COPIED,
    Collect,
    alive,
    check_downloaded_tree,
    exists,
    gone,
    listing,
    make_artifact_tree,
    read,
    tree_files,
    wait_for_file,
)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def static_node(sshd: SSHServer, work_dir: Path, **overrides: object) -> StaticNode:
    fields: dict[str, object] = dict(
        name="box",
        host=sshd.host,
        port=sshd.port,
        username=sshd.user,
        key_file=sshd.client_key,
        host_key=sshd.host_key,
        labels=["metal"],
        max_parallel_jobs=1,
        work_dir=str(work_dir),
    )
    fields.update(overrides)
    return StaticNode.model_validate(fields)


def provider_for(*nodes: StaticNode) -> StaticProvider:
    config = StaticProviderConfig(name="hw", driver="static", pools=[StaticPool(nodes=list(nodes))])
    return StaticProvider(config, connect_timeout=5)


async def acquire(sshd: SSHServer, tmp_path: Path) -> tuple[StaticProvider, SSHNode]:
    provider = provider_for(static_node(sshd, tmp_path / "remote"))
    node = await provider.acquire("metal", "build-1")
    assert isinstance(node, SSHNode)
    return provider, node


def make_git_repo(path: Path) -> str:
    path.mkdir(parents=True)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    (path / "run.sh").write_text("#!/bin/sh\necho script ran\n")
    (path / "run.sh").chmod(0o755)
    git("add", "run.sh")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "one")
    (path / "README").write_text("two\n")
    git("add", "README")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "two")
    return git("rev-parse", "HEAD")


async def test_run_streams_output_with_env_and_cwd(sshd: SSHServer, tmp_path: Path) -> None:
    provider, node = await acquire(sshd, tmp_path)
    assert node.info.host == sshd.host and node.info.name == "box"
    (tmp_path / "remote" / "build-1").mkdir(parents=True)
    out = Collect()
    first_chunk: list[str] = []

    async def sink(text: str) -> None:
        await out(text)
        if not first_chunk:
            first_chunk.append(text)

    status = await node.run(
        'pwd; echo "V=$V"; echo "Q=$Q"; echo oops >&2; sleep 0.3; echo late',
        node.workspace,
        {"V": "two words", "Q": 'it\'s "quoted" $HOME'},
        sink,
        10,
    )
    assert status == 0
    lines = out.text.splitlines()
    assert lines[0] == node.workspace
    assert "V=two words" in lines
    assert 'Q=it\'s "quoted" $HOME' in lines  # exported literally, not expanded
    assert "oops" in lines and lines[-1] == "late"
    assert "late" not in first_chunk[0]  # streamed, not delivered at the end
    assert await node.run("exit 7", node.workspace, {}, out, 10) == 7
    await node.cleanup()
    await provider.release(node)


async def test_timeout_kills_the_remote_process_group(sshd: SSHServer, tmp_path: Path) -> None:
    provider, node = await acquire(sshd, tmp_path)
    (tmp_path / "remote" / "build-1").mkdir(parents=True)
    pids = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await node.run(
            f"sleep 30 & echo $! > {pids}; echo $$ >> {pids}; wait",
            node.workspace,
            {},
            Collect(),
            0.5,
        )
    assert time.monotonic() - started < 5
    found = [int(pid) for pid in read(pids).split()]
    assert len(found) == 2
    for pid in found:
        assert await gone(pid), f"remote process {pid} survived the timeout"
    await node.cleanup()
    await provider.release(node)


async def test_cancellation_kills_the_remote_process(sshd: SSHServer, tmp_path: Path) -> None:
    provider, node = await acquire(sshd, tmp_path)
    (tmp_path / "remote" / "build-1").mkdir(parents=True)
    pids = tmp_path / "pids"
    task = asyncio.create_task(
        node.run(f"echo $$ > {pids}; sleep 30", node.workspace, {}, Collect(), 30)
    )
    pid = int(await wait_for_file(pids))
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(pid)
    await node.cleanup()
    await provider.release(node)


async def test_upload_workspace_with_a_git_repo_and_cleanup(
    sshd: SSHServer, tmp_path: Path
) -> None:
    provider, node = await acquire(sshd, tmp_path)
    local = tmp_path / "prepared"
    head = make_git_repo(local / "src" / "org" / "proj")
    where = await node.upload_workspace(local)
    assert where == str(tmp_path / "remote" / "build-1")
    out = Collect()
    status = await node.run(
        "git rev-parse HEAD && git log --format=%s && git status --porcelain && "
        "git fsck --strict && ./run.sh",
        f"{where}/src/org/proj",
        {},
        out,
        10,
    )
    assert status == 0, out.text
    lines = out.text.splitlines()
    assert lines[:3] == [head, "two", "one"]
    assert "script ran" in lines  # the executable bit survived
    await node.cleanup()
    assert not exists(tmp_path / "remote" / "build-1")
    assert not exists(tmp_path / "remote" / ".lockmaster" / "build-1")
    await provider.release(node)


async def test_upload_failure_on_the_host_is_a_node_error(sshd: SSHServer, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the work dir should be")
    provider = provider_for(static_node(sshd, blocker))
    node = await provider.acquire("metal", "b1")
    local = tmp_path / "prepared"
    local.mkdir()
    with pytest.raises(NodeError, match="unpacking the workspace on box failed"):
        await node.upload_workspace(local)
    await provider.release(node)


async def test_wrong_host_key_is_refused(sshd: SSHServer, tmp_path: Path) -> None:
    node = static_node(sshd, tmp_path, host_key=sshd.other_host_key())
    provider = provider_for(node)
    with pytest.raises(NodeError, match="host key does not match"):
        await provider.acquire("metal", "b1")
    # The failed attempt gave its slot back: a correct host is reachable afterwards.
    good = provider_for(static_node(sshd, tmp_path))
    await good.release(await good.acquire("metal", "b1"))


async def test_invalid_host_key_auth_failure_and_unreachable(
    sshd: SSHServer, tmp_path: Path
) -> None:
    with pytest.raises(NodeError, match="not a public key"):
        await provider_for(static_node(sshd, tmp_path, host_key="ssh-ed25519 bm9wZQ==")).acquire(
            "metal", "b1"
        )
    stranger = tmp_path / "stranger"
    keygen(stranger)
    with pytest.raises(NodeError, match="authentication"):
        await provider_for(static_node(sshd, tmp_path, key_file=stranger)).acquire("metal", "b1")
    closed = static_node(sshd, tmp_path, port=1)
    with pytest.raises(NodeError, match="unreachable"):
        await provider_for(closed).acquire("metal", "b1")


async def test_slots_limit_concurrency(sshd: SSHServer, tmp_path: Path) -> None:
    provider = provider_for(
        static_node(sshd, tmp_path / "a", name="a", max_parallel_jobs=2),
        static_node(sshd, tmp_path / "b", name="b", labels=["other"]),
    )
    first = await provider.acquire("metal", "b1")
    second = await provider.acquire("metal", "b2")
    assert first.info.name == second.info.name == "a"
    third = asyncio.create_task(provider.acquire("metal", "b3"))
    await asyncio.sleep(0.3)
    assert not third.done()  # both slots of the only "metal" host are taken
    other = await asyncio.wait_for(provider.acquire("other", "b4"), 5)  # another host is free
    await provider.release(first)
    got = await asyncio.wait_for(third, 5)
    assert got.info.name == "a"
    for node in (second, got, other):
        await provider.release(node)


async def test_lost_connection_is_a_node_error(sshd: SSHServer, tmp_path: Path) -> None:
    provider, node = await acquire(sshd, tmp_path)
    (tmp_path / "remote" / "build-1").mkdir(parents=True)
    task = asyncio.create_task(node.run("sleep 1", node.workspace, {}, Collect(), 10))
    await asyncio.sleep(0.3)
    node.conn.abort()
    with pytest.raises(NodeError, match="lost"):
        await task
    await provider.release(node)


async def test_download_a_nested_tree_over_ssh(sshd: SSHServer, tmp_path: Path) -> None:
    provider, node = await acquire(sshd, tmp_path)
    tree = make_artifact_tree(tmp_path / "remote" / "job")
    skipped: list[tuple[str, str]] = []
    dest = tmp_path / "logs" / "artifacts"
    written = await node.download(
        str(tree), dest, max_bytes=10**6, skipped=lambda path, why: skipped.append((path, why))
    )
    check_downloaded_tree(dest, written, skipped)
    await provider.release(node)


async def test_download_over_ssh_over_the_cap_missing_and_not_a_dir(
    sshd: SSHServer, tmp_path: Path
) -> None:
    provider, node = await acquire(sshd, tmp_path)
    tree = make_artifact_tree(tmp_path / "remote" / "job")
    big = tree / "big"
    big.write_bytes(b"\0" * 3_000_000)  # far more than the cap, and more than one SSH window
    dest = tmp_path / "logs" / "artifacts"
    with pytest.raises(DownloadError, match="holds more than 200000 bytes, the limit"):
        await node.download(str(tree), dest, max_bytes=200_000)
    assert not exists(dest)
    big.unlink()
    total = sum(len(content) for content in COPIED.values())
    with pytest.raises(DownloadError, match="more than"):
        await node.download(str(tree), dest, max_bytes=total - 1)
    assert not exists(dest)
    # The connection is still good after a download cut short.
    assert await node.download(str(tree), dest, max_bytes=total) == total
    assert tree_files(dest) == COPIED
    assert await node.download(str(tmp_path / "nothing"), tmp_path / "empty", max_bytes=1) == 0
    assert listing(tmp_path / "empty") == []
    (tmp_path / "alias").symlink_to(tree)
    for wrong in (tree / "top.txt", tmp_path / "alias"):
        with pytest.raises(DownloadError, match="is not a directory"):
            await node.download(str(wrong), tmp_path / "wrong", max_bytes=10**6)
        assert not exists(tmp_path / "wrong")
    node.conn.abort()
    with pytest.raises(NodeError, match="lost"):
        await node.download(str(tree), tmp_path / "after", max_bytes=10**6)
    assert not exists(tmp_path / "after")
    await provider.release(node)


def tar_stream(members: list[tuple[str, bytes | str]]) -> io.BytesIO:
    """A tar archive as a hostile node might send it: (name, content, or a link target)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    data.seek(0)
    return data


def test_a_hostile_tar_stream_writes_nothing_outside(tmp_path: Path) -> None:
    dest = tmp_path / "logs" / "artifacts"
    skipped: list[tuple[str, str]] = []
    writer = TreeWriter(dest, "/w/artifacts", 10**6, "test", lambda p, w: skipped.append((p, w)))
    stream = tar_stream([("./ok.txt", b"ok"), ("../evil.txt", b"evil"), ("/abs.txt", b"abs"),
                         ("a/../../evil2.txt", b"evil"), ("up", "../../..")])
    assert _untar(stream, writer) == 2  # type: ignore[arg-type]
    assert tree_files(dest) == {"ok.txt": b"ok"}
    assert {path for path, _ in skipped} == {"../evil.txt", "/abs.txt", "a/../../evil2.txt", "up"}
    assert listing(tmp_path / "logs") == ["artifacts"] and not exists(Path("/abs.txt"))
    # Writing through a link (tar-slip): refused as a whole, nothing kept.
    outside = tmp_path / "outside"
    outside.mkdir()
    slip = TreeWriter(tmp_path / "slip", "/w/artifacts", 10**6, "test")
    stream = tar_stream([("link", str(outside)), ("link/x.txt", b"x")])
    with pytest.raises(DownloadError, match="link is both a directory and a link"):
        _untar(stream, slip)  # type: ignore[arg-type]
    assert listing(outside) == []
    slip.discard()
    assert not exists(tmp_path / "slip")


def runner_on(sshd: SSHServer, tmp_path: Path) -> tuple[BuildRunner, StaticProvider]:
    class GitPreparer:
        async def prepare(self, state: SpeculativeState, dest: Path, projects: list[str]) -> None:
            for name in state.projects:
                make_git_repo(dest / "src" / name)

    provider = provider_for(static_node(sshd, tmp_path / "remote"))
    runner = BuildRunner(
        NodeProviders([provider]), GitPreparer(), tmp_path / "logs", "http://logs",
        tmp_path / "work",
    )
    return runner, provider


def static_request(**job: object) -> BuildRequest:
    change = ChangeRef(connection="c", project="org/proj", branch="main", number=5, patchset=1)
    return BuildRequest(
        build_id="bs1",
        pipeline="check",
        change=change,
        job=JobSpec.model_validate({"name": "unit", "nodeset": ["metal"], **job}),
        state=SpeculativeState(
            changes=[change],
            projects={
                "org/proj": ProjectState(
                    project="org/proj", connection="c", branch="main", base="a", head="b"
                )
            },
        ),
        log_path="5/1/check/unit/bs1",
    )


async def test_build_runner_on_a_static_node(sshd: SSHServer, tmp_path: Path) -> None:
    runner, _ = runner_on(sshd, tmp_path)
    request = static_request(run=(
        './run.sh && test "$LOCKMASTER_CHANGE" = 5 && test "$(cat "$LOCKMASTER_ARTIFACTS_FILE")" '
        '= "[]" && cd "$LOCKMASTER_ARTIFACTS" && mkdir -p repo/dists/stable && '
        "echo 'Suite: stable' > repo/dists/stable/Release && echo built > build.txt"
    ))
    result = await runner.run(request)
    log = read(tmp_path / "logs" / "5/1/check/unit/bs1" / "job-output.txt")
    assert result.result == Result.SUCCESS, log
    assert result.node is not None and result.node.name == "box"
    assert "script ran" in log
    assert not exists(tmp_path / "remote" / "bs1")
    base = "http://logs/5/1/check/unit/bs1/artifacts/"
    assert [(a.name, a.url, a.change) for a in result.artifacts] == [
        ("build.txt", f"{base}build.txt", 5), ("repo", f"{base}repo/", 5)]
    assert f"Artifacts: repo -> {base}repo/" in log
    assert tree_files(tmp_path / "logs" / "5/1/check/unit/bs1" / "artifacts") == {
        "build.txt": b"built\n", "repo/dists/stable/Release": b"Suite: stable\n"}


async def test_node_lost_before_the_artifacts_are_collected_is_retry(
    sshd: SSHServer, tmp_path: Path
) -> None:
    runner, provider = runner_on(sshd, tmp_path)
    marker = tmp_path / "in-post-run"
    task = asyncio.create_task(runner.run(static_request(
        run='echo built > "$LOCKMASTER_ARTIFACTS/build.txt"',
        post_run=[f"echo $$ > {marker}.pid; touch {marker}; sleep 30"],
    )))
    await _wait_exists(marker)
    [node] = list(provider._held)
    node.conn.abort()
    result = await asyncio.wait_for(task, 20)
    with contextlib.suppress(ProcessLookupError):  # it lost its runner with the connection
        os.kill(int(read(Path(f"{marker}.pid"))), signal.SIGKILL)
    log = read(tmp_path / "logs" / "5/1/check/unit/bs1" / "job-output.txt")
    assert result.result == Result.RETRY, log
    assert result.message == "node lost before the artifacts were collected"
    assert result.artifacts == []
    assert "Artifacts not collected: the node was lost" in log
    assert not exists(tmp_path / "logs" / "5/1/check/unit/bs1" / "artifacts")


async def _wait_exists(path: Path, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.02)
