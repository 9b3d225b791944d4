"""Gerrit stream-events JSON objects -> ReviewEvent (pure functions, no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lockmaster.model.change import ReviewEvent


class GerritEventError(ValueError):
    """A known event type whose JSON lacks a field lockmaster needs."""


def parse_event(data: dict[str, Any], connection: str) -> ReviewEvent | None:
    """The ReviewEvent for one stream-events object, or None for types lockmaster ignores."""
    parser = _PARSERS.get(str(data.get("type", "")))
    if parser is None:
        return None
    try:
        return parser(data, connection)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, GerritEventError):
            raise
        raise GerritEventError(f"{data.get('type')} event: missing or bad {exc}") from exc


def full_ref(refname: str) -> str:
    """Gerrit 2.x sent branch updates as a bare branch name; newer ones send refs/heads/..."""
    return refname if refname.startswith("refs/") else f"refs/heads/{refname}"


def branch_of(refname: str) -> str | None:
    prefix = "refs/heads/"
    return refname[len(prefix) :] if refname.startswith(prefix) else None


def _username(account: Any) -> str | None:
    if not isinstance(account, dict):
        return None
    return account.get("username") or account.get("name") or account.get("email")


def _created(data: dict[str, Any]) -> float | None:
    value = data.get("eventCreatedOn")
    return float(value) if value is not None else None


def _change_event(
    data: dict[str, Any], connection: str, account_key: str, **extra: Any
) -> ReviewEvent:
    """The fields every change event shares: change, patchSet, author, time."""
    change = data["change"]
    patchset = data.get("patchSet") or {}
    number = patchset.get("number")
    return ReviewEvent(
        type=data["type"],
        connection=connection,
        project=change["project"],
        branch=change["branch"],
        # Older Gerrits send numbers as strings.
        change=int(change["number"]),
        patchset=int(number) if number is not None else None,
        commit=patchset.get("revision"),
        change_id=change.get("id"),
        url=change.get("url"),
        author=_username(data.get(account_key)),
        created=_created(data),
        **extra,
    )


def _patchset_created(data: dict[str, Any], connection: str) -> ReviewEvent:
    return _change_event(data, connection, "uploader")


def _approvals(data: dict[str, Any], key: str) -> dict[str, int]:
    """Label -> int(approval[key]) for the event's approvals carrying that key (values arrive as
    strings: "2", "-1"; oldValue only on a label whose vote this event changed)."""
    return {
        str(a["type"]): int(a[key]) for a in data.get("approvals") or [] if a.get(key) is not None
    }


def _flag(change: dict[str, Any], key: str) -> bool:
    """A change attribute's boolean: Gerrit leaves `wip` / `private` out when they are false."""
    value = change.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise GerritEventError(f"change.{key} is {value!r}, not a boolean")
    return value


def _comment_added(data: dict[str, Any], connection: str) -> ReviewEvent:
    return _change_event(
        data,
        connection,
        "author",
        comment=data.get("comment") or "",
        approvals=_approvals(data, "value"),
    )


def _vote_deleted(data: dict[str, Any], connection: str) -> ReviewEvent:
    # approvals: the reviewer's votes after the removal (the removed label at 0, possibly some
    # untouched labels too); only the removed label has an oldValue.
    return _change_event(
        data,
        connection,
        "remover",
        comment=data.get("comment") or "",
        approvals=_approvals(data, "value"),
        old_approvals=_approvals(data, "oldValue"),
    )


def _change_restored(data: dict[str, Any], connection: str) -> ReviewEvent:
    return _change_event(data, connection, "restorer", comment=data.get("reason"))


def _wip_state_changed(data: dict[str, Any], connection: str) -> ReviewEvent:
    return _change_event(data, connection, "changer", wip=_flag(data["change"], "wip"))


def _private_state_changed(data: dict[str, Any], connection: str) -> ReviewEvent:
    return _change_event(data, connection, "changer", private=_flag(data["change"], "private"))


def _change_merged(data: dict[str, Any], connection: str) -> ReviewEvent:
    return _change_event(data, connection, "submitter", newrev=data.get("newRev"))


def _change_abandoned(data: dict[str, Any], connection: str) -> ReviewEvent:
    return _change_event(data, connection, "abandoner", comment=data.get("reason"))


def _ref_updated(data: dict[str, Any], connection: str) -> ReviewEvent:
    update = data["refUpdate"]
    refname = full_ref(update["refName"])
    return ReviewEvent(
        type="ref-updated",
        connection=connection,
        project=update["project"],
        branch=branch_of(refname),
        refname=refname,
        oldrev=update.get("oldRev"),
        newrev=update["newRev"],
        author=_username(data.get("submitter")),
        created=_created(data),
    )


_PARSERS: dict[str, Callable[[dict[str, Any], str], ReviewEvent]] = {
    "patchset-created": _patchset_created,
    "comment-added": _comment_added,
    "change-merged": _change_merged,
    "change-abandoned": _change_abandoned,
    "ref-updated": _ref_updated,
    "vote-deleted": _vote_deleted,
    "change-restored": _change_restored,
    "wip-state-changed": _wip_state_changed,
    "private-state-changed": _private_state_changed,
}
