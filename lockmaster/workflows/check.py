"""The check pipeline (Zuul's independent pipeline): one workflow per patchset.

`check/<project>/<change>/<patchset>`: resolve Depends-On, build the speculative state with real
git, run the frozen job graph (builds on the executor task queue), report once in Zuul's shape.
Cancelled (new patchset, abandoned change) it cancels its builds, waits for them to clean up
their nodes, and reports nothing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.exceptions import CancelledError as ActivityCancelled

with workflow.unsafe.imports_passed_through():
    from lockmaster.execution.build_limits import (
        BUILD_RETRY,
        activity_timeout,
        classify_activity_failure,
    )
    from lockmaster.execution.logs import build_log_path
    from lockmaster.model.audit import OperatorNote
    from lockmaster.model.build import Artifact, BuildRequest, BuildResult, JobSpec, Result
    from lockmaster.model.change import ChangeRef
    from lockmaster.model.check import (
        CheckInput,
        CheckOutcome,
        CheckStatus,
        DependencyUpdated,
        JobStatus,
        StatusQuery,
    )
    from lockmaster.model.report import ReportAction, ReportRequest, ReportResult
    from lockmaster.model.results import (
        BuildRecord,
        BuildsetRecord,
        RecordBuildsetRequest,
        RecordBuildsRequest,
        changes_ahead,
    )
    from lockmaster.model.state import (
        DependencyRequest,
        DependencyResult,
        PrepareStateRequest,
        PrepareStateResult,
        SpeculativeState,
    )
    from lockmaster.pipelines import reports
    from lockmaster.pipelines.jobgraph import JobGraph, final_result, skip_reason, upstream_jobs
    from lockmaster.pipelines.triggers import needed_changes_unfit
    from lockmaster.temporal import search_attributes
    from lockmaster.temporal.task_queues import Role, task_queue
    from lockmaster.workflows.details import check_details
    from lockmaster.workflows.ids import check_id
    from lockmaster.workflows.recording import record, recording


# Reports retry with backoff for as long as an hour: Gerrit being down must not lose a vote.
REPORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
)
MERGER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
# BUILD_RETRY (execution/build_limits.py, imported above; the gate and publish take it from
# here): a build activity is retried only when its worker died or it failed unexpectedly, never
# after its start-to-close limit; job-level attempts (RETRY results) are the workflow's business.


def check_workflow_id(change: ChangeRef, pipeline: str = "check", prefix: str = "") -> str:
    return check_id(change, pipeline, prefix)


log_path = build_log_path  # Zuul's log layout (execution/logs.py)


@workflow.defn(name="CheckWorkflow")
class CheckWorkflow:
    def __init__(self) -> None:
        self._phase = "resolving"
        self._input: CheckInput | None = None
        self._graph: JobGraph | None = None
        self._attempts: dict[str, list[BuildResult]] = {}
        self._running: dict[str, tuple[int, float]] = {}  # job -> (attempt, started)
        self._changes = ""
        self._deps: DependencyResult | None = None
        self._restart: DependencyUpdated | None = None
        self._start_reported = False
        self._result: str | None = None  # once done (the `Result` search attribute)
        self._reason: str | None = None
        self._dequeued_by: OperatorNote | None = None
        self._dequeue_reported = False  # cancelled, and its dequeue report (if any) made
        # The results database: recordings in flight, and the changes the builds tested.
        self._recordings: list[asyncio.Task[None]] = []
        self._tested: list[ChangeRef] = []
        self._build_ids: dict[str, str] = {}  # job -> its running build's id

    @workflow.signal(name="operator-dequeue")
    def operator_dequeue(self, note: OperatorNote) -> None:
        """Who is about to cancel this run, and why (sent just before the cancellation): the
        run's reason and its report say so."""
        self._dequeued_by = note

    @workflow.signal(name="dependency-updated")
    def dependency_updated(self, update: DependencyUpdated) -> None:
        """A change this run tests with has a new patchset. A Depends-On dependency is taken at
        its current patchset: the run starts again on the new one (Zuul re-resolves). A git
        parent stays what the change's commit is built on: nothing to do."""
        if self._deps is None or self._phase in ("reporting", "done"):
            return
        for info in self._deps.infos:
            for need in info.needs:
                if (need.number == update.number and need.via == "depends-on"
                        and info.change.connection == update.connection
                        and need.patchset != update.patchset):
                    self._restart = update

    @workflow.query(name="status")
    def status(self, _: StatusQuery) -> CheckStatus:
        assert self._input is not None
        jobs = []
        for job in self._input.jobs:
            state = "waiting"
            attempt = len(self._attempts.get(job.name, []))
            started = None
            if self._graph and job.name in self._graph.results:
                state = self._graph.results[job.name].value
            elif job.name in self._running:
                state = "running"
                attempt, started = self._running[job.name]
            builds = self._attempts.get(job.name)
            reason = None
            if state == Result.SKIPPED.value and not builds and self._graph:
                reason = skip_reason(job, self._graph.results)
            elif builds and state not in ("running", Result.SUCCESS.value):
                reason = builds[-1].message
            jobs.append(JobStatus(
                name=job.name, voting=job.voting, state=state, attempt=attempt,
                log_url=builds[-1].log_url if builds else None, started=started, reason=reason,
            ))
        return CheckStatus(
            change=self._input.change, pipeline=self._input.pipeline, phase=self._phase,
            changes=self._changes, jobs=jobs, result=self._result, reason=self._reason,
            dequeue_reported=self._dequeue_reported,
        )

    @workflow.run
    async def run(self, inp: CheckInput) -> CheckOutcome:
        self._input = inp
        self._publish()
        # Versioned: runs recorded before restarts and dependency search attributes replay
        # as they ran.
        if not workflow.patched("check-restarts-on-dependency-update"):
            return await self._run_once(inp, legacy=True)
        run = asyncio.ensure_future(self._run_once(inp))
        try:
            await workflow.wait_condition(lambda: run.done() or self._restart is not None)
        except asyncio.CancelledError:
            run.cancel()
            if workflow.patched("check-dequeue-reported-while-builds-stop"):
                # Zuul reports the dequeue as it cancels the jobs, not once they have cleaned
                # up: the change's next run (a new patchset, the gate) waits for this report
                # (`dequeue_reported`), so the change reads "canceled" before "started".
                self._cancelled()
                await self._report_dequeue()
                self._dequeue_reported = True
                await asyncio.gather(run, return_exceptions=True)
                self._cancelled()
            else:
                # Superseded or dequeued: the builds stop (and free their nodes) first.
                await asyncio.gather(run, return_exceptions=True)
                self._cancelled()
                await self._report_dequeue()
                self._dequeue_reported = True
            await self._record_buildset("CANCELLED", None)
            raise
        if run.done():
            outcome = run.result()
            await self._record_buildset(outcome.result, outcome.message)
            return outcome
        # A dependency has a new patchset: the same run, from the start, on it.
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await self._record_buildset("RESTARTED", None)
        workflow.continue_as_new(inp)

    async def _run_once(self, inp: CheckInput, legacy: bool = False) -> CheckOutcome:
        change = inp.change
        if inp.ignore_dependencies:
            deps = DependencyResult(ok=True, changes=[change])
        else:
            deps = await workflow.execute_activity(
                "resolve_dependencies", DependencyRequest(change=change),
                result_type=DependencyResult, task_queue=self._queue(Role.ORCHESTRATOR),
                start_to_close_timeout=timedelta(minutes=5), retry_policy=MERGER_RETRY,
            )
        self._deps = deps
        if not deps.ok:
            message = reports.dependency_error_report(inp.pipeline, deps.error or "unknown")
            await self._report("config-error", message, inp.labels.failure)
            return self._finish("CONFIG_ERROR", message, deps.error or "unknown")
        unfit = needed_changes_unfit(deps.infos, inp.require)
        if unfit:
            # Zuul does not enqueue a change whose needed changes fail the pipeline's
            # requirements, and says nothing (e.g. a dependency's new patchset lost its votes).
            why = f"needed changes do not meet the pipeline's requirements: {', '.join(unfit)}"
            return self._finish("NOT_ENQUEUED", why, why)
        if inp.labels.enqueue is not None:  # Zuul's enqueue reporter, for any pipeline
            await self._report("enqueue", reports.enqueue_report(
                inp.pipeline, inp.labels.messages.get("enqueue"),
                reports.status_link(inp.labels.status_url, inp.change.number)),
                inp.labels.enqueue)
        needed = sorted({f"{c.connection}:{c.number}" for c in deps.changes[:-1]})
        if needed and not legacy:
            workflow.upsert_search_attributes([search_attributes.NEEDED_CHANGES.value_set(needed)])

        self._set_phase("merging")
        prepared: PrepareStateResult = await workflow.execute_activity(
            "prepare_state",
            PrepareStateRequest(
                changes=deps.changes,
                required_projects=sorted({p for j in inp.jobs for p in j.required_projects}),
                merge_date=int(workflow.now().timestamp()),
            ),
            result_type=PrepareStateResult, task_queue=self._queue(Role.ORCHESTRATOR),
            start_to_close_timeout=timedelta(minutes=10), retry_policy=MERGER_RETRY,
        )
        if not prepared.ok or prepared.state is None:
            message = reports.merge_conflict_report(inp.pipeline, prepared.error)
            await self._report("merge-conflict", message, inp.labels.failure)
            return self._finish("MERGE_CONFLICT", message, prepared.error or "merge conflict")
        state = prepared.state
        self._changes = state.changes_key()
        self._tested = list(state.changes)

        if not inp.jobs:
            message = reports.no_jobs_report(inp.pipeline)
            await self._report("no-jobs", message, {})
            return self._finish("NO_JOBS", message, "no jobs are configured for this change")

        if inp.labels.start is not None:
            await self._report("start", reports.start_report(
                inp.pipeline, inp.labels.messages.get("start"),
                reports.status_link(inp.labels.status_url, inp.change.number)),
                inp.labels.start)
            self._start_reported = True

        self._set_phase("running")
        graph = self._graph = JobGraph(inp.jobs)
        await self._run_graph(graph, state)

        self._set_phase("reporting")
        succeeded = graph.succeeded()
        last = {name: builds[-1] for name, builds in self._attempts.items()}
        message = reports.buildset_report(
            inp.pipeline, succeeded, inp.jobs, graph.results, last,
            intro=inp.labels.messages.get("success" if succeeded else "failure"))
        await self._report(
            "success" if succeeded else "failure", message,
            inp.labels.success if succeeded else inp.labels.failure,
        )
        return self._finish("SUCCESS" if succeeded else "FAILURE", message)

    def _cancelled(self) -> None:
        self._result, self._reason = "CANCELLED", (
            self._dequeued_by.describe("dequeued") if self._dequeued_by
            else "the run was cancelled")
        self._publish()

    async def _report_dequeue(self) -> None:
        """Zuul's dequeue report: only with a dequeue reporter, and only when the start was
        reported (otherwise the run never said it acted on the change). An operator's dequeue
        is reported in any case, saying who and why (without votes when no dequeue reporter
        is configured), as the gate does."""
        assert self._input is not None
        labels = self._input.labels
        note = self._dequeued_by
        if note is None and (labels.dequeue is None or not self._start_reported):
            return
        await self._report("dequeue", reports.dequeue_report(
            self._input.pipeline, note.reason or "no reason given" if note else
            "the run was cancelled", labels.messages.get("dequeue"),
            by=note.by if note else None), labels.dequeue or {})

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._publish()

    def _publish(self) -> None:
        """The Web UI shows this under "Current details": what the check is and how it stands
        or ended, then every job's state or result, why it failed and its log."""
        workflow.set_current_details(check_details(self.status(StatusQuery())))

    # --- the job graph -------------------------------------------------------------------------

    async def _run_graph(self, graph: JobGraph, state: SpeculativeState) -> None:
        tasks: dict[asyncio.Task[BuildResult], JobSpec] = {}
        aborted: dict[str, str] = {}  # job -> the job whose failure stopped it

        def launch(job: JobSpec) -> None:
            graph.start(job.name)
            attempt = len(self._attempts.get(job.name, [])) + 1
            self._running[job.name] = (attempt, workflow.now().timestamp())
            tasks[asyncio.ensure_future(self._build(job, state, attempt))] = job
            self._publish()

        try:
            for job in graph.ready():
                launch(job)
            while tasks:
                done, _ = await workflow.wait(list(tasks), return_when=asyncio.FIRST_COMPLETED)
                # Deterministic order: handle finished builds in job order, not completion order.
                for task in sorted(done, key=lambda t: graph.order.index(tasks[t].name)):
                    job = tasks.pop(task)
                    build = self._aborted(job, aborted) if job.name in aborted else task.result()
                    self._attempts.setdefault(job.name, []).append(build)
                    self._running.pop(job.name, None)
                    result, again = final_result(self._attempts[job.name], job)
                    if again:
                        self._record_build(build, job)
                        graph.running.discard(job.name)
                        launch(job)
                        continue
                    if result is Result.RETRY_LIMIT:  # the last attempt is recorded as such
                        self._attempts[job.name][-1] = build.model_copy(
                            update={"result": Result.RETRY_LIMIT})
                    self._record_build(self._attempts[job.name][-1], job)
                    graph.finish(job.name, result)
                    if result is not Result.SUCCESS:
                        fail_fast = self._input is not None and self._input.fail_fast \
                            and job.voting
                        for other_task, other in tasks.items():
                            # A build that completed in this same activation keeps its result
                            # (Zuul's test_fail_fast_no_cancel_completed).
                            if (fail_fast or job.name in other.aborted_by) \
                                    and other.name not in aborted and not other_task.done():
                                aborted[other.name] = job.name
                                other_task.cancel()
                        if fail_fast:  # the result is known: nothing else starts
                            for name in graph.order:
                                if name not in graph.results and name not in graph.running:
                                    graph.results[name] = Result.SKIPPED
                    self._publish()
                for job in graph.ready():
                    launch(job)
        except asyncio.CancelledError:
            # Cancel every build and wait until each has killed its command and freed its node.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task, job in tasks.items():  # what they were, in the results database
                if task.cancelled() or task.exception() is not None:
                    self._record_cancelled(job)
                else:  # it ended in the very moment the run was cancelled
                    self._record_build(task.result(), job)
            raise

    def _aborted(self, job: JobSpec, aborted: dict[str, str]) -> BuildResult:
        attempt, started = self._running.get(job.name, (1, workflow.now().timestamp()))
        return BuildResult(build_id=f"aborted-{job.name}", job=job.name, result=Result.ABORTED,
                           attempt=attempt, started=started, ended=workflow.now().timestamp(),
                           message=f"aborted: {aborted[job.name]} failed")

    def _artifacts_for(self, job: str) -> list[Artifact]:
        """Zuul's artifacts: what the successful builds of the jobs `job` depends on made."""
        assert self._input is not None
        wanted = upstream_jobs(self._input.jobs, job)
        return [*self._input.given_artifacts] + [
                a for spec in self._input.jobs if spec.name in wanted
                for b in self._attempts.get(spec.name, []) if b.result is Result.SUCCESS
                for a in b.artifacts]

    async def _build(self, job: JobSpec, state: SpeculativeState, attempt: int) -> BuildResult:
        assert self._input is not None
        build_id = workflow.uuid4().hex
        self._build_ids[job.name] = build_id
        request = BuildRequest(
            build_id=build_id, pipeline=self._input.pipeline, change=self._input.change,
            job=job, state=state, attempt=attempt, precedence=self._input.precedence,
            log_path=log_path(self._input.pipeline, self._input.change, job.name, build_id),
            artifacts=self._artifacts_for(job.name),
        )
        try:
            return await workflow.execute_activity(
                "run_build", request, result_type=BuildResult,
                task_queue=self._queue(Role.EXECUTOR),
                # Above every bound the runner enforces (it answers first); a dead executor is
                # noticed by the heartbeat timeout.
                start_to_close_timeout=activity_timeout(job),
                heartbeat_timeout=timedelta(seconds=self._input.build_heartbeat_timeout),
                retry_policy=BUILD_RETRY,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"{job.name} attempt {attempt}",
            )
        except ActivityError as exc:
            if isinstance(exc.cause, ActivityCancelled):
                raise
            # Past its limit: TIMED_OUT (never rerun). The executor died or kept failing
            # unexpectedly: infrastructure, retried within attempts.
            failure = classify_activity_failure(exc)
            now = workflow.now().timestamp()
            return BuildResult(
                build_id=build_id, job=job.name, result=failure.result, attempt=attempt,
                started=now, ended=now, message=failure.message,
            )

    # --- reporting --------------------------------------------------------------------------------

    async def _report(self, action: ReportAction, message: str, labels: dict[str, int]) -> None:
        assert self._input is not None
        info = workflow.info()
        await workflow.execute_activity(
            "post_report",
            ReportRequest(
                change=self._input.change, pipeline=self._input.pipeline, action=action,
                message=message, labels=labels,
                # One report per outcome per run, however often the activity is retried.
                tag=f"{self._input.pipeline}:{info.run_id}:{action}",
            ),
            result_type=ReportResult, task_queue=self._queue(Role.ORCHESTRATOR),
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=REPORT_RETRY,
        )

    # --- the results database --------------------------------------------------------------------

    def _record_build(self, build: BuildResult, job: JobSpec, canceled: bool = False) -> None:
        """Started now, waited for at the end (recording never holds the graph up)."""
        assert self._input is not None
        if not recording():
            return
        rec = BuildRecord.of(build, buildset_uuid=workflow.info().run_id,
                             pipeline=self._input.pipeline, change=self._input.change,
                             voting=job.voting, changes=self._tested or [self._input.change])
        if canceled:
            rec = rec.model_copy(update={"result": "CANCELED"})
        self._recordings.append(asyncio.ensure_future(record(
            "record_builds", RecordBuildsRequest(builds=[rec]), self._queue(Role.ORCHESTRATOR),
            f"build {build.job} {build.build_id}")))

    def _record_cancelled(self, job: JobSpec) -> None:
        """A build cancelled with the run (new patchset, abandoned, dequeued): CANCELED."""
        attempt, started = self._running.get(job.name, (1, workflow.now().timestamp()))
        build_id = self._build_ids.get(job.name)
        if build_id is None:
            return
        self._record_build(BuildResult(
            build_id=build_id, job=job.name, result=Result.ABORTED, attempt=attempt,
            started=started, ended=workflow.now().timestamp(),
            message="cancelled with the run"), job, canceled=True)

    async def _record_buildset(self, result: str, message: str | None) -> None:
        """The run's buildset, once reported; then every recording still in flight (each
        bounded: results.RECORD_WINDOW)."""
        assert self._input is not None
        if not self._recordings and not recording():
            return
        info = workflow.info()
        buildset = BuildsetRecord(
            uuid=info.run_id, pipeline=self._input.pipeline, change=self._input.change,
            result=result, message=message, reason=self._reason,
            started=info.start_time.timestamp(), ended=workflow.now().timestamp(),
            changes=changes_ahead(self._tested or [self._input.change]))
        self._recordings.append(asyncio.ensure_future(record(
            "record_buildset", RecordBuildsetRequest(buildset=buildset),
            self._queue(Role.ORCHESTRATOR), f"buildset {info.run_id}")))
        await asyncio.gather(*self._recordings)

    def _finish(self, result: str, message: str, reason: str | None = None) -> CheckOutcome:
        assert self._input is not None
        self._result, self._reason = result, reason
        self._set_phase("done")
        workflow.upsert_search_attributes([search_attributes.RESULT.value_set(result)])
        builds = [b for name in self._attempts for b in self._attempts[name]]
        return CheckOutcome(
            change=self._input.change, pipeline=self._input.pipeline, result=result,
            message=message, builds=builds,
            job_results=dict(self._graph.results) if self._graph else {},
            changes=self._changes, given_artifacts=list(self._input.given_artifacts),
        )

    def _queue(self, role: Role) -> str:
        assert self._input is not None
        return task_queue(self._input.task_queue_prefix, role)
