"""Who did an operator action, and why: the one home of the concept.

Every operator command (`gate enqueue|dequeue|promote`, `nodes hold|disable|autohold`,
`te drain|force-release`, `rerun`, `publish retrigger|skip`) names its actor and may give a
reason (`--user`, `--reason`). The requests it sends carry them as plain optional fields (`by`,
`reason`: an older starter's request, or a recorded history's, has neither and reads as
before); what the workflows keep, show and report is an `OperatorNote`, said in one way
everywhere (`OperatorNote.describe`, `attributed`).

The actor: `--user NAME` if given, else `$LOCKMASTER_USER`, else the OS login (`actor`). That
reads the environment: starters and the CLI call it, never a workflow.
"""

from __future__ import annotations

import os

from lockmaster.model.base import Model

ACTOR_ENV = "LOCKMASTER_USER"


class OperatorNote(Model):
    """An operator's action on something a workflow keeps (a queue's item, a node, a TE)."""

    by: str
    reason: str | None = None
    at: float | None = None  # when it was done (epoch seconds; the workflow's clock)
    # An enqueue that overrode the pipeline's requirements (`gate enqueue --force`).
    forced: bool = False

    def describe(self, action: str) -> str:
        """e.g. "enqueued by alice without its approvals: the fix for the outage"."""
        text = f"{action} by {self.by}"
        if self.forced:
            text += " without its approvals"
        return f"{text}: {self.reason}" if self.reason else text


def note_of(by: str | None, reason: str | None = None, at: float | None = None, *,
            forced: bool = False) -> OperatorNote | None:
    """The note a request's `by` and `reason` make (None: the request names no operator)."""
    if not by:
        return None
    return OperatorNote(by=by, reason=reason or None, at=at, forced=forced)


def attributed(reason: str | None, by: str | None) -> str | None:
    """A free-text reason kept where only text is (a node's hold reason, a TE's note) with
    who gave it: "alice: disk full"."""
    if not by:
        return reason
    return f"{by}: {reason}" if reason else by


def actor(user: str | None = None) -> str:
    """Who acts: `user` if given, else $LOCKMASTER_USER, else the OS login. Not for
    workflows (it reads the environment)."""
    if user and user.strip():
        return user.strip()
    if (env := os.environ.get(ACTOR_ENV, "").strip()):
        return env
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        return f"uid {os.getuid()}"
