"""`lockmaster status` and `lockmaster gate enqueue|dequeue|promote` (operators): enqueue and
dequeue work on every pipeline (a queue's item, or a check run), promote on queues only. Each
records who acts (`--user`, $LOCKMASTER_USER, the login name) and why (`--reason`); enqueue
refuses a change without the pipeline's approvals unless `--force --reason` (model/audit.py).

Exit codes: 0 done (what was done is printed: the queue's new order, what left); 2 refused
(bad input: an unknown or closed change, queue, project or pipeline; nothing was sent); 1 the
command changed nothing (the change is not there) or Temporal did not answer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import typer
from rich.markup import escape

from lockmaster.cli.context import ReasonOpt, UserOpt, acting, fail, load, out
from lockmaster.config.models import LockmasterConfig
from lockmaster.pipelines.queues import base_queue, split_queue
from lockmaster.review.base import ChangeNotFound, ReviewError
from lockmaster.review.registry import review_drivers
from lockmaster.starters import operator
from lockmaster.starters.status import PipelineStatus, collect
from lockmaster.temporal.client import connect

app = typer.Typer(help="Operate the gate's queues.", no_args_is_help=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="lockmaster.yaml")
PipelineOpt = typer.Option("gate", "--pipeline", help="any pipeline (gate, check, ...)")
QueuePipelineOpt = typer.Option("gate", "--pipeline", help="dependent pipeline")
# What an operator command answers when it changed nothing (it then exits non-zero).
NOTHING_DONE = {operator.IGNORED, "already-running", "duplicate"}


def _known(cfg: LockmasterConfig, pipeline: str) -> None:
    names = [p.name for p in cfg.pipelines]
    if pipeline not in names:
        fail(f"pipeline {pipeline!r} is not configured (pipelines: {', '.join(names)})")


def _dependent(cfg: LockmasterConfig, pipeline: str) -> None:
    names = [p.name for p in cfg.pipelines if p.manager == "dependent"]
    if pipeline not in names:
        fail(f"{pipeline!r} is not a dependent pipeline (dependent pipelines: "
             f"{', '.join(names) or 'none'})")


def _run(cfg: LockmasterConfig, coro_factory) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        try:
            client = await connect(cfg)
        except RuntimeError as exc:
            fail(f"cannot reach Temporal at {cfg.temporal.address}: {exc}", 1)
        action = await coro_factory(client)
        if action.action == operator.REFUSED:
            fail(f"{action.detail}; nothing was enqueued")
        if action.action in NOTHING_DONE:
            fail(f"nothing done: {action}", 1)
        if action.action == operator.UNANSWERED:
            fail(str(action), 1)
        out.print(str(action), markup=False)

    try:
        asyncio.run(main())
    except ChangeNotFound as exc:
        fail(f"{exc}; nothing was enqueued")
    except ReviewError as exc:
        fail(f"the review system did not answer: {exc}", 1)


@app.command("enqueue")
def enqueue(
    change: int = typer.Option(..., "--change"),
    connection: str = typer.Option("local", "--connection"),
    pipeline: str = PipelineOpt,
    force: bool = typer.Option(False, "--force", help="enqueue it without the approvals the "
                               "pipeline requires (needs --reason)"),
    reason: str | None = ReasonOpt, user: str | None = UserOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Put a change into a pipeline: into its queue (gate), or a new run (check). A change
    without the approvals the pipeline requires is refused, unless forced with a reason
    (`--force --reason "..."`: the queue shows who forced it and why)."""
    if force and not (reason or "").strip():
        fail("--force needs --reason: say why the change enters without its approvals; "
             "nothing was enqueued")
    cfg = load(config)
    _known(cfg, pipeline)
    if connection not in cfg.connections:
        fail(f"connection {connection!r} is not configured")
    drivers = review_drivers(cfg)
    by = acting(user)
    _run(cfg, lambda c: operator.enqueue(c, cfg, drivers, pipeline, connection, change,
                                         approvals="force" if force else "require",
                                         by=by, reason=reason))


