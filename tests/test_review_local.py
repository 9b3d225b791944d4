"""The local review system (lockmaster's Gerrit stand-in) and its `lockmaster change` commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from lockmaster.cli import change_cmd
from lockmaster.model.change import ReviewEvent
from lockmaster.review.base import ChangeNotFound, ReviewError, SubmitRefused
from lockmaster.review.local import LocalReviewStore, _git


def test_submit_refuses_a_patchset_that_is_no_longer_current(tmp_path: Path) -> None:
    store = LocalReviewStore(tmp_path / "review")
    tip = store.create_project("org/app", {"README": "hello\n"})
    first = store.upload("org/app", files={"a.txt": "a\n"}, subject="Add a")
    tested = first.ref()
    store.new_patchset(first.number, {"a.txt": "untested\n"})
    with pytest.raises(SubmitRefused, match="patchset 1 of change 1 is not its current revision"):
        store.submit(tested)
    repo = store.repo("org/app")
    assert _git("rev-parse", "refs/heads/master", cwd=repo) == tip  # nothing merged
    assert store.info(first.number).status == "NEW"
    merged = store.submit(store.info(first.number).ref())
    assert _git("show", f"{merged}:a.txt", cwd=repo) == "untested"
    assert store.info(first.number).status == "MERGED"


@pytest.fixture
def store(tmp_path: Path) -> LocalReviewStore:
    store = LocalReviewStore(tmp_path / "review")
    store.create_project("org/app", {"README": "hello\n"})
    store.upload("org/app", files={"a.txt": "a\n"}, subject="Add a")
    return store


def test_restore_brings_an_abandoned_change_back(store: LocalReviewStore) -> None:
    with pytest.raises(ReviewError, match="change 1 is new: only an abandoned change"):
        store.restore(1, author="dev")
    store.abandon(1, author="dev")
    info = store.restore(1, author="cora")
    assert info.status == "NEW"
    assert store.info(1).status == "NEW"
    assert store.record(1)["messages"][-1]["message"] == "Restored"
    assert store.record(1)["messages"][-1]["author"] == "cora"
    store.submit(store.info(1).ref())
    with pytest.raises(ReviewError, match="change 1 is merged"):
        store.restore(1, author="cora")
    with pytest.raises(ChangeNotFound):
        store.restore(9, author="cora")


def test_delete_vote_removes_only_that_reviewers_vote(store: LocalReviewStore) -> None:
    store.vote(1, {"Code-Review": 2, "Workflow": 1}, author="cora")
    store.vote(1, {"Code-Review": 1}, author="rick")
    info = store.delete_vote(1, "Code-Review", author="cora")
    assert info.approvals == {"Code-Review": 1, "Workflow": 1}
    info = store.delete_vote(1, "Workflow", author="cora")
    assert info.approvals == {"Code-Review": 1}
    assert "Workflow" not in store.record(1)["approvals"]
    assert store.record(1)["messages"][-1]["message"] == "Removed Workflow+1 by cora"
    with pytest.raises(ReviewError, match="change 1 has no Workflow vote by cora"):
        store.delete_vote(1, "Workflow", author="cora")
    with pytest.raises(ReviewError, match=r"no Verified vote by rick \(votes: Code-Review rick"):
        store.delete_vote(1, "Verified", author="rick")


def test_wip_and_private_are_reported_and_refused_when_unchanged(
    store: LocalReviewStore,
) -> None:
    assert (store.info(1).wip, store.info(1).private) == (False, False)
    assert store.set_wip(1, True, author="dev").wip is True
    assert store.set_private(1, True, author="dev").private is True
    assert (store.info(1).wip, store.info(1).private) == (True, True)
    with pytest.raises(ReviewError, match="change 1 is already a work in progress"):
        store.set_wip(1, True, author="dev")
    with pytest.raises(ReviewError, match="change 1 is already private"):
        store.set_private(1, True, author="dev")
    assert store.set_wip(1, False, author="dev").wip is False
    assert store.set_private(1, False, author="dev").private is False
    with pytest.raises(ReviewError, match="already ready for review"):
        store.set_wip(1, False, author="dev")
    assert [m["message"] for m in store.record(1)["messages"]] == [
        "Set Work In Progress", "Set private", "Set Ready For Review", "Unset private",
    ]
    store.abandon(1, author="dev")
    with pytest.raises(ReviewError, match="change 1 is abandoned"):
        store.set_wip(1, True, author="dev")


def test_submit_refuses_a_work_in_progress(store: LocalReviewStore) -> None:
    store.set_wip(1, True, author="dev")
    with pytest.raises(SubmitRefused, match="change is a work in progress"):
        store.submit(store.info(1).ref())
    assert store.info(1).status == "NEW"
    store.set_private(1, True, author="dev")  # private changes merge, as in Gerrit
    store.set_wip(1, False, author="dev")
    store.submit(store.info(1).ref())
    assert store.info(1).status == "MERGED"


def test_records_without_the_flags_load(store: LocalReviewStore) -> None:
    path = store.root / "changes" / "1.json"
    record = json.loads(path.read_text())
    del record["wip"], record["private"]  # as written before the flags existed
    path.write_text(json.dumps(record))
    assert (store.info(1).wip, store.info(1).private) == (False, False)
    assert store.set_wip(1, True, author="dev").wip is True


# --- `lockmaster change ...` -------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalReviewStore,
                                                                 list[ReviewEvent]]:
    """The embedded configuration with its state under tmp_path; events are captured instead
    of being routed to Temporal (the router is replaced, the rest of the hand-off is real);
    `DOWN` in the list's first place makes the hand-off fail (Temporal unreachable)."""
    from lockmaster.starters import dispatch

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOCKMASTER_CONFIG", raising=False)
    monkeypatch.setenv("LOCKMASTER_STATE_DIR", str(tmp_path / "state"))
    sent: list[ReviewEvent] = []

    class Router:
        def __init__(self, *args: object) -> None:
            pass

        async def route(self, event: ReviewEvent) -> list[object]:
            if DOWN in sent:
                raise RuntimeError("Failed client connect: connection refused")
            sent.append(event)
            return []

    async def connect(cfg: object) -> None:
        return None

    monkeypatch.setattr(dispatch, "EventRouter", Router)
    monkeypatch.setattr(dispatch, "connect", connect)
    store = LocalReviewStore(tmp_path / "state" / "review" / "local", "local")
    store.create_project("demo/hello", {"README": "hello\n"})
    store.upload("demo/hello", files={"a.txt": "a\n"}, subject="Add a")
    return store, sent


