"""Gerrit stream-events JSON (as Gerrit 3.x writes it) -> ReviewEvent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lockmaster.model.change import ReviewEvent
from lockmaster.review.gerrit_events import GerritEventError, parse_event
from tests.fakes.gerrit import FakeGerrit

ACCOUNT = {"name": "Jane Dev", "email": "jane@example.org", "username": "jane"}
REVIEWER = {"name": "Rick Reviewer", "email": "rick@example.org", "username": "rick"}
SHA = "d5e1a1b0f00dfeedc0ffee5e1a1b0f00dfeedc0f"
CHANGE_ID = "I0123456789abcdef0123456789abcdef01234567"


def change(number: Any = 4711) -> dict[str, Any]:
    return {
        "project": "org/app",
        "branch": "main",
        "id": CHANGE_ID,
        "number": number,
        "subject": "Make it faster",
        "owner": ACCOUNT,
        "url": f"https://review.example.org/c/org/app/+/{number}",
        "commitMessage": f"Make it faster\n\nChange-Id: {CHANGE_ID}\n",
        "createdOn": 1718000000,
        "status": "NEW",
    }


def patchset(number: Any = 3) -> dict[str, Any]:
    return {
        "number": number,
        "revision": SHA,
        "parents": ["aa" * 20],
        "ref": "refs/changes/11/4711/3",
        "uploader": ACCOUNT,
        "createdOn": 1718000100,
        "author": ACCOUNT,
        "kind": "REWORK",
        "sizeInsertions": 10,
        "sizeDeletions": -2,
    }


def change_event(type_: str, **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "patchSet": patchset(),
        "change": change(),
        "project": "org/app",
        "refName": "refs/heads/main",
        "changeKey": {"id": CHANGE_ID},
        "type": type_,
        "eventCreatedOn": 1718000200,
    }


def test_patchset_created() -> None:
    event = parse_event(change_event("patchset-created", uploader=ACCOUNT), "review")
    assert event is not None
    assert event.type == "patchset-created"
    assert event.connection == "review"
    assert (event.project, event.branch, event.change, event.patchset) == (
        "org/app",
        "main",
        4711,
        3,
    )
    assert event.commit == SHA
    assert event.change_id == CHANGE_ID
    assert event.url == "https://review.example.org/c/org/app/+/4711"
    assert event.author == "jane"
    assert event.created == 1718000200.0
    assert event.change_ref().ref == "refs/changes/11/4711/3"


def test_comment_added_with_approvals() -> None:
    data = change_event(
        "comment-added",
        author=REVIEWER,
        approvals=[
            {"type": "Code-Review", "description": "Code-Review", "value": "2", "oldValue": "0"},
            {"type": "Workflow", "description": "Workflow", "value": "1"},
            {"type": "Verified", "description": "Verified", "value": "-1"},
        ],
        comment="Patch Set 3: Code-Review+2 Workflow+1\n\nrecheck",
    )
    event = parse_event(data, "review")
    assert event is not None
    assert event.type == "comment-added"
    assert event.approvals == {"Code-Review": 2, "Workflow": 1, "Verified": -1}
    assert event.comment == "Patch Set 3: Code-Review+2 Workflow+1\n\nrecheck"
    assert event.author == "rick"
    assert (event.change, event.patchset) == (4711, 3)


def test_comment_added_without_approvals() -> None:
    data = change_event("comment-added", author=REVIEWER, comment="Patch Set 3:\n\nrecheck")
    event = parse_event(data, "review")
    assert event is not None
    assert event.approvals == {}
    assert event.comment.endswith("recheck")  # type: ignore[union-attr]


def test_change_merged() -> None:
    newrev = "f" * 40
    event = parse_event(change_event("change-merged", submitter=REVIEWER, newRev=newrev), "r")
    assert event is not None
    assert event.type == "change-merged"
    assert event.commit == SHA  # the patchset's commit
    assert event.newrev == newrev  # what the branch now points at
    assert event.author == "rick"


def test_change_abandoned() -> None:
    data = change_event("change-abandoned", abandoner=ACCOUNT, reason="superseded")
    event = parse_event(data, "review")
    assert event is not None
    assert event.type == "change-abandoned"
    assert (event.change, event.patchset, event.author) == (4711, 3, "jane")
    assert event.comment == "superseded"


def test_ref_updated() -> None:
    data = {
        "submitter": ACCOUNT,
        "refUpdate": {
            "oldRev": "0" * 40,
            "newRev": SHA,
            "refName": "refs/heads/stable/2.0",
            "project": "org/app",
        },
        "type": "ref-updated",
        "eventCreatedOn": 1718000300,
    }
    event = parse_event(data, "review")
    assert event is not None
    assert event.type == "ref-updated"
    assert (event.project, event.branch, event.refname) == (
        "org/app",
        "stable/2.0",
        "refs/heads/stable/2.0",
    )
    assert (event.oldrev, event.newrev, event.change) == ("0" * 40, SHA, None)
    assert event.created == 1718000300.0


def test_ref_updated_tag_and_old_short_branch() -> None:
    tag = {"oldRev": "0" * 40, "newRev": SHA, "refName": "refs/tags/1.0", "project": "org/app"}
    event = parse_event({"type": "ref-updated", "refUpdate": tag}, "r")
    assert event is not None
    assert (event.branch, event.refname, event.created) == (None, "refs/tags/1.0", None)
    # Gerrit 2.x wrote bare branch names.
    short = {**tag, "refName": "main"}
    event = parse_event({"type": "ref-updated", "refUpdate": short}, "r")
    assert event is not None
    assert (event.branch, event.refname) == ("main", "refs/heads/main")


def test_old_gerrit_string_numbers() -> None:
    data = change_event("patchset-created", uploader=ACCOUNT)
    data["change"] = change(number="4711")
    data["patchSet"] = patchset(number="3")
    event = parse_event(json.loads(json.dumps(data)), "review")
    assert event is not None
    assert (event.change, event.patchset) == (4711, 3)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "reviewer-added", "change": change(), "patchSet": patchset()},
        {"type": "ref-replicated", "project": "org/app"},
        {"type": "dropped-output"},
        {},
    ],
)
def test_unknown_event_types_are_ignored(data: dict[str, Any]) -> None:
    assert parse_event(data, "review") is None


def test_known_type_with_missing_change_is_an_error() -> None:
    with pytest.raises(GerritEventError, match="patchset-created"):
        parse_event({"type": "patchset-created", "patchSet": patchset()}, "review")


def test_bad_approval_value_is_an_error() -> None:
    data = change_event(
        "comment-added", author=REVIEWER, approvals=[{"type": "Code-Review", "value": "lots"}]
    )
    with pytest.raises(GerritEventError):
        parse_event(data, "review")


# --- events that change whether a change may be gated ----------------------------------------

CORE = {"name": "Cora Core", "email": "cora@example.org", "username": "cora"}


def test_vote_deleted() -> None:
    # DeleteVoteOp: the reviewer's other votes come along unchanged (no oldValue); the removed
    # label is "0" with its oldValue.
    data = change_event(
        "vote-deleted",
        reviewer=REVIEWER,
        remover=CORE,
        approvals=[
            {"type": "Code-Review", "description": "Code-Review", "value": "2"},
            {"type": "Workflow", "description": "Workflow", "value": "0", "oldValue": "1"},
        ],
        comment="Removed Workflow+1 by <GERRIT_ACCOUNT_1000001>\n",
    )
    event = parse_event(data, "review")
    assert event is not None
    assert event.type == "vote-deleted"
    assert (event.change, event.patchset, event.commit) == (4711, 3, SHA)
    assert event.approvals == {"Code-Review": 2, "Workflow": 0}
    assert event.old_approvals == {"Workflow": 1}
    assert event.author == "cora"  # who removed it, not whose vote it was
    assert event.comment == "Removed Workflow+1 by <GERRIT_ACCOUNT_1000001>\n"
    assert event.created == 1718000200.0


def test_vote_deleted_negative_old_value() -> None:
    data = change_event(
        "vote-deleted",
        reviewer=REVIEWER,
        remover=REVIEWER,
        approvals=[{"type": "Code-Review", "value": "0", "oldValue": "-2"}],
    )
    event = parse_event(data, "review")
    assert event is not None
    assert (event.approvals, event.old_approvals) == ({"Code-Review": 0}, {"Code-Review": -2})
    assert (event.author, event.comment) == ("rick", "")


def test_change_restored() -> None:
    data = change_event("change-restored", restorer=CORE, reason="still needed")
    event = parse_event(data, "review")
    assert event is not None
    assert event.type == "change-restored"
    assert (event.change, event.patchset, event.author) == (4711, 3, "cora")
    assert event.comment == "still needed"
    assert event.created == 1718000200.0


@pytest.mark.parametrize(("flag", "expected"), [(True, True), (False, False), (None, False)])
def test_wip_state_changed(flag: bool | None, expected: bool) -> None:
    data = change_event("wip-state-changed", changer=ACCOUNT)
    if flag is not None:
        data["change"]["wip"] = flag
    event = parse_event(data, "review")
    assert event is not None
    assert event.type == "wip-state-changed"
    assert event.wip is expected
    assert event.private is None  # this event says nothing about privacy
    assert (event.change, event.patchset, event.author) == (4711, 3, "jane")
    assert event.created == 1718000200.0


@pytest.mark.parametrize(("flag", "expected"), [(True, True), (False, False), (None, False)])
def test_private_state_changed(flag: bool | None, expected: bool) -> None:
    data = change_event("private-state-changed", changer=ACCOUNT)
    if flag is not None:
        data["change"]["private"] = flag
    event = parse_event(data, "review")
    assert event is not None
    assert event.type == "private-state-changed"
    assert event.private is expected
    assert event.wip is None
    assert (event.change, event.author) == (4711, "jane")


def test_state_flag_that_is_not_a_boolean_is_an_error() -> None:
    data = change_event("wip-state-changed", changer=ACCOUNT)
    data["change"]["wip"] = "yes"
    with pytest.raises(GerritEventError, match=r"change\.wip"):
        parse_event(data, "review")


def test_bad_old_value_is_an_error() -> None:
    data = change_event(
        "vote-deleted",
        remover=CORE,
        approvals=[{"type": "Workflow", "value": "0", "oldValue": "+one"}],
    )
    with pytest.raises(GerritEventError, match="vote-deleted"):
        parse_event(data, "review")


def test_identity_tells_apart_successive_state_changes() -> None:
    def parsed(data: dict[str, Any]) -> str:
        event = parse_event(data, "review")
        assert event is not None
        return event.identity()

    wip_on = change_event("wip-state-changed", changer=ACCOUNT)
    wip_on["change"]["wip"] = True
    wip_off = change_event("wip-state-changed", changer=ACCOUNT)
    assert parsed(wip_on) != parsed(wip_off)
    removed_cr = change_event(
        "vote-deleted",
        remover=CORE,
        approvals=[{"type": "Code-Review", "value": "0", "oldValue": "2"}],
    )
    removed_wf = change_event(
        "vote-deleted",
        remover=CORE,
        approvals=[{"type": "Workflow", "value": "0", "oldValue": "1"}],
    )
    assert parsed(removed_cr) != parsed(removed_wf)
    assert parsed(removed_cr) == parsed(json.loads(json.dumps(removed_cr)))


def test_fake_gerrit_builders_round_trip() -> None:
    fake = FakeGerrit()  # the builders need no running server
    fake.add_change("org/app", "main", 7, commit=SHA, approvals={"Code-Review": 2, "Workflow": 1})

    def parsed(data: dict[str, Any]) -> ReviewEvent:
        event = parse_event(json.loads(json.dumps(data)), "gerrit")
        assert event is not None
        assert (event.project, event.branch, event.change, event.commit) == (
            "org/app",
            "main",
            7,
            SHA,
        )
        assert event.created is not None
        return event

    old = fake.delete_vote(7, "Workflow")
    deleted = parsed(
        fake.vote_deleted_event(7, "Workflow", old, remover="cora", others={"Code-Review": 2})
    )
    assert (deleted.type, deleted.author) == ("vote-deleted", "cora")
    assert deleted.approvals == {"Code-Review": 2, "Workflow": 0}
    assert deleted.old_approvals == {"Workflow": 1}

    fake.set_status(7, "ABANDONED")
    fake.restore(7)
    restored = parsed(fake.change_restored_event(7, reason="back", restorer="cora"))
    assert (restored.type, restored.comment, restored.author) == ("change-restored", "back", "cora")

    fake.set_wip(7)
    assert parsed(fake.wip_state_changed_event(7)).wip is True
    fake.set_wip(7, False)
    assert parsed(fake.wip_state_changed_event(7)).wip is False

    fake.set_private(7)
    assert parsed(fake.private_state_changed_event(7, changer="cora")).private is True
    fake.set_private(7, False)
    assert parsed(fake.private_state_changed_event(7)).private is False
