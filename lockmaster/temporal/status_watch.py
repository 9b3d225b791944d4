"""One status query per workflow per process, shared by every waiter in it (issue 14).

Executors wait for node requests (`nodepool/<provider>/<pool>`) and TE leases (`te/<label>`) by
asking the long-lived workflow how their request stands. When each waiter asked for itself, 200
waiting builds cost the pool about 200 queries a second; the server refuses queries beyond the
few it buffers while a workflow task runs ("consistent query buffer is full"), and every refusal
was retried and logged. Here a process asks once per round for all its waiters on one workflow
(`request_statuses`, `lease_statuses`: a list of ids in, their statuses out) and hands each
waiter its answer.

When the rounds come:
- a round asks for every waiter; it is due when the first waiter's interval has passed since it
  was last looked at, and rounds are at least `min_gap` apart however many waiters join;
- a waiter's interval is `join_delay` when it joins (or asks again) and grows by `growth` after
  every round: up to `max_interval` while no answer changes, and back to (at most) `first` after
  a round in which any answer changed (a request fulfilled for one waiter is news for the
  others: the workflow is moving). `Waiter.hurry` caps it (a TE holder next in line);
- a transient refusal (RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED) is asked
  again after a jittered back-off (`busy_first` doubling to `busy_max`), with one warning per
  outage and one line when it ends; past `give_up` seconds of outage (None: never) every waiter
  gets the error. Any other error goes to every waiter at once.

The watch's task runs only while it has waiters. `shared_watch` keeps one per key (workflow and
query) per event loop, so every client object in a process shares it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

from temporalio.client import WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.model.base import IdsQuery

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 30.0
TRANSIENT = (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE,
             RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)

S = TypeVar("S")
# ids -> their answers (an id left out gets no answer this round)
Fetch = Callable[[list[str]], Awaitable[Mapping[str, S]]]


class _Unseen:
    pass


_UNSEEN = _Unseen()


def transient(exc: BaseException) -> bool:
    """A busy or briefly unreachable workflow, not a missing one."""
    return isinstance(exc, RPCError) and exc.status in TRANSIENT


class Waiter(Generic[S]):
    """One waiter's view: `await next()` gives its answer from each round that looked at it."""

    def __init__(self, watch: StatusWatch[S], key: str) -> None:
        self.id = key
        self._watch = watch
        self.interval = watch.join_delay
        self.cap: float | None = None
        self.looked_at = watch.now()  # when a round last asked for it (joining counts)
        self.answer: S | None = None
        self.answers = 0
        self._fingerprint: object = _UNSEEN
        self._error: BaseException | None = None
        self._event = asyncio.Event()
        self.closed = False

    async def next(self) -> S:
        """The answer of the next round that asks for this waiter (or the latest one, if it
        came since the last call). Raises what the watch gave up on."""
        await self._event.wait()
        self._event.clear()
        if self._error is not None:
            raise self._error
        assert self.answer is not None
        return self.answer

    def hurry(self, cap: float | None) -> None:
        """Look at least every `cap` seconds (None: no cap, back off as usual)."""
        self.cap = cap
        if cap is not None and cap < self.interval:
            self._watch.wake()

    def again(self) -> None:
        """The waiter asked again (its request was resent): look soon, as when it joined."""
        self.interval = self._watch.join_delay
        self.looked_at = self._watch.now()
        self._watch.wake()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._watch.leave(self)

    def due(self) -> float:
        interval = self.interval if self.cap is None else min(self.interval, self.cap)
        return self.looked_at + interval

    def deliver(self, answer: S, fingerprint: object, at: float) -> bool:
        """Takes a round's answer; says whether it changed."""
        changed = fingerprint != self._fingerprint
        self._fingerprint = fingerprint
        self.answer = answer
        self.answers += 1
        self.looked_at = at
        self._event.set()
        return changed

    def grow(self, news: bool) -> None:
        """After a round that looked at it: back off, less far if the round brought news."""
        watch = self._watch
        ceiling = max(watch.first if news else watch.max_interval, watch.join_delay)
        self.interval = min(self.interval * watch.growth, ceiling)

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._event.set()


