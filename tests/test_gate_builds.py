"""What the gate asks the executor for, and what a batch of submits does to the queue (pure)."""

from __future__ import annotations

from lockmaster.model.gate import SubmitResult
from lockmaster.pipelines.gate_actions import ReportItemAction
from lockmaster.pipelines.gate_builds import batch_done, build_request
from tests.test_gate_queue import Sim


def test_build_request_names_the_state_position_and_zuul_log_path() -> None:
    sim = Sim()
    sim.add(1, 2)
    [(key, _, action)] = [v for v in sim.running.values() if v[0] == "2,1"]
    request = build_request(sim.queue, action, precedence=0)
    assert request is not None
    assert [c.key for c in request.state.changes] == ["1,1", "2,1"]
    assert request.position == 1 and request.precedence == 0
    assert request.log_path == f"02/2/1/gate/merge/{action.build.build_id[:7]}"
    sim.queue.leave(sim.queue.item(key), "dequeued")  # type: ignore[arg-type]
    assert build_request(sim.queue, action, precedence=0) is None  # its item left


def _succeeded(sim: Sim, *numbers: int) -> list[str]:
    sim.hold_submits = True
    for n in numbers:
        sim.pass_all(n)
    [batch] = sim.held
    return [a.key for a in batch.reports]


def test_a_refused_submit_stops_the_batch_and_the_rest_go_back_to_the_rules() -> None:
    sim = Sim(batches=True)
    sim.add(1, 2, 3)
    keys = _succeeded(sim, 3, 2, 1)
    assert keys == ["1,1", "2,1", "3,1"]
    follow = batch_done(sim.queue, keys, [SubmitResult(ok=True),
                                          SubmitResult(ok=False, error="no")], None)
    assert [k for k, _ in follow] == ["1,1", "2,1"]
    # The refused one is reported merge-failure; the one after it was never tried.
    reports = [a.action for a in follow[1][1] if isinstance(a, ReportItemAction)]
    assert reports == ["merge-failure"]
    assert sim.queue.item("3,1") is not None and sim.queue.item("3,1").outcome is None  # type: ignore[union-attr]
    assert sim.queue.merged("1,1")


def test_a_batch_that_failed_as_a_whole_fails_its_first_item_only() -> None:
    sim = Sim(batches=True)
    sim.add(1, 2)
    keys = _succeeded(sim, 2, 1)
    follow = batch_done(sim.queue, keys, [], "the review system answered 500")
    assert [k for k, _ in follow] == ["1,1"]
    [report] = [a for a in follow[0][1] if isinstance(a, ReportItemAction)]
    assert "answered 500" in report.message
    assert sim.queue.item("2,1").outcome is None  # type: ignore[union-attr]
