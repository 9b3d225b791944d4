"""What the Web UI shows under "Current details" (pure): every workflow's first line says what it
is and how it stands or ended; every job, item, node, TE or step its state, reason and log."""

from __future__ import annotations

from lockmaster.model.build import JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.check import CheckStatus, JobStatus
from lockmaster.model.gate import GateBuild, GateItem, QueueState
from lockmaster.model.nodes import Autohold, Driver, Node, NodeRequest, NodeState, PoolStatus
from lockmaster.model.publish import PublishStatus, PublishStep, QueueEntry, StepState
from lockmaster.model.publish import QueueState as EntryState
from lockmaster.model.testenv import BrokerStatus, Lease, TEState, TEView
from lockmaster.pipelines.gate_view import queue_status
from lockmaster.pipelines.jobgraph import skip_reason
from lockmaster.workflows import details

LOG = "http://logs.example.test/03/3/1/check/build/abcdef0"


def ref(number: int, patchset: int = 1) -> ChangeRef:
    return ChangeRef(connection="local", project="demo/hello", branch="master", number=number,
                     patchset=patchset)


def test_a_failed_check_says_failed_with_the_reason_and_log_of_each_job() -> None:
    status = CheckStatus(
        change=ref(3), pipeline="check", phase="done", changes="2,1 3,1", result="FAILURE",
        jobs=[
            JobStatus(name="build", voting=True, state="FAILURE", attempt=1, log_url=LOG,
                      reason="run exited with status 3"),
            JobStatus(name="unit", voting=True, state="SKIPPED",
                      reason="not run: build did not succeed"),
            JobStatus(name="lint", voting=True, state="SUCCESS", attempt=1, log_url=LOG + "1"),
            JobStatus(name="docs", voting=False, state="NODE_FAILURE", attempt=2,
                      reason="no node\nin pool [x]"),
        ])
    assert details.check_details(status).splitlines() == [
        "**FAILED** check: demo/hello change 3,1, tested on 2,1 3,1",
        "failed: build, unit",
        f"- build: **FAILURE** — run exited with status 3 — [log]({LOG})",
        "- unit: **SKIPPED** — not run: build did not succeed",
        f"- lint: SUCCESS — [log]({LOG}1)",
        "- docs (non-voting): **NODE_FAILURE** (attempt 2) — no node in pool (x)",
    ]


def test_a_running_check_shows_its_phase_and_a_merge_conflict_its_reason() -> None:
    running = CheckStatus(change=ref(3), pipeline="check", phase="running", changes="3,1",
                          jobs=[JobStatus(name="build", voting=True, state="running", attempt=1),
                                JobStatus(name="unit", voting=True, state="waiting")])
    assert details.check_details(running).splitlines() == [
        "**running** check: demo/hello change 3,1", "- build: running", "- unit: waiting"]
    conflict = CheckStatus(change=ref(4), pipeline="check", phase="done",
                           result="MERGE_CONFLICT", reason="CONFLICT (content): a.txt")
    assert details.check_details(conflict).splitlines() == [
        "**FAILED (merge conflict)** check: demo/hello change 4,1", "CONFLICT (content): a.txt"]


def test_skip_reason_names_the_dependency_that_did_not_succeed() -> None:
    job = JobSpec(name="unit", run="true", dependencies=["build", "lint"])
    assert skip_reason(job, {"build": Result.FAILURE, "lint": Result.SUCCESS}) == \
        "not run: build did not succeed"
    assert "fail-fast" in skip_reason(job, {"build": Result.SUCCESS})


