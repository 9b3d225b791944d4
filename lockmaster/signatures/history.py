"""`lockmaster signatures test FILE`: a signature tried against the stored history before it is
merged: which failed builds it would have named (and how many of them no signature names now),
and which successful builds it matches (too broad).

The builds come from the results database (lockmaster.results.queries), their logs from the log
store (sources.LogLocator); the judging here is pure over what they give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lockmaster.model.build import Result
from lockmaster.signatures.format import Signature
from lockmaster.signatures.match import LogSource, match_build


@dataclass
class StoredBuild:
    """A build as the results database has it (what the test needs of it)."""

    uuid: str
    project: str
    job: str
    result: str
    log_url: str | None = None
    ended: datetime | None = None
    known: list[str] = field(default_factory=list)  # signatures recorded for it already


@dataclass
class TrialReport:
    signature: Signature
    considered: int = 0  # builds in the window
    tried: int = 0  # in scope, logs read
    no_logs: list[StoredBuild] = field(default_factory=list)  # in scope, logs not found
    failures: list[StoredBuild] = field(default_factory=list)  # hits on failed builds
    successes: list[StoredBuild] = field(default_factory=list)  # hits on successes: too broad

    @property
    def newly_classified(self) -> list[StoredBuild]:
        """Failed builds it matches that no signature names now."""
        return [b for b in self.failures if not b.known]

    @property
    def matched(self) -> bool:
        return bool(self.failures or self.successes)

    def lines(self) -> list[str]:
        sig = self.signature
        lines = [f"signature {sig.name} ({sig.bug}): {self.tried} build(s) tried of "
                 f"{self.considered} in the window"
                 + (f"; logs not found for {len(self.no_logs)}" if self.no_logs else "")]
        lines.append(f"hits on failed builds: {len(self.failures)}")
        for build in self.failures:
            already = [k for k in build.known if k != sig.name]
            note = (f"already classified as {', '.join(already)}" if already
                    else "already classified by this signature" if build.known
                    else "unclassified now")
            lines.append(f"  {_row(build)}  ({note})")
        lines.append(f"hits on successful builds: {len(self.successes)}"
                     + (" — TOO BROAD: the regex also matches passing runs" if self.successes
                        else ""))
        for build in self.successes:
            lines.append(f"  {_row(build)}  (too broad)")
        lines.append(f"would classify {len(self.newly_classified)} failure(s) that are "
                     "unclassified now")
        if not self.matched:
            lines.append(f"the signature matched nothing in {self.tried} build(s)")
        return lines


def _row(build: StoredBuild) -> str:
    when = build.ended.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if build.ended else "?"
    return (f"{build.result:<12} {when}  {build.project} {build.job}  "
            f"{build.log_url or '(no log URL)'}")


def _result(text: str) -> Result | None:
    try:
        return Result(text)
    except ValueError:
        return None  # CANCELED and other results of no build log: not tried


def try_signature(signature: Signature, builds: Iterable[StoredBuild],
                   source: Callable[[str | None], LogSource | None], *,
                   max_bytes: int) -> TrialReport:
    """Try `signature` on every build in its scope (its results, and successes)."""
    report = TrialReport(signature)
    for build in builds:
        report.considered += 1
        result = _result(build.result)
        if result is None or not signature.applies(build.project, build.job, result):
            continue
        logs = source(build.log_url)
        if logs is None:
            report.no_logs.append(build)
            continue
        report.tried += 1
        if not match_build([signature], logs, project=build.project, job=build.job,
                           result=result, max_bytes=max_bytes):
            continue
        (report.successes if result is Result.SUCCESS else report.failures).append(build)
    return report
