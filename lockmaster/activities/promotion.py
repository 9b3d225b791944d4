"""Finding the gate's build of a merged change (Zuul's promote): `find_gate_build`, on the
orchestrator, where the gate queues run and the merger's repositories hold the speculative
merge commits the gate tested.

The gate records, for each change it submits, the builds that made artifacts and the project
state they tested (`tested` query of `<pipeline>/<queue>`). The merged commit is what the review
system made; the tested commit is the gate's speculative merge. When their trees are the same
(`git rev-parse <commit>^{tree}`), the gate's packages were built from exactly the merged source
and were tested: they are promoted. Otherwise (trees differ, no record, no such build, its
artifacts gone) the answer says why and the publication rebuilds from the merged commit.

Idempotent: it only reads (a tested commit missing here is merged again into the cache, which
makes the same commit every time).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping

import httpx
from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.git.cache import RefNotFound, RepoCache, RevisionNotFound
from lockmaster.git.merger import CommitMismatch, change_commit
from lockmaster.git.recipe import MergeConflict, apply_merges
from lockmaster.git.runner import run_git
from lockmaster.model.gate import GateTested, GateTestedAnswer, GateTestedBuild, GateTestedQuery
from lockmaster.model.publish import (
    BuildSource,
    FindGateBuildRequest,
    GateBuildChoice,
    Provenance,
)
from lockmaster.packaging.steps import PACKAGES_ARTIFACT

MANIFEST_TIMEOUT = 30.0


class _NotPromotable(Exception):
    """The gate's build cannot be promoted; the message says why (for the provenance)."""


class PromotionActivities:
    def __init__(self, client: Client, cache: RepoCache,
                 project_connections: Mapping[str, str]) -> None:
        self.client = client
        self.cache = cache
        self.connections = dict(project_connections)

    @activity.defn(name="find_gate_build")
    async def find_gate_build(self, request: FindGateBuildRequest) -> GateBuildChoice:
        change = request.change
        if change.commit is None:
            raise ApplicationError("the change names no merged commit", non_retryable=True)
        rebuild = Provenance(source=BuildSource.REBUILD, reason="", job=request.job,
                             merged_commit=change.commit)
        record = await self._record(request)
        if record is None:
            why = (f"no gate build found: {' or '.join(request.gate_ids) or 'no gate'} "
                   f"submitted no tested build of {change.project} change {change.number}")
            return GateBuildChoice(promote=False, provenance=rebuild.model_copy(
                update={"reason": why}))
        merged_tree = await self._tree(change.project, change.commit)
        rebuild = rebuild.model_copy(update={"merged_tree": merged_tree})
        try:
            build, url = _packages_build(record, request.job)
            tested = record.state.head
            tested_tree = await self._tested_tree(record)
            gate = Provenance(
                source=BuildSource.GATE, reason=f"trees equal: {merged_tree}", job=build.job,
                build_id=build.build_id,
                buildset=f"{record.gate_id} item {record.item_id} buildset {record.buildset} "
                         f"({record.changes})",
                log_url=build.log_url, packages_url=url, tested_commit=tested,
                tested_tree=tested_tree, merged_commit=change.commit, merged_tree=merged_tree)
            if tested_tree != merged_tree:
                raise _NotPromotable(
                    f"trees differ: the gate's {build.job} build {build.build_id} tested "
                    f"{tested} (tree {tested_tree}) vs merged {change.commit} (tree "
                    f"{merged_tree})")
            manifest_sha = await asyncio.to_thread(_check_manifest, url, tested)
        except _NotPromotable as exc:
            return GateBuildChoice(promote=False, provenance=rebuild.model_copy(
                update={"reason": str(exc)}))
        return GateBuildChoice(promote=True, provenance=gate.model_copy(
            update={"manifest_sha256": manifest_sha}))

    async def _record(self, request: FindGateBuildRequest) -> GateTested | None:
        """The most recent record of the change among the queues that may have gated it."""
        change = request.change
        found: list[GateTested] = []
        for gate_id in request.gate_ids:
            try:
                answer = await self.client.get_workflow_handle(gate_id).query(
                    "tested", GateTestedQuery(project=change.project, number=change.number),
                    result_type=GateTestedAnswer)
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    continue  # that queue never ran: it gated nothing
                raise  # the queue is there but did not answer: retried
            except WorkflowQueryFailedError:
                continue  # a queue running code from before the record existed
            if answer.tested is not None and answer.tested.change.branch == change.branch:
                found.append(answer.tested)
        return max(found, key=lambda r: r.recorded_at, default=None)

    def _connection(self, project: str) -> str:
        connection = self.connections.get(project)
        if connection is None:
            raise ApplicationError(f"project {project} is not configured", non_retryable=True)
        return connection

    async def _tree(self, project: str, commit: str) -> str:
        """The merged commit's tree, from the review system (fetched if this cache lacks it)."""
        connection = self._connection(project)
        if not await self.cache.has_commit(connection, project, commit):
            await self.cache.fetch(connection, project)
        tree = await _tree_of(self.cache, connection, project, commit)
        if tree is None:  # the review system does not have it (yet): retried
            raise ApplicationError(f"the merged commit {commit} is not in {project}")
        return tree

    async def _tested_tree(self, record: GateTested) -> str:
        """The tested commit's tree: from the cache, where the merger made it, or merged again
        as the merger did (the same commit, which proves it) when this cache lacks it."""
        state = record.state
        connection, project = state.connection, state.project
        if await self.cache.has_commit(connection, project, state.head):
            tree = await _tree_of(self.cache, connection, project, state.head)
            assert tree is not None
            return tree
        try:
            await self.cache.fetch(connection, project, [c.ref for c in state.merged])
            merges = [(c, await change_commit(self.cache, c)) for c in state.merged]
            head = await apply_merges(self.cache.path(connection, project), state.base, merges,
                                      record.merge_date,
                                      scratch=lambda: self.cache.scratch(connection, project))
        except (RefNotFound, RevisionNotFound, CommitMismatch, MergeConflict) as exc:
            raise _NotPromotable(f"no gate build found: the tested commit {state.head} is not "
                                 f"here and cannot be made again ({exc})") from None
        if head != state.head:
            raise _NotPromotable(f"no gate build found: merging {record.changes} again gave "
                                 f"{head}, not the tested {state.head}")
        await self.cache.keep_state(connection, project, head)
        tree = await _tree_of(self.cache, connection, project, head)
        assert tree is not None
        return tree


