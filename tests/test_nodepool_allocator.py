"""The node pool's decisions as pure functions: no Temporal, no cloud."""

from __future__ import annotations

import pytest

from lockmaster.model.nodes import (
    CloudHeadroom,
    CloudServerMark,
    Driver,
    LabelSpec,
    NodeRequest,
    NodeState,
    PoolSpec,
    PoolState,
    RequestState,
    ReturnNodes,
    SlotSpec,
)
from lockmaster.nodepool.allocator import Allocator, Delete, DeleteLeak, Launch, sync_slots


def cloud_spec(**kw) -> PoolSpec:  # type: ignore[no-untyped-def]
    labels = kw.pop("labels", None) or {
        "small": LabelSpec(name="small", image="img", flavor="m1.small", cores=2, ram=2048),
        "big": LabelSpec(name="big", image="img", flavor="m1.big", cores=8, ram=8192),
    }
    return PoolSpec(provider="cloud1", pool="main", driver=Driver.OPENSTACK, labels=labels,
                    max_servers=kw.pop("max_servers", 10), launch_attempts=3, **kw)


def request(rid: str, *labels: str, precedence: int = 1, position: int = 0) -> NodeRequest:
    return NodeRequest(id=rid, labels=list(labels), precedence=precedence, position=position,
                       lease_seconds=60)


def boot_all(alloc: Allocator, actions: list, now: float) -> None:  # type: ignore[type-arg]
    for action in actions:
        if isinstance(action, Launch):
            alloc.launched(action.node_id, external_id=f"srv-{action.node_id}", host="10.0.0.1",
                           port=22, host_key="ssh-ed25519 AAAA", floating_ip_id=None, now=now)


def test_request_launches_then_is_fulfilled_with_ready_nodes() -> None:
    alloc = Allocator(cloud_spec(), PoolState())
    got = alloc.submit(request("r1", "small", "big"), now=0)
    assert got.state is RequestState.PENDING
    actions = alloc.process(now=0)
    assert [type(a) for a in actions] == [Launch, Launch]
    assert alloc.state.requests["r1"].state is RequestState.PENDING
    boot_all(alloc, actions, now=1)
    assert alloc.process(now=1) == []
    r1 = alloc.state.requests["r1"]
    assert r1.state is RequestState.FULFILLED
    nodes = [alloc.state.nodes[n] for n in r1.nodes]
    assert [n.label for n in nodes] == ["small", "big"]
    assert all(n.state is NodeState.IN_USE and n.request_id == "r1" for n in nodes)


def test_ready_node_is_handed_over_without_launch() -> None:
    spec = cloud_spec(labels={"small": LabelSpec(name="small", min_ready=1, cores=2, ram=2)})
    alloc = Allocator(spec, PoolState())
    boot_all(alloc, alloc.process(now=0), now=1)
    assert [n.state for n in alloc.state.nodes.values()] == [NodeState.READY]
    alloc.submit(request("r1", "small"), now=2)
    actions = alloc.process(now=2)
    assert alloc.state.requests["r1"].state is RequestState.FULFILLED
    # ... and min-ready is restored by a new launch.
    assert [type(a) for a in actions] == [Launch]


def test_priority_order_gets_the_capacity() -> None:
    alloc = Allocator(cloud_spec(max_servers=1), PoolState())
    alloc.submit(request("check", "small", precedence=1), now=0)
    alloc.submit(request("gate-2", "small", precedence=0, position=2), now=1)
    alloc.submit(request("gate-1", "small", precedence=0, position=1), now=2)
    actions = alloc.process(now=2)
    assert len(actions) == 1
    boot_all(alloc, actions, now=3)
    alloc.process(now=3)
    states = {r.id: r.state for r in alloc.state.requests.values()}
    assert states == {"check": RequestState.PENDING, "gate-2": RequestState.PENDING,
                      "gate-1": RequestState.FULFILLED}


def test_limits_are_never_exceeded() -> None:
    alloc = Allocator(cloud_spec(max_servers=10, max_cores=9), PoolState())
    for i in range(8):
        alloc.submit(request(f"r{i}", "small"), now=0)
    actions = alloc.process(now=0)
    # 2 cores each, at most 9 cores: 4 nodes.
    assert len(actions) == 4
    alloc.state.headroom = CloudHeadroom(servers=2)
    boot_all(alloc, actions, now=1)
    alloc.process(now=1)
    alloc.give_back(ReturnNodes(request_id="r0"), now=2)
    # Four exist (one deleting), the cloud allows two: no launch.
    assert [a for a in alloc.process(now=2) if isinstance(a, Launch)] == []


