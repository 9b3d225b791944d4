"""Gerrit hook command lines (Gerrit 3.x hooks plugin) -> ReviewEvent.

Gerrit runs e.g. `patchset-created --change <id> --change-url <url> ... --patchset 3`; every option
is followed by exactly one value (Gerrit leaves an option out rather than pass no value).

The hooks plugin runs no hook for vote-deleted, wip-state-changed or private-state-changed (it
registers no listener for them): those reach lockmaster only through stream-events.
"""

from __future__ import annotations

import re
from typing import cast
from urllib.parse import urlsplit

from lockmaster.model.change import EventType, ReviewEvent

_CHANGE = ("change", "change-url", "change-owner", "change-owner-username", "project", "branch")

# The options each hook accepts, in Gerrit's documented order.
HOOK_OPTIONS: dict[str, tuple[str, ...]] = {
    "patchset-created": (
        *_CHANGE[:2], "kind", *_CHANGE[2:], "topic",
        "uploader", "uploader-username", "commit", "patchset",
    ),
    "comment-added": (
        *_CHANGE, "topic", "author", "author-username", "commit", "comment",
    ),
    "change-merged": (
        *_CHANGE, "topic", "submitter", "submitter-username", "commit", "newrev",
    ),
    "change-abandoned": (
        *_CHANGE, "topic", "abandoner", "abandoner-username", "commit", "reason",
    ),
    "change-restored": (
        *_CHANGE, "topic", "restorer", "restorer-username", "commit", "reason",
    ),
    "ref-updated": ("oldrev", "newrev", "refname", "project", "submitter", "submitter-username"),
}  # fmt: skip

# Whose action the event is (the username option is preferred, the display name is the fallback).
_ACTOR = {
    "patchset-created": "uploader",
    "comment-added": "author",
    "change-merged": "submitter",
    "change-abandoned": "abandoner",
    "change-restored": "restorer",
    "ref-updated": "submitter",
}

# Free text may legitimately start with "--"; other values never do.
_FREE_TEXT = {"comment", "reason", "topic"}

_LABEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class HookArgumentError(ValueError):
    """The hook's command line is not what Gerrit passes; the message says what is wrong."""


def parse_hook(hook_name: str, argv: list[str], connection: str) -> ReviewEvent:
    if hook_name not in HOOK_OPTIONS:
        raise HookArgumentError(
            f"unknown hook {hook_name!r}; supported hooks: {', '.join(HOOK_OPTIONS)}"
        )
    options, labels = _split(hook_name, argv)
    if hook_name == "ref-updated":
        return _ref_updated(hook_name, options, connection)
    return _change_event(hook_name, options, labels, connection)


def usage(hook_name: str) -> str:
    accepted = " ".join(f"--{name} <value>" for name in HOOK_OPTIONS[hook_name])
    if hook_name == "comment-added":
        accepted += " [--<Label-Name> <int> --<Label-Name>-oldValue <int> ...]"
    return f"{hook_name} accepts: {accepted}"


def _fail(hook_name: str, message: str) -> HookArgumentError:
    return HookArgumentError(f"{hook_name}: {message}\n{usage(hook_name)}")