DOWN = ReviewEvent(type="ref-updated", connection="-", project="-")


def test_an_event_temporal_could_not_take_is_kept_and_sent_by_the_next_command(
    cli: tuple[LocalReviewStore, list[ReviewEvent]],
) -> None:
    store, sent = cli
    sent.append(DOWN)
    result = _run("approve", "1")
    assert result.exit_code == 1
    assert "the change was recorded, but its event could not be delivered" in result.output
    assert "lockmaster events flush --connection local" in result.output
    assert store.info(1).approvals  # the vote stands
    sent.remove(DOWN)
    result = _run("comment", "1", "recheck")
    assert result.exit_code == 0, result.output
    assert "handed over 1 event(s) kept earlier" in result.output
    assert [(e.type, e.approvals) for e in sent] == [
        ("comment-added", {"Code-Review": 2, "Workflow": 1}), ("comment-added", {})]
    assert sent[1].comment is not None and sent[1].comment.endswith("recheck")


def _run(*args: str) -> Result:
    return CliRunner().invoke(change_cmd.app, list(args))


def test_change_commands_send_their_events(
    cli: tuple[LocalReviewStore, list[ReviewEvent]],
) -> None:
    store, sent = cli
    for args in (["wip", "1"], ["private", "1"], ["ready", "1"], ["public", "1"],
                 ["abandon", "1"], ["restore", "1", "--author", "cora"]):
        result = _run(*args)
        assert result.exit_code == 0, result.output
    assert [(e.type, e.wip, e.private) for e in sent] == [
        ("wip-state-changed", True, None),
        ("private-state-changed", None, True),
        ("wip-state-changed", False, None),
        ("private-state-changed", None, False),
        ("change-abandoned", None, None),
        ("change-restored", None, None),
    ]
    assert all((e.connection, e.project, e.change, e.patchset) == ("local", "demo/hello", 1, 1)
               for e in sent)
    assert sent[-1].author == "cora"
    assert store.info(1).status == "NEW"

    store.vote(1, {"Code-Review": 2, "Workflow": 1}, author="core-reviewer")
    result = _run("remove-vote", "1", "--label", "Workflow")
    assert result.exit_code == 0, result.output
    deleted = sent[-1]
    assert (deleted.type, deleted.author) == ("vote-deleted", "core-reviewer")
    assert (deleted.approvals, deleted.old_approvals) == ({"Workflow": 0}, {"Workflow": 1})
    assert store.info(1).approvals == {"Code-Review": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", "1"], "change 1 is new: only an abandoned change can be restored"),
        (["restore", "7"], "change 7 does not exist"),
        (["remove-vote", "1", "--label", "Flow"], "change 1 has no Flow vote by core-reviewer"),
        (["ready", "1"], "change 1 is already ready for review"),
        (["public", "7"], "change 7 does not exist"),
    ],
)
def test_change_commands_refuse_bad_input(
    cli: tuple[LocalReviewStore, list[ReviewEvent]], args: list[str], message: str,
) -> None:
    _, sent = cli
    result = _run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sent == []


