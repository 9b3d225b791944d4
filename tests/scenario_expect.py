"""Check a `lockmaster simulate` JSON report against a scenario's `expect:` section.

Kinds of expectation (letters are the scenario's change names):
- merged: [A, C]                       the system merged exactly these, in this order
- merged-any-order: [A, B]             exactly these, in any order (independent queues)
- status: {A: MERGED}                  final status in the review system
- actions: {A: [start, success]}       every report's action, in order
- last-labels: {A: {Verified: 2}}      labels of the last report
- message-contains: {B: "text"}        some report's message contains the text
- builds: [{job, change, changes: [A, B], result, pipeline}]   each matches at least one build
- no-builds: [...]                     none matches any build
- build-count: {..., count: N}         exactly N builds match
- no-reports: [{change, pipeline, action}]
- merged-before-report: {merged: B, report: {change: A, action: failure}}
- first-gate-report-after: {change: B, event: 1}    not reported before that event was applied
- starts-after-merge: {change: C, merged: A}        C's first build started after A merged
"""

from __future__ import annotations

from typing import Any


def _changes_key(report: dict[str, Any], letters: list[str]) -> str:
    changes = report["changes"]
    return " ".join(f"{changes[x]['number']},{changes[x]['patchset']}" for x in letters)


def _matches(report: dict[str, Any], build: dict[str, Any], want: dict[str, Any]) -> bool:
    for key, value in want.items():
        if key == "changes":
            if build["changes"] != _changes_key(report, value):
                return False
        elif build.get(key) != value:
            return False
    return True


def check(report: dict[str, Any], expect: dict[str, Any]) -> list[str]:
    """Every unmet expectation, as a sentence (empty: all met)."""
    problems: list[str] = []
    changes = report["changes"]
    builds = report["builds"]
    merged = [m["change"] for m in report["merged"]]
    for kind, want in expect.items():
        if kind == "merged":
            if merged != want:
                problems.append(f"merged {merged}, expected {want}")
        elif kind == "merged-any-order":
            if sorted(merged) != sorted(want):
                problems.append(f"merged {merged}, expected {sorted(want)} in any order")
        elif kind == "status":
            for x, status in want.items():
                if changes[x]["status"] != status:
                    problems.append(f"{x} is {changes[x]['status']}, expected {status}")
        elif kind == "actions":
            for x, actions in want.items():
                got = [r["action"] for r in changes[x]["reports"]]
                if got != actions:
                    problems.append(f"{x} reports {got}, expected {actions}")
        elif kind == "last-labels":
            for x, labels in want.items():
                reports = changes[x]["reports"]
                got = reports[-1]["labels"] if reports else None
                if got != labels:
                    problems.append(f"{x} last labels {got}, expected {labels}")
        elif kind == "message-contains":
            for x, text in want.items():
                if not any(text in r["message"] for r in changes[x]["reports"]):
                    problems.append(f"no report to {x} says {text!r}")
        elif kind == "builds":
            for w in want:
                if not any(_matches(report, b, w) for b in builds):
                    problems.append(f"no build like {w}")
        elif kind == "no-builds":
            for w in want:
                found = [b for b in builds if _matches(report, b, w)]
                if found:
                    problems.append(f"unexpected build(s) like {w}: {found[:2]}")
        elif kind == "build-count":
            w = {k: v for k, v in want.items() if k != "count"}
            n = len([b for b in builds if _matches(report, b, w)])
            if n != want["count"]:
                problems.append(f"{n} builds like {w}, expected {want['count']}")
        elif kind == "no-reports":
            for w in want:
                for r in changes[w["change"]]["reports"]:
                    if all(r.get(k) == v for k, v in w.items() if k != "change"):
                        problems.append(f"unexpected report {r['action']} to {w['change']}")
        elif kind == "merged-before-report":
            at = next((m["at"] for m in report["merged"] if m["change"] == want["merged"]), None)
            r = want["report"]
            rep = next((x["at"] for x in changes[r["change"]]["reports"]
                        if x["action"] == r["action"]), None)
            if at is None or rep is None or not at < rep:
                problems.append(f"{want['merged']} merged at {at}, not before {r} at {rep}")
        elif kind == "first-gate-report-after":
            event_at = report["events"][want["event"]]["at"]
            first = [r["at"] for r in changes[want["change"]]["reports"]
                     if r["pipeline"] == "gate"]
            if first and first[0] < event_at:
                problems.append(f"{want['change']} reported at {first[0]} before event "
                                f"{want['event']} at {event_at}")
        elif kind == "starts-after-merge":
            at = next((m["at"] for m in report["merged"] if m["change"] == want["merged"]), None)
            starts = [b["started"] for b in builds if b["change"] == want["change"]]
            if at is None or not starts or min(starts) < at:
                problems.append(f"{want['change']} started at {min(starts, default=None)}, "
                                f"before {want['merged']} merged at {at}")
        else:
            problems.append(f"unknown expectation {kind!r}")
    return problems