def test_multi_node_request_blocks_launches_for_those_behind() -> None:
    alloc = Allocator(cloud_spec(max_servers=2), PoolState())
    alloc.submit(request("gate", "small", "small", "small", precedence=0), now=0)
    assert alloc.state.requests == {}  # 3 > max-servers: declined at once
    alloc.submit(request("pair", "small", "small", precedence=0), now=0)
    alloc.submit(request("single", "small", precedence=1), now=1)
    actions = alloc.process(now=1)
    assert len(actions) == 2
    assert {alloc.state.nodes[a.node_id].request_id for a in actions} == {"pair"}


def test_unknown_label_or_disabled_is_declined() -> None:
    alloc = Allocator(cloud_spec(), PoolState())
    got = alloc.submit(request("r1", "gpu"), now=0)
    assert got.state is RequestState.DECLINED and "gpu" in (got.reason or "")
    alloc.set_enabled(False, "maintenance")
    got = alloc.submit(request("r2", "small"), now=0)
    assert got.state is RequestState.DECLINED and "maintenance" in (got.reason or "")


def test_quota_error_does_not_use_an_attempt() -> None:
    alloc = Allocator(cloud_spec(quota_backoff=10), PoolState())
    alloc.submit(request("r1", "small"), now=0)
    [launch] = alloc.process(now=0)
    for _ in range(5):  # more quota errors than launch attempts
        assert alloc.launch_failed(launch.node_id, quota=True, error="quota", now=0) == []
        assert alloc.process(now=1) == []  # paused
        [launch] = alloc.process(now=11)
        assert alloc.state.paused_until is None
    assert alloc.state.requests["r1"].state is RequestState.PENDING
    assert alloc.state.nodes[launch.node_id].launch_attempt == 0


def test_failed_launches_retry_then_decline() -> None:
    alloc = Allocator(cloud_spec(), PoolState())
    alloc.submit(request("r1", "small"), now=0)
    [launch] = alloc.process(now=0)
    assert alloc.launch_failed(launch.node_id, quota=False, error="ERROR", now=1) == [launch]
    assert alloc.launch_failed(launch.node_id, quota=False, error="ERROR", now=2) == [launch]
    assert alloc.launch_failed(launch.node_id, quota=False, error="boot timeout", now=3) == []
    r1 = alloc.state.requests["r1"]
    assert r1.state is RequestState.DECLINED and "3 times: boot timeout" in (r1.reason or "")
    assert alloc.state.nodes == {}
    assert alloc.process(now=4) == []


def test_return_deletes_cloud_nodes_and_holds_when_asked() -> None:
    alloc = Allocator(cloud_spec(), PoolState())
    alloc.submit(request("r1", "small"), now=0)
    alloc.submit(request("r2", "small"), now=0)
    boot_all(alloc, alloc.process(now=0), now=1)
    alloc.process(now=1)
    n1, n2 = alloc.state.requests["r1"].nodes[0], alloc.state.requests["r2"].nodes[0]
    assert alloc.give_back(ReturnNodes(request_id="r1"), now=2) == [Delete(n1)]
    assert alloc.give_back(ReturnNodes(request_id="r2", hold_until=100, hold_reason="x"),
                           now=2) == []
    assert alloc.state.nodes[n2].state is NodeState.HOLD
    assert alloc.give_back(ReturnNodes(request_id="r1"), now=3) == []  # idempotent
    alloc.deleted(n1)
    assert n1 not in alloc.state.nodes
    assert alloc.next_deadline() == 100
    assert alloc.process(now=100) == [Delete(n2)]  # the hold expired


def test_an_operators_hold_and_disable_say_who_and_why() -> None:
    """Issue 15: a held node and a disabled pool kept why, not who."""
    from lockmaster.model.nodes import PoolStatus
    from lockmaster.nodepool.allocator import never_serves
    from lockmaster.workflows.details import pool_details

    alloc = Allocator(cloud_spec(), PoolState())
    alloc.submit(request("r1", "small"), now=0)
    boot_all(alloc, alloc.process(now=0), now=1)
    alloc.process(now=1)
    [node] = alloc.state.requests["r1"].nodes
    assert alloc.hold(node, 100, "debug the kernel panic", now=2, by="alice") is None
    held = alloc.state.nodes[node]
    assert (held.held_by, held.hold_reason) == ("alice", "debug the kernel panic")
    alloc.set_enabled(False, "cloud maintenance", by="bob")
    assert never_serves(alloc.spec, alloc.state, ["small"]) == (
        "provider cloud1 is disabled: bob: cloud maintenance")
    status = PoolStatus(provider="cloud1", pool="main", driver=alloc.spec.driver, enabled=False,
                        max_servers=None, nodes=list(alloc.state.nodes.values()), requests=[],
                        disabled_by=alloc.state.disabled_by)
    details = pool_details(status, disabled_reason=alloc.state.disabled_reason)
    assert "**disabled** (bob: cloud maintenance)" in details
    assert "— alice: debug the kernel panic" in details
    alloc.set_enabled(True, "", by="bob")
    assert (alloc.state.disabled_reason, alloc.state.disabled_by) == ("", None)
    # Its job done, the node is kept (held) until the hold expires: then nobody holds it.
    alloc.give_back(ReturnNodes(request_id="r1"), now=3)
    assert alloc.process(now=100) == [Delete(node)]
    assert alloc.state.nodes[node].held_by is None