def test_upload_quiet_prints_only_the_number_and_list_shows_every_change(
    cli: tuple[LocalReviewStore, list[ReviewEvent]],
) -> None:
    store, sent = cli
    result = CliRunner().invoke(change_cmd.app, ["upload", "-q", "--project", "demo/hello",
                                                 "--file", "b.txt=[b] :100:", "-m", "Add [b]"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "2"  # the fixture made change 1
    assert "change 2 patchset 1 uploaded" in result.stderr
    assert [e.change for e in sent] == [2]
    store.vote(1, {"Code-Review": 2, "Workflow": 1}, author="core-reviewer")
    store.abandon(2, author="developer")
    listing = _run("list")
    assert listing.exit_code == 0, listing.output
    rows = [line.split("│")[1:-1] for line in listing.output.splitlines() if "demo/hello" in line]
    assert [[c.strip() for c in row] for row in rows] == [
        ["1", "demo/hello", "master", "NEW", "1", "Code-Review +2 Workflow +1", "Add a"],
        ["2", "demo/hello", "master", "ABANDONED", "1", "", "Add [b]"],
    ]
    assert _run("list", "--open").output.count("demo/hello") == 1
    assert _run("list", "-q").output.split() == ["1", "2"]
    empty = _run("list", "--project", "demo/none")
    assert empty.exit_code == 0 and "no changes of demo/none" in empty.output


def test_an_uploaded_directory_keeps_modes_and_binary_files(
        store: LocalReviewStore, tmp_path: Path) -> None:
    """`change upload --dir`: an unpacked source package as it is (configure and debian/rules
    executable, binary files byte for byte)."""
    tree = tmp_path / "pkg"
    (tree / "debian").mkdir(parents=True)
    (tree / "debian" / "rules").write_text("#!/usr/bin/make -f\n")
    (tree / "configure").write_text("# no shebang but executable\n")
    (tree / "configure").chmod(0o755)
    (tree / "logo.gif").write_bytes(bytes(range(256)))
    info = store.upload("org/app", files={}, subject="Import", tree=tree)
    repo = store.repo("org/app")
    listing = _git("ls-tree", "-r", info.commit, cwd=repo)
    modes = {line.split("\t")[1]: line.split()[0] for line in listing.splitlines()}
    assert modes["configure"] == "100755" and modes["logo.gif"] == "100644"
    blob = _git("rev-parse", f"{info.commit}:logo.gif", cwd=repo)
    data = subprocess.run(["git", "cat-file", "blob", blob], cwd=repo,
                          capture_output=True, check=True).stdout
    assert data == bytes(range(256))


async def test_a_merge_whose_announcement_fails_is_announced_on_the_retry(
        store: LocalReviewStore) -> None:
    """The local connection announces merges as Gerrit's change-merged (so merged packages get
    published): a failed announcement fails the submit, whose retry (the activity's) finds the
    change merged and announces it then; each merge is announced once."""
    from lockmaster.activities.review import ReviewActivities
    from lockmaster.model.gate import SubmitRequest
    from lockmaster.review.local import LocalReviewDriver

    driver = LocalReviewDriver("local", store.root)
    announced: list[tuple[int | None, str | None]] = []
    failures = [RuntimeError("Temporal is unreachable")]

    async def on_merged(event: ReviewEvent) -> None:
        if failures:
            raise failures.pop()
        announced.append((event.change, event.newrev))

    driver.on_merged = on_merged
    activities = ReviewActivities({"local": driver})
    request = SubmitRequest(change=store.info(1).ref())
    with pytest.raises(ReviewError, match="change 1 is merged, but handing over its "
                                          "change-merged event failed"):
        await activities.submit(request)
    assert store.info(1).status == "MERGED" and announced == []
    # Temporal retries the activity: the merge is recognised, and announced now.
    assert (await activities.submit(request)).ok
    merged = store.record(1)["merged_commit"]
    assert announced == [(1, merged)]
    # The next merge announces itself only.
    second = store.upload("org/app", files={"b.txt": "b\n"}, subject="Add b")
    assert (await activities.submit(SubmitRequest(change=second.ref()))).ok
    assert [number for number, _ in announced] == [1, second.number]
    assert store.unannounced() == []


async def test_merges_nobody_listens_for_are_not_owed(store: LocalReviewStore) -> None:
    from lockmaster.review.local import LocalReviewDriver

    driver = LocalReviewDriver("local", store.root)  # no project publishes: no on_merged
    await driver.submit(store.info(1).ref())
    assert store.unannounced() == []
