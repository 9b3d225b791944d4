"""Depends-On resolution against real git repositories and a review-system double."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from lockmaster.git.cache import RepoCache
from lockmaster.git.dependencies import resolve_dependencies
from lockmaster.model.change import ChangeInfo, ChangeRef
from lockmaster.model.report import ReportRequest, ReportResult
from lockmaster.model.state import DependencyResult
from lockmaster.review.base import ChangeNotFound, ReviewDriver
from tests.gitrepos import ReviewSite

APP, LIB, SECRET = "org/app", "org/lib", "org/secret"
Status = Literal["NEW", "MERGED", "ABANDONED"]


class FakeReview:
    """Answers about changes the test registered; the git side is the ReviewSite."""

    def __init__(self, connection: str, web: str, site: ReviewSite) -> None:
        self.connection = connection
        self.web = web
        self.site = site
        self.changes: dict[int, ChangeInfo] = {}

    def add(self, ref: ChangeRef, status: Status = "NEW") -> ChangeRef:
        assert ref.commit is not None
        self.changes[ref.number] = ChangeInfo(
            connection=self.connection, project=ref.project, branch=ref.branch,
            number=ref.number, patchset=ref.patchset, status=status, commit=ref.commit,
            change_id=ref.change_id, url=self.change_url(ref.number))
        return ref.model_copy(update={"connection": self.connection,
                                      "url": self.change_url(ref.number)})

    async def get_change(self, number: int) -> ChangeInfo:
        if number not in self.changes:
            raise ChangeNotFound(f"no change {number}")
        return self.changes[number]

    async def find_change_id(self, change_id: str) -> list[ChangeInfo]:
        return [c for c in self.changes.values() if c.change_id == change_id]

    async def needed_by(self, change: ChangeInfo) -> list[ChangeInfo]:
        # Not asked here: these tests resolve dependencies; test_dependents.py walks dependents
        # on the real local review system.
        raise NotImplementedError

    async def post_report(self, report: ReportRequest) -> ReportResult:
        raise NotImplementedError

    async def submit(self, change: ChangeRef) -> None:
        raise NotImplementedError

    def git_url(self, project: str) -> str:
        return self.site.url_for(self.connection, project)

    def change_url(self, number: int) -> str:
        return f"{self.web}/{number}"

    async def aclose(self) -> None:
        return None


@pytest.fixture
def site(tmp_path: Path) -> ReviewSite:
    site = ReviewSite(tmp_path / "review")
    for project in (APP, LIB, SECRET):
        site.create_project(project)
    return site


@pytest.fixture
def gerrit(site: ReviewSite) -> FakeReview:
    return FakeReview("gerrit", "https://review.example.org", site)


@pytest.fixture
def local(site: ReviewSite) -> FakeReview:
    return FakeReview("local", "local://local", site)


@pytest.fixture
def cache(tmp_path: Path, site: ReviewSite) -> RepoCache:
    return RepoCache(tmp_path / "cache", site.url_for)


async def resolve(change: ChangeRef, cache: RepoCache, *drivers: FakeReview) -> DependencyResult:
    assert all(isinstance(d, ReviewDriver) for d in drivers)
    return await resolve_dependencies(change, {d.connection: d for d in drivers}, cache,
                                      {APP, LIB})


def keys(result: DependencyResult) -> list[str]:
    assert result.ok, result.error
    return [f"{c.connection}:{c.project}:{c.key}" for c in result.changes]


def needs(*deps: str) -> str:
    return "Do it\n\n" + "".join(f"Depends-On: {d}\n" for d in deps)


async def test_no_dependencies(site: ReviewSite, gerrit: FakeReview, cache: RepoCache) -> None:
    one = gerrit.add(site.push_change(APP, 1))
    result = await resolve(one, cache, gerrit)
    assert result.ok and result.changes == [one]


async def test_chain_by_url_and_change_id(site: ReviewSite, gerrit: FakeReview,
                                          cache: RepoCache) -> None:
    one = gerrit.add(site.push_change(LIB, 1))
    two = gerrit.add(site.push_change(
        APP, 2, message=needs("https://review.example.org/c/org/lib/+/1")))
    three = gerrit.add(site.push_change(APP, 3, message=needs(two.change_id or "")))
    result = await resolve(three, cache, gerrit)
    assert keys(result) == ["gerrit:org/lib:1,1", "gerrit:org/app:2,1", "gerrit:org/app:3,1"]
    assert result.changes[0] == one and result.changes[-1] == three
    assert result.changes[1].commit == two.commit


async def test_dependencies_at_their_current_patchset(site: ReviewSite, gerrit: FakeReview,
                                                      cache: RepoCache) -> None:
    gerrit.add(site.push_change(LIB, 4))
    site.push_change(APP, 1, 1)
    # Only the current patchset's footers count: patchset 2 gained a dependency.
    gerrit.add(site.push_change(APP, 1, 2, message=needs("https://review.example.org/4")))
    two = gerrit.add(site.push_change(APP, 2, message=needs("https://review.example.org/1")))
    assert keys(await resolve(two, cache, gerrit)) == [
        "gerrit:org/lib:4,1", "gerrit:org/app:1,2", "gerrit:org/app:2,1"]


async def test_diamond_lists_each_change_once(site: ReviewSite, gerrit: FakeReview,
                                              cache: RepoCache) -> None:
    gerrit.add(site.push_change(LIB, 1))
    gerrit.add(site.push_change(LIB, 2, message=needs("https://review.example.org/1")))
    top = gerrit.add(site.push_change(APP, 3, message=needs(
        "https://review.example.org/c/org/lib/+/2", "https://review.example.org/1",
        "https://review.example.org/#/c/2/")))
    assert keys(await resolve(top, cache, gerrit)) == [
        "gerrit:org/lib:1,1", "gerrit:org/lib:2,1", "gerrit:org/app:3,1"]


async def test_merged_dependency_is_skipped(site: ReviewSite, gerrit: FakeReview,
                                            cache: RepoCache) -> None:
    # Not even its own dependencies are looked at: the branch has all of them.
    gerrit.add(site.push_change(LIB, 1, message=needs("https://review.example.org/404")),
               status="MERGED")
    two = gerrit.add(site.push_change(APP, 2, message=needs("https://review.example.org/1")))
    assert keys(await resolve(two, cache, gerrit)) == ["gerrit:org/app:2,1"]


async def test_abandoned_dependency(site: ReviewSite, gerrit: FakeReview,
                                    cache: RepoCache) -> None:
    gerrit.add(site.push_change(LIB, 1), status="ABANDONED")
    two = gerrit.add(site.push_change(APP, 2, message=needs("https://review.example.org/1")))
    result = await resolve(two, cache, gerrit)
    assert not result.ok and result.changes == []
    assert result.error is not None and "abandoned change 1" in result.error


async def test_dependency_in_unknown_project(site: ReviewSite, gerrit: FakeReview,
                                             cache: RepoCache) -> None:
    gerrit.add(site.push_change(SECRET, 1))
    two = gerrit.add(site.push_change(APP, 2, message=needs("https://review.example.org/1")))
    result = await resolve(two, cache, gerrit)
    # Zuul resolves a Depends-On in a project it does not manage (test_crd_gate_unknown_project):
    # the need is known, and the gate refuses the change because it cannot be in its queue.
    assert result.ok, result.error
    assert [(c.project, c.number) for c in result.changes] == [(SECRET, 1), (APP, 2)]


async def test_cycle(site: ReviewSite, gerrit: FakeReview, cache: RepoCache) -> None:
    one = gerrit.add(site.push_change(APP, 1, message=needs("https://review.example.org/2")))
    gerrit.add(site.push_change(LIB, 2, message=needs("https://review.example.org/1")))
    result = await resolve(one, cache, gerrit)
    assert not result.ok
    assert result.error == "dependency cycle: 1,1 -> 2,1 -> 1,1"


async def test_self_dependency_is_a_cycle(site: ReviewSite, gerrit: FakeReview,
                                          cache: RepoCache) -> None:
    one = gerrit.add(site.push_change(APP, 1, message=needs("https://review.example.org/1")))
    assert (await resolve(one, cache, gerrit)).error == "dependency cycle: 1,1 -> 1,1"


@pytest.mark.parametrize(
    "footer",
    ["https://review.example.org/77", "I" + "e" * 40, "https://elsewhere.example.org/1",
     "see change 1"],
)
async def test_unresolvable_footer(site: ReviewSite, gerrit: FakeReview, cache: RepoCache,
                                   footer: str) -> None:
    gerrit.add(site.push_change(LIB, 1))
    two = gerrit.add(site.push_change(APP, 2, message=needs(footer)))
    result = await resolve(two, cache, gerrit)
    assert not result.ok and result.changes == []
    assert result.error is not None and footer in result.error and "2,1" in result.error


async def test_missing_patchset_of_the_change(site: ReviewSite, gerrit: FakeReview,
                                              cache: RepoCache) -> None:
    one = gerrit.add(site.push_change(APP, 1))
    result = await resolve(one.model_copy(update={"patchset": 9, "commit": None}), cache, gerrit)
    assert not result.ok and result.error is not None and "refs/changes/01/1/9" in result.error


async def test_dependency_on_another_connection_by_host(site: ReviewSite, gerrit: FakeReview,
                                                        local: FakeReview,
                                                        cache: RepoCache) -> None:
    # Numbers overlap between connections; the URL's host decides.
    gerrit.add(site.push_change(APP, 5, files={"gerrit5": "x\n"}))
    local.add(site.push_change(LIB, 5, files={"local5": "y\n"}))
    one = gerrit.add(site.push_change(APP, 1, message=needs("local://local/5")))
    two = local.add(site.push_change(LIB, 2, message=needs("https://review.example.org/5")))
    assert keys(await resolve(one, cache, gerrit, local)) == [
        "local:org/lib:5,1", "gerrit:org/app:1,1"]
    assert keys(await resolve(two, cache, gerrit, local)) == [
        "gerrit:org/app:5,1", "local:org/lib:2,1"]


async def test_change_id_prefers_the_same_branch(site: ReviewSite, gerrit: FakeReview,
                                                 cache: RepoCache) -> None:
    site.create_branch(LIB, "stable/1")
    site.create_branch(APP, "stable/1")
    cid = "I" + "a" * 40
    gerrit.add(site.push_change(LIB, 1, change_id=cid))
    gerrit.add(site.push_change(LIB, 2, change_id=cid, branch="stable/1"))
    gerrit.add(site.push_change(LIB, 3, change_id=cid, branch="stable/1"), status="ABANDONED")
    on_stable = gerrit.add(site.push_change(APP, 4, branch="stable/1", message=needs(cid)))
    on_master = gerrit.add(site.push_change(APP, 5, message=needs(cid)))
    assert keys(await resolve(on_stable, cache, gerrit))[0] == "gerrit:org/lib:2,1"
    assert keys(await resolve(on_master, cache, gerrit))[0] == "gerrit:org/lib:1,1"
    # No change on that branch: the open one wins over an abandoned one with a lower number.
    other = "I" + "b" * 40
    gerrit.add(site.push_change(LIB, 7, change_id=other), status="ABANDONED")
    gerrit.add(site.push_change(LIB, 8, change_id=other, branch="stable/1"))
    site.create_branch(APP, "stable/2")
    on_other = gerrit.add(site.push_change(APP, 9, branch="stable/2", message=needs(other)))
    assert keys(await resolve(on_other, cache, gerrit))[0] == "gerrit:org/lib:8,1"


async def test_git_parents_are_dependencies(site: ReviewSite, gerrit: FakeReview,
                                            cache: RepoCache) -> None:
    one = gerrit.add(site.push_change(APP, 1))
    two = gerrit.add(site.push_change(APP, 2, parent=one.commit))
    three = gerrit.add(site.push_change(APP, 3, parent=two.commit))
    result = await resolve(three, cache, gerrit)
    assert keys(result) == ["gerrit:org/app:1,1", "gerrit:org/app:2,1", "gerrit:org/app:3,1"]


async def test_merged_or_unknown_parents_are_not_dependencies(
    site: ReviewSite, gerrit: FakeReview, cache: RepoCache
) -> None:
    merged = gerrit.add(site.push_change(APP, 1), status="MERGED")
    two = gerrit.add(site.push_change(APP, 2, parent=merged.commit))
    result = await resolve(two, cache, gerrit)
    assert keys(result) == ["gerrit:org/app:2,1"]
    # A parent already on the branch is no dependency either.
    on_branch = site.rev_parse(APP, "master")
    three = gerrit.add(site.push_change(APP, 3, parent=on_branch))
    assert keys(await resolve(three, cache, gerrit)) == ["gerrit:org/app:3,1"]
