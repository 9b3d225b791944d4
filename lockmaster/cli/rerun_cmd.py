"""`lockmaster rerun PROJECT CHANGE JOB`: run one job of a change's check again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out
from lockmaster.review.registry import review_drivers
from lockmaster.starters.rerun import RerunError, rerun_job
from lockmaster.temporal.client import connect


def rerun(
    project: str, change: int, job: str,
    pipeline: str = typer.Option("check", "--pipeline", help="an independent pipeline"),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="start nothing: print the equivalent `temporal` command"),
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
) -> None:
    """Run one job of the change's latest patchset again (alone, on a fresh speculative
    state, with the artifacts its dependencies made in the last run) and report it."""
    cfg = load(config)

    async def main() -> str:
        try:
            client = await connect(cfg)
        except RuntimeError as exc:
            fail(f"cannot reach Temporal at {cfg.temporal.address}: {exc}", 1)
        drivers = review_drivers(cfg)
        try:
            action = await rerun_job(client, cfg, drivers, project, change, job, pipeline,
                                     dry_run=dry_run)
            return action.detail if dry_run else str(action)
        finally:
            for driver in drivers.values():
                await driver.aclose()

    try:
        out.print(asyncio.run(main()), markup=False, highlight=False, soft_wrap=True)
    except RerunError as exc:
        fail(str(exc))
