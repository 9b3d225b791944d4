"""Calls refused for a moment by a busy workflow are asked again, within a bound
(temporal/busy.py): the soak's router died on "workflow is closing" while the queue's
continue-as-new was being retried."""

from __future__ import annotations

import pytest
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.temporal.busy import busy, when_not_busy

CLOSING = RPCError("workflow operation can not be applied because workflow is closing",
                   RPCStatusCode.RESOURCE_EXHAUSTED, b"")
NOT_READY = RPCError("workflow task in failed state", RPCStatusCode.FAILED_PRECONDITION, b"")
CLOSED = RPCError("Workflow execution closed before WorkflowTaskStarted event",
                  RPCStatusCode.FAILED_PRECONDITION, b"")
GONE = RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")


class Refusing:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "sent"


def test_what_counts_as_busy() -> None:
    assert busy(CLOSING) and busy(NOT_READY) and busy(CLOSED)
    assert not busy(GONE)
    assert not busy(RPCError("bad", RPCStatusCode.FAILED_PRECONDITION, b""))
    assert not busy(ValueError("x"))


async def test_a_busy_workflow_is_asked_again_until_it_takes_the_call() -> None:
    call = Refusing(CLOSING, NOT_READY, CLOSING)
    assert await when_not_busy(call, longest_pause=0.01) == "sent"
    assert call.calls == 4


async def test_any_other_error_goes_to_the_caller_at_once() -> None:
    call = Refusing(GONE)
    with pytest.raises(RPCError) as raised:
        await when_not_busy(call)
    assert raised.value is GONE and call.calls == 1


async def test_a_workflow_busy_past_the_patience_is_an_error() -> None:
    call = Refusing(*[CLOSING] * 100)
    with pytest.raises(RPCError) as raised:
        await when_not_busy(call, patience=0.3, longest_pause=0.05)
    assert raised.value is CLOSING and 1 < call.calls < 100
