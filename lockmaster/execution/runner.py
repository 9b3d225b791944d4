"""Running one build: node, workspace, commands, log, result.

Phases and what their failures mean (every bound: execution/build_limits.py):
- getting the node(s): NodeError, or none within the node-wait bound -> NODE_FAILURE; the wait
  is not part of the job's timeout (Zuul);
- getting the TE (jobs with `testenv`): none within the TE-wait bound -> NODE_FAILURE; not part
  of the job's timeout either unless the job sets `timeout-includes-te-wait` (-> TIMED_OUT);
- preparing and uploading the workspace, pre-run, run: bounded together by the job's timeout
  (-> TIMED_OUT); a pre-run failure is the infrastructure's (-> RETRY), run decides
  SUCCESS/FAILURE, a lost node (NodeError) -> RETRY, an irreproducible state -> ERROR;
- post-run: always (unless the node was lost or the build cancelled), failures only logged,
  with its own budget of min(timeout, limits.post_run) so it can still collect logs after a
  timeout.
- artifacts (see execution/artifacts.py): after post-run, so that post-run can still gather
  things into $LOCKMASTER_ARTIFACTS (reports, logs of a run that timed out), whenever post-run
  ran; with their own budget (limits.artifacts). A build whose result was SUCCESS but whose
  artifacts could not be had is not reported as a success with nothing to show: too large or
  unreadable (the job's doing) -> FAILURE, node lost -> RETRY, the log storage failing -> ERROR.
  Other results stay as they were; every case is logged.
- cleanup (the TE's and the nodes' release, the autohold lookup): each within limits.cleanup;
  what is left undone, the leases end.
Pre-run and post-run commands run in the workspace root, run in `src/<project>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lockmaster.execution import artifacts
from lockmaster.execution.build_limits import LIMITS, BuildLimits
from lockmaster.execution.log_shipping import BuildShipment, LogShipping
from lockmaster.execution.logs import LogWriter, log_dir, log_url
from lockmaster.execution.secrets import SecretMissing, SecretSource
from lockmaster.execution.tools import install_tools
from lockmaster.execution.workspace import WorkspaceError, WorkspacePreparer
from lockmaster.leases.errors import TEError
from lockmaster.model.build import (
    Artifact,
    BuildRequest,
    BuildResult,
    NodeInfo,
    Result,
    node_holder,
    te_holder,
)
from lockmaster.model.testenv import LeaseStatus, OperatorAnswer
from lockmaster.nodes.base import DownloadError, Node, NodeError, Nodeset, NodeSource
from lockmaster.nodes.local import size_text
from lockmaster.signatures.library import SignatureLibrary


class TELease(Protocol):
    async def acquire(self) -> LeaseStatus: ...

    def write_datafile(self, path: Path) -> Path: ...

    async def release(self) -> OperatorAnswer: ...


# (label, lease id, holder, precedence) -> a lease to acquire (renewed until released)
TESource = Callable[[str, str, str, int], TELease]

HEARTBEAT_INTERVAL = 2.0
TE_DATAFILE = "te.json"  # in the workspace root; $TE_DATAFILE names it on the node
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Heartbeat = Callable[[str], None]


@dataclass
class _Progress:
    """What the build is doing now: the heartbeat detail."""

    detail: str


@dataclass
class _Outcome:
    result: Result
    message: str | None = None
    artifacts: list[Artifact] = dataclasses.field(default_factory=list)


async def _shielded(coro: Coroutine[Any, Any, None]) -> None:
    """Finish `coro` even if we are cancelled meanwhile (cleanup must not be cut short)."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})  # a second cancellation: still let cleanup finish
        raise


async def _within(coro: Coroutine[Any, Any, None], seconds: float) -> None:
    """Cleanup has its bound too: the build activity's limit counts on it."""
    try:
        async with asyncio.timeout(seconds):
            await coro
    except TimeoutError:
        raise TimeoutError(f"not done within {seconds:g} s") from None


async def _logged(coro: Coroutine[Any, Any, None], what: str, log: LogWriter | None) -> None:
    try:
        await coro
    except Exception as exc:  # logged only: the result is already decided
        if log is not None:
            log.line(f"{what} failed: {exc}")


