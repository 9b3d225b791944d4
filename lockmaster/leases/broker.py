"""The test-environment broker's decisions, as pure functions of its state and the time.

The broker workflow (`te/<label>`) feeds every event in and carries out what comes back:
authorizing a holder's key on a TE host, resetting a TE. Rules (what the gearman broker got
wrong, made impossible here):
- a TE is handed to one lease at a time: it becomes available again only after the previous
  lease ended *and* the TE was reset;
- every grant bumps the TE's generation (the fencing token); renewals and releases that carry
  another generation are refused;
- a lease that is not renewed within its time-to-live ends, whatever its holder does; a waiting
  request that is not renewed is dropped (its requester is gone);
- waiting requests are served by precedence (gate before check), first come first served
  within one;
- a TE whose reset fails is quarantined: shown to operators, never handed out.
"""

from __future__ import annotations

from dataclasses import dataclass

from lockmaster.model.audit import OperatorNote
from lockmaster.model.testenv import (
    BrokerState,
    Lease,
    LeaseRequest,
    LeaseState,
    LeaseStatus,
    TERecord,
    TESpec,
    TEState,
)

KEEP_ENDED = 2000  # ended lease ids remembered (so a late holder learns why)


@dataclass(frozen=True)
class Authorize:
    te: str
    lease_id: str
    generation: int


@dataclass(frozen=True)
class Reset:
    te: str
    generation: int


Action = Authorize | Reset


def lease_order(lease: Lease) -> tuple[int, float, str]:
    return (lease.precedence, lease.arrived, lease.id)


