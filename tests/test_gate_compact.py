"""The gate queue's carried state as JSON (model/gate_compact.py): exact, and bounded.

The queue's continue-as-new input used to grow with the square of the queue (every item carries
the changes ahead of it, its speculative state the same again per project): the full soak's
queue wedged when it passed Temporal's 2 MB payload limit.
"""

from __future__ import annotations

import hashlib
import json

from temporalio.contrib.pydantic import pydantic_data_converter

from lockmaster.model.build import JobSpec
from lockmaster.model.change import ChangeRef
from lockmaster.model.check import ReportLabels
from lockmaster.model.gate import (
    EnqueueRequest,
    FrozenJobs,
    GateBuild,
    GateInput,
    GateItem,
    QueueState,
)
from lockmaster.model.gate_compact import FORM
from lockmaster.model.state import ProjectState, SpeculativeState
from lockmaster.model.work import Work, WorkOptions

# Temporal's limits: a payload over 2 MB fails the task; it warns from 512 KB.
PAYLOAD_WARN = 512 * 1024


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _ref(n: int, projects: int) -> ChangeRef:
    project = f"org/p{n % projects:02d}"
    return ChangeRef(connection="gerrit", project=project, branch="master", number=1000 + n,
                     patchset=1 + n % 3, commit=_sha(f"c{n}"), change_id="I" + _sha(f"id{n}"),
                     url=f"https://review.example.org/c/{project}/+/{1000 + n}")


JOBS = [JobSpec(name=name, run=f"playbooks/{name}.yaml", nodeset=["ubuntu-noble"])
        for name in ("merge", "test", "lint")]


def queue_input(items: int, projects: int = 20, arriving: int = 20) -> GateInput:
    """A busy queue as the gate carries it: every item tested on all the items ahead, across
    `projects` projects (deterministic merges: a project's head depends on what is merged into
    it), three builds each, merges and enqueue requests in flight."""
    queue: list[GateItem] = []
    for i in range(items):
        changes = [_ref(j, projects) for j in range(i + 1)]
        states: dict[str, ProjectState] = {}
        for change in changes:
            state = states.setdefault(change.project, ProjectState(
                project=change.project, connection="gerrit", branch="master",
                base=_sha("base" + change.project), head=""))
            state.merged.append(change)
            state.head = _sha(f"{len(state.merged)}{change.project}")
        key = " ".join(c.key for c in changes)
        queue.append(GateItem(
            id=f"item-{i}", change=changes[-1], pipeline="gate", jobs=JOBS, enqueued_at=1.0,
            changes=changes, buildset=1, merge="ok",
            state=SpeculativeState(changes=changes, projects=states, merge_date=7),
            builds=[GateBuild(build_id=_sha(f"b{i}{job.name}")[:12], job=job.name, attempt=1,
                              changes=key, started=2.0) for job in JOBS]))
    graphs = {f"org/p{p:02d}": FrozenJobs(jobs=JOBS) for p in range(projects)}
    work = {f"merge-{i}": Work(
        key=f"merge-{i}", kind="merge", activity="prepare_state",
        arg={"changes": [c.model_dump(mode="json") for c in queue[i].changes],
             "merge_date": 7},
        options=WorkOptions(task_queue="lockmaster-merger", start_to_close=60))
        for i in range(max(0, items - 5), items)}
    return GateInput(
        state=QueueState(queue="integrated", pipeline="gate", window=20, window_floor=3,
                         window_increase_amount=1, window_decrease_factor=2, items=queue,
                         merged_keys=[f"{n},1" for n in range(500)]),
        labels=ReportLabels(), work=work,
        arriving=[EnqueueRequest(change=_ref(items + k, projects), pipeline="gate", jobs=JOBS,
                                 other_projects=graphs) for k in range(arriving)])


def _wire(inp: GateInput) -> bytes:
    """What Temporal stores: the pydantic data converter's payload."""
    payload, = pydantic_data_converter.payload_converter.to_payloads([inp])
    return payload.data


def _read(data: bytes) -> GateInput:
    payload, = pydantic_data_converter.payload_converter.to_payloads([None])
    payload.data = data
    payload.metadata["encoding"] = b"json/plain"
    back, = pydantic_data_converter.payload_converter.from_payloads([payload], [GateInput])
    return back


def test_a_busy_queue_round_trips_exactly_through_temporals_converter() -> None:
    inp = queue_input(40, projects=7, arriving=3)
    data = _wire(inp)
    assert json.loads(data)["form"] == FORM
    assert _read(data) == inp


def test_the_carried_state_grows_linearly_and_stays_under_temporals_warning() -> None:
    plain_100 = len(json.dumps(queue_input(100).model_dump(mode="python"), default=str))
    wire_100, wire_200 = len(_wire(queue_input(100))), len(_wire(queue_input(200)))
    # Written plainly, a 100-item queue of 20 projects is ~5 MB: over the 2 MB limit.
    assert plain_100 > 2 * 1024 * 1024
    assert wire_200 < PAYLOAD_WARN, wire_200
    assert wire_200 < 2.1 * wire_100, (wire_100, wire_200)


def test_lists_that_differ_from_the_derivable_ones_are_written_out() -> None:
    inp = queue_input(6, projects=3, arriving=0)
    items = inp.state.items
    # A state built before the item ahead left (its changes are no longer the item's).
    items[2].state.changes = items[2].state.changes[1:]  # type: ignore[union-attr]
    # A project's merged list in another order than the item's changes.
    project = items[4].state.projects["org/p00"]  # type: ignore[union-attr]
    project.merged = list(reversed(project.merged))
    # Builds of an older buildset, and an item whose changes do not extend the one ahead.
    items[3].builds[0].changes = "999,1 " + items[3].builds[0].changes
    items[5].changes = [items[5].change]
    assert _read(_wire(inp)) == inp


def test_data_that_looks_like_a_marker_is_kept_as_data() -> None:
    inp = queue_input(3, projects=2, arriving=1)
    inp.state.items[1].jobs = [JOBS[0].model_copy(update={"vars": {"$c": "0"}})]
    inp.work["merge-1"].context = {"$c": 1, "nested": {"$p": 0}, "lit": {"$lit": {"$j": 0}},
                                   "ahead": {"$ahead": 0, "more": []}}
    assert _read(_wire(inp)) == inp


def test_the_plain_form_is_still_read_and_python_dumps_stay_plain() -> None:
    inp = queue_input(4, projects=2, arriving=1)
    plain = inp.model_dump(mode="python")
    assert "form" not in plain and plain["state"]["items"][3]["changes"][0]["number"] == 1000
    assert GateInput.model_validate(plain) == inp
    assert GateInput.model_validate_json(json.dumps(inp.model_dump(mode="python"),
                                                    default=str)) == inp
