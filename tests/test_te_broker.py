"""The TE broker's decisions as pure functions: no Temporal, no libvirt."""

from __future__ import annotations

import random

from lockmaster.leases.broker import Authorize, Broker, Reset
from lockmaster.model.testenv import (
    BrokerState,
    LeaseRequest,
    LeaseState,
    TENetwork,
    TENode,
    TESpec,
    TEState,
)


def spec(host: str, n: int) -> TESpec:
    return TESpec(
        host=host, name=f"te{n}", env_number=n, libvirt_uri="test:///default",
        host_address="127.0.0.1", host_key="ssh-ed25519 AAAA", ssh_user="te",
        seed=TENode(name=f"seed_{n}", mac=f"52:54:00:00:{n:02x}:00"), seed_ip=f"10.0.{n}.2",
        nodes=[TENode(name=f"baremetalbrbm{n}_0", mac=f"52:54:00:00:{n:02x}:01")],
        bridge=f"brbm{n}", network=TENetwork(cidr=f"10.0.{n}.0/24", gateway=f"10.0.{n}.1",
                                             range_start=f"10.0.{n}.10",
                                             range_end=f"10.0.{n}.100"),
    )


def ready_broker(*tes: TESpec) -> Broker:
    broker = Broker(BrokerState())
    for action in broker.sync(list(tes)):
        assert isinstance(action, Reset)
        broker.reset_done(action.te, action.generation, True, None)
    return broker


def ask(broker: Broker, rid: str, now: float, precedence: int = 1, ttl: float = 60) -> None:
    assert broker.request(LeaseRequest(id=rid, holder=rid, public_key="ssh-ed25519 K",
                                       ttl=ttl, precedence=precedence), now) is not None


def grant_all(broker: Broker, actions: list, now: float) -> None:  # type: ignore[type-arg]
    for action in actions:
        if isinstance(action, Authorize):
            broker.authorized(action.te, action.generation, True, None, now)


def test_new_tes_are_reset_before_first_use() -> None:
    broker = Broker(BrokerState())
    actions = broker.sync([spec("h1", 1)])
    assert actions == [Reset("h1/te1", 0)]
    ask(broker, "a", 0)
    assert broker.process(0) == []  # still resetting: nobody gets it
    broker.reset_done("h1/te1", 0, True, None)
    assert broker.process(1) == [Authorize("h1/te1", "a", 1)]


def test_lease_renew_release_and_generations() -> None:
    broker = ready_broker(spec("h1", 1))
    ask(broker, "a", 0)
    grant_all(broker, broker.process(0), now=1)
    status = broker.status("a", 2)
    assert status.state is LeaseState.GRANTED and status.generation == 1
    assert status.te is not None and status.te.name == "te1" and status.waited == 1
    assert broker.renew("a", 1, None, 30) is None
    assert "stale generation 7" in (broker.renew("a", 7, None, 31) or "")
    why, actions = broker.release("a", 7, 32)
    assert "stale" in (why or "") and actions == []
    why, actions = broker.release("a", 1, 33)
    assert why is None and actions == [Reset("h1/te1", 1)]
    assert broker.state.tes["h1/te1"].state is TEState.RESETTING
    assert "released" in (broker.renew("a", 1, None, 34) or "")
    # A second holder gets generation 2 only after the reset.
    ask(broker, "b", 35)
    assert broker.process(35) == []
    broker.reset_done("h1/te1", 1, True, None)
    assert broker.process(36) == [Authorize("h1/te1", "b", 2)]


def test_expiry_revokes_even_if_the_holder_never_speaks() -> None:
    broker = ready_broker(spec("h1", 1))
    ask(broker, "a", 0, ttl=10)
    grant_all(broker, broker.process(0), now=0)
    assert broker.next_deadline() == 10
    assert broker.process(9) == []
    assert broker.process(10) == [Reset("h1/te1", 1)]
    assert "expired" in (broker.status("a", 11).reason or "")