def gate_state() -> QueueState:
    jobs = [JobSpec(name="merge-check", run="true"),
            JobSpec(name="test", run="true", dependencies=["merge-check"])]
    failing = GateItem(
        id="a", change=ref(3), pipeline="gate", jobs=jobs, enqueued_at=0.0,
        changes=[ref(3)], merge="ok",
        builds=[GateBuild(build_id="b1", job="merge-check", attempt=1, changes="3,1",
                          result=Result.FAILURE, started=1.0, ended=2.0, log_url=LOG,
                          message="run exited with status 1")],
        job_results={"merge-check": Result.FAILURE, "test": Result.SKIPPED})
    running = GateItem(
        id="b", change=ref(4), pipeline="gate", jobs=jobs, enqueued_at=60.0,
        changes=[ref(3), ref(4)], merge="ok",
        builds=[GateBuild(build_id="b2", job="merge-check", attempt=1, changes="3,1 4,1",
                          started=70.0)])
    conflict = GateItem(id="c", change=ref(5), pipeline="gate", jobs=jobs, enqueued_at=90.0,
                        merge="conflict", merge_error="CONFLICT (content): x")
    return QueueState(queue="integrated", pipeline="gate", window=20, window_floor=3,
                      window_increase_amount=1, window_decrease_factor=2,
                      items=[failing, running, conflict], merged_keys=["1,1", "2,1"],
                      left={"6,2": "it failed (gate)"})


def test_the_gate_view_carries_reasons_logs_and_recent_departures() -> None:
    status = queue_status(gate_state(), 100.0, idle=False, busy=True)
    first, second, third = status.items
    assert first.failing and [(j.state, j.reason, j.log_url) for j in first.jobs] == [
        ("FAILURE", "run exited with status 1", LOG),
        ("SKIPPED", "not run: merge-check did not succeed", None)]
    assert [(j.state, j.elapsed) for j in second.jobs] == [("running", 30.0), ("waiting", None)]
    assert third.merge_error == "CONFLICT (content): x"
    assert status.recently_left == {"6,2": "it failed (gate)"}
    assert status.recently_merged == ["1,1", "2,1"]


def test_gate_queue_details_list_every_item_and_job() -> None:
    text = details.queue_details(queue_status(gate_state(), 100.0, idle=False, busy=True))
    assert text.splitlines() == [
        "**gate queue integrated**: 3 item(s), **2 failing**; window 20",
        "1. 3,1 demo/hello (master): **failing**; enqueued 1970-01-01 00:00:00 UTC",
        f"    - merge-check: **FAILURE** — run exited with status 1 — [log]({LOG})",
        "    - test: **SKIPPED** — not run: merge-check did not succeed",
        "2. 4,1 demo/hello (master): running, tested on 3,1 4,1; "
        "enqueued 1970-01-01 00:01:00 UTC",
        "    - merge-check: running",
        "    - test: waiting",
        "3. 5,1 demo/hello (master): **merge conflict**: CONFLICT (content): x; "
        "enqueued 1970-01-01 00:01:30 UTC",
        "    - merge-check: waiting",
        "    - test: waiting",
        "Recently left without merging: 6,2 (it failed (gate))",
        "Recently merged: 1,1 2,1",
    ]
    empty = QueueState(queue="q", pipeline="gate", window=0, window_floor=3,
                       window_increase_amount=1, window_decrease_factor=2)
    assert details.queue_details(queue_status(empty, 0.0, idle=True, busy=False),
                                 draining=True) == (
        "**gate queue q**: empty; window unlimited; continuing as new once what runs has "
        "finished")


def test_a_huge_queue_is_cut_with_a_pointer_to_the_status_command() -> None:
    state = gate_state()
    state.items = [state.items[1].model_copy(update={"id": str(n), "change": ref(n)})
                   for n in range(details.MAX_LINES + 5)]
    lines = details.queue_details(queue_status(state, 100.0, idle=False, busy=True)).splitlines()
    assert lines[-3] == "- … and 5 more items (`lockmaster status`)"
    assert sum(1 for line in lines if line[0].isdigit()) == details.MAX_LINES