class StatusWatch(Generic[S]):
    """Every waiter of this process on one workflow, asked for in one query per round."""

    def __init__(self, name: str, fetch: Fetch[S], *,
                 fingerprint: Callable[[S], object] | None = None,
                 first: float = 0.2, max_interval: float = 5.0, join_delay: float = 0.02,
                 growth: float = 1.5,
                 min_gap: float = 0.05, busy_first: float = 0.1, busy_max: float = 2.0,
                 give_up: float | None = 120.0) -> None:
        self.name = name
        self.fetch = fetch
        self.fingerprint: Callable[[S], object] = fingerprint or (lambda answer: answer)
        self.first = first
        self.max_interval = max_interval
        self.growth = growth
        self.join_delay = join_delay
        self.min_gap = min_gap
        self.busy_first = busy_first
        self.busy_max = busy_max
        self.give_up = give_up
        self.rounds = 0  # queries sent (answered or not)
        self.on_idle: Callable[[], None] | None = None
        self._waiters: list[Waiter[S]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_round = float("-inf")
        self._outage_since: float | None = None
        self._refusals = 0
        self._busy_delay = busy_first

    # --- waiters -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[Waiter[S]]:
        """A waiter for `key` while the block runs (cancelled or not, it leaves afterwards)."""
        waiter = self.join(key)
        try:
            yield waiter
        finally:
            waiter.close()

    def join(self, key: str) -> Waiter[S]:
        waiter = Waiter(self, key)
        self._waiters.append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"status watch {self.name}")
        self.wake()
        return waiter

    def leave(self, waiter: Waiter[S]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        self.wake()
        if not self._waiters and self.on_idle is not None:
            self.on_idle()  # forgotten at once: whoever comes next starts a new watch

    def _live(self) -> list[Waiter[S]]:
        return [w for w in self._waiters if not w.closed and w._error is None]

    @property
    def waiting(self) -> list[str]:
        """The ids the next round asks for."""
        return sorted({w.id for w in self._live()})

    # --- the rounds ----------------------------------------------------------------------------

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wake(self) -> None:
        self._wake.set()

    def _due(self) -> float:
        if self._outage_since is not None:
            return self._last_round + self._busy_delay
        due = min(w.due() for w in self._live())
        return max(due, self._last_round + self.min_gap)

    async def _run(self) -> None:
        try:
            while True:
                ids = self.waiting
                if not ids:
                    return
                delay = self._due() - self.now()
                if delay > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    continue  # waiters came, went or hurried: work out the round again
                await self._round(ids)
        except BaseException as exc:
            for waiter in list(self._waiters):
                waiter.fail(exc if isinstance(exc, Exception)
                            else RuntimeError(f"{self.name}: the status watch stopped"))
            raise
        finally:
            self._task = None
            if not self._waiters and self.on_idle is not None:
                self.on_idle()

    async def _round(self, ids: list[str]) -> None:
        self.rounds += 1
        try:
            answers = await self.fetch(ids)
        except Exception as exc:
            self._last_round = self.now()
            self._failed(exc, set(ids))
            return
        at = self._last_round = self.now()
        if self._outage_since is not None:
            log.info("%s answers again after %.1f s (%d refused or failed)", self.name,
                     at - self._outage_since, self._refusals)
            self._outage_since, self._refusals, self._busy_delay = None, 0, self.busy_first
        wanted = set(ids)
        looked = [w for w in self._live() if w.id in wanted and w.id in answers]
        news = False
        for waiter in looked:
            answer = answers[waiter.id]
            news = waiter.deliver(answer, self.fingerprint(answer), at) or news
        for waiter in looked:
            waiter.grow(news)

    def _failed(self, exc: Exception, ids: set[str]) -> None:
        now = self.now()
        if transient(exc):
            self._refusals += 1
            if self._outage_since is None:
                self._outage_since = now
                self._busy_delay = self.busy_first
                log.warning("%s is busy or unreachable (%s); asking again quietly",
                            self.name, exc)
            else:
                self._busy_delay = min(self._busy_delay * 2, self.busy_max)
            self._busy_delay *= random.uniform(0.75, 1.0)
            if self.give_up is None or now - self._outage_since <= self.give_up:
                return
            log.warning("%s did not answer for %.0f s: giving up on %d waiter(s)", self.name,
                        now - self._outage_since, len(self._waiters))
        self._outage_since, self._refusals, self._busy_delay = None, 0, self.busy_first
        for waiter in list(self._waiters):
            if waiter.id in ids:  # one that joined meanwhile was not asked for: asked next
                waiter.fail(exc)


# --- one per workflow per process ----------------------------------------------------------------

_shared: dict[tuple[Hashable, ...], StatusWatch[Any]] = {}


def shared_watch(key: tuple[Hashable, ...], make: Callable[[], StatusWatch[S]]
                 ) -> StatusWatch[S]:
    """The watch for `key` (e.g. the query's name, the client, the workflow id) in this event
    loop, made by `make` if there is none. It is forgotten when its last waiter leaves."""
    full = (asyncio.get_running_loop(), *key)
    found = _shared.get(full)
    if found is None:
        found = made = make()

        def forget() -> None:
            if _shared.get(full) is made:
                del _shared[full]

        found.on_idle = forget
        _shared[full] = found
    return found


class _HasId(Protocol):
    id: str


A = TypeVar("A", bound=_HasId)


def unknown_query(exc: BaseException) -> bool:
    """The workflow's worker runs code without this query (an older lockmaster)."""
    return isinstance(exc, WorkflowQueryFailedError) and "expected but not found" in str(exc)


def batched_query(handle: WorkflowHandle[Any, Any], many: str, one: str,
                  one_arg: Callable[[str], object], result_type: type[A],
                  many_type: type[Any], *, timeout: float = QUERY_TIMEOUT) -> Fetch[A]:
    """Asks `many` (IdsQuery in, `many_type` with the answers in `statuses` out); while the
    workflow's worker does not know it (an older lockmaster), asks `one` per id instead. A
    query unanswered after `timeout` seconds fails as DEADLINE_EXCEEDED, a transient error
    (one query never stalls every waiter of the process)."""
    batched = True
    rpc_timeout = timedelta(seconds=timeout)

    async def fetch(ids: list[str]) -> Mapping[str, A]:
        nonlocal batched
        if batched:
            try:
                found = await handle.query(many, IdsQuery(ids=ids), result_type=many_type,
                                           rpc_timeout=rpc_timeout)
                return {answer.id: answer for answer in found.statuses}
            except WorkflowQueryFailedError as exc:
                if not unknown_query(exc):
                    raise
                batched = False
                log.warning("%s has no %r query (an older worker?): asking %r per request",
                            handle.id, many, one)
        return {i: await handle.query(one, one_arg(i), result_type=result_type,
                                      rpc_timeout=rpc_timeout) for i in ids}

    return fetch
