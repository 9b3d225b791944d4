"""Starting the TE brokers (`te/<label>`), and their two kinds of clients: holders (a job, a
person) who lease a TE, and operators who watch and steer. Every call is an update or query on
the broker workflow, so the `temporal` CLI can do the same, e.g.

    temporal workflow query --workflow-id te/default --name status --input '{}'
    temporal workflow update execute --workflow-id te/default --name drain \\
        --input '{"host": "tehost1"}'
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import asyncssh
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from lockmaster.config.models import LockmasterConfig
from lockmaster.leases.description import description
from lockmaster.leases.errors import TEError
from lockmaster.leases.specs import broker_id, te_specs
from lockmaster.model.testenv import (
    BrokerInput,
    BrokerStatus,
    BrokerStatusQuery,
    HostRef,
    LeaseRef,
    LeaseRequest,
    LeaseState,
    LeaseStatus,
    LeaseStatuses,
    OperatorAnswer,
    RenewLease,
    TEConfig,
    TEKey,
)
from lockmaster.temporal.busy import when_not_busy
from lockmaster.temporal.status_watch import StatusWatch, batched_query, shared_watch
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workflows.testenv import TEBrokerWorkflow

# Waiting holders of one process share one `lease_statuses` query per broker per round
# (lockmaster/temporal/status_watch.py): a request is first looked at WATCH_JOIN after it is
# sent, then each round makes the wait 1.5 times longer, up to WATCH_MAX while no answer
# changes and at most WATCH_FIRST after one did. The few holders next in line are looked at at
# least every POLL_NEAR seconds, so a freed TE reaches its next holder quickly. Refused queries
# (a busy broker) are asked again quietly.
WATCH_JOIN = 0.02
WATCH_FIRST = 0.2
WATCH_MAX = 5.0
POLL_NEAR = 0.1
NEAR_POSITIONS = 3
RESUBMIT_AFTER = 5.0  # a request the broker has not taken in by then is sent again


async def ensure_brokers(client: Client, config: LockmasterConfig, *,
                         max_history_events: int | None = None,
                         reset_heartbeat_timeout: float = 30.0,
                         reset_retry_max: float = 300.0) -> list[str]:
    """Start each label's broker if it is not running, and send it the configured TEs."""
    ids = []
    for label, tes in broker_configs(config).items():
        handle = await start_broker(client, config, label, tes,
                                    max_history_events=max_history_events,
                                    reset_heartbeat_timeout=reset_heartbeat_timeout,
                                    reset_retry_max=reset_retry_max)
        await handle.signal("reconfigure", tes)
        ids.append(handle.id)
    return ids


def broker_configs(config: LockmasterConfig) -> dict[str, TEConfig]:
    """Every configured broker's `reconfigure` signal, by label: what a worker's start sends,
    and `lockmaster config apply` (starters/reconfigure.py)."""
    return {label: TEConfig(tes=specs) for label, specs in te_specs(config).items()}


async def start_broker(client: Client, config: LockmasterConfig, label: str, tes: TEConfig, *,
                       max_history_events: int | None = None,
                       reset_heartbeat_timeout: float = 30.0,
                       reset_retry_max: float = 300.0) -> WorkflowHandle:
    """Start the label's broker, or find it running."""
    return await client.start_workflow(
        TEBrokerWorkflow.run,
        BrokerInput(label=label, tes=tes.tes,
                    task_queue_prefix=config.temporal.task_queue_prefix,
                    max_history_events=max_history_events,
                    reset_heartbeat_timeout=reset_heartbeat_timeout,
                    reset_retry_max=reset_retry_max),
        id=config.temporal.workflow_id_prefix + broker_id(label),
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"TE broker for label {label} ({len(tes.tes)} TEs)",
    )


def _lease_watch(client: Client, handle: WorkflowHandle) -> StatusWatch[LeaseStatus]:
    """The one watch of this process on this broker, shared by all its waiting holders."""
    return shared_watch(("lease_statuses", client, handle.id), lambda: StatusWatch(
        f"TE broker {handle.id}",
        batched_query(handle, "lease_statuses", "lease_status", lambda i: LeaseRef(id=i),
                      LeaseStatus, LeaseStatuses),
        fingerprint=_progress, first=WATCH_FIRST, max_interval=WATCH_MAX,
        join_delay=WATCH_JOIN, give_up=None))