def _split(hook_name: str, argv: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """Options by name, and (comment-added) label votes by label name."""
    known = set(HOOK_OPTIONS[hook_name])
    options: dict[str, str] = {}
    labels: dict[str, int] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise _fail(hook_name, f"unexpected argument {arg!r}: expected an --option")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise _fail(hook_name, f"--{name} needs a value")
            value = argv[i + 1]
            if value.startswith("--") and name not in _FREE_TEXT:
                raise _fail(hook_name, f"--{name} needs a value, got the option {value!r}")
            i += 1
        i += 1
        if name in known:
            if name in options:
                raise _fail(hook_name, f"--{name} is given twice")
            options[name] = value
        elif hook_name == "comment-added" and _LABEL_NAME.match(name):
            _add_label(hook_name, labels, name, value)
        else:
            raise _fail(hook_name, f"unknown option --{name}")
    return options, labels


def _add_label(hook_name: str, labels: dict[str, int], name: str, value: str) -> None:
    try:
        vote = int(value)
    except ValueError:
        raise _fail(
            hook_name,
            f"--{name} {value!r}: not a known option, and as a label vote its value must be an "
            "integer (e.g. --Code-Review 2)",
        ) from None
    # The old value only says what changed; the event carries the current votes.
    if not name.endswith("-oldValue"):
        labels[name] = vote


def _require(hook_name: str, options: dict[str, str], name: str, what: str) -> str:
    value = options.get(name, "").strip()
    if not value:
        raise _fail(hook_name, f"--{name} is required ({what})")
    return value


def _actor(hook_name: str, options: dict[str, str]) -> str | None:
    actor = _ACTOR[hook_name]
    return options.get(f"{actor}-username") or options.get(actor) or None


def _change_event(
    hook_name: str, options: dict[str, str], labels: dict[str, int], connection: str
) -> ReviewEvent:
    project = _require(hook_name, options, "project", "the project name")
    url = _require(hook_name, options, "change-url", "the change's web URL")
    number = change_number(url)
    if number is None:
        raise _fail(
            hook_name,
            f"--change-url {url!r} names no change number; expected e.g. "
            "https://host/c/project/+/123, https://host/123 or https://host/#/c/123/",
        )
    branch = _require(hook_name, options, "branch", "the target branch")
    commit = _require(hook_name, options, "commit", "the patchset's commit sha")
    patchset = None
    if hook_name == "patchset-created":
        raw = _require(hook_name, options, "patchset", "the patchset number")
        patchset = _positive_int(hook_name, "patchset", raw)
    comment = options.get("comment") if hook_name == "comment-added" else options.get("reason")
    return ReviewEvent(
        type=cast(EventType, hook_name),  # checked against HOOK_OPTIONS by parse_hook
        connection=connection,
        project=project,
        branch=branch,
        change=number,
        # comment-added gets no --patchset from Gerrit: the router asks the review system.
        patchset=patchset,
        commit=commit,
        change_id=change_id_of(options.get("change")),
        url=url,
        comment=comment,
        author=_actor(hook_name, options),
        approvals=labels,
        newrev=options.get("newrev") or None,
    )


def _ref_updated(hook_name: str, options: dict[str, str], connection: str) -> ReviewEvent:
    project = _require(hook_name, options, "project", "the project name")
    refname = _require(hook_name, options, "refname", "the updated ref, e.g. refs/heads/main")
    newrev = _require(hook_name, options, "newrev", "the ref's new sha")
    if not refname.startswith("refs/"):
        refname = f"refs/heads/{refname}"
    prefix = "refs/heads/"
    return ReviewEvent(
        type="ref-updated",
        connection=connection,
        project=project,
        branch=refname[len(prefix) :] if refname.startswith(prefix) else None,
        refname=refname,
        oldrev=options.get("oldrev") or None,
        newrev=newrev,
        author=_actor(hook_name, options),
    )


def _positive_int(hook_name: str, name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise _fail(hook_name, f"--{name} {raw!r}: expected a positive integer")
    return value


def change_id_of(change: str | None) -> str | None:
    """Gerrit 3.x passes `project~branch~I...`; older versions pass the bare Change-Id."""
    if not change:
        return None
    return change.rsplit("~", 1)[-1] or None


def change_number(url: str) -> int | None:
    """The change number in any of Gerrit's change URL forms."""
    parts = urlsplit(url)
    # Old UI: https://host/#/c/123/ (possibly #/c/123/4 for a patchset).
    fragment = re.match(r"^/?c/(?:.*/\+/)?(\d+)(?:/|$)", parts.fragment)
    if fragment:
        return int(fragment.group(1))
    path = parts.path
    # Current UI: https://host/c/project/+/123 (possibly /123/4 or /123/4..5).
    plus = re.search(r"/\+/(\d+)(?:/|$)", path)
    if plus:
        return int(plus.group(1))
    # Short forms: https://host/123 or https://host/c/123 (under any path prefix).
    last = re.search(r"/(\d+)/?$", path)
    return int(last.group(1)) if last else None
