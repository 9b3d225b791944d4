"""What a simulation did: the JSON report of spec/scenarios.md and a readable summary.

Reports are lockmaster's messages in the simulated Gerrit; each is tagged
`<pipeline>:<run or item id>:<action>` by the check and gate workflows.
"""

from __future__ import annotations

from typing import Any

from lockmaster.simulate.clock import Clock
from lockmaster.simulate.events import AppliedEvent
from lockmaster.simulate.executor import BuildRecord
from lockmaster.simulate.gerrit import SimulatedGerrit

REPORTER = "lockmaster"


def _t(seconds: float) -> float:
    return round(seconds, 3)


def parse_tag(tag: str | None) -> tuple[str | None, str | None]:
    """(pipeline, action) from `<pipeline>:<anything>:<action>`."""
    if not tag or tag.count(":") < 2:
        return None, None
    pipeline, _, rest = tag.partition(":")
    return pipeline, rest.rsplit(":", 1)[1]


def change_reports(record: dict[str, Any], clock: Clock) -> list[dict[str, Any]]:
    out = []
    for message in record["messages"]:
        if message.get("author") != REPORTER:
            continue
        pipeline, action = parse_tag(message.get("tag"))
        out.append({
            "pipeline": pipeline, "action": action, "labels": dict(message.get("labels") or {}),
            "message": message["message"], "at": _t(clock.since_start(message["at"])),
            "patchset": message.get("patchset"),
        })
    return out


def build_entry(build: BuildRecord, gerrit: SimulatedGerrit) -> dict[str, Any]:
    return {
        "pipeline": build.pipeline, "job": build.job, "change": gerrit.name_of(build.number),
        "changes": build.changes,
        "result": build.result.value if build.result else None,
        "attempt": build.attempt, "started": _t(build.started),
        "ended": _t(build.ended) if build.ended is not None else None,
        "patchset": build.patchset, "build-id": build.build_id,
    }


def event_entry(event: AppliedEvent) -> dict[str, Any]:
    entry: dict[str, Any] = {"event": event.kind, "change": event.change, "at": _t(event.at)}
    entry.update(event.extra)
    entry["actions"] = [str(action) for action in event.actions]
    if event.error:
        entry["error"] = event.error
    return entry


def build_report(
    *, title: str, elapsed: float, time_scale: float, clock: Clock, gerrit: SimulatedGerrit,
    builds: list[BuildRecord], events: list[AppliedEvent],
) -> dict[str, Any]:
    changes = {}
    for name in gerrit.scenario.changes:
        record = gerrit.record(name)
        changes[name] = {
            "number": record["number"], "patchset": record["patchsets"][-1]["number"],
            "project": record["project"], "branch": record["branch"],
            "status": record["status"], "reports": change_reports(record, clock),
        }
    return {
        "scenario": title,
        "elapsed": _t(elapsed),
        "time-scale": time_scale,
        "changes": changes,
        "merged": [
            {"change": m.change, "project": m.project, "branch": m.branch, "at": _t(m.at),
             "patchset": m.patchset}
            for m in gerrit.merges
        ],
        "submits-refused": [{"change": name, "at": _t(at)} for name, at in gerrit.refused],
        "builds": [build_entry(b, gerrit) for b in sorted(builds, key=lambda b: b.started)],
        "events": [event_entry(e) for e in events],
        "errors": list(gerrit.errors),
    }


def summary(report: dict[str, Any]) -> str:
    """The readable summary: each change's fate, the merge order, the builds per change."""
    lines = [f"Scenario: {report['scenario']} ({report['elapsed']:.1f}s)", "", "Changes:"]
    for name, change in report["changes"].items():
        votes = ", ".join(
            f"{r['pipeline']} {r['action']}"
            + (" " + " ".join(f"{k}{v:+d}" for k, v in r["labels"].items()) if r["labels"] else "")
            for r in change["reports"]
        ) or "no reports"
        lines.append(f"  {name}  {change['number']},{change['patchset']}  {change['project']} "
                     f"({change['branch']})  {change['status']}  -- {votes}")
    merged = ", ".join(m["change"] for m in report["merged"]) or "none"
    lines += ["", f"Merge order: {merged}"]
    if report["submits-refused"]:
        lines.append("Submits refused: "
                     + ", ".join(r["change"] for r in report["submits-refused"]))
    lines += ["", "Builds:"]
    for name in report["changes"]:
        builds = [b for b in report["builds"] if b["change"] == name]
        if not builds:
            continue
        lines.append(f"  {name}:")
        for b in builds:
            attempt = f" attempt {b['attempt']}" if b["attempt"] > 1 else ""
            lines.append(f"    {b['pipeline']:<8} {b['job']:<32} {b['result'] or 'RUNNING':<12} "
                         f"[{b['changes']}] {b['started']:.2f}-{_end(b)}{attempt}")
    if not report["builds"]:
        lines.append("  none")
    problems = [e for e in report["events"] if e.get("error")]
    if problems or report["errors"]:
        lines += ["", "Problems:"]
        lines += [f"  {e['event']} {e['change']} at {e['at']:.2f}: {e['error']}" for e in problems]
        lines += [f"  {error}" for error in report["errors"]]
    return "\n".join(lines)


def _end(build: dict[str, Any]) -> str:
    return f"{build['ended']:.2f}" if build["ended"] is not None else "?"
