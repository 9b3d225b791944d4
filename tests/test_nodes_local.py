"""Local nodes and the provider registry."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from lockmaster.config.models import (
    LocalPool,
    NodesConfig,
    OpenStackPool,
    OpenStackPoolLabel,
    OpenStackProvider,
    StaticNode,
    StaticPool,
    StaticProvider,
)
from lockmaster.config.models import LocalProvider as LocalProviderConfig
from lockmaster.nodes.base import DownloadError, NodeError
from lockmaster.nodes.local import LocalNode, LocalProvider
from lockmaster.nodes.registry import NodeProviders


def alive(pid: int) -> bool:
    """Running (zombies count as gone: nobody may reap them in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def gone(pid: int, within: float = 3.0) -> bool:
    """The process ends within `within` seconds (SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# Plain file checks, kept out of the async tests' bodies (ruff ASYNC240).
def read(path: Path) -> str:
    """The file's text, stripped; empty if it does not exist (yet)."""
    return path.read_text().strip() if path.exists() else ""


def exists(path: Path) -> bool:
    return path.exists()


def listing(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.iterdir())


async def wait_for_file(path: Path, limit: float = 5.0) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if text := read(path):
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


class Collect:
    """An OutputSink that remembers every chunk."""

    def __init__(self) -> None:
        self.chunks: list[str] = []

    async def __call__(self, text: str) -> None:
        self.chunks.append(text)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def provider(tmp_path: Path, max_servers: int = 2) -> LocalProvider:
    config = LocalProviderConfig(
        name="local",
        driver="local",
        pools=[LocalPool(labels=["local", "other"], max_servers=max_servers)],
    )
    return LocalProvider(config, tmp_path / "nodes" / "local")


async def node_for(tmp_path: Path) -> tuple[LocalProvider, LocalNode]:
    p = provider(tmp_path)
    node = await p.acquire("local", "build-1")
    assert isinstance(node, LocalNode)
    return p, node


async def test_acquire_makes_workspace_and_cleanup_removes_it(tmp_path: Path) -> None:
    p, node = await node_for(tmp_path)
    assert node.workspace == tmp_path / "nodes" / "local" / "build-1"
    assert exists(node.workspace)
    assert node.info.provider == "local" and node.info.label == "local"
    await node.cleanup()
    assert not exists(node.workspace)
    await p.release(node)


async def test_acquire_starts_from_an_empty_workspace(tmp_path: Path) -> None:
    stale = tmp_path / "nodes" / "local" / "build-1"
    stale.mkdir(parents=True)
    (stale / "left-over").write_text("from an earlier attempt")
    p, node = await node_for(tmp_path)
    assert listing(node.workspace) == []
    await p.release(node)


async def test_unknown_label_and_bad_build_id(tmp_path: Path) -> None:
    p = provider(tmp_path)
    assert p.serves("local") and not p.serves("gpu")
    with pytest.raises(NodeError, match="gpu"):
        await p.acquire("gpu", "b")
    with pytest.raises(NodeError):
        await p.acquire("local", "../escape")


async def test_max_servers_limits_concurrency(tmp_path: Path) -> None:
    p = provider(tmp_path, max_servers=1)
    first = await p.acquire("local", "a")
    waiting = asyncio.create_task(p.acquire("other", "b"))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # the only slot is taken
    await p.release(first)
    second = await asyncio.wait_for(waiting, 2)
    await p.release(second)
    await p.release(second)  # twice is harmless: no extra slot appears
    third = await p.acquire("local", "c")
    fourth = asyncio.create_task(p.acquire("local", "d"))
    await asyncio.sleep(0.1)
    assert not fourth.done()
    fourth.cancel()
    await p.release(third)


async def test_run_streams_merged_output_as_it_arrives(tmp_path: Path) -> None:
    p, node = await node_for(tmp_path)
    out = Collect()
    seen_early: list[str] = []

    async def sink(text: str) -> None:
        await out(text)
        if "first" in out.text and not seen_early:
            seen_early.append(out.text)

    status = await node.run(
        "echo first; echo to-stderr >&2; sleep 0.3; echo second", str(node.workspace), {}, sink, 5
    )
    assert status == 0
    assert "first\n" in out.text and "to-stderr\n" in out.text and "second\n" in out.text
    assert "second" not in seen_early[0]  # delivered before the command finished
    await node.cleanup()
    await p.release(node)


async def test_run_exit_status_cwd_and_clean_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_SECRET", "must-not-leak")
    p, node = await node_for(tmp_path)
    sub = node.workspace / "src"
    sub.mkdir()
    out = Collect()
    status = await node.run(
        'pwd; echo "HOME=$HOME"; echo "GIVEN=$GIVEN"; '
        'echo "SECRET=${WORKER_SECRET:-unset}"; exit 3',
        str(sub),
        {"GIVEN": "a value with spaces"},
        out,
        5,
    )
    assert status == 3
    lines = out.text.splitlines()
    assert lines[0] == str(sub)
    assert f"HOME={node.workspace}" in lines
    assert "GIVEN=a value with spaces" in lines
    assert "SECRET=unset" in lines
    assert await node.run("true", str(node.workspace / "missing"), {}, out, 5) != 0
    await node.cleanup()
    await p.release(node)


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    p, node = await node_for(tmp_path)
    pids = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await node.run(
            f"sleep 30 & echo $! > {pids}; echo $$ >> {pids}; wait", str(node.workspace), {},
            Collect(), 0.5,
        )  # fmt: skip
    assert time.monotonic() - started < 3
    for pid in map(int, read(pids).split()):
        assert await gone(pid), f"process {pid} survived the timeout"
    await node.cleanup()
    await p.release(node)


async def test_cancellation_kills_the_process_group_and_reraises(tmp_path: Path) -> None:
    p, node = await node_for(tmp_path)
    pids = tmp_path / "pids"
    task = asyncio.create_task(
        node.run(f"sleep 30 & echo $! > {pids}; wait", str(node.workspace), {}, Collect(), 30)
    )
    pid = int(await wait_for_file(pids))
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(pid)
    await node.cleanup()
    await p.release(node)


async def test_background_child_holding_output_does_not_block(tmp_path: Path) -> None:
    p, node = await node_for(tmp_path)
    node.output_grace = 0.2
    pids = tmp_path / "pids"
    started = time.monotonic()
    status = await node.run(
        f"sleep 30 & echo $! > {pids}; echo done", str(node.workspace), {}, Collect(), 10
    )
    assert status == 0 and time.monotonic() - started < 3
    pid = int(read(pids))
    assert alive(pid)
    await node.cleanup()  # a single-use node: leftovers are killed
    assert await gone(pid)
    await p.release(node)


async def test_upload_workspace_moves_the_tree_in(tmp_path: Path) -> None:
    p, node = await node_for(tmp_path)
    prepared = tmp_path / "prepared"
    (prepared / "src" / "proj").mkdir(parents=True)
    (prepared / "src" / "proj" / "file").write_text("content")
    where = await node.upload_workspace(prepared)
    assert where == str(node.workspace)
    assert read(node.workspace / "src" / "proj" / "file") == "content"
    await node.cleanup()
    await p.release(node)


# --- downloading a tree (artifacts) ----------------------------------------------------------

LONG = "pool/main/l/" + "lockmaster-with-a-rather-long-package-name" * 3 + "_1.0-1_amd64.deb"
DECB = bytes(range(256)) * 400  # binary content, 100 KiB


def make_artifact_tree(base: Path) -> Path:
    """`base/artifacts` as a job might leave it, with every kind of entry a download must treat
    with care; `base/private/secret` is outside it (a job's links must not reach it)."""
    (base / "private").mkdir(parents=True)
    (base / "private" / "secret").write_text("SECRET")
    tree = base / "artifacts"
    (tree / "repo" / "dists" / "stable").mkdir(parents=True)
    (tree / "repo" / "dists" / "stable" / "Release").write_text("Suite: stable\n")
    (tree / "repo" / LONG).parent.mkdir(parents=True)
    (tree / "repo" / LONG).write_bytes(DECB)
    (tree / "top.txt").write_text("top\n")
    (tree / "with space é.txt").write_text("spaced\n")
    (tree / "empty").mkdir()
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o755)
    (tree / "private").mkdir()
    (tree / "private" / "secret").write_text("decoy")  # inside: a lexical resolver finds this
    os.link(tree / "top.txt", tree / "hard")
    os.mkfifo(tree / "fifo")
    links = {
        "link-file": "repo/dists/stable/Release",  # inside: copied
        "link-abs": str(tree / "top.txt"),  # absolute but inside: copied
        "link-dir": "repo/dists",  # a directory inside: copied
        "repo/via": "../link-dir/stable/Release",  # through another link: copied
        "link-out": "/etc/passwd",  # outside: left out
        "link-root": "/private/secret",  # outside, absolute (not the decoy): left out
        "link-up": "../private/secret",  # outside: left out
        "here": ".",  # the tree itself: a loop, left out
        "repo/loop": "..",  # the top, which contains the link: left out
        "repo/dists/stable/up": "..",  # a directory containing the link: left out
        "dangling": "nowhere",  # left out
        # `here` is the top of the tree, so here/.. is its parent: outside, whatever the
        # spelling "here/../private/secret" suggests (it is not the decoy).
        "trick": "here/../private/secret",
    }
    for name, target in links.items():
        (tree / name).symlink_to(target)
    return tree


