"""Build artifacts on local nodes: collected beside the log, served by the log server, described
in BuildResult.artifacts, and handed to later builds in $LOCKMASTER_ARTIFACTS_FILE."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lockmaster.config.models import LocalPool
from lockmaster.config.models import LocalProvider as LocalProviderConfig
from lockmaster.execution.artifacts import MAX_BYTES
from lockmaster.execution.runner import BuildRunner
from lockmaster.logserver import LogServer
from lockmaster.model.build import Artifact, BuildRequest, BuildResult, Result
from lockmaster.nodes.local import LocalProvider
from lockmaster.nodes.registry import NodeProviders
from tests.test_build_runner import LOG_PATH, PROJECT, STAMP, SimplePreparer, request
from tests.test_nodes_local import exists, listing, tree_files


class Served:
    """A BuildRunner on local nodes whose log storage is served over HTTP, as in a deployment."""

    def __init__(self, tmp_path: Path, max_artifact_bytes: int = MAX_BYTES) -> None:
        self.tmp = tmp_path
        self.logs = tmp_path / "logs"
        self.server = LogServer(self.logs, port=0).start()
        self.url = f"http://127.0.0.1:{self.server.port}/"
        provider = LocalProvider(
            LocalProviderConfig(
                name="local", driver="local", pools=[LocalPool(labels=["local"], max_servers=2)]
            ),
            tmp_path / "nodes",
        )
        self.runner = BuildRunner(
            NodeProviders([provider]), SimplePreparer(), self.logs, self.url, tmp_path / "work",
            heartbeat_interval=0.05, max_artifact_bytes=max_artifact_bytes,
        )

    async def run(self, req: BuildRequest) -> BuildResult:
        return await self.runner.run(req)

    def lines(self, log_path: str = LOG_PATH) -> list[str]:
        raw = (self.logs / log_path / "job-output.txt").read_text().splitlines()
        return [re.sub(f"^{STAMP}", "", line) for line in raw]

    def artifacts_dir(self, log_path: str = LOG_PATH) -> Path:
        return self.logs / log_path / "artifacts"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    env = Served(tmp_path)
    try:
        yield env
    finally:
        env.server.stop()


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url)


def log_url(served: Served, log_path: str = LOG_PATH) -> str:
    return f"{served.url}{log_path}/"


async def test_files_and_a_directory_become_artifacts_served_file_by_file(
    served: Served,
) -> None:
    result = await served.run(request(run=(
        'cd "$LOCKMASTER_ARTIFACTS" && mkdir -p repo/dists/stable repo/pool/main && '
        "echo 'Suite: stable' > repo/dists/stable/Release && printf deb > repo/pool/main/p.deb && "
        "echo hello > 'notes 1.txt'"
    )))
    assert result.result == Result.SUCCESS, served.lines()
    base = f"{log_url(served)}artifacts/"
    expected = {"job": "unit", "project": PROJECT, "change": 42, "patchset": 3, "metadata": {}}
    assert result.artifacts == [
        Artifact(name="notes 1.txt", url=f"{base}notes%201.txt", **expected),
        Artifact(name="repo", url=f"{base}repo/", **expected),
    ]
    lines = served.lines()
    assert f"Artifacts: notes 1.txt -> {base}notes%201.txt" in lines
    assert f"Artifacts: repo -> {base}repo/" in lines
    assert lines.index(f"Artifacts: repo -> {base}repo/") < lines.index("RESULT: SUCCESS")
    notes, release, deb = (
        await get(result.artifacts[0].url),
        await get(result.artifacts[1].url + "dists/stable/Release"),
        await get(result.artifacts[1].url + "pool/main/p.deb"),
    )
    assert (notes.status_code, notes.text) == (200, "hello\n")
    assert (release.status_code, release.text) == (200, "Suite: stable\n")
    assert (deb.status_code, deb.content) == (200, b"deb")
    assert tree_files(served.artifacts_dir()) == {
        "notes 1.txt": b"hello\n", "repo/dists/stable/Release": b"Suite: stable\n",
        "repo/pool/main/p.deb": b"deb",
    }


async def test_no_artifacts(served: Served) -> None:
    result = await served.run(request(run="true"))
    assert result.result == Result.SUCCESS and result.artifacts == []
    assert "Artifacts: none" in served.lines()


async def test_an_apt_repository_from_one_build_is_used_by_the_next(served: Served) -> None:
    """A package job publishes a per-change repository; an install test receives its URL in
    $LOCKMASTER_ARTIFACTS_FILE and apt fetches the package from the log server."""
    if not all(map(shutil.which, ("dpkg-deb", "dpkg-scanpackages", "apt-get", "python3"))):
        pytest.skip("needs dpkg-dev, apt and python3")
    build = await served.run(request(build_id="b1", log_path="42/3/check/build/b1", run=(
        "set -e; mkdir -p pkg/DEBIAN pkg/usr/share/lm-hello; echo hi > pkg/usr/share/lm-hello/hi; "
        "printf 'Package: lm-hello\\nVersion: 1.0-1\\nArchitecture: all\\n"
        "Maintainer: t <t@example.org>\\nDescription: hello\\n' > pkg/DEBIAN/control; "
        'repo="$LOCKMASTER_ARTIFACTS/repo"; mkdir -p "$repo"; '
        'dpkg-deb -Zgzip --build pkg "$repo/lm-hello_1.0-1_all.deb" >/dev/null; '
        'cd "$repo" && dpkg-scanpackages . /dev/null 2>/dev/null | gzip -9c > Packages.gz; '
        "printf '%s' '{\"repo\": {\"path\": \"repo\", \"metadata\": {\"type\": \"apt\"}}}' "
        '> "$LOCKMASTER_ARTIFACTS/artifacts.json"'
    )))
    assert build.result == Result.SUCCESS, served.lines("42/3/check/build/b1")
    [repo] = build.artifacts
    assert repo.name == "repo" and repo.metadata == {"type": "apt"} and repo.url.endswith("/")
    packages = await get(repo.url + "Packages.gz")
    assert packages.status_code == 200 and packages.content[:2] == b"\x1f\x8b"

    apt = (
        'apt-get -q -o Dir::Etc::SourceList="$PWD/apt/sources.list" '
        "-o Dir::Etc::SourceParts=/nonexistent -o Dir::State=\"$PWD/apt/state\" "
        '-o Dir::State::Lists="$PWD/apt/lists" -o Dir::Cache="$PWD/apt/cache" '
        "-o Debug::NoLocking=1 -o APT::Sandbox::User=root"
    )
    install = await served.run(request(
        build_id="b2", log_path="42/3/check/install/b2",
        run=(
            "set -e; mkdir -p apt/state apt/lists/partial apt/cache/archives/partial; "
            "url=$(python3 -c 'import json, os; "
            "given = json.load(open(os.environ[\"LOCKMASTER_ARTIFACTS_FILE\"])); "
            "print(next(a[\"url\"] for a in given if a[\"metadata\"].get(\"type\") == \"apt\"))'); "
            'echo "deb [trusted=yes] $url ./" > apt/sources.list; '
            f"{apt} update; {apt} download lm-hello; dpkg-deb -c lm-hello_1.0-1_all.deb"
        ),
    ).model_copy(update={"artifacts": build.artifacts}))
    lines = served.lines("42/3/check/install/b2")
    assert install.result == Result.SUCCESS, lines
    assert any(line.endswith("./usr/share/lm-hello/hi") for line in lines), lines


async def test_received_artifacts_are_in_the_artifacts_file(served: Served) -> None:
    given = [
        Artifact(name="repo", url="http://logs/x/artifacts/repo/", job="build", project="org/a",
                 change=41, patchset=1, metadata={"type": "apt"}),
        Artifact(name="report.html", url="http://logs/y/artifacts/report.html", job="docs",
                 project="org/b", change=42, patchset=3),
    ]
    copy = 'cp "$LOCKMASTER_ARTIFACTS_FILE" "$LOCKMASTER_ARTIFACTS/received.json"'
    result = await served.run(request(run=copy).model_copy(update={"artifacts": given}))
    assert result.result == Result.SUCCESS
    received = json.loads((served.artifacts_dir() / "received.json").read_text())
    assert [Artifact.model_validate(item) for item in received] == given
    none = await served.run(request(build_id="b2", log_path="42/3/check/unit/b2", run=copy))
    assert none.result == Result.SUCCESS
    assert json.loads((served.artifacts_dir("42/3/check/unit/b2") / "received.json").read_text()
                      ) == []


async def test_artifacts_json_names_them(served: Served) -> None:
    index = {
        "the repository": {"path": "out/repo/", "metadata": {"type": "apt", "arch": "all"}},
        "deb": {"path": "./out/repo/p.deb"},
        "everything": {"path": "."},
        "escape": {"path": "../../../../etc/passwd"},
        "absolute": {"path": "/etc/passwd"},
        "missing": {"path": "out/nope"},
        "numbers": {"path": "out/repo/p.deb", "metadata": {"n": 1}},
        "typo": {"pth": "out/repo/p.deb"},
        "not an object": "out/repo/p.deb",
    }
    result = await served.run(request(run=(
        'cd "$LOCKMASTER_ARTIFACTS" && mkdir -p out/repo && printf deb > out/repo/p.deb && '
        "echo unlisted > other.txt && "
        f"cat > artifacts.json <<'EOF'\n{json.dumps(index)}\nEOF"
    )))
    assert result.result == Result.SUCCESS, served.lines()
    base = f"{log_url(served)}artifacts/"
    assert [(a.name, a.url, a.metadata) for a in result.artifacts] == [
        ("the repository", f"{base}out/repo/", {"type": "apt", "arch": "all"}),
        ("deb", f"{base}out/repo/p.deb", {}),
        ("everything", base, {}),
    ]
    lines = served.lines()
    for name in ("escape", "absolute"):
        assert any(line.startswith(f"Artifacts: '{name}' in artifacts.json left out: path")
                   and "is not inside the artifacts directory" in line for line in lines), lines
    assert any(line.startswith("Artifacts: 'missing' in artifacts.json left out: 'out/nope' "
                               "was not collected") for line in lines), lines
    for name in ("numbers", "typo", "not an object"):
        assert any(line.startswith(f"Artifacts: '{name}' in artifacts.json left out: ")
                   for line in lines), (name, lines)
    assert "Artifacts: deb -> " + f"{base}out/repo/p.deb" in lines
    deb = await get(result.artifacts[1].url)
    assert (deb.status_code, deb.content) == (200, b"deb")


@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "Expecting property name"),
    ("[1, 2]", "a JSON object is expected, not list"),
    ("\\377\\376", "can't decode byte 0xff"),
], ids=["syntax", "a list", "not utf-8"])
async def test_a_bad_artifacts_json_is_a_log_line(served: Served, content: str, why: str) -> None:
    result = await served.run(request(run=(
        f"""cd "$LOCKMASTER_ARTIFACTS" && echo a > a.txt && printf '{content}' > artifacts.json"""
    )))
    assert result.result == Result.SUCCESS, served.lines()
    assert [a.name for a in result.artifacts] == ["a.txt"]  # artifacts.json is not one
    assert any(line.startswith("Artifacts: artifacts.json ignored (every entry is listed "
                               "instead): ") and why in line for line in served.lines()), (
        served.lines())


async def test_failed_and_timed_out_runs_still_collect_and_post_run_can_add(
    served: Served,
) -> None:
    failed = await served.run(request(
        run='echo partial > "$LOCKMASTER_ARTIFACTS/partial.txt"; exit 3',
        post_run=['echo from post-run > "$LOCKMASTER_ARTIFACTS/post.txt"'],
    ))
    assert failed.result == Result.FAILURE
    assert failed.message == "run exited with status 3"
    assert [a.name for a in failed.artifacts] == ["partial.txt", "post.txt"]
    assert (await get(failed.artifacts[1].url)).text == "from post-run\n"

    timed_out = await served.run(request(
        build_id="b2", log_path="42/3/check/unit/b2", timeout=0.5,
        run='echo started > "$LOCKMASTER_ARTIFACTS/started.txt"; sleep 30',
    ))
    assert timed_out.result == Result.TIMED_OUT
    assert [a.name for a in timed_out.artifacts] == ["started.txt"]


async def test_over_the_cap_nothing_is_kept_and_a_success_fails(tmp_path: Path) -> None:
    env = Served(tmp_path, max_artifact_bytes=10_000)
    try:
        write = ('echo small > "$LOCKMASTER_ARTIFACTS/small.txt"; '
                 'head -c 20000 /dev/zero > "$LOCKMASTER_ARTIFACTS/big.bin"')
        result = await env.run(request(run=write))
        assert result.result == Result.FAILURE
        assert result.artifacts == []
        assert result.message is not None
        assert result.message.startswith("artifacts: ")
        assert result.message.endswith("holds more than 10000 bytes, the limit")
        assert not exists(env.artifacts_dir())
        lines = env.lines()
        assert any(line.startswith("Artifacts not collected: ")
                   and line.endswith("holds more than 10000 bytes, the limit") for line in lines)
        assert "RESULT: FAILURE: " + result.message in lines
        # A run that failed anyway keeps its own result and message.
        failed = await env.run(request(build_id="b2", log_path="42/3/check/unit/b2",
                                       run=f"{write}; exit 1"))
        assert (failed.result, failed.message) == (Result.FAILURE, "run exited with status 1")
        assert failed.artifacts == [] and not exists(env.artifacts_dir("42/3/check/unit/b2"))
        # Under the cap, the same job's artifacts are kept.
        small = await env.run(request(build_id="b3", log_path="42/3/check/unit/b3",
                                      run='echo small > "$LOCKMASTER_ARTIFACTS/small.txt"'))
        assert small.result == Result.SUCCESS and [a.name for a in small.artifacts] == ["small.txt"]
    finally:
        env.server.stop()


async def test_links_leading_outside_are_neither_followed_nor_served(served: Served) -> None:
    result = await served.run(request(run=(
        'cd "$LOCKMASTER_ARTIFACTS" && echo real > real.txt && ln -s /etc/passwd passwd && '
        "ln -s ../src workspace-src && ln -s real.txt alias.txt"
    )))
    assert result.result == Result.SUCCESS
    assert [a.name for a in result.artifacts] == ["alias.txt", "real.txt"]
    lines = served.lines()
    for name in ("passwd", "workspace-src"):
        assert (f"Artifacts: {name} left out: a symbolic link leading outside the tree or nowhere"
                in lines), lines
    assert listing(served.artifacts_dir()) == ["alias.txt", "real.txt"]
    assert (await get(f"{log_url(served)}artifacts/passwd")).status_code == 404
    assert (await get(result.artifacts[0].url)).text == "real\n"


async def test_an_earlier_try_leaves_no_artifacts_behind(served: Served) -> None:
    first = await served.run(request(run='echo one > "$LOCKMASTER_ARTIFACTS/one.txt"'))
    assert [a.name for a in first.artifacts] == ["one.txt"]
    second = await served.run(request(run='echo two > "$LOCKMASTER_ARTIFACTS/two.txt"'))
    assert [a.name for a in second.artifacts] == ["two.txt"]
    assert listing(served.artifacts_dir()) == ["two.txt"]
    lost = await served.run(request(nodeset=["gpu"]))  # no node: nothing collected
    assert lost.result == Result.NODE_FAILURE and lost.artifacts == []
    assert not exists(served.artifacts_dir())
