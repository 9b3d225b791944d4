"""What a reconfiguration does to a running shared queue (Zuul's reconfiguration of a dependent
pipeline), as pure code: the gate workflow's `reconfigure` signal calls `reconfigure()`.

As in Zuul:
- items in flight keep their frozen job graphs (what they were enqueued with);
- an item whose project left the queue (or, for a per-branch queue, whose branch is no longer
  this queue's) is dequeued with a report saying why; the items behind keep their places (the
  next pass tests them without it, and those that needed it leave with a report naming it),
  while one already reported and being submitted is left to finish;
- the requirements, branch and projects apply to the next enqueue and change-updated event (an
  item in the queue is not re-checked until then, as Zuul checks on events);
- reporters, messages, precedence and dequeue-on-new-patchset apply to what happens next;
- the window keeps its live value, within the new settings (gate_window.reconfigure).

`describe()` says what changed in one line, for `lockmaster config apply` and the logs.
"""

from __future__ import annotations

from lockmaster.model.check import ReportLabels
from lockmaster.model.gate import GateInput, GateItem, QueueReconfigure
from lockmaster.pipelines import gate_window, reports
from lockmaster.pipelines.gate_actions import Action, ItemLabels, ReportItemAction
from lockmaster.pipelines.gate_enqueue import QueuePolicy
from lockmaster.pipelines.gate_queue import GateQueue
from lockmaster.pipelines.gate_updates import QueueUpdates

PRECEDENCE = {0: "high", 1: "normal", 2: "low"}


def refusal(inp: GateInput, change: QueueReconfigure) -> str | None:
    """Why this queue does not take these settings (they are another queue's), or None."""
    state = inp.state
    if (change.queue, change.pipeline) != (state.queue, state.pipeline):
        return (f"the settings are for queue {change.queue} of {change.pipeline}, this is "
                f"{state.queue} of {state.pipeline}")
    return None


def reconfigure(inp: GateInput, updates: QueueUpdates,
                change: QueueReconfigure) -> list[Action]:
    """Bring a running queue to `change`. `inp` is the workflow's input (its fields are updated,
    so continue-as-new carries the new settings), `updates` the queue's QueueUpdates (its
    Enqueuer's policy and its GateQueue are updated). Returns what to carry out (cancellations
    and reports of the items that left); the caller then lets the queue process, as after any
    command. Settings meant for another queue (`refusal`) change nothing."""
    if refusal(inp, change) is not None:
        return []
    queue = updates.queue
    enqueuer = updates.enqueuer
    inp.labels = change.labels.model_copy(deep=True)
    _set_labels(queue.labels, change.labels)
    inp.require = dict(change.require)
    inp.projects = list(change.projects)
    inp.precedence = change.precedence
    inp.dequeue_on_new_patchset = change.dequeue_on_new_patchset
    inp.branch = change.branch
    inp.layout_projects = list(change.layout_projects)
    updates.dequeue_on_new_patchset = change.dequeue_on_new_patchset
    enqueuer.policy = policy = QueuePolicy(
        projects=frozenset(change.projects), require=dict(change.require), branch=change.branch,
        known=frozenset(change.layout_projects) if change.layout_projects else None)
    gate_window.reconfigure(queue.state, change.model_dump(include=set(gate_window.WINDOW_FIELDS)))
    state = queue.state
    state.waiting = [w for w in state.waiting if policy.holds(w.change) and all(
        n.project in policy.projects for n in w.needed)]
    actions: list[Action] = []
    for item in list(queue.items):
        if item.outcome is None and not policy.holds(item.change):
            actions += _dequeue(queue, item, _why_not_held(change, item.change.project,
                                                           item.change.branch))
    return actions


def _why_not_held(change: QueueReconfigure, project: str, branch: str) -> str:
    if project not in change.projects:
        return f"{project} was removed from queue {change.queue} by a reconfiguration"
    return (f"branch {branch} of {project} is no longer gated in queue {change.queue} "
            "(a reconfiguration)")


def _dequeue(queue: GateQueue, item: GateItem, why: str) -> list[Action]:
    """As an operator's dequeue (gate_updates.QueueUpdates.dequeue), always reported: the change
    was accepted and nobody acted on it. Without a dequeue reporter the report votes nothing."""
    actions = queue.leave(item, why)
    item.outcome = "dequeued"
    labels = queue.labels
    actions.append(ReportItemAction(
        item.key, item.change, item.pipeline, "dequeue",
        reports.dequeue_report(item.pipeline, why, labels.messages.get("dequeue")),
        dict(labels.dequeue or {}), item_id=item.id))
    return actions


def _set_labels(target: ItemLabels, labels: ReportLabels) -> None:
    """In place: the queue and its Enqueuer share this object."""
    target.start = dict(labels.start) if labels.start is not None else None
    target.success = dict(labels.success)
    target.failure = dict(labels.failure)
    target.enqueue = dict(labels.enqueue) if labels.enqueue is not None else None
    target.dequeue = dict(labels.dequeue) if labels.dequeue is not None else None
    target.messages = dict(labels.messages)
    target.status_url = labels.status_url


# --- what changed, in words --------------------------------------------------------------------