def _packages_build(record: GateTested, job: str) -> tuple[GateTestedBuild, str]:
    """The gate's successful build of `job` and its packages artifact's URL."""
    for build in record.builds:
        if build.job != job:
            continue
        for artifact in build.artifacts:
            if artifact.name == PACKAGES_ARTIFACT:
                return build, artifact.url
    raise _NotPromotable(f"no gate build found: the gate tested {record.change.key} "
                         f"({record.gate_id}) without a successful {job} build making a "
                         f"{PACKAGES_ARTIFACT!r} artifact")


async def _tree_of(cache: RepoCache, connection: str, project: str, commit: str) -> str | None:
    result = await run_git("rev-parse", "--verify", "--quiet", f"{commit}^{{tree}}",
                           cwd=cache.path(connection, project))
    return result.stdout.strip() if result.returncode == 0 else None


def _check_manifest(url: str, tested: str) -> str:
    """The sha256 of the gate build's manifest.json, which must name the tested commit as its
    source (the build's packages come from what the gate tested). Runs in a thread."""
    base = url if url.endswith("/") else url + "/"
    try:
        response = httpx.get(base + "manifest.json", timeout=MANIFEST_TIMEOUT)
    except httpx.HTTPError as exc:  # the log server is down: retried, then a rebuild
        raise ApplicationError(f"cannot fetch {base}manifest.json: {exc}") from exc
    if response.status_code in (404, 410):
        raise _NotPromotable(f"no gate build found: its artifacts are gone ({base}manifest.json: "
                             f"HTTP {response.status_code})")
    if response.status_code != 200:
        raise ApplicationError(f"cannot fetch {base}manifest.json: HTTP {response.status_code}")
    try:
        manifest = json.loads(response.content)
    except ValueError as exc:
        raise _NotPromotable(f"the gate build's manifest {base}manifest.json is not JSON "
                             f"({exc})") from None
    source = str(manifest.get("source_commit") or "") if isinstance(manifest, dict) else ""
    if source.lower() != tested:
        raise _NotPromotable(f"the gate build's manifest names source commit {source or None}, "
                             f"not the tested commit {tested}")
    if manifest.get("source_dirty"):
        raise _NotPromotable("the gate build was built from a tree with uncommitted changes "
                             "(source_dirty)")
    return hashlib.sha256(response.content).hexdigest()
