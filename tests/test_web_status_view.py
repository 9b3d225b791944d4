"""The status page's view (lockmaster/web/status_view.py), pure: from the workflows' `status`
answers to /api/status, without Temporal."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ChangeRef
from lockmaster.model.check import CheckStatus, JobStatus
from lockmaster.model.gate import ItemView, JobView, QueueStatus
from lockmaster.model.nodes import Driver, NodeRequest, PoolStatus, RequestState
from lockmaster.model.testenv import BrokerStatus, Lease
from lockmaster.model.work import StuckView
from lockmaster.starters.status import PipelineStatus
from lockmaster.web.status_view import (
    Estimates,
    FilterError,
    Filters,
    change_entries,
    status_view,
)
from tests.deployment import make_config

NOW = 1_000_000.0
PIPELINES = [
    {"name": "check", "trigger": [{"event": "patchset-created"}]},
    {"name": "gate", "manager": "dependent",
     "trigger": [{"event": "comment-added", "approval": {"Workflow": 1}}]},
]


@pytest.fixture
def config(tmp_path: Path) -> LockmasterConfig:
    jobs = ["merge-check", {"name": "test", "dependencies": ["merge-check"]}]
    return make_config(
        tmp_path, pipelines=PIPELINES,
        projects=[{"name": name, "connection": "local", "queue": "shared",
                   "pipelines": {"gate": {"jobs": jobs}, "check": {"jobs": jobs}}}
                  for name in ("org/a", "org/b")],
        jobs=[{"name": "merge-check", "run": "true"}, {"name": "test", "run": "true"}])


def job(name: str, state: str = "waiting", elapsed: float | None = None,
        estimated: float | None = None) -> JobView:
    return JobView(name=name, voting=True, state=state, elapsed=elapsed, estimated=estimated,
                   attempt=1 if state != "waiting" else 0)


def item(number: int, *, project: str = "org/a", active: bool = True,
         ahead: tuple[int, ...] = (), jobs: list[JobView] | None = None,
         merge: str = "ok") -> ItemView:
    key = f"{number},1"
    return ItemView(change=key, project=project, branch="master", active=active, failing=False,
                    changes=" ".join([*(f"{n},1" for n in ahead), key]), merge=merge,
                    enqueued_at=NOW - 100,
                    jobs=jobs if jobs is not None else [job("merge-check"), job("test")])


def gate(*items: ItemView, window: int = 0, stuck: list[StuckView] | None = None
         ) -> PipelineStatus:
    return PipelineStatus(pipeline="gate", manager="dependent", queues=[QueueStatus(
        queue="shared", pipeline="gate", window=window, idle=False, items=list(items),
        stuck=stuck or [])])


def items_of(view: dict) -> list[dict]:
    return [i for p in view["pipelines"] for q in p["queues"] for i in q["items"]]


def test_items_in_order_with_their_speculative_stack(config: LockmasterConfig) -> None:
    view = status_view([gate(item(1), item(2, ahead=(1,)), item(3, ahead=(1, 2)))], config,
                       now=NOW)
    rows = items_of(view)
    assert [r["change"] for r in rows] == ["1,1", "2,1", "3,1"]
    assert [r["position"] for r in rows] == [1, 2, 3]
    assert rows[2]["stack"] == ["1,1", "2,1"]
    assert rows[0]["stack"] == []
    assert rows[1]["anchor"] == "change-2-1"
    assert rows[0]["in_queue"] == 100


def test_running_job_elapsed_estimate_remaining_and_progress(config: LockmasterConfig) -> None:
    jobs = [job("merge-check", "SUCCESS", estimated=10.0),
            job("test", "running", elapsed=40.0, estimated=100.0)]
    view = status_view([gate(item(1, jobs=jobs))], config, now=NOW)
    row = items_of(view)[0]
    test = row["jobs"][1]
    assert test["started"] == NOW - 40
    assert test["elapsed"] == 40 and test["estimated"] == 100
    assert test["remaining"] == 60
    assert test["progress"] == pytest.approx(0.4)
    assert row["jobs"][0]["progress"] == 1.0 and row["jobs"][0]["remaining"] == 0
    # The item: merge-check then test (a chain): 10 + 100 in all, 60 left.
    assert row["estimate"]["duration"] == 110
    assert row["estimate"]["remaining"] == 60
    assert row["progress"] == pytest.approx(1 - 60 / 110)
    assert row["state"] == "running"


def test_elapsed_is_by_the_wall_clock_not_the_queues_last_task(config: LockmasterConfig) -> None:
    # The queue last woke 35 s after the build started; the page asks 40 s after.
    stale = JobView(name="test", voting=True, state="running", attempt=1, elapsed=35.0,
                    started=NOW - 40, estimated=100.0)
    row = items_of(status_view([gate(item(1, jobs=[job("merge-check", "SUCCESS"), stale]))],
                               config, now=NOW))[0]
    assert row["jobs"][1]["elapsed"] == 40 and row["jobs"][1]["remaining"] == 60


def test_no_estimate_is_null_not_a_guess(config: LockmasterConfig) -> None:
    jobs = [job("merge-check", "running", elapsed=5.0), job("test")]
    row = items_of(status_view([gate(item(1, jobs=jobs))], config, now=NOW))[0]
    assert row["jobs"][0]["progress"] is None and row["jobs"][0]["remaining"] is None
    assert row["estimate"]["remaining"] is None and row["estimate"]["duration"] is None
    assert row["estimate"]["basis"]["source"] is None


def test_one_job_without_an_estimate_leaves_the_item_unknown(config: LockmasterConfig) -> None:
    jobs = [job("merge-check", "SUCCESS", estimated=10.0), job("test", "running", elapsed=1.0)]
    row = items_of(status_view([gate(item(1, jobs=jobs))], config, now=NOW))[0]
    assert row["estimate"]["remaining"] is None and row["estimate"]["duration"] is None
    assert row["progress"] == 0.5  # one of two jobs done


def test_results_durations_come_before_the_queue_average(config: LockmasterConfig) -> None:
    jobs = [job("merge-check", "SUCCESS", estimated=10.0),
            job("test", "running", elapsed=30.0, estimated=100.0)]
    estimates = Estimates(job_seconds={("org/a", "gate"): {"test": 60.0}}, source="results")
    row = items_of(status_view([gate(item(1, jobs=jobs))], config, estimates=estimates,
                               now=NOW))[0]
    assert row["jobs"][1]["estimated"] == 60 and row["jobs"][1]["remaining"] == 30
    assert row["estimate"]["basis"]["source"] == "results"


def test_outside_the_window_says_position_and_window_and_when_it_starts(
        config: LockmasterConfig) -> None:
    run = [job("merge-check", "SUCCESS", estimated=10.0),
           job("test", "running", elapsed=20.0, estimated=50.0)]
    waiting = [job("merge-check", estimated=10.0), job("test", estimated=50.0)]
    view = status_view([gate(item(1, jobs=run), item(2, ahead=(1,), jobs=run),
                             item(3, active=False, jobs=waiting),
                             item(4, active=False, jobs=waiting), window=2)], config, now=NOW)
    rows = items_of(view)
    third, fourth = rows[2], rows[3]
    assert third["waiting"]["kind"] == "window"
    assert third["waiting"]["position"] == 3 and third["waiting"]["window"] == 2
    assert "window 2" in third["waiting"]["text"]
    # Item 3 starts when item 1 (two places ahead) is done: in 30 s; then runs 60 s.
    assert third["estimate"]["starts_in"] == 30
    assert third["estimate"]["remaining"] == 90
    # Item 4 starts when item 2 is done (30 s).
    assert fourth["estimate"]["starts_in"] == 30
    assert rows[0]["waiting"] is None


def test_reset_rate_adds_the_expected_restarts(config: LockmasterConfig) -> None:
    run = [job("merge-check", "SUCCESS", estimated=10.0),
           job("test", "running", elapsed=20.0, estimated=50.0)]
    plain = items_of(status_view([gate(item(1, jobs=run), item(2, jobs=run),
                                       item(3, jobs=run))], config, now=NOW))
    rated = items_of(status_view([gate(item(1, jobs=run), item(2, jobs=run), item(3, jobs=run))],
                                 config, estimates=Estimates(reset_rates={"shared": 0.25}),
                                 now=NOW))
    # The third item has two items ahead, each failing a quarter of the time: half a restart
    # of its 60 s expected.
    assert rated[2]["estimate"]["basis"]["expected_resets"] == pytest.approx(0.5)
    assert rated[2]["estimate"]["remaining"] == pytest.approx(plain[2]["estimate"]["remaining"]
                                                              + 30)
    assert rated[0]["estimate"]["remaining"] == plain[0]["estimate"]["remaining"]
    assert view_rate(rated_view := status_view([gate(item(1))], config,
                                               estimates=Estimates(reset_rates={"shared": 0.25}),
                                               now=NOW)) == 0.25, rated_view


def view_rate(view: dict) -> float | None:
    return view["pipelines"][0]["queues"][0]["reset_rate"]


def test_waiting_for_a_node_says_its_place_in_the_pool_queue(config: LockmasterConfig) -> None:
    def request(rid: str, holder: str, precedence: int, arrived: float) -> NodeRequest:
        return NodeRequest(id=rid, labels=["local"], precedence=precedence, holder=holder,
                           arrived=arrived, state=RequestState.PENDING)

    pool = PoolStatus(provider="local", pool="main", driver=Driver.LOCAL, enabled=True,
                      max_servers=1, nodes=[], requests=[
                          request("r1", "check 9,1 test", 1, NOW - 50),
                          request("r2", "gate 1,1 merge-check", 0, NOW - 10),
                          request("r3", "gate 2,1 merge-check", 0, NOW - 5),
                          NodeRequest(id="r0", labels=["local"], holder="gate 0,1 x",
                                      state=RequestState.FULFILLED)])
    jobs = [job("merge-check", "running", elapsed=3.0), job("test")]
    view = status_view([gate(item(1, jobs=jobs), item(2, ahead=(1,), jobs=jobs))], config,
                       pools=[pool], now=NOW)
    first, second = items_of(view)
    why = second["jobs"][0]["waiting"]
    # Gate before check: r2, r3, then r1 (pending ones only).
    assert why["kind"] == "node" and why["position"] == 1 and why["queue_length"] == 3
    assert why["pool"] == "local/main"
    assert "2nd in the queue of 3" in why["text"]
    assert first["jobs"][0]["waiting"]["position"] == 0
    assert second["waiting"] == why  # nothing of it runs: the item says what it waits for
    # `test` needs merge-check first.
    assert first["jobs"][1]["waiting"] == {
        "kind": "dependency", "jobs": ["merge-check"],
        "text": "waiting for merge-check to finish"}


def test_waiting_for_a_te_says_its_place_in_the_broker_queue(config: LockmasterConfig) -> None:
    def lease(lid: str, holder: str, arrived: float) -> Lease:
        return Lease(id=lid, holder=holder, public_key="k", ttl=60, precedence=0,
                     arrived=arrived, expires=arrived + 60)

    broker = BrokerStatus(label="default", tes=[], draining_hosts=[], waiting=[
        lease("l2", "gate org/a 1,1 merge-check", NOW - 1),
        lease("l1", "someone@laptop", NOW - 30)])
    jobs = [job("merge-check", "running", elapsed=3.0), job("test")]
    row = items_of(status_view([gate(item(1, jobs=jobs))], config, brokers=[broker],
                               now=NOW))[0]
    why = row["jobs"][0]["waiting"]
    assert why["kind"] == "te" and why["label"] == "default"
    assert why["position"] == 1 and why["queue_length"] == 2


def test_stuck_report_is_the_items_reason(config: LockmasterConfig) -> None:
    stuck = [StuckView(key="submit/abc", what="report and submit 2,1", since=NOW - 120,
                       failures=4, error="review system says 503"),
             StuckView(key="merge/21,1/0", what="merge 1,1 21,1", since=NOW - 5, failures=1)]
    rows = items_of(status_view([gate(item(1), item(2, ahead=(1,)), item(21, ahead=(1, 2)),
                                      stuck=stuck)], config, now=NOW))
    assert rows[0]["waiting"] is None or rows[0]["waiting"]["kind"] != "stuck"
    assert rows[2]["waiting"]["kind"] == "stuck" and rows[2]["waiting"]["what"].startswith("merge")
    assert rows[1]["waiting"]["kind"] == "stuck"
    assert rows[1]["waiting"]["failures"] == 4
    assert "failing for 120s" in rows[1]["waiting"]["text"]
    assert "503" in rows[1]["waiting"]["text"]


def test_merging_item_says_so(config: LockmasterConfig) -> None:
    row = items_of(status_view([gate(item(1, merge="pending"))], config, now=NOW))[0]
    assert row["waiting"]["kind"] == "merge" and row["state"] == "merging"


def test_checks_are_queues_per_project(config: LockmasterConfig) -> None:
    def check(project: str, number: int) -> CheckStatus:
        return CheckStatus(
            change=ChangeRef(connection="local", project=project, branch="master",
                             number=number, patchset=2), pipeline="check", phase="running",
            changes=f"{number},2",
            jobs=[JobStatus(name="merge-check", voting=True, state="running",
                            started=NOW - 7, attempt=1),
                  JobStatus(name="test", voting=True, state="waiting")])

    pipe = PipelineStatus(pipeline="check", manager="independent",
                          checks=[check("org/a", 5), check("org/b", 6), check("org/a", 7)])
    estimates = Estimates(job_seconds={("org/a", "check"): {"merge-check": 14.0}})
    view = status_view([pipe], config, estimates=estimates, now=NOW)
    queues = view["pipelines"][0]["queues"]
    assert [q["name"] for q in queues] == ["org/a", "org/b"]
    assert [i["change"] for i in queues[0]["items"]] == ["5,2", "7,2"]
    first = queues[0]["items"][0]
    assert first["jobs"][0]["elapsed"] == 7 and first["jobs"][0]["progress"] == 0.5
    assert first["jobs"][1]["waiting"]["kind"] == "dependency"
    assert queues[1]["items"][0]["jobs"][0]["progress"] is None  # org/b: no durations


def test_filters(config: LockmasterConfig) -> None:
    run = [job("merge-check", "SUCCESS", estimated=10.0),
           job("test", "running", elapsed=20.0, estimated=50.0)]
    waiting = [job("merge-check", estimated=10.0), job("test", estimated=50.0)]
    status = [gate(item(1, jobs=run), item(2, project="org/b", jobs=run),
                   item(3, active=False, jobs=waiting), window=2)]
    whole = items_of(status_view(status, config, now=NOW))
    only_b = status_view(status, config, filters=Filters(project="org/b"), now=NOW)
    assert [i["change"] for i in items_of(only_b)] == ["2,1"]
    assert only_b["matched"] == 1
    one = status_view(status, config, filters=Filters(change=3), now=NOW)
    # Filtered, the item keeps the estimate that the items ahead of it give.
    assert items_of(one) == [whole[2]]
    none = status_view(status, config, filters=Filters(change=99), now=NOW)
    assert none["matched"] == 0 and none["pipelines"][0]["queues"] == []
    assert change_entries(status_view(status, config, now=NOW), 2)[0]["queue"] == "shared"
    assert change_entries(status_view(status, config, now=NOW), 99) == []


def test_filter_values_that_name_nothing_are_refused(config: LockmasterConfig) -> None:
    with pytest.raises(FilterError) as unknown:
        Filters.parse(config, "org/zzz", None)
    assert "org/a" in unknown.value.hint
    with pytest.raises(FilterError) as bad:
        Filters.parse(config, None, "abc")
    assert "number" in str(bad.value)
    assert Filters.parse(config, "org/a", "12,3") == Filters(project="org/a", change=12)
    assert Filters.parse(config, "", " ") == Filters()


def test_the_queues_current_details_mirror_its_status_rows(config: LockmasterConfig) -> None:
    """What the Web UI shows as the queue's current details and the status page's rows come
    from the same answer and say the same: order, change, what it is tested on, its state."""
    from lockmaster.workflows.details import queue_details

    run = [job("merge-check", "SUCCESS"), job("test", "running", elapsed=3.0)]
    failing = item(2, ahead=(1,), jobs=[job("merge-check", "FAILURE"), job("test", "SKIPPED")])
    failing = failing.model_copy(update={"failing": True})
    status = gate(item(1, jobs=run), failing, item(3, ahead=(1,), merge="pending"),
                  item(4, active=False), window=3)
    details = queue_details(status.queues[0]).splitlines()
    rows = items_of(status_view([status], config, now=NOW))
    lines = [line for line in details if line[:1].isdigit()]
    assert len(lines) == len(rows) == 4
    states = []
    for line, row in zip(lines, rows, strict=True):
        assert line.startswith(f"{row['position']}. {row['change']} {row['project']}")
        assert row["state"] in line.replace("**", "")
        if row["stack"]:
            assert f"tested on {' '.join([*row['stack'], row['change']])}" in line
        states.append(row["state"])
    assert states == ["running", "failing", "merging", "waiting outside the window"]