async def _beat(heartbeat: Heartbeat, progress: _Progress, interval: float) -> None:
    while True:
        with contextlib.suppress(Exception):  # a failed heartbeat must not fail the build
            heartbeat(progress.detail)
        await asyncio.sleep(interval)


def _header(request: BuildRequest, nodes: list[Node]) -> str:
    job, change, state = request.job, request.change, request.state
    lines = [
        f"Job: {job.name}",
        f"Build: {request.build_id}",
        f"Attempt: {request.attempt} of {job.attempts}",
        f"Pipeline: {request.pipeline}",
        f"Change: {change.project} {change.key} on {change.branch}"
        + (f" ({change.url})" if change.url else ""),
    ]
    for index, node in enumerate(nodes):
        info = node.info
        where = f" host {info.host}" if info.host else ""
        role = "Node" if index == 0 else f"Node {index}"
        lines.append(f"{role}: {info.name} (provider {info.provider}, label {info.label}{where})")
    lines.append(f"Changes: {state.changes_key() or '(none)'}")
    for project in state.projects.values():
        merged = " ".join(c.key for c in project.merged) or "none"
        lines.append(
            f"Head: {project.project} {project.branch} {project.head} "
            f"(base {project.base}, merged {merged})"
        )
    return "\n".join(lines)