def test_waiting_requests_not_renewed_are_dropped() -> None:
    broker = ready_broker(spec("h1", 1))
    ask(broker, "holder", 0, ttl=100)
    grant_all(broker, broker.process(0), 0)
    ask(broker, "gone", 1, ttl=5)
    broker.process(7)
    assert broker.status("gone", 7).state is LeaseState.ENDED


def test_precedence_then_fifo() -> None:
    broker = ready_broker(spec("h1", 1))
    ask(broker, "holder", 0, ttl=1000)
    grant_all(broker, broker.process(0), 0)
    for i, (rid, precedence) in enumerate([("c1", 1), ("c2", 1), ("g1", 0), ("c3", 1),
                                           ("g2", 0)]):
        ask(broker, rid, 1 + i, precedence=precedence, ttl=1000)
    assert [broker.status(r, 10).position for r in ("g1", "g2", "c1", "c2", "c3")] == \
        [0, 1, 2, 3, 4]
    order = []
    holder, generation = "holder", 1
    for _ in range(5):
        broker.release(holder, generation, 20)
        broker.reset_done("h1/te1", generation, True, None)
        [auth] = broker.process(20)
        grant_all(broker, [auth], 20)
        holder, generation = auth.lease_id, auth.generation
        order.append(holder)
    assert order == ["g1", "g2", "c1", "c2", "c3"]


def test_failed_reset_quarantines_until_an_operator_acts() -> None:
    broker = ready_broker(spec("h1", 1))
    ask(broker, "a", 0)
    grant_all(broker, broker.process(0), 0)
    broker.release("a", 1, 1)
    broker.reset_done("h1/te1", 1, False, "bridge brbm1 missing")
    assert broker.state.tes["h1/te1"].state is TEState.QUARANTINED
    ask(broker, "b", 2)
    assert broker.process(2) == []
    why, actions = broker.unquarantine("h1/te1")
    assert why is None and actions == [Reset("h1/te1", 1)]
    broker.reset_done("h1/te1", 1, True, None)
    assert broker.process(3) == [Authorize("h1/te1", "b", 2)]


def test_drain_force_release_and_failed_authorization() -> None:
    broker = ready_broker(spec("h1", 1), spec("h1", 2), spec("h2", 3))
    assert "1 when their lease ends" not in broker.drain("h2")
    ask(broker, "a", 0)
    ask(broker, "b", 1)
    ask(broker, "c", 2)
    actions = broker.process(2)
    assert {a.te for a in actions if isinstance(a, Authorize)} == {"h1/te1", "h1/te2"}
    # The host would not take c's... b's key: b goes back to waiting, the TE is reset.
    [_, second] = actions
    assert broker.authorized(second.te, second.generation, False, "ssh down", 3) == \
        [Reset(second.te, second.generation)]
    assert broker.status(second.lease_id, 3).state is LeaseState.WAITING
    why, resets = broker.force_release("h1/te1", 4)
    assert why is None and resets == [Reset("h1/te1", 1)]
    assert "force-released" in (broker.status("a", 5).reason or "")
    assert broker.undrain("h2") == "host h2 back in service: 1 TE(s) available"


