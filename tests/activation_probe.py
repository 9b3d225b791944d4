"""A workflow for tests/test_activations.py: woken by a signal, it says whether the result of
its activity, which reached the same workflow task, was already applied."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.base import Model

TASK_QUEUE = "activation-probe"


class Seen(Model):
    result_applied: bool


class Nudge(Model):
    pass


@activity.defn(name="probe_quick")
async def quick(_: Nudge) -> Nudge:
    return Nudge()


@workflow.defn(name="ActivationProbeWorkflow")
class ActivationProbeWorkflow:
    def __init__(self) -> None:
        self._signalled = False

    @workflow.signal(name="nudge")
    def nudge(self, _: Nudge) -> None:
        self._signalled = True

    @workflow.run
    async def run(self, _: Nudge) -> Seen:
        handle = workflow.start_activity(quick, Nudge(),
                                         start_to_close_timeout=timedelta(seconds=30))
        await workflow.wait_condition(lambda: self._signalled)
        # As the long-lived workflows decide to continue as new: right where the signal woke it.
        return Seen(result_applied=handle.done())
