"""A buildset's job graph: which jobs may start, which are skipped, the buildset's result."""

from __future__ import annotations

from collections.abc import Mapping

from lockmaster.model.build import BuildResult, JobSpec, Result


class JobGraph:
    """Tracks one buildset. Jobs start when every job they depend on has SUCCEEDED; a job whose
    dependency ended any other way is SKIPPED (and so, in turn, are its own dependents)."""

    def __init__(self, jobs: list[JobSpec]) -> None:
        self.jobs = {job.name: job for job in jobs}
        self.order = [job.name for job in jobs]
        self.running: set[str] = set()
        self.results: dict[str, Result] = {}

    def ready(self) -> list[JobSpec]:
        """Jobs that can start now (not started, not finished, every dependency succeeded)."""
        out = []
        for name in self.order:
            if name in self.running or name in self.results:
                continue
            deps = self.jobs[name].dependencies
            if all(self.results.get(dep) is Result.SUCCESS for dep in deps):
                out.append(self.jobs[name])
        return out

    def start(self, name: str) -> None:
        self.running.add(name)

    def finish(self, name: str, result: Result) -> list[str]:
        """Record a job's final result; returns the jobs skipped because of it."""
        self.running.discard(name)
        self.results[name] = result
        if result is Result.SUCCESS:
            return []
        skipped: list[str] = []
        for other in self.order:
            if other in self.results or other in self.running:
                continue
            if self._depends_on(other, name):
                self.results[other] = Result.SKIPPED
                skipped.append(other)
        return skipped

    def _depends_on(self, job: str, ancestor: str) -> bool:
        stack = list(self.jobs[job].dependencies)
        seen: set[str] = set()
        while stack:
            dep = stack.pop()
            if dep == ancestor:
                return True
            if dep not in seen:
                seen.add(dep)
                stack.extend(self.jobs[dep].dependencies)
        return False

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.jobs)

    def succeeded(self) -> bool:
        """Every voting job succeeded (a voting job that was skipped counts as a failure)."""
        return all(
            self.results.get(name) is Result.SUCCESS
            for name, job in self.jobs.items()
            if job.voting
        )


def final_result(builds: list[BuildResult], job: JobSpec) -> tuple[Result, bool]:
    """Given the attempts so far of one job, its final result and whether to run it again."""
    last = builds[-1].result
    if last.retryable:
        if len(builds) < job.attempts:
            return last, True
        return Result.RETRY_LIMIT, False
    return last, False


def upstream_jobs(jobs: list[JobSpec], name: str) -> set[str]:
    """The jobs `name` depends on, directly or through others."""
    by_name = {j.name: j for j in jobs}
    seen: set[str] = set()
    todo = list(by_name[name].dependencies) if name in by_name else []
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo += by_name[dep].dependencies if dep in by_name else []
    return seen


def skip_reason(job: JobSpec, results: Mapping[str, Result]) -> str:
    """Why a SKIPPED job never ran: a job it depends on did not succeed, or fail-fast."""
    failed = [dep for dep in job.dependencies
              if dep in results and results[dep] is not Result.SUCCESS]
    if failed:
        return f"not run: {', '.join(failed)} did not succeed"
    return "not run: the buildset had already failed (fail-fast)"


def waits_for_providers(job: JobSpec, ahead: list[tuple[list[JobSpec], Mapping[str, Result]]],
                        ) -> bool:
    """Zuul's requires/provides: `job` waits while a job providing what it requires has not
    completed in an item ahead (each given as its jobs and their results so far)."""
    wanted = set(job.requires)
    if not wanted:
        return False
    return any(wanted & set(spec.provides) and results.get(spec.name) is None
               for jobs, results in ahead for spec in jobs)
