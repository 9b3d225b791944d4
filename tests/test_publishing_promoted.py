"""Provenance of a promoted gate build: its manifest names the gate's speculative merge commit,
which is not on the branch; the stable repository takes it only when the merged commit (on the
branch) has the very tree the gate tested. Real git, reprepro and gpg; every refusal leaves the
repository as it was."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from lockmaster.publishing import (
    AptRepoConfig,
    PromotedSource,
    ProvenanceError,
    PublishRequest,
    SigningKey,
    publish_apt,
)
from tests.publishing_helpers import (
    GIT_ENV,
    PACKAGES,
    _run,
    build_dir,
    tree_state,
)


class Merges:
    """A branch `main` and, as a gate and Gerrit make them: a change, the gate's speculative
    merge of it onto main (kept on a side ref only, as the merger keeps it) and the merge the
    review system made on main, with the same tree but another commit; and a merge on main
    with a different tree."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True)
        self.path = path
        git = self.git = functools.partial(_run, "git", "-C", path, env=GIT_ENV)
        git("init", "-q", "-b", "main")
        (path / "README").write_text("one\n")
        git("add", "README")
        git("commit", "-q", "-m", "first")
        base = self.rev("HEAD")
        git("checkout", "-q", "-b", "change")
        (path / "feature").write_text("new\n")
        git("add", "feature")
        git("commit", "-q", "-m", "the change")
        change = self.rev("HEAD")
        # The gate's speculative merge (another message, as the merger writes it).
        git("checkout", "-q", "--detach", base)
        git("merge", "-q", "--no-ff", "-m", "speculative merge", change)
        self.tested = self.rev("HEAD")
        git("update-ref", "refs/lockmaster/states/x", self.tested)
        # The review system's merge of the same change onto the same tip.
        git("checkout", "-q", "main")
        git("merge", "-q", "--no-ff", "-m", "Merge change 1", change)
        self.merged = self.rev("HEAD")
        git("branch", "-q", "-D", "change")
        # Someone merged something else on another branch tip: another tree.
        git("checkout", "-q", "-b", "other", base)
        (path / "README").write_text("other\n")
        git("commit", "-q", "-am", "by hand")
        git("merge", "-q", "--no-ff", "-m", "Merge change 1 elsewhere", change)
        self.other = self.rev("HEAD")
        git("checkout", "-q", "main")

    def rev(self, name: str) -> str:
        return self.git("rev-parse", name).strip()

    def tree(self, commit: str) -> str:
        return self.rev(f"{commit}^{{tree}}")


@pytest.fixture
def merges(tmp_path: Path) -> Merges:
    return Merges(tmp_path / "git")


def request(tmp_path: Path, merges: Merges, manifest_commit: str, *, merged: str | None = None,
            tested_tree: str | None = None, branch: str = "main") -> PublishRequest:
    manifest = build_dir(tmp_path, "gate", [PACKAGES.deb("hello", "1.0")], manifest_commit)
    return PublishRequest(
        snapshot_id="s1", manifest=manifest, git_repo=merges.path, branch=branch,
        promoted=PromotedSource(tested_commit=merges.tested,
                                tested_tree=tested_tree or merges.tree(merges.tested),
                                merged_commit=merged or merges.merged))


def repo(tmp_path: Path) -> AptRepoConfig:
    return AptRepoConfig(root=tmp_path / "deb", codename="bookworm", apt_get_check=False)


def test_the_gate_build_of_the_merged_tree_is_published(tmp_path: Path, key: SigningKey,
                                                        merges: Merges) -> None:
    assert merges.tested != merges.merged
    assert merges.tree(merges.tested) == merges.tree(merges.merged)
    info = publish_apt(repo(tmp_path), key, request(tmp_path, merges, merges.tested))
    assert info.source_commit == merges.tested  # what the packages were built from
    assert info.merged_commit == merges.merged
    assert info.source_tree == merges.tree(merges.merged)
    assert info.checks[0] == (f"provenance: the gate's build of {merges.tested} (its "
                              f"speculative merge), tree {merges.tree(merges.merged)} = the "
                              f"tree of merged commit {merges.merged} on main")
    # Without the promotion the same manifest is refused: its commit is not on the branch.
    plain = request(tmp_path / "again", merges, merges.tested).model_copy(
        update={"promoted": None, "snapshot_id": "s2"})
    with pytest.raises(ProvenanceError, match="is not merged"):
        publish_apt(repo(tmp_path), key, plain)


