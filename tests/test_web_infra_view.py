"""/api/nodes, /api/tes and /api/publications views (lockmaster/web/infra_view.py), pure."""

from __future__ import annotations

from lockmaster.model.change import ChangeRef
from lockmaster.model.nodes import (
    Driver,
    Node,
    NodeRequest,
    NodeState,
    PoolSpec,
    PoolStatus,
    RequestState,
)
from lockmaster.model.publish import (
    PublishStatus,
    PublishStep,
    QueueEntry,
    QueueState,
    QueueStatus,
    StepState,
)
from lockmaster.model.testenv import BrokerStatus, Lease, TEState, TEView
from lockmaster.web.infra_view import nodes_view, publications_view, tes_view

NOW = 5_000.0


def node(nid: str, state: NodeState, driver: Driver, cores: int = 0) -> Node:
    return Node(id=nid, provider="p", pool="main", driver=driver, labels=["small"],
                state=state, cores=cores, ram=cores * 1024)


def test_nodes_by_state_against_quota_and_requests_in_serving_order() -> None:
    cloud = PoolStatus(
        provider="cloud1", pool="main", driver=Driver.OPENSTACK, enabled=True, max_servers=4,
        nodes=[node("1", NodeState.READY, Driver.OPENSTACK, 2),
               node("2", NodeState.IN_USE, Driver.OPENSTACK, 2),
               node("3", NodeState.BUILDING, Driver.OPENSTACK, 2)],
        requests=[NodeRequest(id="late-gate", labels=["small"], precedence=0, arrived=30),
                  NodeRequest(id="check", labels=["small"], precedence=1, arrived=10),
                  NodeRequest(id="early-gate", labels=["small"], precedence=0, arrived=20),
                  NodeRequest(id="done", labels=["small"], state=RequestState.FULFILLED)])
    local = PoolStatus(
        provider="local", pool="main", driver=Driver.LOCAL, enabled=False, max_servers=2,
        disabled_reason="maintenance", nodes=[node("s0", NodeState.READY, Driver.LOCAL),
                                              node("s1", NodeState.IN_USE, Driver.LOCAL)],
        requests=[])
    spec = PoolSpec(provider="cloud1", pool="main", driver=Driver.OPENSTACK, labels={},
                    max_cores=16)
    view = nodes_view([cloud, local], [spec], {"static/main": "not running"}, NOW)
    c, slot = view["pools"]
    assert c["quota"] == {"max_servers": 4, "max_cores": 16, "max_ram": None}
    assert c["used"] == {"servers": 3, "cores": 6, "ram": 6144}  # every server counts
    assert c["by_state"]["ready"] == 1 and c["by_state"]["building"] == 1
    assert [r["id"] for r in c["requests"]] == ["early-gate", "late-gate", "check"]
    assert [r["position"] for r in c["requests"]] == [0, 1, 2]
    assert c["requests"][2]["waiting"] == NOW - 10
    assert slot["used"]["servers"] == 1  # slots: only the taken ones
    assert slot["enabled"] is False and slot["disabled_reason"] == "maintenance"
    assert view["unanswered"] == [{"pool": "static/main", "error": "not running"}]


def test_tes_leases_and_queue() -> None:
    def lease(lid: str, precedence: int, arrived: float) -> Lease:
        return Lease(id=lid, holder=f"h-{lid}", public_key="k", ttl=60, precedence=precedence,
                     arrived=arrived, expires=arrived + 60)

    broker = BrokerStatus(
        label="default", draining_hosts=["h2"],
        tes=[TEView(key="h1/te1", host="h1", name="te1", state=TEState.LEASED, generation=3,
                    holder="gate 1,1 job", lease_id="L1", expires=NOW + 30),
             TEView(key="h1/te2", host="h1", name="te2", state=TEState.QUARANTINED,
                    generation=1, reason="reset failed")],
        waiting=[lease("b", 1, 10), lease("a", 0, 20)])
    view = tes_view([broker], {}, NOW)
    b = view["brokers"][0]
    assert b["by_state"]["leased"] == 1 and b["by_state"]["quarantined"] == 1
    assert b["tes"][0]["holder"] == "gate 1,1 job" and b["tes"][1]["reason"] == "reset failed"
    assert [w["lease"] for w in b["queue"]] == ["a", "b"]  # gate precedence first
    assert b["draining_hosts"] == ["h2"]