@app.command("dequeue")
def dequeue(
    change: int = typer.Option(..., "--change"),
    project: str = typer.Option(..., "--project"),
    pipeline: str = PipelineOpt, reason: str | None = ReasonOpt, user: str | None = UserOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Take a change out of a pipeline: its builds are cancelled; out of a queue, it does not
    merge (and what needs it leaves; the change is told who dequeued it and why); out of
    check, its run ends unreported."""
    cfg = load(config)
    _known(cfg, pipeline)
    if cfg.project(project) is None:
        fail(f"project {project!r} is not configured")
    by = acting(user)
    _run(cfg, lambda c: operator.dequeue(c, cfg, pipeline, project, change, by=by,
                                         reason=reason))


@app.command("promote")
def promote(
    changes: list[str] = typer.Argument(..., help="NUMBER or NUMBER,PATCHSET, in order"),
    queue: str = typer.Option(..., "--queue"),
    pipeline: str = QueuePipelineOpt, reason: str | None = ReasonOpt,
    user: str | None = UserOpt, config: Path | None = ConfigOpt,
) -> None:
    """Move these changes, in this order, to the head of the queue (each remembers who
    promoted it and why)."""
    cfg = load(config)
    _dependent(cfg, pipeline)
    queues = sorted({base_queue(cfg, p.name) for p in cfg.projects})
    if split_queue(queue)[0] not in queues:
        fail(f"queue {queue!r} is not configured (queues: {', '.join(queues) or 'none'})")
    for c in changes:
        number, _, patchset = c.partition(",")
        if not number.isdigit() or (patchset and not patchset.isdigit()):
            fail(f"{c!r} is not a change: expected NUMBER or NUMBER,PATCHSET")
    by = acting(user)
    _run(cfg, lambda c: operator.promote(c, cfg, pipeline, queue, changes, by=by,
                                         reason=reason))


def status(
    config: Path | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="machine-readable"),
) -> None:
    """Every pipeline: queues with their items in order, windows, each job's state."""
    cfg = load(config)

    async def main() -> list[PipelineStatus]:
        return await collect(await connect(cfg), cfg)

    try:
        pipelines = asyncio.run(main())
    except RuntimeError as exc:
        fail(f"cannot reach Temporal at {cfg.temporal.address}: {exc}", 1)
    if as_json:
        import json

        out.print_json(json.dumps([p.model_dump(mode="json") for p in pipelines]))
        return
    now = time.time()
    for p in pipelines:
        out.print(f"[bold]{p.pipeline}[/] ({p.manager})")
        for q in p.queues:
            out.print(f"  queue {q.queue}: window {q.window}, {len(q.items)} item(s)")
            for w in q.stuck:  # retried until the review system answers again
                out.print(f"    [red]stuck[/]: {escape(w.what)} failing since "
                          f"{int(now - w.since)}s ago ({w.failures} round(s)): "
                          f"{escape(w.error or '')}", highlight=False)
            for item in q.items:
                flag = "[red]failing[/]" if item.failing else (
                    "active" if item.active else "[dim]waiting (outside window)[/]")
                out.print(f"    {item.project} {item.change}  {flag}  "
                          f"on [{item.changes}]  {int(now - item.enqueued_at)}s in queue")
                for said in item.operator_lines():  # who enqueued or promoted it, and why
                    out.print(f"      {said}", markup=False, highlight=False)
                for job in item.jobs:
                    # By the wall clock: the queue's `elapsed` is as of its last task.
                    elapsed = now - job.started if job.started is not None else job.elapsed
                    extra = f" {elapsed:.0f}s" if elapsed else ""
                    if job.estimated and job.state in ("running", "waiting"):
                        extra += f" (usually {job.estimated:.0f}s)"
                    out.print(f"      - {job.name}: {job.state}{extra}"
                              + ("" if job.voting else " (non-voting)"))
            for key, why in q.recently_left.items():  # a dequeue says who did it and why
                out.print(f"    left: {key} {why}", markup=False, highlight=False)
        for c in p.checks:
            out.print(f"  {c.change.project} {c.change.key}: {c.phase}")
            for job in c.jobs:
                extra = f" {now - job.started:.0f}s" if job.started and \
                    job.state == "running" else ""
                out.print(f"      - {job.name}: {job.state}{extra}"
                          + ("" if job.voting else " (non-voting)"))
        for what in p.unanswered:
            out.print(f"  [red]not answering[/] (is its worker running?): {escape(what)}",
                      highlight=False)
        if not p.queues and not p.checks and not p.unanswered:
            out.print("  (empty)")
