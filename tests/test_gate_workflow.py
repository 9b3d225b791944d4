"""The gate end to end on the dev server: shared queue, speculative builds, failure handling,
operator commands, continue-as-new. Real git, local nodes running real commands."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

from temporalio.client import Client

from lockmaster.model.change import ChangeInfo
from lockmaster.model.gate import QueueStatus, StatusQuery
from tests.deployment import Deployment, deployment, make_config, unique_project

CHECK = {
    "name": "check", "trigger": [{"event": "patchset-created"}],
    "success": {"labels": {"Verified": 1}}, "failure": {"labels": {"Verified": -1}},
}
GATE = {
    "name": "gate", "manager": "dependent",
    "trigger": [{"event": "comment-added", "approval": {"Workflow": 1}}],
    "require": {"Code-Review": 2, "Workflow": 1},
    "start": {"labels": {"Verified": 0}},
    "success": {"labels": {"Verified": 2}, "submit": True},
    "failure": {"labels": {"Verified": -2}},
    "supersedes": ["check"],
}


def gate_config(tmp_path: Path, projects: list[str], run: str, queue: str | None = None,
                **pipeline: Any):
    return make_config(
        tmp_path,
        pipelines=[CHECK, {**GATE, **pipeline}],
        projects=[{"name": p, "connection": "local", "queue": queue,
                   "pipelines": {"gate": {"jobs": ["merge-check", {
                       "name": "test", "dependencies": ["merge-check"]}]}}} for p in projects],
        jobs=[{"name": "merge-check", "run": "true", "nodeset": "local"},
              {"name": "test", "run": run, "nodeset": "local"}],
    )


async def approve(dep: Deployment, number: int) -> None:
    info = await asyncio.to_thread(dep.store.vote, number, {"Code-Review": 2, "Workflow": 1},
                                   author="core")
    await dep.router.route(dep.event(
        info, "comment-added", comment=f"Patch Set {info.patchset}: Code-Review+2 Workflow+1",
        author="core", approvals={"Code-Review": 2, "Workflow": 1}))


async def settle(dep: Deployment, wid: str, timeout: float = 90) -> QueueStatus:
    handle = dep.client.get_workflow_handle(wid)
    for _ in range(int(timeout * 10)):
        status = await handle.query("status", StatusQuery(), result_type=QueueStatus)
        if status.idle:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"queue never settled: {status}")


def branch_files(dep: Deployment, project: str) -> list[str]:
    out = subprocess.run(["git", "ls-tree", "--name-only", "master"], cwd=dep.store.repo(project),
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def merged_order(dep: Deployment, numbers: list[int]) -> list[int]:
    merged = [(dep.store.record(n)["status"], n) for n in numbers]
    return [n for status, n in merged if status == "MERGED"]


async def gate_three_with_broken_middle(dep: Deployment, name: str) -> list[ChangeInfo]:
    """Three changes approved in order, the middle one breaking `test`; waits until settled."""
    dep.store.create_project(name, {"README": "x\n"})
    changes = [dep.store.upload(name, files={f: f + "\n"}, subject=f) for f in ("a", "BROKEN", "c")]
    for change in changes:
        await approve(dep, change.number)
    await settle(dep, f"gate/{name}")
    return changes


async def test_broken_change_is_skipped_and_the_rest_merge_in_order(
    client: Client, tmp_path: Path
) -> None:
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 0.5; test ! -f BROKEN")
    async with deployment(client, config) as dep:
        a, b, c = await gate_three_with_broken_middle(dep, name)
        assert merged_order(dep, [a.number, b.number, c.number]) == [a.number, c.number]
        reports = {n: [(m["labels"], m["message"].splitlines()[0]) for m in dep.reports(n)]
                   for n in (a.number, b.number, c.number)}
        assert reports[a.number] == [({"Verified": 0}, "Starting gate jobs."),
                                     ({"Verified": 2}, "Build succeeded (gate).")]
        assert reports[b.number][-1] == ({"Verified": -2}, "Build failed (gate).")
        assert reports[c.number][-1] == ({"Verified": 2}, "Build succeeded (gate).")
        # The branch now holds A and C and not B: they merged exactly as tested.
        files = branch_files(dep, name)
        assert "a" in files and "c" in files and "BROKEN" not in files


async def test_shared_queue_tests_projects_together(client: Client, tmp_path: Path) -> None:
    one, two = unique_project("one"), unique_project("two")
    queue = f"q{one.split('/')[0]}"
    # The second project's test only passes when the first project's change is in its state.
    config = gate_config(tmp_path, [one, two],
                         f'test -f "$LOCKMASTER_WORKSPACE/src/{one}/feature"', queue=queue)
    config.jobs[1].required_projects = [one]
    async with deployment(client, config) as dep:
        dep.store.create_project(one, {"README": "1\n"})
        dep.store.create_project(two, {"README": "2\n"})
        a = dep.store.upload(one, files={"feature": "f\n"}, subject="feature")
        b = dep.store.upload(two, files={"use": "u\n"}, subject="use it")
        await approve(dep, a.number)
        await approve(dep, b.number)
        await settle(dep, f"gate/{queue}")
        assert dep.store.record(a.number)["status"] == "MERGED"
        assert dep.store.record(b.number)["status"] == "MERGED"


async def test_unapproved_change_leaves_and_followers_rebuild(
    client: Client, tmp_path: Path
) -> None:
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 2")
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        a = dep.store.upload(name, files={"a": "a\n"}, subject="A")
        b = dep.store.upload(name, files={"b": "b\n"}, subject="B")
        await approve(dep, a.number)
        await approve(dep, b.number)
        wid = f"gate/{name}"
        status = await wait_items(dep, wid, 2)
        assert [i.changes for i in status.items] == [f"{a.number},1",
                                                     f"{a.number},1 {b.number},1"]
        info = await asyncio.to_thread(dep.store.vote, a.number, {"Workflow": 0}, author="core")
        await dep.router.route(dep.event(info, "comment-added", comment="Workflow-1",
                                         approvals={"Workflow": 0}))
        status = await wait_items(dep, wid, 1)
        assert [i.changes for i in status.items] == [f"{b.number},1"]
        await settle(dep, wid)
        assert merged_order(dep, [a.number, b.number]) == [b.number]
        # Zuul: the item no longer meets the pipeline's requirements, and says so.
        message = dep.reports(a.number)[-1]["message"]
        assert message.startswith("Build failed (gate).") and "missing merge requirement" in message


async def test_operator_dequeue_and_promote(client: Client, tmp_path: Path) -> None:
    from lockmaster.starters import operator
    from lockmaster.starters.status import collect

    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 1.5", dequeue={"labels": {}})
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        a, b, c = (dep.store.upload(name, files={n: n + "\n"}, subject=n) for n in "abc")
        for change in (a, b, c):
            await approve(dep, change.number)
        wid = f"gate/{name}"
        await wait_items(dep, wid, 3)
        action = await operator.promote(client, config, "gate", name, [f"{c.number},1"])
        assert (action.action, action.workflow_id, action.detail) == (
            "promoted", wid, f"queue now: {c.number},1 {a.number},1 {b.number},1")
        status = await wait_order(dep, wid, [c.number, a.number, b.number])
        assert status.items[1].changes == f"{c.number},1 {a.number},1"
        action = await operator.dequeue(client, config, "gate", name, a.number)
        assert (action.action, action.detail) == (
            "dequeued", f"{a.number},1; queue now: {c.number},1 {b.number},1")
        status = await wait_order(dep, wid, [c.number, b.number])
        assert status.items[1].changes == f"{c.number},1 {b.number},1"
        # (Queues of earlier tests still run, their workers gone: they answer nothing.)
        views = {p.pipeline: p for p in await collect(client, config, timeout=5.0)}
        [queue_view] = views["gate"].queues
        assert [i.change for i in queue_view.items] == [f"{c.number},1", f"{b.number},1"]
        await settle(dep, wid)
        assert merged_order(dep, [a.number, b.number, c.number]) == [b.number, c.number]
        assert [m["tag"].split(":")[-1] for m in dep.reports(a.number)][-1] == "dequeue"


async def test_operator_commands_that_would_change_nothing_say_why(
        client: Client, tmp_path: Path) -> None:
    """Rejected updates: nothing is recorded, the queue goes on; the signals of the same names
    (the `temporal` CLI's) still work, unanswered."""
    from lockmaster.model.gate import PromoteRequest
    from lockmaster.starters import operator

    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 1.5")
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        a, b = (dep.store.upload(name, files={n: n + "\n"}, subject=n) for n in "ab")
        gone = await operator.promote(client, config, "gate", name, ["1"])
        assert (gone.action, gone.detail) == ("ignored", "no such queue is running")
        for change in (a, b):
            await approve(dep, change.number)
        wid = f"gate/{name}"
        await wait_items(dep, wid, 2)
        queue = f"(queue: {a.number},1 {b.number},1)"
        answers = [
            await operator.promote(client, config, "gate", name, ["99"]),
            await operator.promote(client, config, "gate", name, [f"{b.number},2"]),
            await operator.promote(client, config, "gate", name, [str(a.number)]),
            await operator.dequeue(client, config, "gate", name, 99),
        ]
        assert [(x.action, x.workflow_id, x.detail) for x in answers] == [
            ("ignored", wid, f"change 99 is not in the queue {queue}"),
            ("ignored", wid, f"change {b.number},2 is not in the queue ({b.number},1 is) "
                             f"{queue}"),
            ("ignored", wid, f"the queue is in that order already ({a.number},1 {b.number},1)"),
            ("ignored", wid, f"change 99 of {name} is neither in the queue nor waiting to "
                             f"enter it {queue}"),
        ]
        await client.get_workflow_handle(wid).signal(
            "promote", PromoteRequest(changes=[str(b.number)]))
        await wait_order(dep, wid, [b.number, a.number])
        # Promoted right after its approval: the promote waits for it to enter the queue.
        c = dep.store.upload(name, files={"c": "c\n"}, subject="c")
        await approve(dep, c.number)
        action = await operator.promote(client, config, "gate", name, [str(c.number)])
        assert (action.action, action.detail) == (
            "promoted", f"queue now: {c.number},1 {b.number},1 {a.number},1")
        await settle(dep, wid)
        assert merged_order(dep, [a.number, b.number, c.number]) == [a.number, b.number,
                                                                     c.number]


async def test_enqueue_refuses_a_merged_or_abandoned_change(
        client: Client, tmp_path: Path) -> None:
    """Issue 12: such an enqueue said "enqueued" (and the queue livelocked, or tested and
    reported an abandoned change); now nothing is signalled, the queue never hears of it."""
    from temporalio.service import RPCError

    from lockmaster.starters import operator

    name = unique_project()
    config = gate_config(tmp_path, [name], "true")
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        merged = dep.store.upload(name, files={"m": "m\n"}, subject="m")
        dep.store.submit(merged.ref())
        abandoned = dep.store.upload(name, files={"a": "a\n"}, subject="a")
        dep.store.abandon(abandoned.number, author="dev")
        for change, status in ((merged, "merged"), (abandoned, "abandoned")):
            action = await operator.enqueue(client, config, dep.drivers, "gate", "local",
                                            change.number)
            assert (action.action, action.workflow_id, action.detail) == (
                "refused", None, f"change {change.number} ({name}) is {status}: only an open "
                                 "change can enter gate")
        try:
            await client.get_workflow_handle(f"gate/{name}").describe()
        except RPCError:
            pass  # never started: nothing was signalled
        else:
            raise AssertionError("the queue was started")
        assert dep.reports(abandoned.number) == [] and dep.reports(merged.number) == []


async def test_queue_continues_as_new_and_keeps_its_state(client: Client, tmp_path: Path) -> None:
    from lockmaster.starters.operator import enqueue_change

    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 0.3")
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        changes = [dep.store.upload(name, files={f"f{i}": "x\n"}, subject=f"c{i}")
                   for i in range(4)]
        for change in changes:
            dep.store.vote(change.number, {"Code-Review": 2, "Workflow": 1}, author="core")
            await enqueue_change(client, config, "gate", change.ref(), max_history_events=40)
        wid = f"gate/{name}"
        await settle(dep, wid)
        assert merged_order(dep, [c.number for c in changes]) == [c.number for c in changes]
        runs = [w async for w in client.list_workflows(f'WorkflowId = "{wid}"')]
        assert len(runs) >= 2, "the queue never continued as new"
        for change in changes:
            assert len([r for r in dep.reports(change.number)
                        if r["message"].startswith("Build succeeded")]) == 1


async def wait_items(dep: Deployment, wid: str, count: int) -> QueueStatus:
    return await wait_status(dep, wid, lambda s: len(s.items) == count and all(
        any(j.state == "running" for j in i.jobs) for i in s.items))


async def wait_order(dep: Deployment, wid: str, numbers: list[int]) -> QueueStatus:
    return await wait_status(dep, wid, lambda s: [int(i.change.split(",")[0])
                                                  for i in s.items] == numbers)


async def wait_status(dep: Deployment, wid: str, ok, timeout: float = 30) -> QueueStatus:  # type: ignore[no-untyped-def]
    handle = dep.client.get_workflow_handle(wid)
    status = None
    for _ in range(int(timeout * 10)):
        try:
            status = await handle.query("status", StatusQuery(), result_type=QueueStatus)
        except Exception:
            status = None
        if status is not None and ok(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"queue never reached the expected state: {status}")


async def gate_stack_then_new_bottom_patchset(
        dep: Deployment, name: str, *, max_history_events: int | None = None,
) -> tuple[list[ChangeInfo], str]:
    """A <- B <- C (git parents) approved and running in the gate; A gets patchset 2. Returns
    the changes (as first uploaded) and A,1's commit; waits until the queue settles."""
    from lockmaster.starters.operator import enqueue_change

    dep.store.create_project(name, {"README": "x\n"})
    a = dep.store.upload(name, files={"a": "a\n"}, subject="a")
    b = dep.store.upload(name, files={"b": "b\n"}, subject="b", parent=a.number)
    c = dep.store.upload(name, files={"c": "c\n"}, subject="c", parent=b.number)
    for change in (a, b, c):
        dep.store.vote(change.number, {"Code-Review": 2, "Workflow": 1}, author="core")
        await enqueue_change(dep.client, dep.config, "gate", change.ref(),
                             max_history_events=max_history_events)
    wid = f"gate/{name}"
    await wait_items(dep, wid, 3)
    new = await asyncio.to_thread(dep.store.new_patchset, a.number, {"a": "a, reworked\n"})
    await dep.router.route(dep.event(new))
    await settle(dep, wid)
    return [a, b, c], a.commit


async def test_new_patchset_under_a_stack_takes_the_stack_out(
        client: Client, tmp_path: Path) -> None:
    """The issue's case: nothing of the superseded patchset reaches the branch, and the changes
    built on it leave with a report naming it."""
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 1")
    async with deployment(client, config) as dep:
        (a, b, c), old = await gate_stack_then_new_bottom_patchset(dep, name)
        assert merged_order(dep, [a.number, b.number, c.number]) == []
        for above in (b, c):
            last = dep.reports(above.number)[-1]["message"]
            assert last.startswith("Build failed (gate)."), last
            assert f"hange {a.number},1" in last, last  # the change that caused it, named
            assert "not the current patchset" in last, last
        log = subprocess.run(["git", "log", "--format=%H %s", "master"],
                             cwd=dep.store.repo(name), capture_output=True, text=True,
                             check=True).stdout
        assert old not in log and " a\n" not in log + "\n", log
        assert branch_files(dep, name) == ["README"]
