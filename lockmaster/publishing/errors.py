"""Errors of the publishing library: one base class, subclasses that tell the caller whether a
retry can help (`retryable`), and messages that say what failed, where, and how to fix it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence


class PublishError(Exception):
    """Something stopped a publish or a mirror sync. Nothing visible to clients was changed.

    `retryable` tells the caller (the Temporal activity) whether running the same operation
    again can succeed without a human doing something first.
    """

    retryable: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PublishError):
    """The request itself is wrong (bad snapshot id, unreadable manifest, nothing to publish)."""

    retryable = False


class ProvenanceError(InvalidInput):
    """The inputs are not provably lockmaster's build of a merged commit: refused."""


class ConflictError(PublishError):
    """The request contradicts what is already published (a snapshot id reused for other
    packages, a file name published earlier with other content, a version already superseded)."""

    retryable = False


class VerificationError(PublishError):
    """A repository failed the checks a client would make. `problems` lists every finding."""

    retryable = False

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{message}\n{shown}{more}" if self.problems else message)


class ToolError(PublishError):
    """An external tool (reprepro, createrepo_c, gpg, rsync, ...) failed."""

    def __init__(self, message: str, *, command: Sequence[str] = (), returncode: int | None = None,
                 output: str = "") -> None:
        self.command = list(command)
        self.returncode = returncode
        self.output = output
        super().__init__(message)


class MirrorError(PublishError):
    """A mirror refused or broke off a sync for a reason other than being unreachable."""


class MirrorUnavailable(MirrorError):
    """The mirror cannot be reached (connection refused, timed out, dropped). Retry later: the
    mirror still serves its previous snapshot, and a rerun resumes where this one stopped."""

    retryable = True


class HostKeyMismatch(MirrorError):
    """The mirror's SSH host key is not the one in the configured known_hosts file."""

    retryable = False


class LockTimeout(PublishError):
    """Another publish or sync holds the repository's lock for too long."""


@contextlib.contextmanager
def os_errors(what: str, hint: str) -> Iterator[None]:
    """File system failures (disk full, permissions, a path that is a file) as PublishError."""
    try:
        yield
    except PublishError:
        raise
    except OSError as exc:
        raise PublishError(f"{what}: {exc}. {hint}") from exc
