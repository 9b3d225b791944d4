"""What the gate remembers of the changes it submits (pipelines/gate_tested.py, pure): the
successful builds that made artifacts and the state they tested, one record per change, the
latest kept, bounded, and carried in the queue's state across continue-as-new."""

from __future__ import annotations

from lockmaster.model.build import Artifact, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.check import ReportLabels
from lockmaster.model.gate import GateBuild, GateInput, GateItem, QueueState
from lockmaster.model.state import ProjectState, SpeculativeState
from lockmaster.pipelines import gate_tested
from lockmaster.pipelines.gate_tested import MAX_TESTED, find_tested, remember

record_of = gate_tested.tested_record  # (not `test...`: pytest would collect it)


def change(number: int, patchset: int = 1, project: str = "p") -> ChangeRef:
    return ChangeRef(connection="c", project=project, branch="master", number=number,
                     patchset=patchset, commit=f"{number:040x}")


def item(number: int, patchset: int = 1, *, builds: list[GateBuild] | None = None) -> GateItem:
    ahead, own = change(number - 1), change(number, patchset)
    state = SpeculativeState(changes=[ahead, own], merge_date=7, projects={"p": ProjectState(
        project="p", connection="c", branch="master", base="a" * 40, head="b" * 40,
        merged=[ahead, own])})
    return GateItem(id=f"i{number}", change=own, pipeline="gate", jobs=[], enqueued_at=0.0,
                    state=state, buildset=3, builds=builds if builds is not None else [
                        build("package-build", Result.SUCCESS, artifacts=True),
                        build("lint", Result.SUCCESS),
                        build("package-build", Result.FAILURE, artifacts=True)])


def build(job: str, result: Result, artifacts: bool = False) -> GateBuild:
    made = [Artifact(name="packages", url=f"http://logs/{job}/packages/", job=job, project="p",
                     change=1, patchset=1)] if artifacts else []
    return GateBuild(build_id=f"{job}-{result}", job=job, attempt=1, changes="", result=result,
                     log_url=f"http://logs/{job}/", artifacts=made)


def queue_state() -> QueueState:
    return QueueState(queue="q", pipeline="gate", window=0, window_floor=3,
                      window_increase_amount=1, window_decrease_factor=2)


def test_a_record_keeps_the_successful_builds_with_artifacts_and_the_tested_state() -> None:
    record = record_of(item(5), "gate/q", 12.0)
    assert record is not None
    assert [(b.job, b.build_id) for b in record.builds] == [("package-build",
                                                             "package-build-SUCCESS")]
    assert record.state.head == "b" * 40 and record.merge_date == 7
    assert (record.gate_id, record.item_id, record.buildset) == ("gate/q", "i5", 3)
    assert record.changes == "4,1 5,1" and record.recorded_at == 12.0
    # Nothing to promote: no record.
    assert record_of(item(5, builds=[build("lint", Result.SUCCESS)]), "gate/q", 0) is None
    assert record_of(item(5).model_copy(update={"state": None}), "gate/q", 0) is None


def test_the_latest_record_of_a_change_is_kept_and_the_list_is_bounded() -> None:
    state = queue_state()
    first = record_of(item(5, 1), "gate/q", 1.0)
    again = record_of(item(5, 2), "gate/q", 2.0)
    assert first is not None and again is not None
    remember(state, first)
    remember(state, again)
    assert len(state.tested) == 1
    found = find_tested(state, "p", 5)
    assert found is not None and found.change.patchset == 2
    assert find_tested(state, "other", 5) is None and find_tested(state, "p", 6) is None
    for number in range(10, 10 + MAX_TESTED + 5):
        record = record_of(item(number), "gate/q", float(number))
        assert record is not None
        remember(state, record)
    assert len(state.tested) == MAX_TESTED
    assert find_tested(state, "p", 5) is None  # the oldest went first
    assert find_tested(state, "p", 10 + MAX_TESTED + 4) is not None
    # Carried across continue-as-new: the queue's input round-trips with its records.
    inp = GateInput(state=state, labels=ReportLabels(), projects=["p"],
                    layout_projects=["p"])
    assert GateInput.model_validate_json(inp.model_dump_json()).state.tested == state.tested
