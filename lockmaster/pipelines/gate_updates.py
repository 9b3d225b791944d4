"""What a shared queue does when a change it holds (or waits with) changes in the review system,
or an operator dequeues one: Zuul's removeOldVersionsOfChange, removeAbandonedChange, the
requirement check of every pass, and the dequeue command, as pure code.

- merged (by us or anyone): it leaves; items built on it keep their builds;
- abandoned, or a newer patchset uploaded (with dequeue-on-new-patchset): it leaves, with a
  dequeue report when the pipeline has one and the start was reported;
- an approval removed, work in progress, private: it leaves with a failure report ("unable to
  merge due to a missing merge requirement");
- an operator's dequeue: it leaves, with a dequeue report saying who and why (with the
  pipeline's dequeue reporter's labels, if it has one).

Every change that needed one that left leaves in turn on the next pass (gate_queue.process),
with a report naming it and why. Waiting changes are kept current the same way.
"""

from __future__ import annotations

from lockmaster.model.gate import ChangeUpdated, DequeueRequest, GateItem
from lockmaster.pipelines import reports
from lockmaster.pipelines.gate_actions import Action, ReportItemAction
from lockmaster.pipelines.gate_enqueue import Enqueuer, unmet_requirements


class QueueUpdates:
    def __init__(self, enqueuer: Enqueuer, *, dequeue_on_new_patchset: bool = True) -> None:
        self.enqueuer = enqueuer
        self.queue = enqueuer.queue
        self.dequeue_on_new_patchset = dequeue_on_new_patchset

    def change_updated(self, update: ChangeUpdated, now: float) -> list[Action]:
        actions: list[Action] = []
        self._update_waiting(update)
        queue = self.queue
        item = queue.find(update.project, update.number)
        if update.status == "MERGED":
            if item is not None:
                actions += queue.merged_elsewhere(update.project, update.number)
            # Every waiting change is looked at: those that needed it no longer list it.
            return actions + self.enqueuer.release_waiting(now)
        if item is None or item.outcome is not None:
            return actions  # not here, or reported and being submitted
        if update.status == "ABANDONED":
            return actions + self._leave_without_result(item, "it was abandoned")
        if update.patchset is not None and update.patchset != item.change.patchset:
            if update.patchset < item.change.patchset or not self.dequeue_on_new_patchset:
                return actions  # a late event of an older patchset, or kept by configuration
            return actions + self._leave_without_result(
                item, f"it is not the current patchset (patchset {update.patchset} was uploaded)")
        missing = self._missing_requirement(item, update)
        if missing is not None:
            actions += queue.leave(item, f"it no longer meets the pipeline's requirements "
                                         f"({missing})")
            item.outcome = "missing-requirement"
            actions.append(ReportItemAction(
                item.key, item.change, item.pipeline, "failure",
                reports.missing_requirement_report(item.pipeline, missing),
                queue.labels.failure, item_id=item.id))
        return actions

    def dequeue(self, request: DequeueRequest) -> list[Action]:
        """An operator takes the change out (a waiting change is forgotten)."""
        waiting = [w for w in self.queue.state.waiting if w.change.number == request.number
                   and w.change.project == request.project]
        for entry in waiting:
            self.queue.state.waiting.remove(entry)
        item = self.queue.find(request.project, request.number)
        if item is None:
            return []
        by = f" by {request.by}" if request.by else ""
        actions = self.queue.leave(item, f"it was dequeued{by} ({request.reason})")
        item.outcome = "dequeued"
        labels = self.queue.labels
        # Zuul reports only with a dequeue reporter; a dequeue that names its operator (who
        # and why) is always told to the change, with the reporter's labels if any (requests
        # recorded before operators were named have no `by`: they replay as they ran).
        if request.report and (labels.dequeue is not None or request.by):
            actions.append(ReportItemAction(
                item.key, item.change, item.pipeline, "dequeue",
                reports.dequeue_report(item.pipeline, request.reason,
                                       labels.messages.get("dequeue"), by=request.by),
                labels.dequeue or {}, item_id=item.id))
        return actions

    # --- internals --------------------------------------------------------------------------

    def _leave_without_result(self, item: GateItem, why: str) -> list[Action]:
        """Superseded or abandoned: Zuul reports a dequeue only with a dequeue reporter, and
        only when the start was reported (else it never said it acted on the change)."""
        actions = self.queue.leave(item, why)
        item.outcome = "dequeued"
        labels = self.queue.labels
        if labels.dequeue is not None and item.started_reported:
            actions.append(ReportItemAction(
                item.key, item.change, item.pipeline, "dequeue",
                reports.dequeue_report(item.pipeline, why.removeprefix("it "),
                                       labels.messages.get("dequeue")),
                labels.dequeue, item_id=item.id))
        return actions

    def _missing_requirement(self, item: GateItem, update: ChangeUpdated) -> str | None:
        if update.wip:
            return "it is a work in progress"
        if update.private:
            return "it is private"
        if item.ignore_requirements:
            return None  # an operator's enqueue: approvals were never required
        unmet = unmet_requirements(self.enqueuer.policy.require, update.approvals)
        return ", ".join(unmet) if unmet else None

    def _update_waiting(self, update: ChangeUpdated) -> None:
        """A waiting change that changed, or whose needed change changed: still waiting?"""
        state = self.queue.state
        kept = []
        for waiting in state.waiting:
            if waiting.change.number == update.number:
                if (update.status != "NEW" or update.wip or update.private
                        or (update.patchset is not None
                            and update.patchset != waiting.change.patchset)
                        or (not waiting.ignore_requirements and unmet_requirements(
                            self.enqueuer.policy.require, update.approvals))):
                    continue  # it can no longer enter: forgotten (a new event brings it back)
            needed = []
            gone = False
            for need in waiting.needed:
                if need.number == update.number and update.status == "MERGED":
                    continue  # merged (here or elsewhere): the branch has it
                if need.number == update.number and update.status == "ABANDONED":
                    gone = True
                elif (need.number == update.number and update.patchset is not None
                        and update.patchset != need.patchset and update.status == "NEW"):
                    if need.via == "parent":
                        gone = True  # built on an outdated patchset: must be rebased
                    else:
                        need = need.model_copy(update={"patchset": update.patchset})
                needed.append(need)
            if not gone:
                kept.append(waiting.model_copy(update={"needed": needed}))
        state.waiting = kept
