"""`lockmaster publish ...`: what happened to a merged change's packages (the gate's build
promoted or a rebuild, and why; published into the stable repository, synced to each mirror),
the publish queue, and retriggering one step.
Each command wraps a query or start on `publish/<project>/<change>` or `publish-queue/stable`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from temporalio.client import Client

from lockmaster.cli.context import (
    ReasonOpt,
    UserOpt,
    acting,
    fail,
    listing_table,
    load,
    out,
    with_client,
)
from lockmaster.config.models import LockmasterConfig
from lockmaster.model.publish import BuildSource, Provenance, SkipRequest
from lockmaster.model.testenv import OperatorAnswer
from lockmaster.starters.publish import Publications, PublishError, queue_workflow_id

app = typer.Typer(help="Published packages: show, queue, retrigger.", no_args_is_help=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="lockmaster.yaml")
T = TypeVar("T")


def _run(cfg: LockmasterConfig, action: Callable[[Client], Awaitable[T]]) -> T:
    return with_client(cfg, action, PublishError)


def _when(at: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) if at else ""


@app.command("show")
def show(project: str, change: int, as_json: bool = typer.Option(False, "--json"),
         config: Path | None = ConfigOpt) -> None:
    """A merged change's publication: each step, its state and detail; the mirrors' sync
    reports (files added and removed) are linked."""
    cfg = load(config)
    status = _run(cfg, lambda c: Publications(c, cfg).show(project, change))
    if as_json:
        out.print_json(status.model_dump_json())
        return
    out.print(f"{project} change {change} merged as {status.change.commit or '?'}; "
              f"snapshot {status.snapshot or '(not published)'}"
              + ("" if status.done else " — in progress"))
    listing = listing_table("step", "state", "started", "ended", "detail", "link")
    for step in status.steps:
        listing.add_row(step.name + (" (earlier run)" if step.earlier else ""),
                        step.state.value, _when(step.started), _when(step.ended),
                        step.detail or "", step.url or "")
    out.print(listing)
    if status.provenance is not None:
        for line in provenance_lines(status.provenance):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    for step in status.steps:
        for sign, files in (("+", step.added), ("-", step.removed)):
            for name in files:
                out.print(f"  {step.name} {sign} {name}", markup=False, highlight=False)


def provenance_lines(provenance: Provenance) -> list[str]:
    """Which build was (or will be) published, why that one, and what the publisher checked."""
    which = ("the gate's build (promoted)" if provenance.source is BuildSource.GATE
             else "a rebuild from the merged commit")
    lines = [f"published build: {which}", f"  why: {provenance.reason}",
             f"  job: {provenance.job}" + (f" (build {provenance.build_id})"
                                           if provenance.build_id else "")]
    for label, value in (("buildset", provenance.buildset), ("log", provenance.log_url),
                         ("packages", provenance.packages_url),
                         ("manifest sha256", provenance.manifest_sha256),
                         ("built from", provenance.tested_commit),
                         ("its tree", provenance.tested_tree),
                         ("merged commit", provenance.merged_commit),
                         ("merged tree", provenance.merged_tree),
                         ("publisher checked", provenance.publisher_check)):
        if value:
            lines.append(f"  {label}: {value}")
    return lines


@app.command("queue")
def queue(as_json: bool = typer.Option(False, "--json"),
          config: Path | None = ConfigOpt) -> None:
    """The publish queue: merged changes in merge order, and which one the others wait for."""
    cfg = load(config)
    status = _run(cfg, lambda c: Publications(c, cfg).queue())
    if as_json:
        out.print_json(status.model_dump_json())
        return
    listing = listing_table("#", "change", "state", "snapshot", "workflow", "detail")
    for entry in status.entries:
        listing.add_row(str(entry.sequence), entry.change, entry.state.value, entry.snapshot or "",
                      entry.workflow_id, entry.detail or "")
    out.print(listing)


@app.command("retrigger")
def retrigger(project: str, change: int,
              step: str = typer.Option(..., "--step",
                                       help="build (everything again), publish, or "
                                            "sync:<mirror>"),
              dry_run: bool = typer.Option(False, "--dry-run",
                                           help="start nothing: print the equivalent "
                                                "`temporal` command"),
              reason: str | None = ReasonOpt, user: str | None = UserOpt,
              config: Path | None = ConfigOpt) -> None:
    """Run one step of a finished publication again."""
    cfg = load(config)
    by = acting(user)
    answer = _run(cfg, lambda c: Publications(c, cfg).retrigger(
        project, change, step, dry_run=dry_run, by=by, reason=reason))
    out.print(answer.message, markup=False, highlight=False, soft_wrap=True)


@app.command("skip")
def skip(project: str, change: int, reason: str | None = ReasonOpt,
         user: str | None = UserOpt, config: Path | None = ConfigOpt) -> None:
    """Pass over a change the publish queue waits for whose workflow will never finish (e.g.
    terminated by hand)."""
    cfg = load(config)
    by = acting(user)
    from lockmaster.starters.publish import change_workflow_id

    async def go(client: Client) -> OperatorAnswer:
        handle = client.get_workflow_handle(queue_workflow_id(cfg))
        return await handle.execute_update(
            "skip", SkipRequest(workflow_id=change_workflow_id(cfg, project, change), by=by,
                                reason=reason),
            result_type=OperatorAnswer)

    answer = _run(cfg, go)
    if not answer.ok:
        fail(answer.message)
    out.print(answer.message)
