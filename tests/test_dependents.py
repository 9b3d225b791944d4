"""Finding the changes that need a change (Zuul's enqueueChangesBehind) on the real local
review system: git children of its current patchset, `Depends-On:` naming it, transitively."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockmaster.git.cache import RepoCache
from lockmaster.git.dependents import find_dependents
from lockmaster.model.state import DependentsRequest
from lockmaster.review.local import LocalReviewDriver, LocalReviewStore

APP, LIB = "org/app", "org/lib"
REQUIRE = {"Code-Review": 2, "Workflow": 1}


@pytest.fixture
def driver(tmp_path: Path) -> LocalReviewDriver:
    driver = LocalReviewDriver("local", tmp_path / "review")
    for project in (APP, LIB):
        driver.store.create_project(project, {"README": project})
    return driver


@pytest.fixture
def cache(tmp_path: Path, driver: LocalReviewDriver) -> RepoCache:
    return RepoCache(tmp_path / "cache", lambda _conn, project: driver.git_url(project))


def upload(store: LocalReviewStore, project: str, name: str, *, parent: int | None = None,
           depends_on: list[int] | None = None, approved: bool = True) -> int:
    info = store.upload(project, files={f"{name}.txt": name}, subject=name, parent=parent,
                        depends_on=depends_on)
    if approved:
        approve(store, info.number)
    return info.number


def approve(store: LocalReviewStore, number: int) -> None:
    store.vote(number, {"Code-Review": 2, "Workflow": 1}, author="core")


async def walk(driver: LocalReviewDriver, cache: RepoCache, *numbers: int,
               exclude: tuple[int, ...] = ()) -> list[int]:
    changes = [(await driver.get_change(n)).ref() for n in numbers]
    result = await find_dependents(
        DependentsRequest(changes=changes, require=REQUIRE,
                          exclude=[f"local:{n}" for n in exclude]),
        {"local": driver}, cache, {APP, LIB})
    for deps in result.found:  # each comes with its own dependencies, itself last
        assert deps.ok and deps.infos[-1].change == deps.changes[-1]
    return [deps.changes[-1].number for deps in result.found]


async def test_local_needed_by_finds_children_and_depends_on(driver: LocalReviewDriver) -> None:
    store = driver.store
    a = upload(store, APP, "a")
    child = upload(store, APP, "child", parent=a, approved=False)
    naming = upload(store, LIB, "naming", depends_on=[a], approved=False)
    unrelated = upload(store, APP, "unrelated")
    gone = upload(store, APP, "gone", parent=a)
    store.abandon(gone, author="developer")

    found = await driver.needed_by(await driver.get_change(a))

    numbers = sorted(i.number for i in found)
    assert numbers == sorted([child, naming])
    assert unrelated not in numbers and gone not in numbers


async def test_child_of_an_older_patchset_is_not_needing_the_current_one(
        driver: LocalReviewDriver) -> None:
    store = driver.store
    a = upload(store, APP, "a")
    child = upload(store, APP, "child", parent=a)
    store.new_patchset(a, {"a.txt": "a2"})

    found = await driver.needed_by(await driver.get_change(a))

    assert child not in [i.number for i in found]


async def test_zuul_tree_is_walked_in_zuuls_order(driver: LocalReviewDriver,
                                                  cache: RepoCache) -> None:
    """Zuul's test_needed_changes_enqueue: A <- B <- C <- D, B <- E, B <- F, A <- G; A, B, C
    entered: D, E, F, G follow, in that order."""
    store = driver.store
    a = upload(store, APP, "A")
    b = upload(store, APP, "B", parent=a)
    c = upload(store, APP, "C", parent=b)
    d = upload(store, APP, "D", parent=c)
    e = upload(store, APP, "E", parent=b)
    f = upload(store, APP, "F", parent=b)
    g = upload(store, APP, "G", parent=a)

    assert await walk(driver, cache, a, b, c) == [d, e, f, g]


async def test_unapproved_wip_and_excluded_changes_stop_the_walk(
        driver: LocalReviewDriver, cache: RepoCache) -> None:
    store = driver.store
    a = upload(store, APP, "A")
    unapproved = upload(store, APP, "unapproved", parent=a, approved=False)
    upload(store, APP, "behind-unapproved", parent=unapproved)
    wip = upload(store, APP, "wip", parent=a)
    store.set_wip(wip, True, author="developer")
    queued = upload(store, APP, "queued", parent=a)
    after_queued = upload(store, APP, "after-queued", parent=queued)
    cross = upload(store, LIB, "cross", depends_on=[a])

    found = await walk(driver, cache, a, exclude=(queued,))

    # Only the Depends-On change: the rest are unapproved, WIP, already queued (and what is
    # behind a queued change is that change's business), or behind an unapproved one.
    assert found == [cross]
    assert after_queued not in found


async def test_a_change_needing_an_outdated_patchset_is_not_found(
        driver: LocalReviewDriver, cache: RepoCache) -> None:
    store = driver.store
    a = upload(store, APP, "A")
    stale = await driver.get_change(a)
    store.new_patchset(a, {"A.txt": "A2"})
    approve(store, a)
    upload(store, APP, "on-old", parent=a)

    result = await find_dependents(DependentsRequest(changes=[stale.ref()], require=REQUIRE),
                                   {"local": driver}, cache, {APP, LIB})

    assert result.found == []