def _progress(status: LeaseStatus) -> object:
    """What a waiting holder watches change (a renewal moving `expires` is not news)."""
    return (status.state, status.position, status.generation, status.reason,
            status.te.key if status.te else None)


def _broker(client: Client, config: LockmasterConfig, label: str) -> WorkflowHandle:
    labels = sorted(te_specs(config))
    if label not in labels:
        raise TEError(f"no TE host has label {label!r} (labels: {', '.join(labels) or 'none'})")
    return client.get_workflow_handle(config.temporal.workflow_id_prefix + broker_id(label))


# --- holders ------------------------------------------------------------------------------


class TEHolder:
    """Leases one TE: makes its own key pair (only the public half goes to the broker), waits
    its turn, keeps the lease alive, releases it."""

    def __init__(self, client: Client, config: LockmasterConfig, label: str, lease_id: str,
                 holder: str, *, ttl: float | None = None, precedence: int = 1) -> None:
        self.client = client
        self.handle = _broker(client, config, label)
        self.lease_id = lease_id
        self.holder = holder
        self.ttl = ttl or config.testenvs.lease_ttl
        self.precedence = precedence
        self.status: LeaseStatus | None = None
        self.private_key = ""
        self._request: LeaseRequest | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, timeout: float | None = None) -> LeaseStatus:
        """Wait for a TE (renewing the request meanwhile). Raises TEError when the request ends
        or TimeoutError past `timeout`."""
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"lockmaster-{self.lease_id}")
        self.private_key = key.export_private_key().decode()
        request = LeaseRequest(id=self.lease_id, holder=self.holder, ttl=self.ttl,
                               precedence=self.precedence,
                               public_key=key.export_public_key().decode().strip())
        self._request = request
        self._start_renewing()
        try:
            async with asyncio.timeout(timeout):
                await self._signal("request_lease", request)
                asked = time.monotonic()
                status = LeaseStatus(id=self.lease_id, state=LeaseState.UNKNOWN)
                with _lease_watch(self.client, self.handle).watch(self.lease_id) as waiter:
                    while status.state in (LeaseState.WAITING, LeaseState.UNKNOWN):
                        try:
                            status = await waiter.next()
                        except RPCError as exc:
                            raise TEError(f"the TE broker {self.handle.id} is not reachable: "
                                          f"{exc}") from exc
                        near = status.position is not None and status.position < NEAR_POSITIONS
                        waiter.hurry(POLL_NEAR if near else None)
                        if status.state is LeaseState.UNKNOWN and \
                                time.monotonic() - asked > RESUBMIT_AFTER:
                            await self._signal("request_lease", request)  # same id: idempotent
                            asked = time.monotonic()
                            waiter.again()
        except BaseException:
            await asyncio.shield(self.release())
            raise
        if status.state is not LeaseState.GRANTED:
            await self.release()
            raise TEError(status.reason or f"lease {self.lease_id} ended")
        self.status = status
        return status

    async def renew(self) -> LeaseStatus:
        generation = self.status.generation if self.status else 0
        status = await self._update("renew", RenewLease(id=self.lease_id,
                                                        generation=generation), LeaseStatus)
        if status.state is LeaseState.ENDED:
            raise TEError(status.reason or f"lease {self.lease_id} ended")
        return status

    async def release(self) -> OperatorAnswer:
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        generation = self.status.generation if self.status else 0
        return await self._update("release", LeaseRef(id=self.lease_id, generation=generation),
                                  OperatorAnswer)

    def description(self, key_file: Path | None) -> dict[str, Any]:
        assert self.status is not None
        return description(self.status, self.private_key, key_file)

    def write_datafile(self, path: Path, key_file: Path | None = None, *,
                       exclusive: bool = False) -> Path:
        """The TE's description for the job ($TE_DATAFILE), and the private key alone in
        `key_file` (default: beside it, `<name>.key`); both hold the key: mode 0600.
        `exclusive`: refuse (FileExistsError) to replace an existing file."""
        key_file = key_file or path.with_name(path.name + ".key")
        _write_private(key_file, self.private_key, exclusive)
        _write_private(path, json.dumps(self.description(key_file), indent=2) + "\n",
                       exclusive)
        return path

    def _start_renewing(self) -> None:
        async def renew_forever() -> None:
            while True:
                await asyncio.sleep(self.ttl / 3)
                try:
                    # Bounded: an unreachable server must not hold this task forever.
                    async with asyncio.timeout(self.ttl / 3):
                        if self.status is None:
                            # Waiting: asking again (same id) keeps the request alive; a
                            # signal, so hundreds of waiting holders never crowd the broker's
                            # few update slots.
                            if self._request is not None:
                                await self._signal("request_lease", self._request)
                        else:
                            await self.renew()
                except TEError:
                    return  # the lease ended: nothing left to keep alive
                except Exception:  # the next round tries again
                    continue

        self._renewer = asyncio.create_task(renew_forever())

    async def _signal(self, name: str, arg: Any) -> None:
        try:
            await when_not_busy(lambda: self.handle.signal(name, arg))
        except RPCError as exc:
            raise TEError(f"the TE broker {self.handle.id} is not reachable: {exc}") from exc

    async def _update(self, name: str, arg: Any, result_type: type) -> Any:
        # Temporal admits a few updates in flight per workflow; beyond that the broker is busy,
        # not gone; an update that arrived while the broker continued as new is refused as
        # "not ready". Either way it is asked again (idempotent by lease id).
        try:
            return await when_not_busy(
                lambda: self.handle.execute_update(name, arg, result_type=result_type))
        except RPCError as exc:
            raise TEError(f"the TE broker {self.handle.id} is not reachable: {exc}") from exc


