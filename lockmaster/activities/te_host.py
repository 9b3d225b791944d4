"""TE host activities (task queue `<prefix>-te-host/<host>`): run by the worker on the TE host.

authorize/revoke edit the restricted account's access (files); reset and prepare drive libvirt
(blocking calls, run in threads). All are idempotent.

Results: a failure that retrying cannot fix (a domain or network missing, libvirt refusing, a
stale generation, a malformed key) comes back as `ok=False` with the error, so the broker can
quarantine the TE or refuse the lease. A failure that may pass (libvirt unreachable, a file that
cannot be written, the worker dying) raises, and Temporal retries the activity.

The worker also serves the agent that carries out holders' commands (`self.agent`, an async
context manager); it shares the per-TE locks with `reset`.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from lockmaster.model.testenv import TEAuthorize, TEHostResult, TEReset, TERevoke, TESpec
from lockmaster.temporal.heartbeat import heartbeating
from lockmaster.testenv.access import AccessError, TEAccess
from lockmaster.testenv.agent import ShellAgent, TELocks
from lockmaster.testenv.libvirt_host import LibvirtHost, TEHostError, TEHostUnavailable

HEARTBEAT_EVERY = 2.0  # seconds; the broker's heartbeat timeout must be comfortably longer


class TEHostActivities:
    def __init__(
        self,
        libvirt: LibvirtHost,
        access: TEAccess,
        *,
        socket_group: str | None = None,
        heartbeat_every: float = HEARTBEAT_EVERY,
    ) -> None:
        self.libvirt = libvirt
        self.access = access
        self.heartbeat_every = heartbeat_every
        self.locks = TELocks()
        self.agent = ShellAgent(libvirt, access, self.locks, socket_group=socket_group)

    @activity.defn(name="te_authorize")
    async def authorize(self, request: TEAuthorize) -> TEHostResult:
        """Accept the holder's public key for this lease generation (replacing any other)."""
        try:
            await asyncio.to_thread(
                self.access.authorize, request.te, request.generation, request.public_key
            )
        except AccessError as exc:
            return TEHostResult(ok=False, error=str(exc))
        return TEHostResult(ok=True, detail=f"{request.te.key}: generation {request.generation}")

    @activity.defn(name="te_revoke")
    async def revoke(self, request: TERevoke) -> TEHostResult:
        try:
            removed = await asyncio.to_thread(self.access.revoke, request.te, request.generation)
        except AccessError as exc:  # e.g. a TE name unfit for a file name: config must change
            return TEHostResult(ok=False, error=str(exc))
        detail = "key removed" if removed else "no key of that generation or older"
        return TEHostResult(ok=True, detail=f"{request.te.key}: {detail}")

    @activity.defn(name="te_reset")
    async def reset(self, request: TEReset) -> TEHostResult:
        """Revoke, then destroy the domains (never undefine), restore disks, check bridges."""
        spec = request.te
        async with heartbeating(f"{spec.key}: revoking generation {request.generation}",
                                every=self.heartbeat_every) as step:
            try:
                await asyncio.to_thread(self.access.revoke, spec, request.generation)
            except AccessError as exc:
                return TEHostResult(ok=False, error=str(exc), detail=step.detail)
            step(f"{spec.key}: waiting for holder commands to finish")
            async with self.locks(spec.name):  # no holder command runs past this point
                try:
                    step(f"{spec.key}: destroying domains")
                    destroyed = await asyncio.to_thread(self.libvirt.destroy_domains, spec)
                    step(f"{spec.key}: restoring disks")
                    restored = await asyncio.to_thread(self.libvirt.restore_disks, spec)
                    step(f"{spec.key}: checking bridges")
                    started = await asyncio.to_thread(self.libvirt.check_bridges, spec)
                except TEHostUnavailable:
                    raise  # libvirt may come back: let Temporal retry
                except TEHostError as exc:
                    return TEHostResult(ok=False, error=str(exc), detail=step.detail)
        return TEHostResult(
            ok=True,
            detail=(
                f"{spec.key}: destroyed {', '.join(destroyed) or 'none (all shut off)'}; "
                f"restored {len(restored)} disk(s); "
                f"networks started: {', '.join(started) or 'none needed'}"
            ),
        )

    @activity.defn(name="te_prepare")
    async def prepare(self, spec: TESpec) -> TEHostResult:
        """Create what is missing (test driver) or check it exists (production), and that the
        TE's networks are up."""
        try:
            created = await asyncio.to_thread(self.libvirt.ensure_te, spec)
            started = await asyncio.to_thread(self.libvirt.check_bridges, spec)
        except TEHostUnavailable:
            raise
        except TEHostError as exc:
            return TEHostResult(ok=False, error=str(exc))
        return TEHostResult(
            ok=True,
            detail=(
                f"{spec.key}: created {', '.join(created) or 'nothing'}; "
                f"networks started: {', '.join(started) or 'none needed'}"
            ),
        )

    def activities(self) -> list[object]:
        """The activity callables, for `Worker(activities=...)`."""
        return [self.authorize, self.revoke, self.reset, self.prepare]
