"""The skeleton every long-lived workflow shares (gate queues, node pools, TE brokers, the
publish queue, autoholds).

Such a workflow decides on every wake-up and may continue as new at any moment: it never waits
for work in flight. Its work is data (`Work`), kept in the state it carries across
continue-as-new, and carried out in one of two ways (docs/design.md says why):
- short, idempotent work (merges, reports, submits, authorizations) runs as an activity of the
  current run; a run that ends first leaves it, and the next run issues it again;
- long work (builds, launches, TE resets) and persistent work that failed its first round runs
  in a detached child workflow (`<workflow id>/<key>`, abandoned by its parent's runs) that
  signals its result back to the workflow ID, whichever run is current.
A result goes to the continuation registered for the work's kind, in the run that receives it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.work import (
        DetachedInput,
        StartedAnswer,
        StartedQuery,
        Work,
        WorkAlive,
        WorkDone,
        WorkStuck,
        WorkWanted,
    )
    from lockmaster.temporal.outliving import activity_id, started_activities
    from lockmaster.workflows.detached import DetachedWorkWorkflow, detached_id
    from lockmaster.workflows.work_options import activity_options, permanent, timeout_type

Continuation = Callable[[Work, WorkDone], None]

# An orphan (work that outlives its run, whose run ended) that says nothing this many heartbeat
# timeouts is lost: it ends as failed, and what it was for decides (a build runs again).
ORPHAN_SILENCE = 3
ORPHAN_HEARTBEAT = 30.0  # when the work has no heartbeat timeout


# Continue as new past this many events unless configured (None: when Temporal suggests it, at
# about 4K events or 4 MB). Tried at 2 approvals/s (docs/benchmarks.md): 600 and 2,000 made more
# continue-as-new tasks fail (results keep arriving meanwhile) without making the gate faster.
HISTORY_EVENTS: int | None = None


def should_continue_as_new(max_history_events: int | None,
                           default: int | None = None) -> bool:
    """Temporal suggests it, or the history passed the configured limit (tests set it low;
    `default` when none is configured)."""
    info = workflow.info()
    limit = max_history_events if max_history_events is not None else default
    return info.is_continue_as_new_suggested() or (
        limit is not None and info.get_current_history_length() > limit)


class WorkTracker:
    """The work in flight of one long-lived workflow. `records` is the workflow's carried state
    (mutated in place); results go to the continuation registered for each kind."""

    def __init__(self, records: dict[str, Work], wake: Callable[[], None]) -> None:
        self.records = records
        self._wake = wake
        self._continuations: dict[str, Continuation] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[asyncio.Task[None]] = set()
        self._open = False
        self._early: list[WorkDone] = []
        # The arguments of work this run issued that outlives it (not carried: issued again
        # from here if it turns out no worker started it before the run ends).
        self._args: dict[str, dict[str, Any]] = {}
        # What Temporal said of that work before continuing as new: started or not (this run
        # only), and the history length of the workflow task that asked.
        self._started: dict[str, bool] = {}
        self._asked_at = 0

    def on(self, kind: str, continuation: Continuation) -> None:
        self._continuations[kind] = continuation

    # --- handing work out ----------------------------------------------------------------------

    def submit(self, work: Work) -> bool:
        """Start `work` unless work of the same key is in flight (then False)."""
        if work.key in self.records:
            return False
        work.issued = workflow.now().timestamp()
        if work.detached:
            self._name_child(work)
        self.records[work.key] = work
        self._start(work)
        return True

    def resume(self) -> None:
        """A new run, once the workflow can take results: the results that came before, then
        every piece of work the last run left in flight (work that outlives its run and was
        issued by an earlier one is waited for, not issued again)."""
        self._open = True
        early, self._early = self._early, []
        for done in early:
            self.on_done(done)
        run_id = workflow.info().run_id
        for work in list(self.records.values()):
            if work.key in self._tasks:
                continue
            if work.outlives_run and work.started and work.run_id != run_id:
                if work.alive_at is None:
                    work.alive_at = workflow.now().timestamp()
                self._watch(work)
            else:
                self._start(work)

    def fresh(self) -> bool:
        """Work that outlives its run was issued in this workflow task, or Temporal was asked
        about it: the run must not end in it (an activity scheduled with the continue-as-new
        would never be dispatched; a task held open by a question is one that results reaching
        Temporal meanwhile make it refuse, and a refusal costs a replay of the whole run)."""
        length = workflow.info().get_current_history_length()
        return self._asked_at == length or any(
            w.outlives_run and w.started and w.issued_length == length
            and w.run_id == workflow.info().run_id for w in self.records.values())

    def _mine(self) -> list[str]:
        """The work in flight that this run issued and that outlives it."""
        run_id = workflow.info().run_id
        return [w.key for w in self.records.values() if w.outlives_run and w.started
                and w.run_id == run_id and w.key in self._args]

    def asks_ahead(self) -> bool:
        """Whether this run asks which of its work started in a workflow task before the one
        that continues as new (runs recorded earlier asked in that task itself)."""
        return bool(self._mine()) and workflow.patched("continue-in-a-task-of-its-own")

    def unasked(self) -> list[str]:
        """This run's outliving work in flight that Temporal was not asked about yet."""
        return [k for k in self._mine() if k not in self._started]

    async def ask(self, keys: list[str]) -> None:
        """Ask Temporal which of `keys` a worker has started (see `unstarted`)."""
        unstarted = set(await self._ask(keys))
        self._started.update((k, k not in unstarted) for k in keys)
        self._asked_at = workflow.info().get_current_history_length()

    def answered_unstarted(self) -> list[str]:
        """The work in flight that no worker had started when asked. One that started since
        runs twice for a moment: the next run issues it again and tells the first copy, when
        it asks (`on_alive`), that it is no longer wanted."""
        return [k for k in self._mine() if self._started.get(k) is False]

    async def unstarted(self) -> list[str] | None:
        """Before continuing as new: the work this run issued that outlives it but that no
        worker has started (it would never run once the run ended). Asked of Temporal by a
        local activity; if that fails, all of it counts as not started (the next run issues
        it again: at worst a build runs twice, none is lost)."""
        mine = self._mine()
        # (Runs recorded before this question continued as new without asking.)
        if not mine or not workflow.patched("ask-which-outliving-work-started"):
            return None  # nothing to ask (None: no time passed either)
        return await self._ask(mine)

    async def _ask(self, mine: list[str]) -> list[str]:
        info = workflow.info()
        try:
            answer = await workflow.execute_local_activity(
                started_activities, StartedQuery(
                    workflow_id=info.workflow_id, run_id=info.run_id,
                    activity_ids=[activity_id(k) for k in mine]),
                result_type=StartedAnswer, start_to_close_timeout=timedelta(seconds=10))
            started = set(answer.started)
        except ActivityError:
            started = set()
        return [k for k in mine if activity_id(k) not in started]

    def issue_again(self, keys: list[str]) -> None:
        """The next run issues these (continue-as-new follows at once)."""
        for key in keys:
            work = self.records.get(key)
            if work is not None and key in self._args:
                work.started, work.run_id, work.arg = False, None, self._args[key]

    def cancel(self, key: str) -> bool:
        """Ask the work to stop; its continuation then receives a cancelled result."""
        work = self.records.get(key)
        if work is None or work.cancel_requested:
            return False
        work.cancel_requested = True
        task = self._tasks.get(key)
        if not work.detached:
            if task is not None:
                task.cancel()
        elif work.started:
            self._cancelling.add(asyncio.ensure_future(self._cancel_child(work)))
        return True

    # --- what there is -------------------------------------------------------------------------

    def in_flight(self, kind: str | None = None) -> list[Work]:
        return [w for w in self.records.values() if kind is None or w.kind == kind]

    def stuck(self) -> list[Work]:
        return [w for w in self.records.values() if w.stuck_since is not None]

    def busy(self) -> bool:
        return bool(self.records)

    # --- signals from detached children --------------------------------------------------------

    def on_done(self, done: WorkDone) -> None:
        """A detached child's result: taken at once, in the signal's own handler, so that a
        continue-as-new decided in the same workflow task carries its effect."""
        if not self._open:  # signalled before the run began: taken when it resumes
            self._early.append(done)
            return
        work = self.records.get(done.key)
        if work is not None:
            self._finish(work, done)

    def on_alive(self, alive: WorkAlive) -> WorkWanted:
        """An orphan says it still runs; it is told whether it is still wanted."""
        work = self.records.get(alive.key)
        if work is None or work.cancel_requested:
            return WorkWanted(wanted=False)
        if work.run_id == workflow.info().run_id and work.started and not work.detached:
            # This run issued the work again (it had not started when asked): the asker is
            # the first copy, which started after all.
            return WorkWanted(wanted=False)
        work.alive_at = workflow.now().timestamp()
        return WorkWanted(wanted=True)

    def on_stuck(self, stuck: WorkStuck) -> None:
        work = self.records.get(stuck.key)
        if work is not None:
            work.stuck_since, work.failures = stuck.since, stuck.failures
            work.last_error = stuck.error
            self._wake()

    # --- carrying it out -----------------------------------------------------------------------

    def _start(self, work: Work) -> None:
        self._track(work.key, self._run(work))

    def _track(self, key: str, body: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(body)
        self._tasks[key] = task

        def ended(t: asyncio.Task[None], key: str = key) -> None:
            if self._tasks.get(key) is t:
                del self._tasks[key]
            self._wake()

        task.add_done_callback(ended)

    async def _run(self, work: Work) -> None:
        done = await self._perform(work)
        if done is not None and self.records.get(work.key) is work:
            self._finish(work, done)

    def _finish(self, work: Work, done: WorkDone) -> None:
        """Synchronous: the record leaves the carried state in the same step as its
        continuation changes what it is for."""
        del self.records[work.key]
        self._args.pop(work.key, None)
        self._continuations[work.kind](work, done)
        self._wake()

    def _name_child(self, work: Work) -> None:
        # Named when it becomes detached, in the same step: a run that continues as new carries
        # the name, and its next run finds the child instead of starting a second one.
        if work.child_id is None:
            work.child_id = detached_id(workflow.info().workflow_id,
                                        f"{work.key}/{workflow.uuid4().hex[:6]}")

    def _watch(self, work: Work) -> None:
        """An orphan: its result comes by signal; it is lost if it stops saying it runs."""
        self._track(work.key, self._await_orphan(work))

    async def _await_orphan(self, work: Work) -> None:
        silence = ORPHAN_SILENCE * (work.options.heartbeat or ORPHAN_HEARTBEAT)
        try:
            while self.records.get(work.key) is work:
                left = (work.alive_at or 0.0) + silence - workflow.now().timestamp()
                if left <= 0:
                    self._finish(work, WorkDone(
                        key=work.key, ok=False, error="lost: it stopped saying it runs after "
                                                      "the run that asked for it ended"))
                    return
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self.records.get(work.key) is not work,
                                                  timeout=timedelta(seconds=left))
        except asyncio.CancelledError:
            if self.records.get(work.key) is work and work.cancel_requested:
                # It is told at its next `work-alive`; nothing waits for it from now on.
                self._finish(work, WorkDone(key=work.key, ok=False, cancelled=True,
                                            error="cancelled"))

    async def _perform(self, work: Work) -> WorkDone | None:
        """The result of inline work; None for detached work (its signal finishes it)."""

        if work.cancel_requested and not (work.detached and work.started):
            return WorkDone(key=work.key, ok=False, cancelled=True, error="cancelled")
        if not work.detached:
            try:
                if work.outlives_run:
                    handle = workflow.start_activity(
                        work.activity, work.arg, result_type=dict, summary=work.summary or None,
                        activity_id=activity_id(work.key), **activity_options(work.options))
                    # Issued: a run that ends from the next task on leaves it running, and the
                    # next run waits for it (its argument, a whole speculative state for a
                    # build, need not be carried).
                    self._args[work.key], work.arg = work.arg, {}
                    work.started = True
                    work.run_id = workflow.info().run_id
                    work.issued_length = workflow.info().get_current_history_length()
                    result = await handle
                else:
                    result = await workflow.execute_activity(
                        work.activity, work.arg, result_type=dict,
                        summary=work.summary or None, **activity_options(work.options))
                return WorkDone(key=work.key, ok=True, result=result)
            except asyncio.CancelledError:
                return WorkDone(key=work.key, ok=False, cancelled=True, error="cancelled")
            except ActivityError as exc:
                error = str(exc.cause or exc)
                if not work.persist or permanent(exc):
                    return WorkDone(key=work.key, ok=False, error=error,
                                    timed_out=isinstance(exc.cause, ActivityTimeout),
                                    timeout_type=timeout_type(exc))
                # Persistent work that failed a first round: a child keeps trying and says so,
                # while this workflow goes on deciding (and may continue as new).
                work.detached = True
                work.failures, work.last_error = 1, error
                work.stuck_since = workflow.now().timestamp()
                self._name_child(work)
        if not work.started:
            await self._start_child(work)
        await workflow.wait_condition(lambda: self.records.get(work.key) is not work)
        return None

    async def _start_child(self, work: Work) -> None:
        parent = workflow.info().workflow_id
        assert work.child_id is not None
        try:
            await workflow.start_child_workflow(
                DetachedWorkWorkflow.run, DetachedInput(parent_id=parent, work=work),
                id=work.child_id,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                # A new run re-issuing it finds the first (the ID is in the carried state).
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=work.summary or work.kind)
        except WorkflowAlreadyStartedError:
            pass
        work.started = True
        # The child has the argument now: the carried state need not (a build's is its whole
        # speculative state, and every continue-as-new would carry it again).
        work.arg = {}
        if work.cancel_requested:
            await self._cancel_child(work)

    async def _cancel_child(self, work: Work) -> None:
        assert work.child_id is not None
        handle = workflow.get_external_workflow_handle(work.child_id)
        try:
            await handle.cancel()
        except Exception:  # it ended meanwhile: its result came, or nobody will send one
            if self.records.get(work.key) is work:
                self._finish(work, WorkDone(key=work.key, ok=False, cancelled=True,
                                            error="cancelled"))