class Broker:
    def __init__(self, state: BrokerState) -> None:
        self.state = state

    # --- configuration ---------------------------------------------------------------------

    def sync(self, specs: list[TESpec]) -> list[Action]:
        """TEs added to the configuration are reset before first use; removed ones go when no
        lease holds them; changed ones take the new description."""
        actions: list[Action] = []
        wanted = {spec.key: spec for spec in specs}
        for key in list(self.state.tes):
            record = self.state.tes[key]
            if key not in wanted and record.lease_id is None:
                del self.state.tes[key]
        for key, spec in wanted.items():
            record = self.state.tes.get(key)
            if record is None:
                self.state.tes[key] = TERecord(spec=spec, state=TEState.RESETTING)
                actions.append(Reset(key, 0))
            else:
                record.spec = spec
        return actions

    # --- holders -----------------------------------------------------------------------------

    def request(self, request: LeaseRequest, now: float) -> Lease | None:
        """Queue a request (idempotent by id). None: it ended already (ask with a new id)."""
        known = self.state.leases.get(request.id)
        if known is not None:
            known.expires = max(known.expires, now + known.ttl)
            return known
        if request.id in self.state.ended:
            return None
        lease = Lease(id=request.id, holder=request.holder, public_key=request.public_key,
                      ttl=request.ttl, precedence=request.precedence, arrived=now,
                      expires=now + request.ttl)
        self.state.leases[lease.id] = lease
        return lease

    def renew(self, lease_id: str, generation: int, ttl: float | None, now: float) -> str | None:
        """Extend a lease; returns why it was refused, or None."""
        lease = self.state.leases.get(lease_id)
        if lease is None:
            return self._ended_why(lease_id)
        if lease.te is not None and generation != lease.generation:
            return (f"stale generation {generation}: lease {lease_id} holds generation "
                    f"{lease.generation} of {lease.te}")
        if ttl is not None:
            lease.ttl = ttl
        lease.expires = now + lease.ttl
        return None

    def release(
        self, lease_id: str, generation: int, now: float
    ) -> tuple[str | None, list[Action]]:
        lease = self.state.leases.get(lease_id)
        if lease is None:
            why = self._ended_why(lease_id)
            # Releasing what already ended is what a holder does after an expiry: not an error
            # for the holder's cleanup, but say so.
            return why, []
        if lease.te is not None and generation != lease.generation:
            return (f"stale generation {generation}: lease {lease_id} holds generation "
                    f"{lease.generation} of {lease.te}"), []
        return None, self._end(lease, "released", now)

    def status(self, lease_id: str, now: float) -> LeaseStatus:
        lease = self.state.leases.get(lease_id)
        if lease is None:
            state = LeaseState.ENDED if lease_id in self.state.ended else LeaseState.UNKNOWN
            return LeaseStatus(id=lease_id, state=state, reason=self._ended_why(lease_id))
        if lease.state is LeaseState.GRANTED and lease.te is not None:
            return LeaseStatus(
                id=lease.id, state=LeaseState.GRANTED, te=self.state.tes[lease.te].spec,
                generation=lease.generation, expires=lease.expires,
                waited=(lease.granted_at or now) - lease.arrived)
        waiting = sorted((w for w in self.state.leases.values()
                          if w.state is LeaseState.WAITING), key=lease_order)
        position = next((i for i, w in enumerate(waiting) if w.id == lease.id), None)
        return LeaseStatus(id=lease.id, state=LeaseState.WAITING, expires=lease.expires,
                           position=position)

    def statuses(self, lease_ids: list[str], now: float) -> list[LeaseStatus]:
        """`status` of each of `lease_ids`, in order (the queue is sorted once for all)."""
        waiting = sorted((w for w in self.state.leases.values()
                          if w.state is LeaseState.WAITING), key=lease_order)
        positions = {w.id: i for i, w in enumerate(waiting)}
        found = []
        for lease_id in lease_ids:
            lease = self.state.leases.get(lease_id)
            if lease is not None and lease.state is LeaseState.WAITING:
                found.append(LeaseStatus(id=lease.id, state=LeaseState.WAITING,
                                         expires=lease.expires, position=positions[lease.id]))
            else:
                found.append(self.status(lease_id, now))
        return found

    # --- TE hosts ------------------------------------------------------------------------------

    def authorized(self, te: str, generation: int, ok: bool, error: str | None, now: float
                   ) -> list[Action]:
        record = self.state.tes.get(te)
        if record is None or record.generation != generation or record.lease_id is None:
            return []  # the lease ended meanwhile (its end already reset the TE)
        lease = self.state.leases.get(record.lease_id)
        if lease is None:
            return []
        if ok:
            lease.state, lease.granted_at = LeaseState.GRANTED, now
            # The time-to-live runs from when the holder can use the TE.
            lease.expires = now + lease.ttl
            return []
        # The host would not take the key: give the request its place back, reset the TE.
        lease.te, lease.generation = None, 0
        record.lease_id = None
        record.state = TEState.RESETTING
        record.reason = f"authorizing a holder failed: {error}"
        return [Reset(te, record.generation)]

    def reset_done(self, te: str, generation: int, ok: bool, error: str | None) -> None:
        record = self.state.tes.get(te)
        if record is None or record.state is not TEState.RESETTING:
            return
        if record.generation != generation:
            return
        if not ok:
            record.state, record.reason = TEState.QUARANTINED, f"reset failed: {error}"
            return
        record.reason = None
        record.state = TEState.DRAINING if record.spec.host in self.state.draining \
            else TEState.AVAILABLE

    # --- operators -----------------------------------------------------------------------------

    def drain(self, host: str, note: OperatorNote | None = None) -> str:
        """Take the host out of service; `note`: who drained it and why (kept until undrained)."""
        if host not in self.state.draining:
            self.state.draining.append(host)
        if note is not None:
            self.state.drained_by[host] = note
        count = 0
        for record in self.state.tes.values():
            if record.spec.host == host and record.state is TEState.AVAILABLE:
                record.state = TEState.DRAINING
                count += 1
        busy = sum(r.spec.host == host and r.state in (TEState.LEASED, TEState.RESETTING)
                   for r in self.state.tes.values())
        return f"host {host} draining: {count} TE(s) taken out now, {busy} when their lease ends"

    def undrain(self, host: str) -> str:
        if host in self.state.draining:
            self.state.draining.remove(host)
        self.state.drained_by.pop(host, None)
        count = 0
        for record in self.state.tes.values():
            if record.spec.host == host and record.state is TEState.DRAINING:
                record.state = TEState.AVAILABLE
                count += 1
        return f"host {host} back in service: {count} TE(s) available"

    def force_release(self, te: str, now: float, note: OperatorNote | None = None
                      ) -> tuple[str | None, list[Action]]:
        """End the TE's lease now; `note`: who did and why (the TE and the ended lease say so)."""
        record = self.state.tes.get(te)
        if record is None:
            return f"no TE {te!r}", []
        lease = self.state.leases.get(record.lease_id or "")
        if lease is None:
            return f"TE {te} is {record.state.value}, not leased", []
        if note is None:
            return None, self._end(lease, "force-released by an operator", now)
        record.operator, record.operator_action = note, "force-released"
        return None, self._end(lease, note.describe("force-released"), now)

    def unquarantine(self, te: str, note: OperatorNote | None = None
                     ) -> tuple[str | None, list[Action]]:
        record = self.state.tes.get(te)
        if record is None:
            return f"no TE {te!r}", []
        if record.state is not TEState.QUARANTINED:
            return f"TE {te} is {record.state.value}, not quarantined", []
        if note is not None:
            record.operator, record.operator_action = note, "unquarantined"
        # Reset again before anyone gets it: quarantine ends only with a clean TE.
        record.state = TEState.RESETTING
        return None, [Reset(te, record.generation)]

    # --- time passes ---------------------------------------------------------------------------

    def process(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for lease in list(self.state.leases.values()):
            if lease.expires <= now:
                actions += self._end(lease, "expired: not renewed within its time-to-live",
                                     now)
        free = sorted((r for r in self.state.tes.values() if r.state is TEState.AVAILABLE),
                      key=lambda r: (r.spec.host, r.spec.env_number, r.spec.name))
        waiting = sorted((w for w in self.state.leases.values()
                          if w.state is LeaseState.WAITING and w.te is None), key=lease_order)
        for record, lease in zip(free, waiting, strict=False):
            record.generation += 1
            record.state, record.lease_id = TEState.LEASED, lease.id
            lease.te, lease.generation = record.spec.key, record.generation
            actions.append(Authorize(record.spec.key, lease.id, record.generation))
        return actions

    def authorizing(self) -> list[Action]:
        """The authorizations granted and not yet answered (a new run issues them again: the
        last one may have ended before their answer came)."""
        actions: list[Action] = []
        for key, record in self.state.tes.items():
            lease = self.state.leases.get(record.lease_id or "")
            if record.state is TEState.LEASED and lease is not None and \
                    lease.state is LeaseState.WAITING and lease.te == key:
                actions.append(Authorize(key, lease.id, record.generation))
        return actions

    def next_deadline(self) -> float | None:
        times = [lease.expires for lease in self.state.leases.values()]
        return min(times) if times else None

    # --- internals -----------------------------------------------------------------------------

    def _end(self, lease: Lease, why: str, now: float) -> list[Action]:
        del self.state.leases[lease.id]
        self.state.ended[lease.id] = why
        while len(self.state.ended) > KEEP_ENDED:
            del self.state.ended[next(iter(self.state.ended))]
        if lease.te is None:
            return []
        record = self.state.tes[lease.te]
        record.lease_id = None
        record.state = TEState.RESETTING
        return [Reset(lease.te, record.generation)]

    def _ended_why(self, lease_id: str) -> str:
        why = self.state.ended.get(lease_id)
        return f"lease {lease_id} ended: {why}" if why else f"no lease {lease_id!r}"