COPIED = {
    "top.txt": b"top\n",
    "with space é.txt": b"spaced\n",
    "run.sh": b"#!/bin/sh\n",
    "hard": b"top\n",
    "private/secret": b"decoy",
    "repo/dists/stable/Release": b"Suite: stable\n",
    f"repo/{LONG}": DECB,
    "link-file": b"Suite: stable\n",
    "link-abs": b"top\n",
    "link-dir/stable/Release": b"Suite: stable\n",
    "repo/via": b"Suite: stable\n",
}
LEFT_OUT = {"fifo", "link-out", "link-root", "link-up", "here", "repo/loop",
            "repo/dists/stable/up", "dangling", "trick"}


def tree_files(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path; asserts there is nothing but files and dirs."""
    found: dict[str, bytes] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            assert not path.is_symlink(), f"{path} is a symbolic link"
            if name in files:
                assert path.is_file(), f"{path} is not a regular file"
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


def check_downloaded_tree(dest: Path, written: int, skipped: list[tuple[str, str]]) -> None:
    assert tree_files(dest) == COPIED
    assert (dest / "empty").is_dir() and listing(dest / "empty") == []
    assert written == sum(len(content) for content in COPIED.values())
    assert {path for path, _ in skipped} == LEFT_OUT, skipped
    why = dict(skipped)
    assert "outside" in why["link-out"] and "outside" in why["trick"]
    assert all("loop" in why[path] for path in ("here", "repo/loop", "repo/dists/stable/up"))


async def test_download_copies_files_dirs_and_inside_links_only(tmp_path: Path) -> None:
    p, node = await node_for(tmp_path)
    tree = make_artifact_tree(tmp_path / "job")
    skipped: list[tuple[str, str]] = []
    dest = tmp_path / "logs" / "artifacts"
    written = await node.download(
        str(tree), dest, max_bytes=10**6, skipped=lambda path, why: skipped.append((path, why))
    )
    check_downloaded_tree(dest, written, skipped)
    await p.release(node)


async def test_download_over_the_cap_leaves_nothing(tmp_path: Path) -> None:
    p, node = await node_for(tmp_path)
    tree = make_artifact_tree(tmp_path / "job")
    dest = tmp_path / "logs" / "artifacts"
    with pytest.raises(DownloadError, match="holds more than 50000 bytes, the limit"):
        await node.download(str(tree), dest, max_bytes=50_000)
    assert not exists(dest)
    # Links count too: exactly the files' size fits, one byte less does not.
    total = sum(len(content) for content in COPIED.values())
    with pytest.raises(DownloadError, match="more than"):
        await node.download(str(tree), dest, max_bytes=total - 1)
    assert not exists(dest)
    assert await node.download(str(tree), dest, max_bytes=total) == total
    await p.release(node)


async def test_download_missing_and_not_a_directory(tmp_path: Path) -> None:
    p, node = await node_for(tmp_path)
    dest = tmp_path / "out"
    assert await node.download(str(tmp_path / "missing"), dest, max_bytes=100) == 0
    assert listing(dest) == []
    (tmp_path / "file").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "inside").write_text("x")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    for wrong in ("file", "alias"):  # a link instead of the directory is not followed either
        with pytest.raises(DownloadError, match="is not a directory"):
            await node.download(str(tmp_path / wrong), tmp_path / f"out-{wrong}", max_bytes=100)
        assert not exists(tmp_path / f"out-{wrong}")
    await p.release(node)


# --- the registry ---------------------------------------------------------------------------


def nodes_config(tmp_path: Path) -> NodesConfig:
    return NodesConfig(
        providers=[
            LocalProviderConfig(
                name="dev", driver="local", pools=[LocalPool(labels=["local"], max_servers=1)]
            ),
            StaticProvider(
                name="hw",
                driver="static",
                pools=[
                    StaticPool(
                        nodes=[
                            StaticNode(
                                name="box",
                                host="127.0.0.1",
                                username="ci",
                                key_file=tmp_path / "key",
                                host_key="ssh-ed25519 AAAA",
                                labels=["metal", "local"],
                            )
                        ]
                    )
                ],
            ),
            OpenStackProvider(
                name="cloud",
                driver="openstack",
                cloud="donor",
                pools=[
                    OpenStackPool(labels=[OpenStackPoolLabel(name="vm", image="i", flavor="f")])
                ],
            ),
        ]
    )


async def test_registry_picks_the_first_provider_serving_a_label(tmp_path: Path) -> None:
    providers = NodeProviders.from_config(nodes_config(tmp_path), tmp_path / "state")
    assert [p.name for p in providers.providers_for("local")] == ["dev", "hw"]
    assert [p.name for p in providers.providers_for("metal")] == ["hw"]
    node = await providers.acquire("local", "b1")
    assert node.info.provider == "dev"
    assert isinstance(node, LocalNode)
    assert node.workspace == tmp_path / "state" / "nodes" / "dev" / "b1"
    await node.cleanup()
    await providers.release(node)
    again = await asyncio.wait_for(providers.acquire("local", "b2"), 1)  # the slot came back
    await providers.release(again)


async def test_registry_errors(tmp_path: Path) -> None:
    providers = NodeProviders.from_config(nodes_config(tmp_path), tmp_path / "state")
    with pytest.raises(NodeError, match="node pool"):
        await providers.acquire("vm", "b1")
    with pytest.raises(NodeError, match=r"no node provider serves label 'gpu'.*local, metal, vm"):
        await providers.acquire("gpu", "b1")
    assert not exists(tmp_path / "state")  # nothing made for requests that failed
