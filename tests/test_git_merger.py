"""Speculative merges, the repository cache and workspaces, against real git repositories."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from lockmaster.execution.workspace import WorkspaceError
from lockmaster.git import recipe
from lockmaster.git.cache import STATE_REF_PREFIX, RefNotFound, RepoCache
from lockmaster.git.merger import prepare_state
from lockmaster.git.recipe import merge_message
from lockmaster.git.runner import GitError, git
from lockmaster.git.workspace import GitWorkspacePreparer
from lockmaster.model.change import ChangeRef
from lockmaster.model.state import PrepareStateRequest, SpeculativeState
from tests.gitrepos import ReviewSite, run_git

DATE = 1_700_000_000
APP, LIB, DOCS = "org/app", "org/lib", "org/docs"


@pytest.fixture
def site(tmp_path: Path) -> ReviewSite:
    site = ReviewSite(tmp_path / "review")
    site.create_project(APP, files={"README": "app\n", "a.txt": "one\ntwo\nthree\n"})
    return site


@pytest.fixture
def cache(tmp_path: Path, site: ReviewSite) -> RepoCache:
    return RepoCache(tmp_path / "cache", site.url_for)


def fresh_cache(tmp_path: Path, site: ReviewSite, name: str) -> RepoCache:
    return RepoCache(tmp_path / name, site.url_for)


def parents(repo: Path, rev: str) -> list[str]:
    return run_git("rev-list", "--parents", "-n1", rev, cwd=repo).split()[1:]


def first_parent_subjects(repo: Path, base: str, head: str) -> list[str]:
    out = run_git("log", "--first-parent", "--format=%s", f"{base}..{head}", cwd=repo)
    return out.splitlines()


def show(repo: Path, rev: str, path: str) -> str:
    return run_git("show", f"{rev}:{path}", cwd=repo)


# --- runner -----------------------------------------------------------------------------------


async def test_git_error_carries_stderr(tmp_path: Path) -> None:
    run_git("init", "--quiet", str(tmp_path / "r"), cwd=tmp_path)
    with pytest.raises(GitError, match="Needed a single revision") as info:
        await git("rev-parse", "--verify", "no-such-rev", cwd=tmp_path / "r")
    assert info.value.returncode != 0
    assert await git("rev-parse", "--verify", "nope", cwd=tmp_path / "r", check=False) == ""


async def test_git_ignores_caller_git_environment(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A Gerrit hook exports GIT_DIR; user config could set another identity.
    run_git("init", "--quiet", str(tmp_path / "r"), cwd=tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".gitconfig").write_text("[user]\n\tname = Someone Else\n")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    top = await git("rev-parse", "--show-toplevel", cwd=tmp_path / "r")
    assert Path(top.strip()) == tmp_path / "r"
    assert (await git("var", "GIT_AUTHOR_IDENT", cwd=tmp_path / "r")).startswith(
        "lockmaster <lockmaster@localhost>")


# --- cache ------------------------------------------------------------------------------------


async def test_cache_fetches_branches_and_change_refs(site: ReviewSite, cache: RepoCache) -> None:
    change = site.push_change(APP, 7, 3, message="Subject\n\nBody\n")
    await cache.fetch("gerrit", APP, [change.ref])
    master = await cache.rev_parse("gerrit", APP, "refs/heads/master")
    assert master == site.rev_parse(APP, "master")
    assert await cache.rev_parse("gerrit", APP, change.ref) == change.commit
    message = await cache.commit_message("gerrit", APP, change.ref)
    assert message == f"Subject\n\nBody\n\nChange-Id: {change.change_id}\n"
    with pytest.raises(RefNotFound) as info:
        await cache.fetch("gerrit", APP, ["refs/changes/07/7/4"])
    assert info.value.ref == "refs/changes/07/7/4"


async def test_cache_writers_wait_for_the_lock_across_instances(
        tmp_path: Path, site: ReviewSite, cache: RepoCache) -> None:
    # A second RepoCache on the same root stands for another worker process: only the file
    # lock can make it wait.
    other = RepoCache(cache.root, site.url_for)
    await cache.ensure("gerrit", APP)
    async with cache.locked("gerrit", APP):
        task = asyncio.create_task(other.fetch("gerrit", APP))
        await asyncio.sleep(0.3)
        assert not task.done()
    await asyncio.wait_for(task, 5)
    assert await other.rev_parse("gerrit", APP, "master") == site.rev_parse(APP, "master")


async def test_concurrent_fetches_of_one_repository(site: ReviewSite, cache: RepoCache) -> None:
    changes = [site.push_change(APP, n) for n in range(1, 7)]
    await asyncio.gather(*(cache.fetch("gerrit", APP, [c.ref]) for c in changes))
    for c in changes:
        assert await cache.rev_parse("gerrit", APP, c.ref) == c.commit


# --- merger -----------------------------------------------------------------------------------


async def test_one_change(site: ReviewSite, cache: RepoCache) -> None:
    change = site.push_change(APP, 1, files={"b.txt": "bee\n"})
    tip = site.commit_to_branch(APP, "master", {"c.txt": "sea\n"})  # the branch moved on
    result = await prepare_state(PrepareStateRequest(changes=[change], merge_date=DATE), cache)
    assert result.ok, result.error
    state = result.state
    assert state is not None and state.changes == [change] and state.merge_date == DATE
    ps = state.projects[APP]
    assert (ps.base, ps.branch, ps.connection, ps.merged) == (tip, "master", "gerrit", [change])
    repo = cache.path("gerrit", APP)
    assert parents(repo, ps.head) == [tip, change.commit]
    assert show(repo, ps.head, "b.txt") == "bee\n" and show(repo, ps.head, "c.txt") == "sea\n"
    raw = run_git("cat-file", "commit", ps.head, cwd=repo)
    assert f"author lockmaster <lockmaster@localhost> {DATE} +0000" in raw
    assert f"committer lockmaster <lockmaster@localhost> {DATE} +0000" in raw
    assert "Merge change 1,1 into master" in raw
    # Kept for preparers on this machine (later fetches do not prune it); the branch itself
    # is untouched.
    await cache.fetch("gerrit", APP)
    assert run_git("rev-parse", STATE_REF_PREFIX + ps.head, cwd=repo).strip() == ps.head
    assert run_git("rev-parse", "refs/heads/master", cwd=repo).strip() == tip


async def test_fast_forwardable_change_still_gets_a_merge_commit(
        site: ReviewSite, cache: RepoCache) -> None:
    change = site.push_change(APP, 1)
    result = await prepare_state(PrepareStateRequest(changes=[change], merge_date=DATE), cache)
    assert result.state is not None
    ps = result.state.projects[APP]
    assert ps.head != change.commit
    assert parents(cache.path("gerrit", APP), ps.head) == [ps.base, change.commit]


async def test_stack_of_two_changes_merged_in_order(site: ReviewSite, cache: RepoCache) -> None:
    one = site.push_change(APP, 1, files={"one.txt": "1\n"})
    two = site.push_change(APP, 2, files={"two.txt": "2\n"}, parent=one.commit)
    site.commit_to_branch(APP, "master", {"c.txt": "sea\n"})
    result = await prepare_state(PrepareStateRequest(changes=[one, two], merge_date=DATE), cache)
    assert result.ok and result.state is not None, result.error
    ps = result.state.projects[APP]
    assert ps.merged == [one, two]
    repo = cache.path("gerrit", APP)
    assert first_parent_subjects(repo, ps.base, ps.head) == [
        "Merge change 2,1 into master", "Merge change 1,1 into master"]
    assert parents(repo, ps.head)[1] == two.commit
    assert show(repo, ps.head, "one.txt") == "1\n" and show(repo, ps.head, "two.txt") == "2\n"


async def test_conflict_names_the_second_change(tmp_path: Path, site: ReviewSite,
                                                cache: RepoCache,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's own attributes must not change merge results (merge=union would hide it).
    attributes = tmp_path / "home" / ".config" / "git" / "attributes"
    attributes.parent.mkdir(parents=True)
    attributes.write_text("* merge=union\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    one = site.push_change(APP, 1, files={"a.txt": "one\nTWO\nthree\n"})
    two = site.push_change(APP, 2, files={"a.txt": "one\n2\nthree\n"})
    master = site.rev_parse(APP, "master")
    result = await prepare_state(PrepareStateRequest(changes=[one, two], merge_date=DATE), cache)
    assert not result.ok and result.state is None
    assert result.conflict_change == two
    assert result.error is not None and "a.txt" in result.error and "CONFLICT" in result.error
    repo = cache.path("gerrit", APP)
    assert run_git("for-each-ref", "--format=%(refname)", STATE_REF_PREFIX, cwd=repo) == ""
    assert run_git("rev-parse", "refs/heads/master", cwd=repo).strip() == master


async def test_conflicts_in_two_projects_report_the_earliest_change(
        site: ReviewSite, cache: RepoCache) -> None:
    site.create_project(LIB, files={"l.txt": "old\n"})
    a1 = site.push_change(APP, 1, files={"a.txt": "x\n"})
    b1 = site.push_change(LIB, 2, files={"l.txt": "mine\n"})
    site.commit_to_branch(LIB, "master", {"l.txt": "theirs\n"})  # b1 now conflicts
    a2 = site.push_change(APP, 3, files={"a.txt": "y\n"})  # conflicts with a1
    result = await prepare_state(PrepareStateRequest(changes=[a1, b1, a2], merge_date=DATE),
                                 cache)
    assert not result.ok and result.conflict_change == b1
    assert result.error is not None and "l.txt" in result.error


async def test_cross_project_state_with_required_project(tmp_path: Path, site: ReviewSite,
                                                         cache: RepoCache) -> None:
    site.create_project(LIB)
    docs_tip = site.create_project(DOCS)
    app = site.push_change(APP, 1, files={"app.txt": "x\n"})
    lib = site.push_change(LIB, 2, files={"lib.txt": "y\n"})
    req = PrepareStateRequest(changes=[app, lib], required_projects=[DOCS, APP],
                              merge_date=DATE)
    result = await prepare_state(req, cache, {DOCS: "gerrit"})
    assert result.ok and result.state is not None, result.error
    state = result.state
    assert list(state.projects) == [APP, LIB, DOCS]
    assert state.changes == [app, lib] and state.changes_key() == "1,1 2,1"
    assert state.projects[LIB].merged == [lib]
    assert show(cache.path("gerrit", LIB), state.projects[LIB].head, "lib.txt") == "y\n"
    docs = state.projects[DOCS]
    assert docs.base == docs.head == docs_tip and docs.merged == []
    # Without a connection for the required project, the request is refused.
    bad = await prepare_state(req, fresh_cache(tmp_path, site, "c2"))
    assert not bad.ok and bad.error is not None and DOCS in bad.error


async def test_changes_of_one_project_on_two_branches_each_merge_onto_their_own(
        tmp_path: Path, site: ReviewSite, cache: RepoCache) -> None:
    """A queue spanning branches (Zuul's default): the change under test's branch is checked
    out, the changes ahead on the other branch are merged onto it and kept beside."""
    stable = site.create_branch(APP, "stable/1")
    master = site.rev_parse(APP, "master")
    one = site.push_change(APP, 1, files={"one.txt": "1\n"})
    two = site.push_change(APP, 2, branch="stable/1", files={"two.txt": "2\n"})
    result = await prepare_state(PrepareStateRequest(changes=[one, two], merge_date=DATE), cache)
    assert result.ok, result.error
    state = result.state
    assert state is not None
    ps = state.projects[APP]
    assert (ps.branch, ps.base, ps.merged) == ("stable/1", stable, [two])
    [other] = state.other_branches
    assert (other.project, other.branch, other.base, other.merged) == (APP, "master", master,
                                                                        [one])
    repo = cache.path("gerrit", APP)
    assert parents(repo, ps.head) == [stable, two.commit]
    assert parents(repo, other.head) == [master, one.commit]
    # Tested as the last change of its own branch when nothing of its branch comes last.
    alone = await prepared(PrepareStateRequest(changes=[two, one], merge_date=DATE), cache)
    assert alone.projects[APP].branch == "master"
    assert [o.branch for o in alone.other_branches] == ["stable/1"]
    ws = tmp_path / "ws"
    await GitWorkspacePreparer(cache, {}).prepare(state, ws, [APP])
    assert checkout(ws, APP) == (ps.head, "stable/1", "")


async def test_a_conflict_on_the_other_branch_fails_the_state(
        site: ReviewSite, cache: RepoCache) -> None:
    site.create_branch(APP, "stable/1")
    one = site.push_change(APP, 1, files={"a.txt": "uno\n"})
    site.commit_to_branch(APP, "master", {"a.txt": "eins\n"})  # master moved: 1 conflicts
    two = site.push_change(APP, 2, branch="stable/1", files={"two.txt": "2\n"})
    result = await prepare_state(PrepareStateRequest(changes=[one, two], merge_date=DATE), cache)
    assert not result.ok and result.conflict_change == one


async def test_missing_patchset_is_a_failed_merge(site: ReviewSite, cache: RepoCache) -> None:
    one = site.push_change(APP, 1)
    ghost = one.model_copy(update={"number": 5, "commit": None})
    result = await prepare_state(PrepareStateRequest(changes=[one, ghost], merge_date=DATE),
                                 cache)
    assert not result.ok and result.conflict_change == ghost
    assert result.error is not None and ghost.ref in result.error


async def test_commit_that_is_not_the_patchset_is_refused(site: ReviewSite,
                                                          cache: RepoCache) -> None:
    one = site.push_change(APP, 1)
    stale = one.model_copy(update={"commit": "0" * 40})
    result = await prepare_state(PrepareStateRequest(changes=[stale], merge_date=DATE), cache)
    assert not result.ok and result.conflict_change == stale
    assert result.error is not None and one.commit in result.error


async def test_only_what_no_retry_can_change_is_permanent(tmp_path: Path, site: ReviewSite,
                                                       cache: RepoCache) -> None:
    """A conflict may go away when a change ahead leaves the queue; a missing or moved patchset
    of the change under test (last), or an unusable request, never does: the gate takes that
    item out at once instead of asking again."""
    one = site.push_change(APP, 1, files={"a.txt": "one\nTWO\nthree\n"})
    two = site.push_change(APP, 2, files={"a.txt": "one\n2\nthree\n"})
    ghost = one.model_copy(update={"number": 5, "commit": None})
    stale = one.model_copy(update={"commit": "0" * 40})

    async def answer(*changes: ChangeRef, required: list[str] | None = None
                     ) -> tuple[bool, bool, ChangeRef | None]:
        result = await prepare_state(PrepareStateRequest(
            changes=list(changes), required_projects=required or [], merge_date=DATE), cache)
        return result.ok, result.permanent, result.conflict_change

    assert await answer(one, two) == (False, False, two)  # a conflict
    assert await answer(one, ghost) == (False, True, ghost)  # its own patchset is gone
    assert await answer(ghost, one) == (False, False, ghost)  # one ahead of it is
    assert await answer(stale) == (False, True, stale)  # its patchset is another commit
    assert await answer(one, required=[DOCS]) == (False, True, None)  # unusable request
    assert await answer(one) == (True, False, None)


# --- reproducibility and workspaces -----------------------------------------------------------


def two_project_request(site: ReviewSite) -> PrepareStateRequest:
    site.create_project(LIB)
    one = site.push_change(APP, 1, files={"one.txt": "1\n"})
    two = site.push_change(APP, 2, files={"two.txt": "2\n"}, parent=one.commit)
    lib = site.push_change(LIB, 3, files={"lib.txt": "3\n"})
    site.commit_to_branch(APP, "master", {"c.txt": "sea\n"})
    return PrepareStateRequest(changes=[one, lib, two], merge_date=DATE)


async def prepared(req: PrepareStateRequest, cache: RepoCache) -> SpeculativeState:
    result = await prepare_state(req, cache)
    assert result.ok and result.state is not None, result.error
    return result.state


async def test_same_request_gives_identical_heads(tmp_path: Path, site: ReviewSite,
                                                  cache: RepoCache) -> None:
    req = two_project_request(site)
    first = await prepared(req, cache)
    again = await prepared(req, cache)
    elsewhere = await prepared(req, fresh_cache(tmp_path, site, "other-machine"))
    assert first == again == elsewhere
    later = await prepared(req.model_copy(update={"merge_date": DATE + 1}), cache)
    assert later.projects[APP].head != first.projects[APP].head


async def test_items_reuse_the_merges_of_the_items_ahead(tmp_path: Path, site: ReviewSite,
                                                         cache: RepoCache) -> None:
    req = two_project_request(site)
    ahead = await prepared(req.model_copy(update={"changes": req.changes[:2]}), cache)
    memo = run_git("for-each-ref", "--format=%(objectname)", "refs/lockmaster/merges/",
                   cwd=cache.path("gerrit", APP)).split()
    assert ahead.projects[APP].head in memo  # remembered
    behind = await prepared(req, cache)
    # The app's state behind builds on the merge made for the item ahead, bit for bit...
    parents = run_git("rev-list", "--parents", "-n1", behind.projects[APP].head,
                      cwd=cache.path("gerrit", APP)).split()
    assert parents[1] == ahead.projects[APP].head
    # ...and equals what a machine without the memo computes from scratch.
    assert behind == await prepared(req, fresh_cache(tmp_path, site, "no-memo"))


# --- how the merges are made -----------------------------------------------------------------


@pytest.fixture
def merge_trees(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The `git merge-tree` calls the recipe makes (each is one merge actually computed)."""
    calls: list[tuple[str, ...]] = []
    real = recipe.run_git

    async def spy(*args: str, **kwargs):  # type: ignore[no-untyped-def]
        if args[0] == "merge-tree":
            calls.append(args)
        return await real(*args, **kwargs)

    monkeypatch.setattr(recipe, "run_git", spy)
    return calls


def merged_by_git(tmp_path: Path, site: ReviewSite, project: str, base: str,
                  changes: list[ChangeRef], name: str = "oracle") -> str:
    """What `git merge` in a worktree makes of the same merges: the recipe's definition."""
    work = tmp_path / name
    run_git("clone", "--quiet", "--no-checkout", str(site.repo(project)), str(work),
            cwd=tmp_path)
    run_git("fetch", "--quiet", "origin", *[f"{c.ref}:{c.ref}" for c in changes], cwd=work)
    run_git("checkout", "--quiet", "--detach", base, cwd=work)
    ident = {"GIT_AUTHOR_NAME": "lockmaster", "GIT_AUTHOR_EMAIL": "lockmaster@localhost",
             "GIT_COMMITTER_NAME": "lockmaster", "GIT_COMMITTER_EMAIL": "lockmaster@localhost",
             "GIT_AUTHOR_DATE": f"{DATE} +0000", "GIT_COMMITTER_DATE": f"{DATE} +0000"}
    for change in changes:
        run_git("merge", "--no-ff", "--no-edit", "--no-log", "--no-stat", "--no-verify",
                "--strategy=ort", "-m", merge_message(change), change.ref, cwd=work, env=ident)
    return run_git("rev-parse", "HEAD", cwd=work).strip()


def gerrit_submits(site: ReviewSite, project: str, change: ChangeRef | str) -> str:
    """The review system merges a change (or any commit) into master its own way: its own
    merge commit (other author, date and message), so the branch tip is new."""
    repo = site.repo(project)
    commit = change.commit if isinstance(change, ChangeRef) else change
    assert commit is not None
    tip = site.rev_parse(project, "master")
    tree = run_git("merge-tree", "--write-tree", tip, commit, cwd=repo).split()[0]
    sha = run_git("commit-tree", tree, "-p", tip, "-p", commit, cwd=repo,
                  input=f"Merge {commit}\n").strip()
    run_git("update-ref", "refs/heads/master", sha, cwd=repo)
    return sha


async def test_merges_are_the_commits_git_merge_makes(tmp_path: Path, site: ReviewSite,
                                                      cache: RepoCache) -> None:
    # In the base already: c6 (its commit), and x.txt as c7 writes it (another commit).
    c6 = site.push_change(APP, 6, files={"six.txt": "6\n"})
    site.create_branch(APP, "master", c6.commit)
    c7 = site.push_change(APP, 7, files={"x.txt": "x\n"})
    site.commit_to_branch(APP, "master", {"x.txt": "x\n"})
    c1 = site.push_change(APP, 1, files={"one.txt": "1\n"})  # could fast-forward
    c2 = site.push_change(APP, 2, files={"a.txt": "ONE\ntwo\nthree\n"})
    c3 = site.push_change(APP, 3, files={"a.txt": "one\ntwo\nTHREE\n"})  # merges with c2
    c4 = site.push_change(APP, 4, files={"dir/four.txt": "4\n"})
    c5 = site.push_change(APP, 5, files={"a.txt": "ONE\ntwo\nTHREE\n"}, parent=c2.commit)
    changes = [c1, c2, c6, c3, c4, c5, c7]
    state = await prepared(PrepareStateRequest(changes=changes, merge_date=DATE), cache)
    ps = state.projects[APP]
    assert ps.head == merged_by_git(tmp_path, site, APP, ps.base, changes)
    repo = cache.path("gerrit", APP)
    assert show(repo, ps.head, "a.txt") == "ONE\ntwo\nTHREE\n"
    # c6 merged to nothing; c7 changed no file but still got its merge commit.
    assert first_parent_subjects(repo, ps.base, ps.head) == [
        f"Merge change {c.key} into master" for c in reversed(changes) if c != c6]
    run_git("fsck", "--no-dangling", cwd=repo)


async def test_attributes_in_the_tree_are_obeyed(tmp_path: Path, site: ReviewSite,
                                                 cache: RepoCache,
                                                 merge_trees: list[tuple[str, ...]]) -> None:
    # merge=union makes these two appends merge cleanly in a worktree; a merge that ignored
    # the attributes would report a conflict.
    site.create_project(LIB, files={".gitattributes": "log.txt merge=union\n",
                                    "log.txt": "start\n"})
    one = site.push_change(LIB, 1, files={"log.txt": "start\none\n"})
    two = site.push_change(LIB, 2, files={"log.txt": "start\ntwo\n"})
    state = await prepared(PrepareStateRequest(changes=[one, two], merge_date=DATE), cache)
    ps = state.projects[LIB]
    assert show(cache.path("gerrit", LIB), ps.head, "log.txt") == "start\none\ntwo\n"
    assert ps.head == merged_by_git(tmp_path, site, LIB, ps.base, [one, two])
    assert merge_trees == []  # made in a worktree
    # An executor without the state replays it (in its clone's worktree) to the same head.
    ws = tmp_path / "ws"
    await GitWorkspacePreparer(fresh_cache(tmp_path, site, "executor"), {}).prepare(state, ws, [])
    assert (ws / "src" / LIB / "log.txt").read_text() == "start\none\ntwo\n"


async def test_state_behind_merged_changes_reuses_their_trees(
        tmp_path: Path, site: ReviewSite, cache: RepoCache,
        merge_trees: list[tuple[str, ...]]) -> None:
    changes = [site.push_change(APP, n, files={f"f{n}.txt": f"{n}\n"}) for n in range(1, 7)]
    await prepared(PrepareStateRequest(changes=changes[:5], merge_date=DATE), cache)
    for change in changes[:2]:  # the gate merged the first two: the tip moved
        gerrit_submits(site, APP, change)
    merge_trees.clear()
    req = PrepareStateRequest(changes=changes[2:], merge_date=DATE)
    state = await prepared(req, cache)
    # Changes 3-5 were merged onto the tree the tip has now: only 6 is merged anew...
    assert [call[-1] for call in merge_trees] == [changes[5].commit]
    assert state.projects[APP].base == site.rev_parse(APP, "master")
    # ...and the state is what merging everything on the new tip gives, bit for bit.
    assert state == await prepared(req, fresh_cache(tmp_path, site, "no-memo"))


async def test_no_reuse_when_the_tip_has_another_tree(
        tmp_path: Path, site: ReviewSite, cache: RepoCache,
        merge_trees: list[tuple[str, ...]]) -> None:
    changes = [site.push_change(APP, n, files={f"f{n}.txt": f"{n}\n"}) for n in range(1, 7)]
    await prepared(PrepareStateRequest(changes=changes[:5], merge_date=DATE), cache)
    for change in changes[:2]:
        gerrit_submits(site, APP, change)
    site.commit_to_branch(APP, "master", {"other.txt": "o\n"})  # not by the gate
    merge_trees.clear()
    req = PrepareStateRequest(changes=changes[2:], merge_date=DATE)
    state = await prepared(req, cache)
    assert len(merge_trees) == 4
    assert show(cache.path("gerrit", APP), state.projects[APP].head, "other.txt") == "o\n"
    assert state == await prepared(req, fresh_cache(tmp_path, site, "no-memo"))


async def test_no_reuse_when_a_change_sits_on_history_only_the_tip_has(
        tmp_path: Path, site: ReviewSite, cache: RepoCache,
        merge_trees: list[tuple[str, ...]]) -> None:
    # Change 3 sits on a commit of another branch that the tip now contains (its merge base
    # with the tip differs from its merge base with the remembered merges), though the tip's
    # tree is the remembered one.
    site.create_branch(APP, "side")
    side = site.commit_to_branch(APP, "side", {})  # changes no file
    changes = [site.push_change(APP, n, files={f"f{n}.txt": f"{n}\n"},
                                parent="refs/heads/side" if n == 3 else None)
               for n in range(1, 6)]
    await prepared(PrepareStateRequest(changes=changes, merge_date=DATE), cache)
    gerrit_submits(site, APP, changes[0])
    gerrit_submits(site, APP, side)
    merge_trees.clear()
    req = PrepareStateRequest(changes=changes[1:], merge_date=DATE)
    state = await prepared(req, cache)
    assert len(merge_trees) == 4  # all merged anew
    assert state == await prepared(req, fresh_cache(tmp_path, site, "no-memo"))


async def test_concurrent_states_make_each_merge_once(
        tmp_path: Path, site: ReviewSite, cache: RepoCache,
        merge_trees: list[tuple[str, ...]]) -> None:
    # The items behind a reset ask for their states all at once.
    changes = [site.push_change(APP, n, files={f"f{n}.txt": f"{n}\n"}) for n in range(1, 6)]
    reqs = [PrepareStateRequest(changes=changes[:n], merge_date=DATE) for n in range(1, 6)]
    states = await asyncio.gather(*(prepared(req, cache) for req in reqs))
    assert len(merge_trees) == 5
    other = fresh_cache(tmp_path, site, "one-at-a-time")
    assert states == [await prepared(req, other) for req in reqs]


async def test_merges_made_a_moment_ago_are_not_made_again(
        site: ReviewSite, cache: RepoCache, merge_trees: list[tuple[str, ...]]) -> None:
    # Remembered by this process before any memo ref says so (the merger stores those last).
    changes = [site.push_change(APP, n, files={f"f{n}.txt": f"{n}\n"}) for n in range(1, 4)]
    await cache.fetch("gerrit", APP, [c.ref for c in changes])
    repo, base = cache.path("gerrit", APP), site.rev_parse(APP, "master")
    merges = [(c, c.commit or "") for c in changes]
    first = await recipe.apply_merges(repo, base, merges, DATE, memo=True)
    assert await recipe.apply_merges(repo, base, merges, DATE, memo=True) == first
    assert len(merge_trees) == 3


async def test_cache_removed_while_running(tmp_path: Path, site: ReviewSite,
                                           cache: RepoCache) -> None:
    # What this process remembers of the merges must not outlive the commits themselves.
    req = two_project_request(site)
    first = await prepared(req, cache)
    shutil.rmtree(cache.root)
    assert await prepared(req, cache) == first
    repo = cache.path("gerrit", APP)
    assert run_git("rev-parse", STATE_REF_PREFIX + first.projects[APP].head,
                   cwd=repo).strip() == first.projects[APP].head
    run_git("fsck", "--no-dangling", cwd=repo)


def checkout(ws: Path, project: str) -> tuple[str, str, str]:
    repo = ws / "src" / project
    assert (repo / ".git").is_dir()
    return (run_git("rev-parse", "HEAD", cwd=repo).strip(),
            run_git("branch", "--show-current", cwd=repo).strip(),
            run_git("status", "--porcelain", cwd=repo))


@pytest.mark.parametrize("same_cache", [True, False], ids=["cached-head", "replayed"])
async def test_workspace_checks_out_the_state(tmp_path: Path, site: ReviewSite,
                                              cache: RepoCache, same_cache: bool) -> None:
    docs_tip = site.create_project(DOCS)
    state = await prepared(two_project_request(site), cache)
    ws_cache = cache if same_cache else fresh_cache(tmp_path, site, "executor")
    preparer = GitWorkspacePreparer(ws_cache, {DOCS: "gerrit"})
    ws = tmp_path / "ws"
    await preparer.prepare(state, ws, [APP, DOCS])
    for project, ps in state.projects.items():
        assert checkout(ws, project) == (ps.head, "master", "")
    app = ws / "src" / APP
    assert {p.name for p in app.iterdir()} >= {"one.txt", "two.txt", "c.txt", "a.txt"}
    assert (ws / "src" / LIB / "lib.txt").read_text() == "3\n"
    assert checkout(ws, DOCS) == (docs_tip, "master", "")
    assert run_git("remote", "get-url", "origin", cwd=app).strip() == site.url_for("gerrit", APP)
    if not same_cache:  # the replayed head is kept for the next preparer
        assert await ws_cache.has_commit("gerrit", APP, STATE_REF_PREFIX + state.projects[APP].head)
    # A retried preparation starts over in the same directory.
    await preparer.prepare(state, ws, [APP, DOCS])
    assert checkout(ws, APP)[0] == state.projects[APP].head


async def test_extra_project_follows_the_state_branch(tmp_path: Path, site: ReviewSite,
                                                      cache: RepoCache) -> None:
    site.create_branch(APP, "stable/1")
    site.create_project(LIB)
    lib_stable = site.create_branch(LIB, "stable/1")
    site.commit_to_branch(LIB, "master", {"new.txt": "n\n"})
    docs_tip = site.create_project(DOCS)
    change = site.push_change(APP, 1, branch="stable/1")
    state = await prepared(PrepareStateRequest(changes=[change], merge_date=DATE), cache)
    preparer = GitWorkspacePreparer(cache, {LIB: "gerrit", DOCS: "gerrit"})
    await preparer.prepare(state, tmp_path / "ws", [LIB, DOCS])
    assert checkout(tmp_path / "ws", APP)[:2] == (state.projects[APP].head, "stable/1")
    assert checkout(tmp_path / "ws", LIB)[:2] == (lib_stable, "stable/1")
    assert checkout(tmp_path / "ws", DOCS)[:2] == (docs_tip, "master")


async def test_tampered_recipe_cannot_be_reproduced(tmp_path: Path, site: ReviewSite,
                                                    cache: RepoCache) -> None:
    state = await prepared(two_project_request(site), cache)
    app = state.projects[APP]
    tampered = [
        state.model_copy(update={"merge_date": DATE + 1}),
        state.model_copy(update={"projects": {
            APP: app.model_copy(update={"merged": list(reversed(app.merged))})}}),
        state.model_copy(update={"projects": {APP: app.model_copy(update={"head": "f" * 40})}}),
    ]
    for n, bad in enumerate(tampered):
        preparer = GitWorkspacePreparer(fresh_cache(tmp_path, site, f"exec{n}"), {})
        with pytest.raises(WorkspaceError, match="cannot reproduce"):
            await preparer.prepare(bad, tmp_path / f"ws{n}", [])


async def test_workspace_clone_is_independent_of_the_cache(tmp_path: Path, site: ReviewSite,
                                                           cache: RepoCache) -> None:
    state = await prepared(two_project_request(site), cache)
    await GitWorkspacePreparer(cache, {}).prepare(state, tmp_path / "ws", [])
    repo = tmp_path / "ws" / "src" / APP
    assert not (repo / ".git" / "objects" / "info" / "alternates").exists()
    shutil.rmtree(cache.root)
    run_git("fsck", "--no-dangling", cwd=repo)


# --- a row of states (the gate, after a reset) -------------------------------------------------


async def test_a_row_of_states_is_what_each_state_alone_gives_with_one_fetch(
        tmp_path: Path, site: ReviewSite, cache: RepoCache,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Items behind a reset: each state is the one ahead plus a change; prepared as a row, each
    merges onto the one before (same commits as alone), a conflict in the middle is that
    item's own answer, and the review system is fetched once for the row."""
    from lockmaster.git.merger import prepare_states
    from lockmaster.model.state import PrepareStatesRequest

    changes = [site.push_change(APP, n, files={f"f{n}.txt": f"{n}\n"}) for n in (1, 2, 3)]
    clash = site.push_change(APP, 4, files={"a.txt": "one\nX\nthree\n"})
    later = site.push_change(APP, 5, files={"a.txt": "one\nY\nthree\n"})
    rows = [changes[:1], changes[:2], changes[:3], [*changes, clash], [*changes, clash, later]]
    alone = [await prepare_state(PrepareStateRequest(changes=c, merge_date=DATE),
                                 fresh_cache(tmp_path, site, f"alone{i}"))
             for i, c in enumerate(rows)]
    fetches: list[tuple[str, ...]] = []
    real_git = git

    async def counting(*args: str, **kwargs: object) -> str:
        if args and args[0] == "fetch":
            fetches.append(args)
        return await real_git(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("lockmaster.git.cache.git", counting)
    result = await prepare_states(PrepareStatesRequest(requests=[
        PrepareStateRequest(changes=c, merge_date=DATE) for c in rows]), cache)
    assert len(result.results) == len(rows)
    for got, want in zip(result.results, alone, strict=True):
        assert got.ok == want.ok and got.state == want.state, (got, want)
    assert [r.ok for r in result.results] == [True, True, True, True, False]
    assert result.results[4].conflict_change == later
    assert len(fetches) == 1, fetches


async def test_a_row_prepares_each_project_once_per_distinct_merge_list(
        tmp_path: Path, site: ReviewSite, cache: RepoCache,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A row across projects: each state adds one change to one project; the others are the
    state before's, taken from it (no git call), and the states are what each gives alone."""
    from lockmaster.git.merger import prepare_states
    from lockmaster.model.state import PrepareStatesRequest

    site.create_project(LIB, files={"README": "lib\n"})
    site.create_project(DOCS, files={"README": "docs\n"})
    projects = [APP, LIB, DOCS]
    changes = [site.push_change(projects[n % 3], n, files={f"f{n}.txt": f"{n}\n"})
               for n in range(1, 10)]
    rows = [changes[:k] for k in range(4, 10)]
    alone = [await prepare_state(PrepareStateRequest(changes=c, merge_date=DATE),
                                 fresh_cache(tmp_path, site, f"alone{i}"))
             for i, c in enumerate(rows)]
    kept: list[str] = []
    looked: list[str] = []
    from lockmaster.git import cache as cache_module
    real, real_run = cache_module.git_stdin, cache_module.run_git

    async def counting(*args: str, **kwargs: object) -> str:
        if args and args[0] == "update-ref":
            kept.append(str(kwargs.get("cwd")))
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    async def looking(*args: str, **kwargs: object) -> object:
        if args and args[0] in ("rev-parse", "show-ref"):
            looked.append(args[0])
        return await real_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_module, "git_stdin", counting)
    monkeypatch.setattr(cache_module, "run_git", looking)
    result = await prepare_states(PrepareStatesRequest(requests=[
        PrepareStateRequest(changes=c, merge_date=DATE) for c in rows]), cache)
    for got, want in zip(result.results, alone, strict=True):
        assert got.ok and got.state == want.state, (got, want)
    # The first state's three projects, then one project for each state after it.
    assert len(kept) == 3 + (len(rows) - 1), kept
    # The review system is read once for the row: each project's branch tip and change refs
    # resolved in one call (the states do not look again).
    assert looked == ["rev-parse"] * 3, looked
