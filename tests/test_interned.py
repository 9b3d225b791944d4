"""Merge, build and enqueue payloads written with each change and job once (model/interned.py).

The full soak ended with Temporal terminating the gate queue ("GrpcMessageTooLarge"): the first
task of a run re-issued the merges in flight of a 150-item queue of 20 projects, rows of 8
states each naming every change ahead (155 KB per row, written plainly).
"""

from __future__ import annotations

import json

from temporalio.contrib.pydantic import pydantic_data_converter

from lockmaster.model.build import BuildRequest, JobSpec
from lockmaster.model.gate import EnqueueRequest, FrozenJobs
from lockmaster.model.interned import FORM, intern, unintern
from lockmaster.model.state import (
    PrepareStateRequest,
    PrepareStateResult,
    PrepareStatesRequest,
    PrepareStatesResult,
)
from tests.test_gate_compact import JOBS, _ref, queue_input

converter = pydantic_data_converter.payload_converter


def _wire(value: object) -> bytes:
    payload, = converter.to_payloads([value])
    return payload.data


def _read(data: bytes, cls: type) -> object:
    payload, = converter.to_payloads([None])
    payload.data = data
    payload.metadata["encoding"] = b"json/plain"
    back, = converter.from_payloads([payload], [cls])
    return back


def merge_row(depth: int, size: int = 8, projects: int = 20) -> PrepareStatesRequest:
    """A row of merges after a reset: each item's state is every change ahead plus its own."""
    changes = [_ref(n, projects) for n in range(depth + size)]
    return PrepareStatesRequest(requests=[
        PrepareStateRequest(changes=changes[:depth + k + 1], merge_date=7)
        for k in range(size)])


def test_a_deep_merge_row_round_trips_and_is_a_tenth_of_its_plain_size() -> None:
    row = merge_row(140)
    plain = len(json.dumps(row.model_dump(mode="python"), default=str))
    data = _wire(row)
    assert json.loads(data)["form"] == FORM
    assert _read(data, PrepareStatesRequest) == row
    # Plainly ~300 KB; 19 such rows (a 150-item queue re-issued) passed gRPC's 4 MB.
    assert plain > 250_000
    assert len(data) < plain / 8, (plain, len(data))
    # The work tracker hands the activity a JSON-mode dict: the same form reaches the worker.
    assert _wire(row.model_dump(mode="json")) == data


def test_merge_results_and_build_requests_name_each_change_once() -> None:
    item = queue_input(120, projects=20, arriving=0).state.items[-1]
    assert item.state is not None
    results = PrepareStatesResult(results=[
        PrepareStateResult(ok=True, state=item.state),
        PrepareStateResult(ok=False, conflict_change=item.change, error="conflict in x.txt")])
    build = BuildRequest(build_id="b1", pipeline="gate", change=item.change, job=JOBS[1],
                         state=item.state, log_path="x/y")
    for value, cls in ((results, PrepareStatesResult), (build, BuildRequest)):
        plain = len(json.dumps(value.model_dump(mode="python"), default=str))
        data = _wire(value)
        assert _read(data, cls) == value
        # The state names every change twice (its order, each project's merged list).
        assert len(data) < plain * 0.45, (cls.__name__, plain, len(data))


def test_an_enqueue_carries_each_job_spec_once() -> None:
    graphs = {f"org/p{p:02d}": FrozenJobs(jobs=JOBS) for p in range(20)}
    request = EnqueueRequest(change=_ref(1, 20), pipeline="gate", jobs=JOBS,
                             other_projects=graphs)
    data = _wire(request)
    assert _read(data, EnqueueRequest) == request
    assert len(json.loads(data)["jobs"]) == len(JOBS)
    assert len(data) < len(json.dumps(request.model_dump(mode="python"))) / 5


def test_marker_like_data_plain_forms_and_python_dumps() -> None:
    job = JobSpec(name="t", run="true", vars={"$c": "0", "form": "interned-v1"})
    request = BuildRequest(build_id="b", pipeline="gate", change=_ref(2, 3), job=job,
                           state=queue_input(3, projects=3, arriving=0).state.items[2].state,
                           log_path="l")
    assert _read(_wire(request), BuildRequest) == request
    # Older workers and recorded histories wrote the plain form: still read.
    plain = request.model_dump(mode="python")
    assert "form" not in plain and plain["change"]["number"] == 1002
    assert BuildRequest.model_validate_json(json.dumps(plain)) == request
    empty = PrepareStatesRequest(requests=[])
    assert _read(_wire(empty), PrepareStatesRequest) == empty
    # Any data that looks like a marker comes back as it was.
    data = {"a": {"$c": 0}, "b": {"$cs": [1]}, "c": {"$lit": {"$j": 2}}, "d": [],
            "e": [_ref(1, 2).model_dump(mode="json"), 3], "form": "interned-v1"}
    assert unintern(json.loads(json.dumps(intern(data)))) == data