def current_settings(inp: GateInput) -> QueueReconfigure:
    """The settings a running queue has (what a `settings` query would answer): the configured
    window where the queue knows it, else its live one."""
    state = inp.state
    window = state.model_dump(include=set(gate_window.WINDOW_FIELDS))
    if state.window_configured is not None:
        window["window"] = state.window_configured
    return QueueReconfigure(
        queue=state.queue, pipeline=state.pipeline, labels=inp.labels.model_copy(deep=True),
        require=dict(inp.require), projects=list(inp.projects), precedence=inp.precedence,
        dequeue_on_new_patchset=inp.dequeue_on_new_patchset, branch=inp.branch,
        layout_projects=list(inp.layout_projects), **window)


def describe(before: QueueReconfigure | None, after: QueueReconfigure) -> str:
    """What changed, e.g. "projects +a -b; require Verified>=1 -> 2; window 20 -> 10"; "no
    change"; without `before` (not known): the new settings."""
    if before is None:
        return "now " + settings_line(after)
    parts = []
    added = sorted(set(after.projects) - set(before.projects))
    removed = sorted(set(before.projects) - set(after.projects))
    if added or removed:
        parts.append("projects " + " ".join([*(f"+{p}" for p in added),
                                             *(f"-{p}" for p in removed)]))
    if before.require != after.require:
        parts.append("require " + _require_change(before.require, after.require))
    parts += _window_changes(before, after)
    if before.branch != after.branch:
        parts.append(f"branch {before.branch or 'any'} -> {after.branch or 'any'}")
    if before.precedence != after.precedence:
        parts.append(f"precedence {_precedence(before.precedence)} -> "
                     f"{_precedence(after.precedence)}")
    if before.dequeue_on_new_patchset != after.dequeue_on_new_patchset:
        parts.append(f"dequeue-on-new-patchset {_on(before.dequeue_on_new_patchset)} -> "
                     f"{_on(after.dequeue_on_new_patchset)}")
    reporters = _reporter_changes(before.labels, after.labels)
    if reporters:
        parts.append("reporters " + ", ".join(reporters))
    layout_added = sorted(set(after.layout_projects) - set(before.layout_projects))
    layout_removed = sorted(set(before.layout_projects) - set(after.layout_projects))
    if layout_added or layout_removed:
        parts.append("layout projects " + " ".join([*(f"+{p}" for p in layout_added),
                                                    *(f"-{p}" for p in layout_removed)]))
    return "; ".join(parts) or "no change"


def settings_line(settings: QueueReconfigure) -> str:
    """The settings in one line: projects, requirements, window."""
    require = ", ".join(f"{k}>={v}" for k, v in sorted(settings.require.items())) or "nothing"
    window = str(settings.window) if settings.window else "no limit"
    return (f"projects {', '.join(settings.projects) or 'none'}; require {require}; "
            f"window {window} (floor {settings.window_floor}"
            + (f", ceiling {settings.window_ceiling})" if settings.window_ceiling else ")"))


def _require_change(before: dict[str, int], after: dict[str, int]) -> str:
    out = []
    for label in sorted(set(before) | set(after)):
        if label not in after:
            out.append(f"-{label}>={before[label]}")
        elif label not in before:
            out.append(f"+{label}>={after[label]}")
        elif before[label] != after[label]:
            out.append(f"{label}>={before[label]} -> {after[label]}")
    return ", ".join(out)


def _window_changes(before: QueueReconfigure, after: QueueReconfigure) -> list[str]:
    out = []
    if before.window != after.window:
        note = ""
        if after.window and before.window and not gate_window.fixed(
                after.window_increase_type, after.window_increase_amount,
                after.window_decrease_type, after.window_decrease_factor):
            note = " (the running queue keeps its live window, as in Zuul)"
        out.append(f"window {_limit(before.window)} -> {_limit(after.window)}{note}")
    if before.window_floor != after.window_floor:
        out.append(f"window-floor {before.window_floor} -> {after.window_floor}")
    if before.window_ceiling != after.window_ceiling:
        out.append(f"window-ceiling {before.window_ceiling or 'none'} -> "
                   f"{after.window_ceiling or 'none'}")
    grow = (_step(before.window_increase_type, before.window_increase_amount, "+"),
            _step(after.window_increase_type, after.window_increase_amount, "+"))
    if grow[0] != grow[1]:
        out.append(f"window-increase {grow[0]} -> {grow[1]}")
    shrink = (_step(before.window_decrease_type, before.window_decrease_factor, "-"),
              _step(after.window_decrease_type, after.window_decrease_factor, "-"))
    if shrink[0] != shrink[1]:
        out.append(f"window-decrease {shrink[0]} -> {shrink[1]}")
    return out


def _reporter_changes(before: ReportLabels, after: ReportLabels) -> list[str]:
    """The report actions whose labels or message changed."""
    changed = []
    for action in ("enqueue", "start", "success", "failure", "dequeue"):
        if (getattr(before, action) != getattr(after, action)
                or before.messages.get(action) != after.messages.get(action)):
            changed.append(action)
    return changed


def _step(kind: str, factor: int, sign: str) -> str:
    return f"{kind} {'*' if sign == '+' else '/'}{factor}" if kind == "exponential" \
        else f"{kind} {sign}{factor}"


def _limit(window: int) -> str:
    return str(window) if window else "no limit"


def _precedence(value: int) -> str:
    return PRECEDENCE.get(value, str(value))


def _on(value: bool) -> str:
    return "on" if value else "off"
