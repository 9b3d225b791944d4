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


def _comment_added(data: dict[str, Any], connection: str) -> ReviewEvent:
    approvals = {
        str(a["type"]): int(a["value"])  # values arrive as strings ("2", "-1")
        for a in data.get("approvals") or []
    }
    return _change_event(
        data, connection, "author", comment=data.get("comment") or "", approvals=approvals
    )


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
}
