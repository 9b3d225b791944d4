"""Check a `lockmaster simulate` JSON report against a scenario's `expect:` section.

Kinds of expectation (letters are the scenario's change names):
- merged: [A, C]                       the system merged exactly these, in this order
- merged-any-order: [A, B]             exactly these, in any order (independent queues)
- merged-patchsets: {A: 2}             the patchset the system merged
- status: {A: MERGED}                  final status in the review system
- actions: {A: [start, success]}       every report's action, in order
- pipeline-actions: {A: {check: [start, dequeue], gate: [start, success]}}
                                       every report's action in that pipeline, in order
- report-count: {A: 2}                 exactly this many reports (Zuul's `A.reported`)
- last-labels: {A: {Verified: 2}}      labels of the last report
- message-contains: {B: "text"}        some report's message contains the text (a list: each
                                       text is in some report)
- message-not-contains: {B: "text"}    no report's message contains the text (or any of a list)
- reports: [{change, pipeline, action, labels, contains, not-contains}]
                                       each matches at least one report of `change` (the other
                                       keys optional; `contains`/`not-contains`: text or list,
                                       all in / none in that one report's message)
- builds: [{job, change, changes: [A, B], result, pipeline}]   each matches at least one build
- no-builds: [...]                     none matches any build
- build-count: {..., count: N}         exactly N builds match (a list: each of them)
- all-builds: [{...}, ...]             Zuul's assertHistory(ordered=False): every build matches
                                       exactly one entry and every entry exactly one build
- builds-in-order: [{...}, {...}]      builds matching these, one each, started in this order
- starts-after-end: [{build: {...}, after: {...}}]
                                       every build like `build` started once every build like
                                       `after` had ended (both must exist)
- overlapping: [{build: {...}, with: {...}}]
                                       some build like `build` and some like `with` ran at the
                                       same time (each started before the other ended)
- no-reports: [{change, pipeline, action}]
- merged-before-report: {merged: B, report: {change: A, action: failure}}
- first-gate-report-after: {change: B, event: 1}    not reported before that event was applied
- starts-after-merge: {change: C, merged: A}        C's first build started after A merged

Build patterns match a build when every key given equals the build's (`job`, `change`,
`result`, `pipeline`, `attempt`, `patchset`); `changes` lists the build's speculative state in
merge order, each letter at the change's final patchset, or `A@1` for patchset 1 of A.
"""

from __future__ import annotations

from typing import Any


def _change_key(report: dict[str, Any], name: str) -> str:
    changes = report["changes"]
    letter, _, patchset = name.partition("@")
    return f"{changes[letter]['number']},{patchset or changes[letter]['patchset']}"


def _changes_key(report: dict[str, Any], letters: list[str]) -> str:
    return " ".join(_change_key(report, x) for x in letters)


def _matches(report: dict[str, Any], build: dict[str, Any], want: dict[str, Any]) -> bool:
    for key, value in want.items():
        if key == "changes":
            if build["changes"] != _changes_key(report, value):
                return False
        elif build.get(key) != value:
            return False
    return True


