"""`publish/<project>/<change>`: a merged change's packages, from the build that made them to
every mirror.

1. build: the packages the gate built and tested are promoted when they are the merged source:
   `find_gate_build` (on the orchestrator) asks the change's gate queues what they tested for
   it, and compares the tree of the commit the gate's package build built (its speculative
   merge commit) with the tree of the commit that merged (`git rev-parse <commit>^{tree}`, as
   Zuul's promote pipeline does). Equal trees: the gate's build is published, exactly as built
   and tested (its manifest's sha256 is pinned). Different trees (something merged in between,
   a hand merge on another parent), no gate build (merged by hand, not gated, its artifacts
   gone): the project's build job runs again on the merged commit. The publication's
   provenance records which build it published and why (`lockmaster publish show`);
2. publish: when the publish queue gives this change its turn (merge order), the publishing
   host checks the packages' origin (a rebuild's source commit is on the branch; a gate build's
   is the tested commit, whose tree is the merged commit's, itself on the branch), adds them to
   a new snapshot of the stable repository, signs it, verifies it as a client would and
   switches the live pointer to it;
3. sync:<mirror>: each mirror gets that snapshot (or a newer one, which holds these packages
   too), independently of the others; a mirror that is down is retried until it is back.

Retriggering one step of a change already published starts a new run of this workflow with
`only` set (`lockmaster publish retrigger`); `build` looks for the gate's build again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from lockmaster.execution.build_limits import activity_timeout, classify_activity_failure
    from lockmaster.model.build import BuildRequest, BuildResult, Result
    from lockmaster.model.publish import (
        BuildSource,
        Enqueue,
        FindGateBuildRequest,
        Finished,
        GateBuildChoice,
        Provenance,
        PublishInput,
        PublishResult,
        PublishStableRequest,
        PublishStableResult,
        PublishStatus,
        PublishStatusQuery,
        PublishStep,
        Ready,
        StepState,
        SyncMirrorRequest,
        SyncMirrorResult,
        Turn,
    )
    from lockmaster.model.state import ProjectState, SpeculativeState
    from lockmaster.packaging.steps import PACKAGES_ARTIFACT
    from lockmaster.temporal import search_attributes
    from lockmaster.temporal.task_queues import Role, task_queue
    from lockmaster.workflows.check import BUILD_RETRY, log_path
    from lockmaster.workflows.details import publish_details

PUBLISH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
# Looking up the gate's build: a few tries (the gate busy, the log server restarting), then a
# rebuild, which is always right.
LOOKUP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=4)
PROMOTE_PATCH = "promote-gate-build"
# A mirror that is down is retried (backing off to a try a minute) until it is back.
SYNC_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                         maximum_interval=timedelta(seconds=60), maximum_attempts=0)
SYNC_GIVE_UP = timedelta(hours=12)


def publish_id(project: str, change: int, prefix: str = "") -> str:
    return f"{prefix}publish/{project}/{change}"


@workflow.defn(name="PublishWorkflow")
class PublishWorkflow:
    @workflow.init
    def __init__(self, inp: PublishInput) -> None:
        self._input = inp
        self._steps: dict[str, PublishStep] = {}
        self._turn: Turn | None = None
        self._build: BuildResult | None = None
        self._snapshot = inp.snapshot
        self._packages_url = inp.packages_url
        self._provenance = inp.provenance if inp.only is not None else None
        self._done = False
        for name in self._plan(inp):
            self._steps[name] = PublishStep(name=name)

    def _all_steps(self) -> list[PublishStep]:
        """This run's steps, and those of the run before a retrigger that it does not redo,
        in the order a publication runs them."""
        earlier = {s.name: s.model_copy(update={"earlier": True})
                   for s in self._input.earlier_steps if s.name not in self._steps}
        order = ["build", "publish", *(f"sync:{m}" for m in self._input.mirrors)]
        names = [*order, *(n for n in [*earlier, *self._steps] if n not in order)]
        return [self._steps.get(n) or earlier[n] for n in dict.fromkeys(names)
                if n in self._steps or n in earlier]

    @staticmethod
    def _plan(inp: PublishInput) -> list[str]:
        syncs = [f"sync:{m}" for m in inp.mirrors]
        if inp.only is None:
            return ["build", "publish", *syncs]
        if inp.only == "publish":
            return ["publish", *syncs]
        return [inp.only]

    @workflow.signal(name="your_turn")
    def your_turn(self, turn: Turn) -> None:
        self._turn = turn

    @workflow.query(name="status")
    def status(self, _: PublishStatusQuery) -> PublishStatus:
        return PublishStatus(change=self._input.change, steps=self._all_steps(),
                             snapshot=self._snapshot, build=self._build,
                             packages_url=self._packages_url, done=self._done,
                             provenance=self._provenance)

    @workflow.run
    async def run(self, inp: PublishInput) -> PublishResult:
        self._publish_details()
        try:
            ok, message = await self._run(inp)
        finally:
            self._done = True
        self._publish_details(ok, message)
        # A failed publication completes normally: the `Result` search attribute finds it
        # (versioned: histories recorded before replay as they ran).
        if workflow.patched("publish-result-attribute"):
            workflow.upsert_search_attributes([search_attributes.RESULT.value_set(
                "SUCCESS" if ok else "FAILURE")])
        return PublishResult(ok=ok, snapshot=self._snapshot, steps=list(self._steps.values()),
                             message=message)

    def _publish_details(self, ok: bool | None = None, message: str | None = None) -> None:
        """The Web UI's "Current details": every step, why it failed, its log (not a
        command)."""
        workflow.set_current_details(publish_details(self.status(PublishStatusQuery()), ok=ok,
                                                     message=message))

    async def _run(self, inp: PublishInput) -> tuple[bool, str]:
        packages_url = inp.packages_url
        if inp.only is None:
            # The gate's build when it tested the merged tree (versioned: histories recorded
            # before promotion replay as they ran, with a rebuild).
            choice = await self._gate_build() if workflow.patched(PROMOTE_PATCH) else None
            if choice is not None and choice.promote:
                packages_url = self._promote(choice.provenance)
            else:
                packages_url, why = await self._rebuild_packages(choice)
                if packages_url is None:
                    return False, why
        if inp.only in (None, "publish"):
            assert packages_url is not None
            ok, why = await self._publish(packages_url)
            if not ok:
                return False, why
        assert self._snapshot is not None
        syncs = [name for name in self._steps if name.startswith("sync:")]
        results = await asyncio.gather(*(self._sync(name) for name in syncs))
        failed = [name for name, ok in zip(syncs, results, strict=True) if not ok]
        if failed:
            return False, f"published as {self._snapshot}; not synced: {', '.join(failed)}"
        return True, f"published as {self._snapshot}" + (
            f" and synced to {len(syncs)} mirror(s)" if syncs else "")

    # --- steps -----------------------------------------------------------------------------

    async def _gate_build(self) -> GateBuildChoice:
        """Ask the gate queues what they tested for this change (see the module docstring)."""
        inp = self._input
        assert inp.change.commit is not None, "a merged change names its merged commit"
        none = Provenance(source=BuildSource.REBUILD, job=inp.job.name,
                          merged_commit=inp.change.commit, reason="no gate build found: no "
                          f"dependent pipeline gates {inp.change.project}")
        if not inp.gate_ids:
            return GateBuildChoice(promote=False, provenance=none)
        step = self._start("build")
        step.detail = "looking for the gate's build"
        self._publish_details()
        try:
            return await workflow.execute_activity(
                "find_gate_build",
                FindGateBuildRequest(change=inp.change, job=inp.job.name,
                                     gate_ids=list(inp.gate_ids)),
                result_type=GateBuildChoice, task_queue=self._queue(Role.ORCHESTRATOR),
                start_to_close_timeout=timedelta(minutes=2), retry_policy=LOOKUP_RETRY,
                summary=f"find the gate's {inp.job.name} build of {inp.change.key}")
        except ActivityError as exc:
            return GateBuildChoice(promote=False, provenance=none.model_copy(update={
                "reason": f"no gate build found: looking it up failed: {exc.cause or exc}"}))

    def _promote(self, provenance: Provenance) -> str:
        """The gate's build is this publication's: nothing is built."""
        assert provenance.packages_url is not None
        self._provenance = provenance
        self._packages_url = provenance.packages_url
        self._build = BuildResult(build_id=provenance.build_id or "", job=provenance.job,
                                  result=Result.SUCCESS, log_url=provenance.log_url)
        self._steps["build"].url = provenance.log_url
        tested = (provenance.tested_commit or "?")[:12]
        self._finish("build", StepState.DONE,
                     f"promoted the gate's {provenance.job} build of {tested}: "
                     f"{provenance.reason}")
        return provenance.packages_url

    async def _rebuild_packages(self, choice: GateBuildChoice | None
                                ) -> tuple[str | None, str]:
        """(the rebuild's packages URL, "") or (None, why it failed, told to the queue)."""
        why = None
        if choice is not None:  # why not the gate's build, shown while the rebuild runs
            why = choice.provenance.reason
            self._provenance = choice.provenance.model_copy(update={
                "source": BuildSource.REBUILD, "buildset": self._id(),
                "tested_commit": self._input.change.commit,
                "tested_tree": choice.provenance.merged_tree})
        build = await self._rebuild(why)
        packages_url = self._packages_url = _artifact(build, PACKAGES_ARTIFACT)
        if self._provenance is not None:
            self._provenance = self._provenance.model_copy(update={
                "job": build.job, "build_id": build.build_id, "log_url": build.log_url,
                "packages_url": packages_url})
            self._publish_details()
        if build.result is not Result.SUCCESS or packages_url is None:
            why = (f"the build job ended {build.result}" if build.result is not Result.SUCCESS
                   else f"the build job made no {PACKAGES_ARTIFACT!r} artifact")
            self._fail("build", why)
            await self._tell_queue("finished", Finished(workflow_id=self._id(), ok=False,
                                                        detail=why))
            return None, why
        return packages_url, ""

    async def _rebuild(self, why: str | None = None) -> BuildResult:
        inp = self._input
        change = inp.change
        assert change.commit is not None, "a merged change names its merged commit"
        state = SpeculativeState(changes=[], projects={change.project: ProjectState(
            project=change.project, connection=change.connection, branch=change.branch,
            base=change.commit, head=change.commit)})
        step = self._start("build")
        if why:
            step.detail = f"rebuilding from the merged commit: {why}"
            self._publish_details()
        result: BuildResult | None = None
        for attempt in range(1, inp.job.attempts + 1):
            step.attempts = attempt
            build_id = workflow.uuid4().hex
            request = BuildRequest(
                build_id=build_id, pipeline="publish", change=change, job=inp.job, state=state,
                attempt=attempt, precedence=0,
                log_path=log_path("publish", change, inp.job.name, build_id))
            try:
                result = await workflow.execute_activity(
                    "run_build", request, result_type=BuildResult,
                    task_queue=self._queue(Role.EXECUTOR),
                    start_to_close_timeout=activity_timeout(inp.job),
                    heartbeat_timeout=timedelta(seconds=inp.build_heartbeat_timeout),
                    retry_policy=BUILD_RETRY,
                    summary=f"rebuild {change.project} at {change.commit[:12]}")
            except ActivityError as exc:
                # Past its limit: TIMED_OUT; anything else ends the rebuild as before (ERROR).
                timed_out = classify_activity_failure(exc).result is Result.TIMED_OUT
                result = BuildResult(build_id=build_id, job=inp.job.name,
                                     result=Result.TIMED_OUT if timed_out else Result.ERROR,
                                     attempt=attempt, message=str(exc.cause or exc))
            step.url = result.log_url
            if not result.result.retryable:
                break
        assert result is not None
        self._build = result
        if result.result is Result.SUCCESS:
            self._finish("build", StepState.DONE, f"built at {change.commit[:12]}"
                         + (f" ({why})" if why else ""))
        return result

    async def _publish(self, packages_url: str) -> tuple[bool, str]:
        if self._input.only == "publish":  # a retrigger: a new place in the queue
            await self._tell_queue("enqueue", Enqueue(workflow_id=self._id(), change=self._who()))
        await self._tell_queue("ready", Ready(workflow_id=self._id()))
        step = self._steps["publish"]
        step.detail = "waiting for its turn (merge order)"
        self._publish_details()
        await workflow.wait_condition(lambda: self._turn is not None)
        assert self._turn is not None
        snapshot = self._turn.snapshot
        self._start("publish")
        try:
            result: PublishStableResult = await workflow.execute_activity(
                "publish_stable",
                PublishStableRequest(change=self._input.change, snapshot=snapshot,
                                     packages_url=packages_url, provenance=self._provenance),
                result_type=PublishStableResult, task_queue=self._queue(Role.PUBLISHER),
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(seconds=self._input.sync_heartbeat_timeout),
                retry_policy=PUBLISH_RETRY, summary=f"publish as {snapshot}")
        except ActivityError as exc:
            why = f"publishing failed: {exc.cause or exc}"
            self._fail("publish", why)
            await self._tell_queue("finished", Finished(workflow_id=self._id(), ok=False,
                                                        detail=why))
            return False, why
        self._snapshot = result.snapshot
        self._steps["publish"].added = list(result.added)
        if self._provenance is not None and result.provenance:
            self._provenance = self._provenance.model_copy(
                update={"publisher_check": result.provenance})
        self._finish("publish", StepState.DONE,
                     f"snapshot {result.snapshot}: {', '.join(result.added) or 'no new files'}")
        await self._tell_queue("finished", Finished(workflow_id=self._id(), ok=True,
                                                    snapshot=result.snapshot))
        return True, ""

    async def _sync(self, name: str) -> bool:
        mirror = name.split(":", 1)[1]
        assert self._snapshot is not None
        self._start(name)
        try:
            result: SyncMirrorResult = await workflow.execute_activity(
                "sync_mirror", SyncMirrorRequest(mirror=mirror, snapshot=self._snapshot),
                result_type=SyncMirrorResult, task_queue=self._queue(Role.PUBLISHER),
                start_to_close_timeout=timedelta(hours=2), schedule_to_close_timeout=SYNC_GIVE_UP,
                heartbeat_timeout=timedelta(seconds=self._input.sync_heartbeat_timeout),
                retry_policy=SYNC_RETRY, summary=f"sync {mirror} to {self._snapshot}")
        except ActivityError as exc:
            self._fail(name, f"{exc.cause or exc}")
            return False
        step = self._steps[name]
        step.url = result.report_url
        step.added, step.removed = list(result.added), list(result.removed)
        detail = (f"already at {result.snapshot}" if result.skipped else
                  f"now at {result.snapshot}: +{len(result.added)} -{len(result.removed)} files")
        self._finish(name, StepState.DONE, detail)
        return True

    # --- bookkeeping -------------------------------------------------------------------------

    def _start(self, name: str) -> PublishStep:
        step = self._steps[name]
        if step.state is not StepState.RUNNING:  # a rebuild after the look-up: one step
            step.started = workflow.now().timestamp()
        step.state = StepState.RUNNING
        step.detail = None
        self._publish_details()
        return step

    def _finish(self, name: str, state: StepState, detail: str) -> None:
        step = self._steps[name]
        step.state = state
        step.detail = detail
        step.ended = workflow.now().timestamp()
        self._publish_details()

    def _fail(self, name: str, why: str) -> None:
        self._finish(name, StepState.FAILED, why)
        for later in list(self._steps.values()):
            if later.state is StepState.WAITING:
                later.state = StepState.SKIPPED

    async def _tell_queue(self, signal: str, arg: object) -> None:
        await workflow.get_external_workflow_handle(self._input.queue_id).signal(signal, arg)

    def _queue(self, role: Role) -> str:
        return task_queue(self._input.task_queue_prefix, role)

    def _id(self) -> str:
        return workflow.info().workflow_id

    def _who(self) -> str:
        change = self._input.change
        return f"{change.project} {change.key}"


def _artifact(build: BuildResult, name: str) -> str | None:
    for artifact in build.artifacts:
        if artifact.name == name:
            return str(artifact.url)
    return None