def test_holder_gone_lease_expires_and_node_is_deleted() -> None:
    alloc = Allocator(cloud_spec(), PoolState())
    alloc.submit(request("r1", "small"), now=0)
    boot_all(alloc, alloc.process(now=0), now=1)
    alloc.process(now=1)
    [node_id] = alloc.state.requests["r1"].nodes
    alloc.renew(["r1"], now=50)
    assert alloc.process(now=100) == []
    assert alloc.process(now=111) == [Delete(node_id)]
    assert "r1" not in alloc.state.requests


def test_disable_declines_waiting_deletes_idle_keeps_in_use() -> None:
    spec = cloud_spec(max_servers=2)
    alloc = Allocator(spec, PoolState())
    alloc.submit(request("r1", "small"), now=0)
    boot_all(alloc, alloc.process(now=0), now=1)
    alloc.process(now=1)
    spec.labels["small"].min_ready = 1
    boot_all(alloc, alloc.process(now=2), now=3)  # a ready spare
    alloc.submit(request("r2", "big"), now=3)
    alloc.set_enabled(False, "maintenance")
    actions = alloc.process(now=4)
    assert alloc.state.requests["r2"].state is RequestState.DECLINED
    in_use = alloc.state.requests["r1"].nodes[0]
    assert [a for a in actions if isinstance(a, Launch)] == []
    assert len([a for a in actions if isinstance(a, Delete)]) == 1
    assert alloc.state.nodes[in_use].state is NodeState.IN_USE


def test_leaks_are_deleted_on_the_second_pass_only() -> None:
    alloc = Allocator(cloud_spec(), PoolState())
    alloc.submit(request("r1", "small"), now=0)
    [launch] = alloc.process(now=0)
    servers = [CloudServerMark(id="mine-building", node_id=launch.node_id),
               CloudServerMark(id="leak", node_id="0000009999")]
    fips = [CloudServerMark(id="fip-leak", node_id="0000009999")]
    assert alloc.scan(servers, fips) == []
    assert alloc.scan(servers, fips) == [DeleteLeak(server_id="leak"),
                                         DeleteLeak(floating_ip_id="fip-leak")]
    # A suspect that became known (or went away) in between is not deleted.
    alloc.scan([CloudServerMark(id="x", node_id="0000008888")], [])
    assert alloc.scan([], []) == []


def test_slots_go_back_to_ready() -> None:
    spec = PoolSpec(provider="static1", pool="main", driver=Driver.STATIC,
                    labels={"debian": LabelSpec(name="debian")},
                    slots=[SlotSpec(node_id="host1-0", labels=["debian"], host="127.0.0.1")])
    state = PoolState()
    sync_slots(spec, state)
    alloc = Allocator(spec, state)
    alloc.submit(request("r1", "debian"), now=0)
    alloc.submit(request("r2", "debian"), now=0)
    assert alloc.process(now=0) == []
    assert alloc.state.requests["r1"].state is RequestState.FULFILLED
    assert alloc.state.requests["r2"].state is RequestState.PENDING
    assert alloc.give_back(ReturnNodes(request_id="r1"), now=1) == []
    alloc.process(now=1)
    assert alloc.state.requests["r2"].state is RequestState.FULFILLED
    got = alloc.submit(request("r3", "debian", "debian"), now=2)
    assert got.state is RequestState.DECLINED


@pytest.mark.parametrize("returned_first", [True, False])
def test_node_launched_for_a_withdrawn_request_serves_the_next(returned_first: bool) -> None:
    alloc = Allocator(cloud_spec(max_servers=1), PoolState())
    alloc.submit(request("r1", "small"), now=0)
    [launch] = alloc.process(now=0)
    alloc.submit(request("r2", "small"), now=1)
    if returned_first:
        alloc.give_back(ReturnNodes(request_id="r1"), now=1)
        boot_all(alloc, [launch], now=2)
    else:
        boot_all(alloc, [launch], now=2)
        alloc.give_back(ReturnNodes(request_id="r1"), now=2)
    alloc.process(now=3)
    assert alloc.state.requests["r2"].nodes == [launch.node_id]