def _texts(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _report_matches(report: dict[str, Any], want: dict[str, Any]) -> bool:
    for key, value in want.items():
        if key == "change":
            continue
        if key == "contains":
            if not all(t in report["message"] for t in _texts(value)):
                return False
        elif key == "not-contains":
            if any(t in report["message"] for t in _texts(value)):
                return False
        elif report.get(key) != value:
            return False
    return True


def _pair_up(report: dict[str, Any], builds: list[dict[str, Any]],
             wants: list[dict[str, Any]]) -> bool:
    """A one-to-one pairing of every build with an entry matching it (augmenting paths)."""
    if len(builds) != len(wants):
        return False
    owner: dict[int, int] = {}  # want index -> build index

    def place(b: int, seen: set[int]) -> bool:
        for w, want in enumerate(wants):
            if w in seen or not _matches(report, builds[b], want):
                continue
            seen.add(w)
            if w not in owner or place(owner[w], seen):
                owner[w] = b
                return True
        return False

    return all(place(b, set()) for b in range(len(builds)))


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    a_end = a["ended"] if a["ended"] is not None else float("inf")
    b_end = b["ended"] if b["ended"] is not None else float("inf")
    return a["started"] < b_end and b["started"] < a_end


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
        elif kind == "merged-patchsets":
            for x, patchset in want.items():
                got = [m.get("patchset") for m in report["merged"] if m["change"] == x]
                if got != [patchset]:
                    problems.append(f"{x} merged as patchset(s) {got}, expected {patchset}")
        elif kind == "status":
            for x, status in want.items():
                if changes[x]["status"] != status:
                    problems.append(f"{x} is {changes[x]['status']}, expected {status}")
        elif kind == "actions":
            for x, actions in want.items():
                got = [r["action"] for r in changes[x]["reports"]]
                if got != actions:
                    problems.append(f"{x} reports {got}, expected {actions}")
        elif kind == "pipeline-actions":
            for x, per_pipeline in want.items():
                for pipeline, actions in per_pipeline.items():
                    got = [r["action"] for r in changes[x]["reports"]
                           if r["pipeline"] == pipeline]
                    if got != actions:
                        problems.append(f"{x} reports {got} in {pipeline}, expected {actions}")
        elif kind == "report-count":
            for x, count in want.items():
                got = len(changes[x]["reports"])
                if got != count:
                    problems.append(f"{x} has {got} reports, expected {count}")
        elif kind == "last-labels":
            for x, labels in want.items():
                reports = changes[x]["reports"]
                got = reports[-1]["labels"] if reports else None
                if got != labels:
                    problems.append(f"{x} last labels {got}, expected {labels}")
        elif kind == "message-contains":
            for x, texts in want.items():
                for text in _texts(texts):
                    if not any(text in r["message"] for r in changes[x]["reports"]):
                        problems.append(f"no report to {x} says {text!r}")
        elif kind == "message-not-contains":
            for x, texts in want.items():
                for text in _texts(texts):
                    if any(text in r["message"] for r in changes[x]["reports"]):
                        problems.append(f"a report to {x} says {text!r}")
        elif kind == "reports":
            for w in want:
                if not any(_report_matches(r, w) for r in changes[w["change"]]["reports"]):
                    problems.append(f"no report like {w}")
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
            for one in [want] if isinstance(want, dict) else want:
                w = {k: v for k, v in one.items() if k != "count"}
                n = len([b for b in builds if _matches(report, b, w)])
                if n != one["count"]:
                    problems.append(f"{n} builds like {w}, expected {one['count']}")
        elif kind == "all-builds":
            if not _pair_up(report, builds, want):
                got = [(b["job"], b["change"], b["changes"], b["result"]) for b in builds]
                problems.append(f"builds {got} are not exactly {want}")
        elif kind == "builds-in-order":
            ordered = sorted(builds, key=lambda b: b["started"])
            position = 0
            for w in want:
                while position < len(ordered) and not _matches(report, ordered[position], w):
                    position += 1
                if position == len(ordered):
                    problems.append(f"no build like {w} after the ones before it in {want}")
                    break
                position += 1
        elif kind == "starts-after-end":
            for pair in want:
                later = [b for b in builds if _matches(report, b, pair["build"])]
                earlier = [b for b in builds if _matches(report, b, pair["after"])]
                if not later or not earlier:
                    problems.append(f"starts-after-end {pair}: {len(later)} builds like "
                                    f"`build`, {len(earlier)} like `after`")
                    continue
                ends = [b["ended"] for b in earlier]
                if None in ends:
                    problems.append(f"a build like {pair['after']} never ended")
                    continue
                first = min(b["started"] for b in later)
                if first < max(ends):
                    problems.append(f"a build like {pair['build']} started at {first}, before "
                                    f"a build like {pair['after']} ended at {max(ends)}")
        elif kind == "overlapping":
            for pair in want:
                ones = [b for b in builds if _matches(report, b, pair["build"])]
                others = [b for b in builds if _matches(report, b, pair["with"])]
                if not any(_overlap(a, b) for a in ones for b in others if a is not b):
                    problems.append(f"no build like {pair['build']} ran at the same time as "
                                    f"one like {pair['with']}")
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