def test_pool_details_count_nodes_and_show_holds_and_waiting_requests() -> None:
    node = Node(id="0001", provider="cloud", pool="main", driver=Driver.OPENSTACK,
                labels=["ubuntu"], state=NodeState.READY, host="10.0.0.5")
    held = node.model_copy(update={"id": "0002", "state": NodeState.HOLD, "hold_until": 3600.0,
                                   "hold_reason": "autohold 0001: flaky"})
    request = NodeRequest(id="r1", labels=["ubuntu"], holder="build abc", arrived=60.0)
    status = PoolStatus(provider="cloud", pool="main", driver=Driver.OPENSTACK, enabled=False,
                        max_servers=4, nodes=[held, node], requests=[request], launches=2,
                        paused_until=120.0)
    assert details.pool_details(status, disabled_reason="maintenance", now=100.0).splitlines() \
        == [
        "**node pool cloud/main (openstack)**: **disabled** (maintenance); 2 node(s): 1 ready, "
        "1 hold; 1 request(s) waiting; launches 2, failed 0",
        "launches paused (cloud quota) until 1970-01-01 00:02:00 UTC",
        "- 0001 ubuntu: ready on 10.0.0.5",
        "- 0002 ubuntu: **hold** on 10.0.0.5 until 1970-01-01 01:00:00 UTC — autohold 0001: "
        "flaky",
        "- request r1 (build abc): ubuntu waiting since 1970-01-01 00:01:00 UTC",
    ]


def test_broker_autohold_publish_and_publish_queue_details() -> None:
    broker = BrokerStatus(
        label="ovb", draining_hosts=["h2"],
        tes=[TEView(key="h1/te0", host="h1", name="te0", state=TEState.LEASED, generation=3,
                    holder="alice", expires=60.0),
             TEView(key="h1/te1", host="h1", name="te1", state=TEState.QUARANTINED,
                    generation=1, reason="reset failed: virsh said no")],
        waiting=[Lease(id="l2", holder="bob", public_key="k", ttl=60, precedence=1,
                       arrived=30.0, expires=90.0)])
    assert details.broker_details(broker).splitlines() == [
        "**TE broker for label ovb**: 2 TE(s): 1 leased, 1 quarantined; 1 waiting; "
        "draining h2",
        "- h1/te0: leased by alice until 1970-01-01 00:01:00 UTC",
        "- h1/te1: **quarantined** — reset failed: virsh said no",
        "Waiting: bob (since 1970-01-01 00:00:30 UTC)",
    ]
    hold = Autohold(id="0001", project="demo/hello", job="build", change=3, reason="flaky",
                    count=2, hold_seconds=86400.0)
    assert details.autohold_details([hold]).splitlines() == [
        "**autohold requests**: 1 active",
        "- 0001: demo/hello build change 3: the next 2 failing build(s), kept 1 days — flaky"]
    assert details.autohold_details([]) == "**autohold requests**: none"
    publish = PublishStatus(change=ref(3), steps=[
        PublishStep(name="build", state=StepState.FAILED,
                    detail="the build job ended FAILURE", url=LOG),
        PublishStep(name="publish", state=StepState.SKIPPED)])
    assert details.publish_details(publish, ok=False,
                                   message="the build job ended FAILURE").splitlines() == [
        "**FAILED** publish: demo/hello change 3,1",
        "the build job ended FAILURE",
        f"- build: **failed** — the build job ended FAILURE — [log]({LOG})",
        "- publish: skipped",
    ]
    entries = [QueueEntry(workflow_id="publish/demo/hello/4", change="demo/hello 4,1",
                          state=EntryState.READY, sequence=2),
               QueueEntry(workflow_id="publish/demo/hello/3", change="demo/hello 3,1",
                          state=EntryState.FAILED, sequence=1, detail="publishing failed")]
    assert details.publish_queue_details("stable", entries).splitlines() == [
        "**publish queue stable**: 1 change(s) in the queue, **1 failed** recently",
        "- #1 demo/hello 3,1: **failed** — publishing failed",
        "- #2 demo/hello 4,1: ready",
    ]