class LongLivedWorkflow:
    """Base of the long-lived workflows: the detached children's signals, the wake-up flag and
    the main loop's sleep. Subclasses create `self._work` in their `@workflow.init`."""

    _work: WorkTracker
    _dirty: bool = True
    _draining: bool = False  # a legacy run: starts nothing new, continues once work is done
    _continuing: bool = False  # continue-as-new is due (at the next quiet moment)

    @workflow.signal(name="work-done")
    def work_done(self, done: WorkDone) -> None:
        self._work.on_done(done)

    @workflow.signal(name="work-stuck")
    def work_stuck(self, stuck: WorkStuck) -> None:
        self._work.on_stuck(stuck)

    @workflow.update(name="work-alive")
    def work_alive(self, alive: WorkAlive) -> WorkWanted:
        return self._work.on_alive(alive)

    def _wake(self) -> None:
        self._dirty = True

    async def _continue_when_due(self, inp: Any, max_history_events: int | None, *,
                                 legacy: bool, tasks: set[asyncio.Task[None]],
                                 before: Callable[[], None] | None = None) -> None:
        """Continue as new with `inp` if it is due: at once (work in flight is in `inp`), once
        handlers are done and the work that became ready has run. A run recorded before this
        design (`legacy`) drains first, as it did."""
        if legacy:
            if not self._draining and should_continue_as_new(max_history_events):
                self._draining = True  # start nothing new; let what runs finish
            if self._draining and not tasks:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(inp)
            return
        self._continuing = self._continuing or should_continue_as_new(max_history_events,
                                                                      HISTORY_EVENTS)
        if self._continuing and workflow.all_handlers_finished() \
                and await self._ready_to_continue():
            if before is not None:
                before()
            workflow.continue_as_new(inp)

    async def _ready_to_continue(self) -> bool | None:
        """Whether to continue as new now: True; False if something happened meanwhile (decide
        on it first); None to wait for the next event (work that outlives the run was issued
        in this task). Work issued by this run that no worker started is handed to the next."""
        if not await self._quiet():
            return False
        if self._work.fresh():
            return None
        if self._work.asks_ahead():
            keys = self._work.unasked()
            if keys:
                # Asked in this task, continued in a later, short one (see `fresh`).
                self._dirty = False
                await self._work.ask(keys)
                return False if self._dirty else None
            self._work.issue_again(self._work.answered_unstarted())
            return True
        unstarted = await self._work.unstarted()
        if unstarted is not None and not await self._quiet():
            return False  # something happened while it asked
        self._work.issue_again(unstarted or [])
        return True

    async def _quiet(self) -> bool:
        """Before continuing as new: let the work that became ready in this workflow task run
        first (a result, a child's start), and say whether that left nothing new to decide.
        The input is serialized when continue-as-new is called: anything after it is lost."""
        self._dirty = False
        await workflow.wait_condition(lambda: True)
        return not self._dirty and workflow.all_handlers_finished()

    async def _sleep(self, timeout: timedelta | None, continuing: bool = False) -> None:
        """Until something happens (or `timeout`). While a continue-as-new waits for handlers
        (an update still answering), it wakes as soon as they are done; after a workflow task
        that issued work outliving its run, at the next event (WorkTracker.fresh)."""
        continuing = continuing and not self._work.fresh()
        self._dirty = False
        try:
            await workflow.wait_condition(
                lambda: self._dirty or (continuing and workflow.all_handlers_finished()),
                timeout=timeout)
        except TimeoutError:
            pass