def test_operators_drain_force_release_and_unquarantine_say_who_and_why() -> None:
    """Issue 15: the broker kept that a host was drained or a lease force-released, not by
    whom or why."""
    from lockmaster.model.audit import OperatorNote
    from lockmaster.model.testenv import BrokerStatus, TEView
    from lockmaster.workflows.details import broker_details

    broker = ready_broker(spec("h1", 1), spec("h2", 2))
    drained = OperatorNote(by="alice", reason="disk replacement", at=1.0)
    broker.drain("h2", drained)
    assert broker.state.drained_by == {"h2": drained}
    ask(broker, "a", 1)
    grant_all(broker, broker.process(1), 1)
    released = OperatorNote(by="bob", reason="the job hung", at=4.0)
    why, _ = broker.force_release("h1/te1", 4, released)
    assert why is None
    # The holder's lease says who ended it and why; the TE keeps the last operator action.
    assert broker.status("a", 5).reason == "lease a ended: force-released by bob: the job hung"
    record = broker.state.tes["h1/te1"]
    assert (record.operator, record.operator_action) == (released, "force-released")
    status = BrokerStatus(label="default", waiting=[], draining_hosts=list(
        broker.state.draining), drained_by=dict(broker.state.drained_by), tes=[
        TEView(key="h1/te1", host="h1", name="te1", state=record.state, generation=1,
               operator=record.operator, operator_action=record.operator_action)])
    details = broker_details(status)
    assert "draining h2 (drained by alice: disk replacement)" in details
    assert "- h1/te1: resetting — force-released by bob: the job hung" in details
    broker.reset_done("h1/te1", record.generation, False, "disk gone")
    assert broker.unquarantine("h1/te1", OperatorNote(by="carol"))[0] is None
    assert record.operator_action == "unquarantined" and record.operator is not None
    assert record.operator.by == "carol"
    broker.undrain("h2")
    assert broker.state.drained_by == {}


def test_an_operator_naming_nobody_is_recorded_as_before() -> None:
    broker = ready_broker(spec("h1", 1))
    ask(broker, "a", 0)
    grant_all(broker, broker.process(0), 0)
    broker.drain("h1")
    broker.force_release("h1/te1", 1)
    assert broker.status("a", 2).reason == "lease a ended: force-released by an operator"
    assert broker.state.drained_by == {} and broker.state.tes["h1/te1"].operator is None


def test_many_requests_few_tes_each_served_once_never_twice() -> None:
    rng = random.Random(7)
    tes = [spec(f"h{i % 3}", i) for i in range(10)]
    broker = ready_broker(*tes)
    for i in range(200):
        ask(broker, f"r{i:03d}", i * 0.001, precedence=rng.choice([0, 1]), ttl=10_000)
    served: list[str] = []
    now = 1.0
    holding: dict[str, tuple[str, int]] = {}
    while len(served) < 200:
        for action in broker.process(now):
            if isinstance(action, Authorize):
                assert action.te not in holding, "a TE handed out twice"
                broker.authorized(action.te, action.generation, True, None, now)
                holding[action.te] = (action.lease_id, action.generation)
                served.append(action.lease_id)
        te = rng.choice(sorted(holding))
        lease_id, generation = holding.pop(te)
        assert broker.release(lease_id, generation, now)[0] is None
        broker.reset_done(te, generation, True, None)
        now += 1
    assert sorted(served) == sorted(f"r{i:03d}" for i in range(200))
    assert len(set(served)) == 200
    # FIFO within a precedence: the order served is the order asked, gate first.
    leases = {f"r{i:03d}": i for i in range(200)}
    rng = random.Random(7)
    precedence = {f"r{i:03d}": rng.choice([0, 1]) for i in range(200)}
    for p in (0, 1):
        ids = [r for r in served if precedence[r] == p]
        assert ids == sorted(ids, key=leases.__getitem__)


def test_statuses_of_many_leases_are_each_ones_status() -> None:
    """`lease_statuses` (what waiting holders share, issue 14) answers as `lease_status` would
    for each: granted, authorizing, waiting with its place, ended, unknown."""
    broker = ready_broker(spec("h1", 1), spec("h1", 2))
    for i, rid in enumerate(["a", "b", "c", "d", "e"]):
        ask(broker, rid, i, precedence=0 if rid == "e" else 1)
    actions = broker.process(10)
    grant_all(broker, actions[:1], 10)  # one granted, one still being authorized
    broker.request(LeaseRequest(id="x", holder="x", public_key="ssh-ed25519 K", ttl=1), 10)
    broker.process(20)  # x expires
    ids = ["a", "b", "c", "d", "e", "x", "nope"]
    assert broker.statuses(ids, 20) == [broker.status(i, 20) for i in ids]
    states = [s.state for s in broker.statuses(ids, 20)]
    assert states[-2:] == [LeaseState.ENDED, LeaseState.UNKNOWN]
    assert LeaseState.GRANTED in states and LeaseState.WAITING in states
