"""Report text in Zuul's shape, which Gerrit users already read.

    Build succeeded (check).

    - lint http://logs/.../ : SUCCESS in 1.2s
    - docs http://logs/.../ : FAILURE in 3.0s (non-voting)
    - unit : SKIPPED
    - it http://logs/.../ : FAILURE in 1m 02s (known failure: https://bugs.example/1)
"""

from __future__ import annotations

from lockmaster.model.audit import OperatorNote
from lockmaster.model.build import BuildResult, JobSpec, Result


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s"


def job_line(job: JobSpec, result: Result, build: BuildResult | None) -> str:
    url = f" {build.log_url}" if build and build.log_url and result is not Result.SKIPPED else ""
    text = f"- {job.name}{url} : {result.value}"
    if build is not None and build.duration is not None and result is not Result.SKIPPED:
        text += f" in {format_duration(build.duration)}"
    if not job.voting:
        text += " (non-voting)"
    if build is not None and build.message and result not in (Result.SUCCESS, Result.SKIPPED):
        text += f" ({build.message})"
    if build is not None and build.known_failures and result not in (Result.SUCCESS,
                                                                      Result.SKIPPED):
        # elastic-recheck's comment, in the job's line: the bug its log shows (issue 16).
        bugs = ", ".join(dict.fromkeys(known.bug for known in build.known_failures))
        text += f" (known failure: {bugs})"
    return text


def buildset_report(
    pipeline: str,
    succeeded: bool,
    jobs: list[JobSpec],
    results: dict[str, Result],
    last_builds: dict[str, BuildResult],
    *,
    intro: str | None = None,
) -> str:
    """`intro`: the pipeline's own first line (success-message / failure-message)."""
    intro = intro or f"Build {'succeeded' if succeeded else 'failed'} ({pipeline})."
    lines = [job_line(job, results[job.name], last_builds.get(job.name)) for job in jobs]
    return intro + "\n\n" + "\n".join(lines)


def merge_conflict_report(pipeline: str, detail: str | None) -> str:
    text = (
        f"Merge Failed ({pipeline}).\n\nThis change or one of its cross-repo dependencies was "
        "unable to be automatically merged with the current state of its repository. Please "
        "rebase the change and upload a new patchset."
    )
    if detail:
        text += f"\n\n{detail}"
    return text


def dependency_error_report(pipeline: str, detail: str) -> str:
    return f"Configuration error ({pipeline}).\n\n{detail}"


def no_jobs_report(pipeline: str) -> str:
    return f"No jobs run ({pipeline}): no jobs are configured for this project in this pipeline."


def status_link(status_url: str | None, number: int) -> str | None:
    """A change's entry on the status page (lockmaster web), as Zuul's start reports link to
    its status page."""
    return f"{status_url.rstrip('/')}/change/{number}" if status_url else None


def _linked(text: str, link: str | None) -> str:
    """The link where the pipeline's message puts `{status_url}` (Zuul's placeholder), else
    on a line of its own after the first: the first line stays what Gerrit users read."""
    if "{status_url}" in text:
        return text.replace("{status_url}", link or "").strip()
    return f"{text}\n\n{link}" if link else text


def start_report(pipeline: str, message: str | None = None, link: str | None = None) -> str:
    return _linked(message or f"Starting {pipeline} jobs.", link)


def enqueue_report(pipeline: str, message: str | None = None, link: str | None = None) -> str:
    return _linked(message or f"Added to the {pipeline} queue.", link)


# Zuul's words, which Gerrit users know, then which change and why.
DEPENDENCY_FAILED = "This change depends on a change that failed to merge."
MISSING_REQUIREMENT = "This change is unable to merge due to a missing merge requirement"


def needed_change_report(pipeline: str, needed: str, why: str, url: str | None = None) -> str:
    """A change left (or cannot enter) because a change it needs cannot merge ahead of it."""
    text = f"Build failed ({pipeline}).\n\n{DEPENDENCY_FAILED}\n\nChange {needed} is needed: {why}."
    if url:
        text += f"\n  {url}"
    return text


def missing_requirement_report(pipeline: str, detail: str) -> str:
    """The change no longer meets the pipeline's requirements (an approval removed, WIP...)."""
    return f"Build failed ({pipeline}).\n\n{MISSING_REQUIREMENT}: {detail}."


def dequeue_report(pipeline: str, reason: str, message: str | None = None,
                   by: str | None = None) -> str:
    """The change left without a result (an operator's dequeue, a new patchset...); `by`: the
    operator who dequeued it."""
    removed = f"Removed from {pipeline} by {by}" if by else f"Removed from {pipeline}"
    return f"{message or f'Build canceled ({pipeline}).'}\n\n{removed}: {reason}."


def with_operator(message: str, note: OperatorNote | None) -> str:
    """A report about an item an operator enqueued ends saying who did and why (whether it
    entered without its approvals): "Enqueued by alice without its approvals: R."."""
    if note is None:
        return message
    said = note.describe("enqueued")
    return f"{message}\n\n{said[0].upper()}{said[1:].rstrip('.')}."