def test_recent_publications_newest_first_with_their_mirror_syncs() -> None:
    entries = [QueueEntry(workflow_id=f"publish/p/{n}", change=f"p {n},1", sequence=n,
                          state=QueueState.DONE) for n in (1, 2)]
    status = PublishStatus(
        change=ChangeRef(connection="c", project="p", branch="master", number=2, patchset=1),
        snapshot="stable-2", done=True,
        steps=[PublishStep(name="build", state=StepState.DONE),
               PublishStep(name="publish", state=StepState.DONE),
               PublishStep(name="sync:local", state=StepState.FAILED, detail="rsync: refused")])
    view = publications_view(QueueStatus(repository="stable", entries=entries),
                             [("publish/p/1", "workflow not found"), ("publish/p/2", status)],
                             NOW)
    newest, older = view["recent"]
    assert newest["workflow_id"] == "publish/p/2" and newest["snapshot"] == "stable-2"
    assert [s["name"] for s in newest["syncs"]] == ["sync:local"]
    assert newest["syncs"][0]["state"] == "failed"
    assert older["error"] == "workflow not found" and older["steps"] == []
    assert [e["sequence"] for e in view["queue"]] == [1, 2]
    empty = publications_view(None, [], NOW)
    assert empty["repository"] is None and empty["recent"] == []


def test_pool_and_broker_details_mirror_their_rows() -> None:
    """The Web UI's current details of a pool and a TE broker and the Nodes/TEs pages come from
    the same answer and agree: counts by state, requests and leases waiting."""
    from lockmaster.workflows.details import broker_details, pool_details

    pool = PoolStatus(
        provider="cloud1", pool="main", driver=Driver.OPENSTACK, enabled=True, max_servers=4,
        nodes=[node("1", NodeState.READY, Driver.OPENSTACK),
               node("2", NodeState.IN_USE, Driver.OPENSTACK),
               node("3", NodeState.IN_USE, Driver.OPENSTACK)],
        requests=[NodeRequest(id="r1", labels=["small"], arrived=1),
                  NodeRequest(id="r2", labels=["small"], arrived=2)])
    head = pool_details(pool, now=NOW).splitlines()[0]
    row = nodes_view([pool], [], {}, NOW)["pools"][0]
    for state, count in row["by_state"].items():
        if count:
            assert f"{count} {state}" in head
    assert f"{len(row['nodes'])} node(s)" in head
    assert f"{len(row['requests'])} request(s) waiting" in head

    broker = BrokerStatus(label="default", draining_hosts=[], tes=[
        TEView(key="h/te1", host="h", name="te1", state=TEState.LEASED, generation=1),
        TEView(key="h/te2", host="h", name="te2", state=TEState.AVAILABLE, generation=1)],
        waiting=[Lease(id="w", holder="x", public_key="k", ttl=60, precedence=1, arrived=1,
                       expires=61)])
    head = broker_details(broker).splitlines()[0]
    te_row = tes_view([broker], {}, NOW)["brokers"][0]
    for state, count in te_row["by_state"].items():
        if count:
            assert f"{count} {state}" in head
    assert f"{len(te_row['queue'])} waiting" in head


def test_publish_queue_details_mirror_the_publications_rows() -> None:
    from lockmaster.workflows.details import publish_queue_details

    entries = [QueueEntry(workflow_id=f"publish/p/{n}", change=f"p {n},1", sequence=n,
                          state=state)
               for n, state in ((1, QueueState.DONE), (2, QueueState.FAILED),
                                (3, QueueState.READY), (4, QueueState.BUILDING))]
    details = publish_queue_details("stable", entries).splitlines()
    view = publications_view(QueueStatus(repository="stable", entries=entries), [], NOW)
    open_ = [e for e in view["queue"] if e["state"] not in ("done", "failed")]
    assert f"{len(open_)} change(s) in the queue" in details[0]
    assert "**1 failed** recently" in details[0]
    for entry, line in zip(view["queue"], details[1:], strict=True):
        assert line.startswith(f"- #{entry['sequence']} {entry['change']}: ")
        assert entry["state"] in line