class BuildRunner:
    """Runs one attempt of one job and says how it went; the node is always given back."""

    def __init__(
        self,
        providers: NodeSource,
        preparer: WorkspacePreparer,
        logs_root: Path,
        logs_url: str,
        work_root: Path,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        testenvs: TESource | None = None,
        max_artifact_bytes: int = artifacts.MAX_BYTES,
        limits: BuildLimits = LIMITS,
        secrets: SecretSource | None = None,
        shipping: LogShipping | None = None,
        signatures: SignatureLibrary | None = None,
    ) -> None:
        # `shipping`: the log store is elsewhere (driver http); `logs_root` is the local spool.
        self.shipping = shipping
        self.signatures = signatures  # known failures, matched once the log is closed
        self.providers = providers
        self.secrets = secrets
        self.preparer = preparer
        self.logs_root = logs_root
        self.logs_url = logs_url
        self.work_root = work_root
        self.heartbeat_interval = heartbeat_interval
        self.testenvs = testenvs
        self.max_artifact_bytes = max_artifact_bytes
        self.limits = limits
        self._holds: dict[str, tuple[float, str]] = {}  # build id -> (until, why)

    async def run(
        self, request: BuildRequest, heartbeat: Heartbeat | None = None, try_number: int = 1,
        first_asked: float | None = None,
    ) -> BuildResult:
        """`try_number` > 1: this attempt runs again after its executor died; it asks for fresh
        nodes (the first try's may be half used), and the pool reclaims the old ones. It keeps
        its place in the pool's queue: `first_asked` (epoch seconds, when the first try was
        scheduled) is handed to the pool as its arrival."""
        url = log_url(self.logs_url, request.log_path)
        log = LogWriter(self.logs_root, request.log_path).open()
        shipment: BuildShipment | None = (
            self.shipping.start(request.log_path) if self.shipping else None)
        # Like the log, artifacts start anew: an earlier try's must not be served as this one's.
        await asyncio.to_thread(shutil.rmtree, self._artifacts_dir(request), ignore_errors=True)
        progress = _Progress(f"{request.build_id}: waiting for a node")
        beat = (
            asyncio.create_task(_beat(heartbeat, progress, self.heartbeat_interval))
            if heartbeat
            else None
        )
        nodeset: Nodeset | None = None
        outcome: _Outcome | None = None
        started = time.time()
        built: BuildResult | None = None  # the result returned; known failures added at the end

        def result(outcome: _Outcome, node: NodeInfo | None) -> BuildResult:
            nonlocal built
            built = BuildResult(
                build_id=request.build_id,
                job=request.job.name,
                result=outcome.result,
                attempt=request.attempt,
                log_url=url,
                started=started,
                ended=time.time(),
                node=node,
                message=outcome.message,
                artifacts=outcome.artifacts,
            )
            return built

        try:
            job = request.job
            bound = self.limits.node_wait_for(job)
            try:
                async with asyncio.timeout(bound) as waiting:
                    nodeset = await self._acquire(request, try_number, first_asked)
            except NodeError as exc:
                log.line(f"NODE_FAILURE: {exc}")
                return result(_Outcome(Result.NODE_FAILURE, str(exc)), None)
            except TimeoutError:
                if not waiting.expired():
                    raise
                whose = ("the job's node-wait-timeout" if job.node_wait_timeout is not None
                         else "the executor's limit")
                why = f"no nodes within {bound:g} s ({whose})"
                log.line(f"NODE_FAILURE: {why}")
                return result(_Outcome(Result.NODE_FAILURE, why), None)
            nodes = nodeset.nodes
            waited = time.time() - started
            started = time.time()
            log.line(_header(request, nodes))
            if waited >= 1:
                log.line(f"Waited {waited:.1f} s for nodes")
            outcome = await self._execute(request, nodes[0], log, progress, url,
                                          try_number)
            log.line(
                f"RESULT: {outcome.result}" + (f": {outcome.message}" if outcome.message else "")
            )
            held = await self._autohold(request, nodeset, outcome, log)
            info = nodes[0].info
            if held is not None:
                info = info.model_copy(update={"held_until": held[0]})
            return result(outcome, info)
        except asyncio.CancelledError:
            log.line("ABORTED")
            raise
        except Exception as exc:
            log.line(f"ERROR: {type(exc).__name__}: {exc}")
            raise
        finally:
            progress.detail = f"{request.build_id}: cleaning up"
            try:
                if nodeset is not None:
                    await _shielded(_logged(_within(self._release(nodeset, log),
                                                    self.limits.cleanup),
                                            "giving the nodes back", log))
            finally:
                log.close()
                try:
                    # In the build's own activity: the whole log is here, not yet shipped
                    # (driver http then removes it; an activity elsewhere would fetch it back).
                    if built is not None and self.signatures is not None:
                        progress.detail = f"{request.build_id}: matching known failures"
                        await self.signatures.annotate(
                            built, log_dir(self.logs_root, request.log_path),
                            request.change.project)
                finally:
                    if shipment is not None:  # in the store before the result is reported
                        progress.detail = f"{request.build_id}: uploading the logs"
                        await _shielded(shipment.finish())
                if beat is not None:
                    beat.cancel()

    async def _acquire(self, request: BuildRequest, try_number: int,
                       first_asked: float | None) -> Nodeset:
        """Every node of the nodeset, or none."""
        if not request.job.nodeset:
            raise NodeError(f"job {request.job.name!r} has an empty nodeset")
        holder = node_holder(request.pipeline, request.change.key, request.job.name)
        if try_number <= 1:
            return await self.providers.acquire_nodeset(
                list(request.job.nodeset), request.build_id, precedence=request.precedence,
                position=request.position, holder=holder)
        # A new request id (the first try's nodes may be half used), its place in the queue kept.
        return await self.providers.acquire_nodeset(
            list(request.job.nodeset), f"{request.build_id}.{try_number}",
            precedence=request.precedence, position=request.position, holder=holder,
            arrived=first_asked)

    async def _autohold(
        self, request: BuildRequest, nodeset: Nodeset, outcome: _Outcome, log: LogWriter
    ) -> tuple[float, str] | None:
        """A failed build whose nodes an operator asked to keep: they are held, not deleted."""
        if outcome.result not in (Result.FAILURE, Result.TIMED_OUT):
            return None
        try:
            async with asyncio.timeout(self.limits.cleanup):
                held = await self.providers.autohold_until(
                    nodeset, request.change.project, request.job.name, request.change.number)
        except Exception as exc:  # never lose a result over the autohold lookup
            log.line(f"autohold lookup failed: {exc}")
            return None
        if held is not None:
            self._holds[request.build_id] = held
            log.line(f"Nodes held until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(held[0]))}"
                     f" for debugging ({held[1]})")
        return held

    async def _release(self, nodeset: Nodeset, log: LogWriter | None) -> None:
        hold = self._holds.pop(nodeset.request_id.split(".")[0], None)
        for node in nodeset.nodes:
            what = f"node {node.info.name}"
            if hold is None:
                await _logged(node.cleanup(), f"cleanup of {what}", log)
        await _logged(
            self.providers.release_nodeset(
                nodeset, hold_until=hold[0] if hold else None, hold_reason=hold[1] if hold else None
            ),
            "giving the nodes back", log,
        )

    async def _execute(
        self,
        request: BuildRequest,
        node: Node,
        log: LogWriter,
        progress: _Progress,
        url: str,
        try_number: int = 1,
    ) -> _Outcome:
        job = request.job
        loop = asyncio.get_running_loop()
        # The job's clock starts once its TE is had, unless the job counts the TE wait.
        deadline = loop.time() + job.timeout if job.timeout_includes_te_wait else None
        await asyncio.to_thread(self.work_root.mkdir, parents=True, exist_ok=True)
        local = Path(
            await asyncio.to_thread(
                tempfile.mkdtemp, prefix=f"{request.build_id}-", dir=self.work_root
            )
        )
        runner = _Commands(node, log, progress)
        workspace: str | None = None
        te: TELease | None = None
        try:
            if job.testenv is not None:
                progress.detail = f"{request.build_id}: waiting for a TE"
                leased = await self._wait_for_te(request, log, try_number, deadline)
                if isinstance(leased, _Outcome):
                    return leased
                te = leased
            if deadline is None:
                deadline = loop.time() + job.timeout
            try:
                async with asyncio.timeout_at(deadline):
                    progress.detail = f"{request.build_id}: preparing the workspace"
                    await self.preparer.prepare(request.state, local, job.required_projects)
                    await asyncio.to_thread(install_tools, local)
                    await asyncio.to_thread(_prepare_artifacts, local, request.artifacts)
                    if te is not None:
                        await asyncio.to_thread(te.write_datafile, local / TE_DATAFILE)
                    workspace = await node.upload_workspace(local)
                    runner.env = self._env(request, workspace, url, log)
                    if te is not None:
                        runner.env["TE_DATAFILE"] = f"{workspace.rstrip('/')}/{TE_DATAFILE}"
                    outcome = await self._main(request, runner, workspace, deadline)
            except TimeoutError:
                log.line(f"TIMED_OUT: the job exceeded its timeout of {job.timeout:g} s")
                outcome = _Outcome(Result.TIMED_OUT, f"timed out after {job.timeout:g} s")
            except TEError as exc:
                log.line(f"test environment lost: {exc}")
                return _Outcome(Result.RETRY, f"test environment: {exc}")
            except NodeError as exc:
                log.line(f"node lost: {exc}")
                return _Outcome(Result.RETRY, f"node lost: {exc}")
            except WorkspaceError as exc:
                log.line(f"workspace preparation failed: {exc}")
                return _Outcome(Result.ERROR, f"workspace preparation failed: {exc}")
            except SecretMissing as exc:
                log.line(f"secret: {exc}")
                return _Outcome(Result.ERROR, f"secret: {exc}")
            if workspace is not None:
                post_budget = self.limits.post_run_for(job)
                lost = await runner.post_run(job.post_run, workspace, loop.time() + post_budget)
                progress.detail = f"{request.build_id}: collecting artifacts"
                outcome = await self._collect(request, node, workspace, url, log, outcome, lost)
            return outcome
        finally:
            if te is not None:
                await _shielded(_logged(_within(self._release_te(te, log), self.limits.cleanup),
                                        "releasing the TE", log))
            await _shielded(asyncio.to_thread(shutil.rmtree, local, ignore_errors=True))

    def _artifacts_dir(self, request: BuildRequest) -> Path:
        return log_dir(self.logs_root, request.log_path) / artifacts.ARTIFACTS_DIR

    async def _collect(
        self, request: BuildRequest, node: Node, workspace: str, url: str, log: LogWriter,
        outcome: _Outcome, node_lost: bool,
    ) -> _Outcome:
        """Copy the artifacts directory beside the log and describe what is in it."""
        if node_lost:
            log.line("Artifacts not collected: the node was lost")
            return _unsure(outcome, Result.RETRY, "node lost before the artifacts were collected")
        remote = f"{workspace.rstrip('/')}/{artifacts.ARTIFACTS_DIR}"
        dest = self._artifacts_dir(request)
        skipped: list[tuple[str, str]] = []  # appended from the download's thread
        started = time.monotonic()
        try:
            await asyncio.to_thread(shutil.rmtree, dest, ignore_errors=True)
            async with asyncio.timeout(self.limits.artifacts):
                size = await node.download(
                    remote, dest, max_bytes=self.max_artifact_bytes,
                    skipped=lambda path, why: skipped.append((path, why)),
                )
            found, notes = await asyncio.to_thread(
                artifacts.describe, dest, f"{url}{artifacts.ARTIFACTS_DIR}/", request)
        except DownloadError as exc:
            log.line(f"Artifacts not collected: {exc}")
            return await self._uncollected(dest, outcome, Result.FAILURE, f"artifacts: {exc}")
        except TimeoutError:
            log.line(f"Artifacts not collected: the download took more than "
                     f"{self.limits.artifacts:g} s")
            return await self._uncollected(dest, outcome, Result.RETRY,
                                           "artifacts: the download timed out")
        except NodeError as exc:
            log.line(f"Artifacts not collected: node lost: {exc}")
            return await self._uncollected(dest, outcome, Result.RETRY,
                                           f"node lost while collecting the artifacts: {exc}")
        except OSError as exc:
            log.line(f"Artifacts not collected: cannot store them: {exc}")
            return await self._uncollected(dest, outcome, Result.ERROR,
                                           f"artifacts could not be stored: {exc}")
        except BaseException:
            await _shielded(asyncio.to_thread(shutil.rmtree, dest, ignore_errors=True))
            raise
        for path, why in skipped:
            log.line(f"Artifacts: {path} left out: {why}")
        for note in notes:
            log.line(note)
        for artifact in found:
            log.line(f"Artifacts: {artifact.name} -> {artifact.url}")
        if found:
            log.line(f"Artifacts: {size_text(size)} collected in "
                     f"{time.monotonic() - started:.1f} s")
        else:
            log.line("Artifacts: none")
        return dataclasses.replace(outcome, artifacts=found)

    async def _uncollected(
        self, dest: Path, outcome: _Outcome, result: Result, message: str
    ) -> _Outcome:
        await asyncio.to_thread(shutil.rmtree, dest, ignore_errors=True)  # nothing partial
        return _unsure(outcome, result, message)

    async def _wait_for_te(self, request: BuildRequest, log: LogWriter, try_number: int,
                           deadline: float | None) -> TELease | _Outcome:
        """The job's TE within its wait bound (and within the job's timeout when `deadline`, the
        timeout's end, counts the wait); otherwise the outcome that ends the build."""
        job = request.job
        bound = self.limits.te_wait_for(job)
        until = asyncio.get_running_loop().time() + bound
        by_timeout = deadline is not None and deadline <= until
        try:
            async with asyncio.timeout_at(deadline if by_timeout else until) as waiting:
                return await self._lease_te(request, log, try_number)
        except TEError as exc:
            log.line(f"test environment lost: {exc}")
            return _Outcome(Result.RETRY, f"test environment: {exc}")
        except TimeoutError:
            if not waiting.expired():
                raise
        if by_timeout:
            log.line(f"TIMED_OUT: no TE with label {job.testenv!r} within the job's timeout of "
                     f"{job.timeout:g} s")
            return _Outcome(Result.TIMED_OUT, f"timed out after {job.timeout:g} s")
        whose = ("the job's te-wait-timeout" if job.te_wait_timeout is not None
                 else "the executor's limit")
        why = f"no test environment with label {job.testenv!r} within {bound:g} s ({whose})"
        log.line(f"NODE_FAILURE: {why}")
        return _Outcome(Result.NODE_FAILURE, why)

    async def _lease_te(self, request: BuildRequest, log: LogWriter, try_number: int = 1
                        ) -> TELease:
        if self.testenvs is None:
            raise TEError("this executor cannot lease test environments (no TE broker)")
        job = request.job
        assert job.testenv is not None
        started = time.time()
        # A try after the executor died asks anew: the first try's lease has ended (expired,
        # its TE reset), and the broker never grants an ended lease id again.
        lease_id = request.build_id if try_number <= 1 else f"{request.build_id}.{try_number}"
        te = self.testenvs(job.testenv, lease_id,
                           te_holder(request.pipeline, request.change.project,
                                     request.change.key, job.name), request.precedence)
        status = await te.acquire()
        assert status.te is not None
        log.line(f"Test environment: {status.te.key} (generation {status.generation}), "
                 f"waited {time.time() - started:.1f} s")
        return te

    async def _release_te(self, te: TELease, log: LogWriter) -> None:
        answer = await te.release()
        if not answer.ok:
            log.line(f"releasing the TE: {answer.message}")

    async def _main(
        self, request: BuildRequest, runner: _Commands, workspace: str, deadline: float
    ) -> _Outcome:
        job = request.job
        for index, command in enumerate(job.pre_run, 1):
            status = await runner.run(f"pre-run {index}", command, workspace, deadline)
            if status != 0:
                return _Outcome(
                    Result.RETRY, f"pre-run command {index} failed with status {status}"
                )
        src = f"{workspace.rstrip('/')}/src/{request.change.project}"
        status = await runner.run("run", job.run, src, deadline)
        if status == 0:
            return _Outcome(Result.SUCCESS)
        return _Outcome(Result.FAILURE, f"run exited with status {status}")

    def _env(
        self, request: BuildRequest, workspace: str, url: str, log: LogWriter
    ) -> dict[str, str]:
        env: dict[str, str] = {}
        for name, value in request.job.vars.items():
            if _ENV_NAME.match(name) and not name.startswith("LOCKMASTER_"):
                env[name] = value
            else:
                log.line(f"job variable {name!r} ignored: not a usable environment variable name")
        for name, secret in request.job.secret_vars.items():
            if self.secrets is None:
                raise SecretMissing(f"the job names the secret {secret!r}, and this executor "
                                    "has no secrets configured")
            value = self.secrets(secret)
            log.redact(value)  # a job that prints it shows ******** in its log
            env[name] = value
        change = request.change
        env.update(
            LOCKMASTER_PROJECT=change.project,
            LOCKMASTER_BRANCH=change.branch,
            LOCKMASTER_CHANGE=str(change.number),
            LOCKMASTER_PATCHSET=str(change.patchset),
            LOCKMASTER_PIPELINE=request.pipeline,
            LOCKMASTER_JOB=request.job.name,
            LOCKMASTER_BUILD=request.build_id,
            LOCKMASTER_WORKSPACE=workspace,
            LOCKMASTER_LOG_URL=url,
            LOCKMASTER_ARTIFACTS=f"{workspace.rstrip('/')}/{artifacts.ARTIFACTS_DIR}",
            LOCKMASTER_ARTIFACTS_FILE=f"{workspace.rstrip('/')}/{artifacts.ARTIFACTS_IN}",
        )
        return env