def _write_private(path: Path, text: str, exclusive: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_TRUNC
        f.write(text)


# --- operators ----------------------------------------------------------------------------


class TEBrokers:
    def __init__(self, client: Client, config: LockmasterConfig) -> None:
        self.client = client
        self.config = config
        self.specs = te_specs(config)

    def _host_label(self, host: str) -> str:
        for label, specs in self.specs.items():
            if any(s.host == host for s in specs):
                return label
        hosts = sorted({s.host for specs in self.specs.values() for s in specs})
        raise TEError(f"no TE host {host!r} (hosts: {', '.join(hosts) or 'none'})")

    def _te_label(self, te: str) -> str:
        for label, specs in self.specs.items():
            if any(s.key == te for s in specs):
                return label
        raise TEError(f"no TE {te!r}: name it HOST/NAME as `lockmaster te list` shows")

    async def status(self) -> list[BrokerStatus]:
        result = []
        for label in self.specs:
            try:
                result.append(await _broker(self.client, self.config, label).query(
                    "status", BrokerStatusQuery(), result_type=BrokerStatus))
            except RPCError as exc:
                raise TEError(f"the TE broker for {label!r} is not running ({exc}); start the "
                              "workers (lockmaster run / lockmaster worker orchestrator)") from exc
        return result

    async def _call(self, label: str, name: str, arg: Any) -> OperatorAnswer:
        return await _broker(self.client, self.config, label).execute_update(
            name, arg, result_type=OperatorAnswer)

    async def drain(self, host: str, by: str | None = None,
                    reason: str | None = None) -> OperatorAnswer:
        return await self._call(self._host_label(host), "drain",
                                HostRef(host=host, by=by, reason=reason))

    async def undrain(self, host: str, by: str | None = None,
                      reason: str | None = None) -> OperatorAnswer:
        return await self._call(self._host_label(host), "undrain",
                                HostRef(host=host, by=by, reason=reason))

    async def force_release(self, te: str, by: str | None = None,
                            reason: str | None = None) -> OperatorAnswer:
        return await self._call(self._te_label(te), "force_release",
                                TEKey(te=te, by=by, reason=reason))

    async def unquarantine(self, te: str, by: str | None = None,
                           reason: str | None = None) -> OperatorAnswer:
        return await self._call(self._te_label(te), "unquarantine",
                                TEKey(te=te, by=by, reason=reason))

    async def release(self, label: str, lease_id: str, generation: int) -> OperatorAnswer:
        return await self._call(label, "release", LeaseRef(id=lease_id, generation=generation))

    async def lease_status(self, label: str, lease_id: str) -> LeaseStatus:
        try:
            return await _broker(self.client, self.config, label).query(
                "lease_status", LeaseRef(id=lease_id), result_type=LeaseStatus)
        except RPCError as exc:
            raise TEError(f"the TE broker for {label!r} is not reachable: {exc}") from exc

    async def renew(self, label: str, lease_id: str, generation: int) -> LeaseStatus:
        return await _broker(self.client, self.config, label).execute_update(
            "renew", RenewLease(id=lease_id, generation=generation), result_type=LeaseStatus)

