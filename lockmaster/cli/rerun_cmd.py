"""`lockmaster rerun PROJECT CHANGE JOB`: run one job of a change's check again.

Bad input (an unknown project, pipeline, change or job, a change of another project) is said in
one line and exits 2 before Temporal is asked anything; nothing is started."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from lockmaster.cli.context import ReasonOpt, UserOpt, acting, fail, load, out


def rerun(
    project: str, change: int, job: str,
    pipeline: str = typer.Option("check", "--pipeline", help="an independent pipeline"),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="start nothing: print the equivalent `temporal` command"),
    reason: str | None = ReasonOpt, user: str | None = UserOpt,
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
) -> None:
    """Run one job of the change's latest patchset again (alone, on a fresh speculative
    state, with the artifacts its dependencies made in the last run) and report it."""
    from temporalio.service import RPCError

    from lockmaster.review.base import ReviewError
    from lockmaster.review.registry import review_drivers
    from lockmaster.starters.rerun import RerunError, rerun_job, rerun_target
    from lockmaster.temporal.client import connect

    cfg = load(config)
    by = acting(user)

    async def main() -> str:
        drivers = review_drivers(cfg)
        try:
            await rerun_target(cfg, drivers, project, change, job, pipeline)
            try:
                client = await connect(cfg)
            except RuntimeError as exc:
                fail(f"cannot reach Temporal at {cfg.temporal.address}: {exc}", 1)
            action = await rerun_job(client, cfg, drivers, project, change, job, pipeline,
                                     dry_run=dry_run, by=by, reason=reason)
            return action.detail if dry_run else str(action)
        finally:
            for driver in drivers.values():
                await driver.aclose()

    try:
        out.print(asyncio.run(main()), markup=False, highlight=False, soft_wrap=True)
    except RerunError as exc:
        fail(str(exc))
    except ReviewError as exc:
        fail(f"the review system did not answer: {exc}", 1)
    except RPCError as exc:
        fail(f"Temporal at {cfg.temporal.address} refused the rerun: {exc}", 1)