def _prepare_artifacts(local: Path, received: list[Artifact]) -> None:
    (local / artifacts.ARTIFACTS_DIR).mkdir(exist_ok=True)
    artifacts.write_inputs(local / artifacts.ARTIFACTS_IN, received)


def _unsure(outcome: _Outcome, result: Result, message: str) -> _Outcome:
    """A success whose artifacts could not be had is not one; other results stay."""
    if outcome.result is not Result.SUCCESS:
        return outcome
    return _Outcome(result, message)


class _Commands:
    """Runs the job's commands on the node, logging each one and its exit status."""

    def __init__(self, node: Node, log: LogWriter, progress: _Progress) -> None:
        self.node = node
        self.log = log
        self.progress = progress
        self.env: dict[str, str] = {}

    async def run(self, phase: str, command: str, cwd: str, deadline: float) -> int:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError
        self.log.line(f"--- {phase}: {command}")
        self.progress.detail = f"{phase}: {command}"
        status = await self.node.run(command, cwd, self.env, self.log.write, remaining)
        self.log.line(f"--- {phase} exited with status {status}")
        return status

    async def post_run(self, commands: list[str], cwd: str, deadline: float) -> bool:
        """Returns whether the node was lost meanwhile."""
        for index, command in enumerate(commands, 1):
            phase = f"post-run {index}"
            try:
                async with asyncio.timeout_at(deadline):
                    await self.run(phase, command, cwd, deadline)
            except TimeoutError:
                self.log.line(f"--- {phase} timed out; remaining post-run commands skipped")
                return False
            except NodeError as exc:
                self.log.line(f"--- {phase}: node lost ({exc}); remaining post-run skipped")
                return True
        return False
