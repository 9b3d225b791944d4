"""Gerrit stream-events JSON (as Gerrit 3.x writes it) -> ReviewEvent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lockmaster.review.gerrit_events import GerritEventError, parse_event

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
