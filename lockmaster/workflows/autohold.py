"""Autoholds (`nodepool/autoholds`): operators ask that the nodes of the next failing build of a
job be kept for debugging. One workflow holds every request, so a request's count is used up
exactly once whichever pool the failing build's nodes came from."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.nodes import (
        Autohold,
        AutoholdClaim,
        AutoholdClaimResult,
        AutoholdDelete,
        AutoholdInput,
        AutoholdList,
        AutoholdListQuery,
        OperatorResult,
    )
    from lockmaster.workflows.details import autohold_details
    from lockmaster.workflows.longlived import should_continue_as_new


@workflow.defn(name="AutoholdWorkflow")
class AutoholdWorkflow:
    @workflow.init
    def __init__(self, inp: AutoholdInput) -> None:
        self._input = inp

    @workflow.run
    async def run(self, inp: AutoholdInput) -> None:
        self._input = inp
        self._publish()
        await workflow.wait_condition(self._should_continue_as_new)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._input)

    def _publish(self) -> None:
        """The Web UI's "Current details": every request (not a command)."""
        workflow.set_current_details(autohold_details(self._input.autoholds))

    def _should_continue_as_new(self) -> bool:
        return should_continue_as_new(self._input.max_history_events)

    @workflow.update(name="add")
    def add(self, hold: Autohold) -> OperatorResult:
        hold = hold.model_copy(update={"id": hold.id or f"{self._input.next_id:04d}",
                                       "created": workflow.now().timestamp()})
        self._input.next_id += 1
        self._input.autoholds = [a for a in self._input.autoholds if a.id != hold.id] + [hold]
        self._publish()
        change = f" change {hold.change}" if hold.change is not None else ""
        return OperatorResult(ok=True, message=f"autohold {hold.id}: the nodes of the next "
                              f"{hold.count} failing build(s) of {hold.job} in {hold.project}"
                              f"{change} will be kept for {hold.hold_seconds / 86400:g} days")

    @add.validator
    def _check_add(self, hold: Autohold) -> None:
        if hold.count < 1:
            raise ValueError("count must be at least 1")
        if hold.hold_seconds <= 0:
            raise ValueError("the hold time must be positive")
        if not hold.project or not hold.job:
            raise ValueError("an autohold needs a project and a job")

    @workflow.update(name="claim")
    def claim(self, claim: AutoholdClaim) -> AutoholdClaimResult:
        for hold in self._input.autoholds:
            if hold.project == claim.project and hold.job == claim.job and (
                    hold.change is None or hold.change == claim.change):
                hold.count -= 1
                if hold.count <= 0:
                    self._input.autoholds.remove(hold)
                self._publish()
                return AutoholdClaimResult(
                    held=True, hold_until=workflow.now().timestamp() + hold.hold_seconds,
                    reason=f"autohold {hold.id}"
                           + (f" by {hold.by}" if hold.by else "") + f": {hold.reason}")
        return AutoholdClaimResult(held=False)

    @workflow.update(name="remove")
    def remove(self, request: AutoholdDelete) -> OperatorResult:
        before = len(self._input.autoholds)
        self._input.autoholds = [a for a in self._input.autoholds if a.id != request.id]
        if len(self._input.autoholds) == before:
            return OperatorResult(ok=False, message=f"no autohold {request.id!r}")
        self._publish()
        return OperatorResult(ok=True, message=f"autohold {request.id} removed")

    @workflow.query(name="list")
    def list_autoholds(self, _: AutoholdListQuery) -> AutoholdList:
        return AutoholdList(autoholds=list(self._input.autoholds))
