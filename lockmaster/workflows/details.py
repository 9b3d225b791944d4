"""What the Web UI shows under "Current details" for each workflow (Temporal markdown; pure).

The first line always says what the workflow is and how it stands or ended (`**FAILED** check:
demo/hello change 3,1`): a workflow's static summary is set when it starts and a continued-as-new
run has none (the SDK's `continue_as_new` cannot carry one), so the details carry it too. Then
one line per job, TE, node or step: its state or result, why it did not succeed, and its log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol

from lockmaster.model.audit import attributed
from lockmaster.model.check import CheckStatus
from lockmaster.model.gate import ItemView, QueueStatus
from lockmaster.model.nodes import Autohold, NodeState, PoolStatus, RequestState
from lockmaster.model.publish import (
    BuildSource,
    Provenance,
    PublishStatus,
    QueueEntry,
    StepState,
)
from lockmaster.model.testenv import BrokerStatus, TEState
from lockmaster.model.work import StuckView
from lockmaster.pipelines.gate_view import item_phase

# How a check's result reads in its first line.
OUTCOMES = {
    "SUCCESS": "SUCCEEDED",
    "FAILURE": "FAILED",
    "MERGE_CONFLICT": "FAILED (merge conflict)",
    "CONFIG_ERROR": "FAILED (configuration error)",
    "NO_JOBS": "NO JOBS",
    "NOT_ENQUEUED": "NOT ENQUEUED",
    "CANCELLED": "CANCELLED",
}
MAX_LINES = 60  # of items, nodes or entries: a huge queue still renders


class JobLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def voting(self) -> bool: ...
    @property
    def state(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def log_url(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...


def stuck_lines(stuck: Sequence[StuckView]) -> list[str]:
    """Work that keeps failing (the review system or a TE host is down): tried again until it
    succeeds; said first, so nobody mistakes a wedge for a quiet queue."""
    return [f"- **stuck**: {one_line(w.what, 120)} failing since {clock(w.since)} "
            f"({w.failures} round(s)): {one_line(w.error)}" for w in stuck[:MAX_LINES]]


def one_line(text: str | None, limit: int = 200) -> str:
    """Reasons come from commands and servers: one line, bounded, no markdown surprises."""
    line = " ".join((text or "").split())
    line = line.replace("[", "(").replace("]", ")")
    return line if len(line) <= limit else line[:limit - 1] + "…"


@lru_cache(maxsize=4096)
def clock(epoch: float) -> str:
    """A moment as the Web UI shows it. Remembered: a gate queue renders every item's enqueue
    time on every wake-up, and in the workflow sandbox each `strftime` costs two imports
    (~60 µs; 9% of the gate's workflow-task CPU at 2 approvals a second, before this)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def log_link(url: str | None) -> str:
    return f"[log]({url})" if url else ""


def job_line(job: JobLike, indent: str = "") -> str:
    """`- build: **FAILURE** (attempt 2) — run exited with status 3 — [log](url)`"""
    name = job.name if job.voting else f"{job.name} (non-voting)"
    final = job.state.isupper()
    state = f"**{job.state}**" if final and job.state != "SUCCESS" else job.state
    if job.attempt > 1:
        state += f" (attempt {job.attempt})"
    parts = [f"{indent}- {name}: {state}"]
    if job.reason and job.state != "SUCCESS":
        parts.append(one_line(job.reason))
    if job.log_url:
        parts.append(log_link(job.log_url))
    return " — ".join(parts)


def _bounded(lines: list[str], total: int, what: str) -> list[str]:
    if total > MAX_LINES:
        return [*lines, f"- … and {total - MAX_LINES} more {what} (`lockmaster status`)"]
    return lines


# --- checks -------------------------------------------------------------------------------------


def check_details(status: CheckStatus) -> str:
    change = status.change
    what = f"{status.pipeline}: {change.project} change {change.key}"
    word = OUTCOMES.get(status.result, status.result) if status.result else status.phase
    head = f"**{word}** {what}"
    if status.changes and status.changes != change.key:
        head += f", tested on {status.changes}"
    lines = [head]
    if status.result not in (None, "SUCCESS"):
        failed = [j.name for j in status.jobs if j.voting and j.state.isupper()
                  and j.state != "SUCCESS"]
        if status.reason:
            lines.append(one_line(status.reason, 400))
        elif failed:
            lines.append(f"failed: {', '.join(failed)}")
    lines += [job_line(j) for j in status.jobs]
    return "\n".join(lines)


# --- gate queues --------------------------------------------------------------------------------


def item_state(item: ItemView) -> str:
    phase = item_phase(item)  # the status page's words too
    if phase == "merge conflict":
        return "**merge conflict**" + (f": {one_line(item.merge_error)}" if item.merge_error
                                       else "")
    return f"**{phase}**" if phase == "failing" else phase


def queue_details(status: QueueStatus, *, draining: bool = False) -> str:
    items = status.items
    failing = sum(1 for i in items if i.failing)
    head = f"**{status.pipeline} queue {status.queue}**: "
    head += f"{len(items)} item(s)" if items else "empty"
    if failing:
        head += f", **{failing} failing**"
    head += f"; window {status.window or 'unlimited'}"
    if draining:
        head += "; continuing as new once what runs has finished"
    lines = [head, *stuck_lines(status.stuck)]
    for index, item in enumerate(items[:MAX_LINES], start=1):
        line = f"{index}. {item.change} {item.project}"
        if item.branch:
            line += f" ({item.branch})"
        line += f": {item_state(item)}"
        if item.changes and item.changes != item.change:
            line += f", tested on {item.changes}"
        line += f"; enqueued {clock(item.enqueued_at)}"
        lines.append(line)
        lines += [f"    {one_line(said, 160)}" for said in item.operator_lines()]
        lines += [job_line(j, indent="    ") for j in item.jobs]
    lines = _bounded(lines, len(items), "items")
    if status.recently_left:
        lines.append("Recently left without merging: " + "; ".join(
            f"{key} ({one_line(why, 120)})" for key, why in status.recently_left.items()))
    if status.recently_merged:
        lines.append("Recently merged: " + " ".join(status.recently_merged))
    return "\n".join(lines)


# --- node pools and autoholds -------------------------------------------------------------------


def _counts(states: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def pool_details(status: PoolStatus, *, disabled_reason: str = "", now: float = 0.0) -> str:
    head = f"**node pool {status.provider}/{status.pool} ({status.driver.value})**: "
    why = attributed(disabled_reason or None, status.disabled_by)
    head += "enabled" if status.enabled else "**disabled**" + (
        f" ({one_line(why)})" if why else "")
    nodes = sorted(status.nodes, key=lambda n: n.id)
    head += f"; {len(nodes)} node(s)" + (f": {_counts(n.state.value for n in nodes)}"
                                         if nodes else "")
    pending = [r for r in status.requests if r.state is RequestState.PENDING]
    head += f"; {len(pending)} request(s) waiting"
    head += f"; launches {status.launches}, failed {status.launch_failures}"
    lines = [head, *stuck_lines(status.stuck)]
    if status.paused_until and status.paused_until > now:
        lines.append(f"launches paused (cloud quota) until {clock(status.paused_until)}")
    for node in nodes[:MAX_LINES]:
        state = node.state.value
        if node.state in (NodeState.FAILED, NodeState.HOLD):
            state = f"**{state}**"
        line = f"- {node.id} {node.label or '/'.join(node.labels)}: {state}"
        if node.host:
            line += f" on {node.host}"
        if node.state is NodeState.HOLD and node.hold_until:
            line += f" until {clock(node.hold_until)}"
        if node.hold_reason:
            line += f" — {one_line(attributed(node.hold_reason, node.held_by))}"
        lines.append(line)
    lines = _bounded(lines, len(nodes), "nodes")
    for request in sorted(pending, key=lambda r: (r.precedence, r.arrived))[:MAX_LINES]:
        lines.append(f"- request {request.id} ({request.holder or 'unknown holder'}): "
                     f"{' '.join(request.labels)} waiting since {clock(request.arrived)}")
    return "\n".join(lines)


def autohold_details(holds: Sequence[Autohold]) -> str:
    lines = [f"**autohold requests**: {len(holds)} active" if holds else
             "**autohold requests**: none"]
    for hold in holds[:MAX_LINES]:
        change = f" change {hold.change}" if hold.change is not None else ""
        lines.append(f"- {hold.id}: {hold.project} {hold.job}{change}: the next {hold.count} "
                     f"failing build(s), kept {hold.hold_seconds / 86400:g} days — "
                     f"{one_line(attributed(hold.reason, hold.by))}")
    return "\n".join(_bounded(lines, len(holds), "autoholds"))


# --- test environments --------------------------------------------------------------------------


def broker_details(status: BrokerStatus, *, draining: bool = False) -> str:
    head = f"**TE broker for label {status.label}**: {len(status.tes)} TE(s)"
    if status.tes:
        head += f": {_counts(t.state.value for t in status.tes)}"
    head += f"; {len(status.waiting)} waiting"
    if status.draining_hosts:
        head += "; draining " + ", ".join(
            host + (f" ({one_line(note.describe('drained'), 120)})"
                    if (note := status.drained_by.get(host)) else "")
            for host in status.draining_hosts)
    if draining:
        head += "; continuing as new once what runs has finished"
    lines = [head, *stuck_lines(status.stuck)]
    for te in status.tes[:MAX_LINES]:
        state = f"**{te.state.value}**" if te.state is TEState.QUARANTINED else te.state.value
        line = f"- {te.key}: {state}"
        if te.holder:
            line += f" by {te.holder}"
        if te.expires:
            line += f" until {clock(te.expires)}"
        if te.reason:
            line += f" — {one_line(te.reason)}"
        if te.operator is not None:
            line += f" — {one_line(te.operator.describe(te.operator_action or 'acted on'))}"
        lines.append(line)
    lines = _bounded(lines, len(status.tes), "TEs")
    if status.waiting:
        lines.append("Waiting: " + ", ".join(
            f"{w.holder} (since {clock(w.arrived)})" for w in status.waiting[:MAX_LINES]))
    return "\n".join(lines)


# --- publishing ---------------------------------------------------------------------------------


def publish_details(status: PublishStatus, *, ok: bool | None = None,
                    message: str | None = None) -> str:
    change = status.change
    word = "publishing" if ok is None else ("PUBLISHED" if ok else "FAILED")
    lines = [f"**{word}** publish: {change.project} change {change.key}"
             + (f" as {status.snapshot}" if status.snapshot else "")]
    if ok is False and message:
        lines.append(one_line(message, 400))
    for step in status.steps:
        state = step.state.value
        if step.state is StepState.FAILED:
            state = f"**{state}**"
        parts = [f"- {step.name}: {state}" + (f" (attempt {step.attempts})"
                                               if step.attempts > 1 else "")]
        if step.detail:
            parts.append(one_line(step.detail))
        if step.url:
            parts.append(log_link(step.url))
        lines.append(" — ".join(parts))
    if status.provenance is not None:  # after the steps: which build they published, and why
        lines.append(provenance_line(status.provenance))
    return "\n".join(lines)


def provenance_line(provenance: Provenance) -> str:
    """Which build the publication publishes and why (the gate's, or a rebuild)."""
    which = ("the gate's build" if provenance.source is BuildSource.GATE
             else "a rebuild from the merged commit")
    parts = [f"- provenance: {which}, {provenance.job}"
             + (f" {provenance.build_id}" if provenance.build_id else ""),
             one_line(provenance.reason, 300)]
    if provenance.buildset:
        parts.append(one_line(provenance.buildset))
    if provenance.tested_commit:
        parts.append(f"built from {provenance.tested_commit[:12]}"
                     + (f" (tree {provenance.tested_tree[:12]})" if provenance.tested_tree
                        else ""))
    if provenance.log_url:
        parts.append(log_link(provenance.log_url))
    return " — ".join(parts)


def publish_queue_details(repository: str, entries: Sequence[QueueEntry]) -> str:
    ordered = sorted(entries, key=lambda e: e.sequence)
    open_ = [e for e in ordered if e.state.value not in ("done", "failed")]
    failed = [e for e in ordered if e.state.value == "failed"]
    head = f"**publish queue {repository}**: {len(open_)} change(s) in the queue"
    if failed:
        head += f", **{len(failed)} failed** recently"
    lines = [head]
    shown = ordered[-MAX_LINES:]
    if len(ordered) > len(shown):
        lines.append(f"- … {len(ordered) - len(shown)} earlier entries")
    for entry in shown:
        state = entry.state.value
        if state == "failed":
            state = f"**{state}**"
        line = f"- #{entry.sequence} {entry.change}: {state}"
        if entry.snapshot:
            line += f" ({entry.snapshot})"
        if entry.detail:
            line += f" — {one_line(entry.detail)}"
        lines.append(line)
    return "\n".join(lines)