@pytest.mark.parametrize("case", ["trees-differ", "manifest-of-another-commit",
                                  "merged-not-on-branch", "tree-claim-false"])
def test_a_gate_build_that_is_not_the_merged_source_is_refused(
        tmp_path: Path, key: SigningKey, merges: Merges, case: str) -> None:
    target = repo(tmp_path)
    publish_apt(target, key, PublishRequest(  # a repository that serves a snapshot already
        snapshot_id="s0", manifest=build_dir(tmp_path, "first", [PACKAGES.deb("base", "1.0")],
                                             merges.merged),
        git_repo=merges.path, branch="main"))
    before = tree_state(target.root)
    if case == "trees-differ":  # merged onto another tip: other tree than the gate tested
        attempt = request(tmp_path, merges, merges.tested, merged=merges.other, branch="other")
        match = "has tree .* the gate tested tree"
    elif case == "manifest-of-another-commit":
        attempt = request(tmp_path, merges, merges.merged)
        match = "but the gate tested"
    elif case == "merged-not-on-branch":
        attempt = request(tmp_path, merges, merges.tested, merged=merges.other)
        match = "is not merged"
    else:  # the claimed tree is the merged one, but the tested commit here has another
        merges.git("update-ref", "refs/lockmaster/states/x", merges.other)
        attempt = request(tmp_path, merges, merges.other, merged=merges.merged)
        attempt.promoted = PromotedSource(tested_commit=merges.other,
                                          tested_tree=merges.tree(merges.merged),
                                          merged_commit=merges.merged)
        match = "not .* as claimed"
    attempt.snapshot_id = "s1"
    with pytest.raises(ProvenanceError, match=match) as caught:
        publish_apt(target, key, attempt)
    assert not caught.value.retryable
    assert tree_state(target.root) == before, "a refused publish changes nothing"


async def test_the_publishing_host_publishes_exactly_the_chosen_gate_build(
        tmp_path: Path, key: SigningKey, merges: Merges) -> None:
    """`publish_stable` with a gate build's provenance: the manifest it fetches must be the one
    whose sha256 was pinned when the build was chosen; then the library's same-tree check."""
    import hashlib

    from temporalio.exceptions import ApplicationError

    from lockmaster.activities.publishing import PublishingActivities
    from lockmaster.config.models import LockmasterConfig
    from lockmaster.git.cache import RepoCache
    from lockmaster.logserver import LogServer
    from lockmaster.model.change import ChangeRef
    from lockmaster.model.publish import BuildSource, Provenance, PublishStableRequest
    from tests.deployment import make_config
    from tests.ports import free_port

    data = make_config(tmp_path, projects=[], jobs=[]).model_dump(
        by_alias=True, mode="json", exclude_none=True)
    data["publishing"] = {"signing": {"gnupg-home": str(key.gnupghome),
                                      "key-id": key.fingerprint}}
    config = LockmasterConfig.model_validate(data)
    manifest = build_dir(tmp_path / "logs", "gate", [PACKAGES.deb("hello", "1.0")],
                         merges.tested)
    server = LogServer(tmp_path / "logs", "127.0.0.1", free_port()).start()
    try:
        activities = PublishingActivities(
            config, RepoCache(tmp_path / "cache", lambda _c, _p: str(merges.path)),
            {"hello": "local"})
        change = ChangeRef(connection="local", project="hello", branch="main", number=1,
                           patchset=1, commit=merges.merged)
        chosen = Provenance(
            source=BuildSource.GATE, reason="trees equal", job="package-build",
            tested_commit=merges.tested, tested_tree=merges.tree(merges.tested),
            merged_commit=merges.merged,
            manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest())
        request = PublishStableRequest(change=change, snapshot="000001-hello-1",
                                       packages_url=f"http://127.0.0.1:{server.port}/gate/",
                                       provenance=chosen.model_copy(
                                           update={"manifest_sha256": "0" * 64}))
        with pytest.raises(ApplicationError, match="changed since its build was chosen") as no:
            await activities.publish_stable(request)
        assert no.value.non_retryable
        assert not (config.publish_root / "deb").exists()  # nothing was published
        done = await activities.publish_stable(request.model_copy(update={"provenance": chosen}))
        assert done.snapshot == "000001-hello-1" and done.added
        assert done.provenance.startswith(f"the gate's build of {merges.tested}")
    finally:
        server.stop()
