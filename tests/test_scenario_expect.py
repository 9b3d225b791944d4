"""tests/scenario_expect.py: each kind of expectation passes on a report that meets it and fails
(with a sentence) on one that does not. A hand-written report; nothing runs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.scenario_expect import check


def _report() -> dict[str, Any]:
    def rep(pipeline: str, action: str, message: str, at: float,
            labels: dict[str, int] | None = None) -> dict[str, Any]:
        return {"pipeline": pipeline, "action": action, "labels": labels or {},
                "message": message, "at": at, "patchset": 1}

    def build(job: str, change: str, changes: str, result: str, started: float,
              ended: float | None, patchset: int = 1, attempt: int = 1,
              pipeline: str = "gate") -> dict[str, Any]:
        return {"pipeline": pipeline, "job": job, "change": change, "changes": changes,
                "result": result, "attempt": attempt, "started": started, "ended": ended,
                "patchset": patchset}

    return {
        "scenario": "hand-written",
        "elapsed": 3.0,
        "changes": {
            "A": {"number": 1, "patchset": 2, "project": "org/project", "branch": "master",
                  "status": "MERGED",
                  "reports": [rep("check", "start", "Build started (check)", 0.1),
                              rep("check", "dequeue", "Build canceled (check)", 0.5),
                              rep("gate", "start", "Starting gate jobs.", 0.6, {"Verified": 0}),
                              rep("gate", "success", "Build succeeded (gate).", 2.0,
                                  {"Verified": 2})]},
            "B": {"number": 2, "patchset": 1, "project": "org/project", "branch": "master",
                  "status": "NEW",
                  "reports": [rep("gate", "failure",
                                  "This change depends on a change that failed to merge.\n\n"
                                  "Change 1,1 is needed.", 1.0, {"Verified": -2})]},
        },
        "merged": [{"change": "A", "project": "org/project", "branch": "master", "at": 2.1,
                    "patchset": 2}],
        "builds": [
            build("project-merge", "A", "1,1", "ABORTED", 0.2, 0.5, pipeline="check"),
            build("project-merge", "A", "1,2", "SUCCESS", 0.7, 1.0, patchset=2),
            build("project-test1", "A", "1,2", "SUCCESS", 1.0, 1.9, patchset=2),
            build("project-merge", "B", "1,2 2,1", "SUCCESS", 0.8, 1.1),
        ],
        "events": [{"event": "upload", "change": "A", "at": 0.0},
                   {"event": "approve", "change": "A", "at": 0.5}],
    }


MET: list[dict[str, Any]] = [
    {"merged-patchsets": {"A": 2}},
    {"pipeline-actions": {"A": {"check": ["start", "dequeue"], "gate": ["start", "success"]}}},
    {"report-count": {"A": 4, "B": 1}},
    {"message-contains": {"B": ["failed to merge", "Change 1,1 is needed"]}},
    {"message-not-contains": {"A": ["Build failed", "RETRY"]}},
    {"reports": [{"change": "B", "pipeline": "gate", "action": "failure",
                  "labels": {"Verified": -2}, "contains": ["failed to merge", "1,1"],
                  "not-contains": "missing merge requirement"}]},
    {"builds": [{"change": "A", "changes": ["A@1"], "result": "ABORTED"},
                {"change": "B", "changes": ["A", "B"]}]},
    {"build-count": [{"change": "A", "count": 3}, {"change": "B", "count": 1}]},
    {"all-builds": [{"job": "project-merge", "result": "ABORTED"},
                    {"job": "project-merge", "change": "A", "changes": ["A"]},
                    {"job": "project-test1"},
                    {"change": "B"}]},
    {"builds-in-order": [{"change": "A", "result": "ABORTED"}, {"change": "B"},
                         {"job": "project-test1"}]},
    {"starts-after-end": [{"build": {"job": "project-test1"},
                           "after": {"job": "project-merge", "change": "A",
                                     "result": "SUCCESS"}}]},
    {"overlapping": [{"build": {"change": "B"}, "with": {"job": "project-test1"}}]},
]

UNMET: list[tuple[dict[str, Any], str]] = [
    ({"merged-patchsets": {"A": 1}}, "patchset"),
    ({"pipeline-actions": {"A": {"check": ["start"]}}}, "in check"),
    ({"report-count": {"B": 2}}, "1 reports"),
    ({"message-contains": {"B": ["failed to merge", "Change 9,1 is needed"]}}, "9,1"),
    ({"message-not-contains": {"B": "failed to merge"}}, "failed to merge"),
    # Each text must be in the same report: "Starting" and "succeeded" are in two reports.
    ({"reports": [{"change": "A", "contains": ["Starting", "succeeded"]}]}, "no report like"),
    ({"reports": [{"change": "B", "action": "failure", "not-contains": "1,1"}]},
     "no report like"),
    ({"builds": [{"change": "A", "changes": ["A"], "result": "ABORTED"}]}, "no build like"),
    ({"build-count": [{"change": "A", "count": 3}, {"change": "B", "count": 2}]},
     "expected 2"),
    # Four builds, but two entries could only both match the same build.
    ({"all-builds": [{"result": "ABORTED"}, {"result": "ABORTED"}, {"job": "project-test1"},
                     {"change": "B"}]}, "not exactly"),
    ({"all-builds": [{"result": "ABORTED"}]}, "not exactly"),
    ({"builds-in-order": [{"change": "B"}, {"change": "A", "result": "ABORTED"}]},
     "no build like"),
    ({"starts-after-end": [{"build": {"change": "B"},
                            "after": {"job": "project-merge", "change": "A",
                                      "result": "SUCCESS"}}]}, "before"),
    ({"starts-after-end": [{"build": {"job": "project-test2"},
                            "after": {"job": "project-merge"}}]}, "0 builds like"),
    ({"overlapping": [{"build": {"change": "B"}, "with": {"change": "A", "result": "ABORTED"}}]},
     "same time"),
]


@pytest.mark.parametrize("expect", MET, ids=lambda e: next(iter(e)))
def test_met_expectations_pass(expect: dict[str, Any]) -> None:
    assert check(_report(), expect) == []


@pytest.mark.parametrize(("expect", "says"), UNMET, ids=lambda e: str(next(iter(e), e)))
def test_unmet_expectations_fail(expect: dict[str, Any], says: str) -> None:
    problems = check(_report(), expect)
    assert problems and any(says in p for p in problems), problems


def test_a_build_that_never_ended_fails_starts_after_end() -> None:
    report = _report()
    report["builds"][1]["ended"] = None
    problems = check(report, {"starts-after-end": [{"build": {"job": "project-test1"},
                                                    "after": {"job": "project-merge",
                                                              "change": "A"}}]})
    assert problems and "never ended" in problems[0]


def test_the_report_is_not_changed() -> None:
    report = _report()
    before = copy.deepcopy(report)
    for expect in MET:
        check(report, expect)
    assert report == before
