"""`lockmaster cloud ...`: onboarding donated clouds (issue 17). Each region is a workflow,
`onboard/<cloud>/<region>`; these commands start it and read its phases and preflight report.

Bad input (an unknown cloud or region) exits 2 before Temporal is asked; a region already being
onboarded exits 1 and starts nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.text import Text
from temporalio.client import Client

from lockmaster.cli.context import (
    UserOpt,
    acting,
    fail,
    listing_table,
    load,
    out,
    with_client,
)
from lockmaster.model.onboarding import OnboardingStatus
from lockmaster.starters.onboarding import (
    AlreadyRunning,
    OnboardingInputError,
    RegionState,
    find_cloud,
    find_region,
    region_state,
    regions_of,
    start_onboarding,
)

app = typer.Typer(help="Onboard donated clouds: list, status, onboard.", no_args_is_help=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="lockmaster.yaml")
JsonOpt = typer.Option(False, "--json", help="print JSON (for scripts)")


def _json(state: RegionState) -> dict[str, object]:
    return {"cloud": state.cloud, "region": state.region, "workflow_id": state.workflow_id,
            "execution": state.execution,
            "status": state.status.model_dump(mode="json") if state.status else None}


def _state_text(state: RegionState) -> tuple[str, str]:
    if state.execution is None:
        return "not started", ""
    if state.status is None:
        return state.execution, "(no answer: is an orchestrator worker running?)"
    preflight = state.status.phase("preflight")
    return state.execution, preflight.message or f"preflight {preflight.state}"


@app.command("list")
def list_(config: Path | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """The configured clouds and regions, and how their onboarding stands."""
    cfg = load(config)
    if not cfg.clouds and not as_json:
        out.print("no clouds configured (add them under `clouds:` in lockmaster.yaml; "
                  "see docs/clouds.md)")
        return

    async def go(client: Client) -> list[RegionState]:
        return [await region_state(client, cfg, c.name, r) for c in cfg.clouds for r in c.regions]

    states = with_client(cfg, go)
    if as_json:
        print(json.dumps([_json(state) for state in states], indent=2))
        return
    table = listing_table("cloud", "region", "workflow", "state", "preflight")
    for state in states:
        execution, preflight = _state_text(state)
        table.add_row(state.cloud, state.region, state.workflow_id, execution, Text(preflight))
    out.print(table)


@app.command("status")
def status(
    region: str = typer.Argument(..., help="REGION, or CLOUD/REGION"),
    config: Path | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The phases of a region's onboarding and its preflight report."""
    cfg = load(config)
    try:
        cloud, region_name = find_region(cfg, region)
    except OnboardingInputError as exc:
        fail(str(exc))

    async def go(client: Client) -> RegionState:
        return await region_state(client, cfg, cloud.name, region_name)

    state = with_client(cfg, go)
    if state.execution is None:
        fail(f"{state.workflow_id}: not started; start it with `lockmaster cloud onboard "
             f"{cloud.name} --region {region_name}`", 1)
    if state.status is None:
        fail(f"{state.workflow_id} is {state.execution} but did not answer; is an orchestrator "
             "worker running?", 1)
    if as_json:
        print(json.dumps(_json(state), indent=2))
        return
    _print_status(state.workflow_id, state.execution, state.status)


def _say(text: str) -> None:
    out.print(text, markup=False)  # messages hold [brackets] (lists of names), not markup


def _print_status(wid: str, execution: str, status: OnboardingStatus) -> None:
    _say(f"{wid}: {execution}")
    if status.outcome:
        _say(status.outcome)
    _say("phases:")
    for phase in status.phases:
        state = "not implemented yet" if phase.state == "not-implemented" else phase.state
        _say(f"  {phase.name:15} {state:20} {phase.message or phase.description}")
    report = status.preflight
    if report is None:
        return
    _say(f"preflight report ({report.summary()}):")
    for check in report.checks:
        mark = "ok    " if check.ok else "FAILED"
        _say(f"  {mark} {check.name}: {check.message}")
        if not check.ok and check.fix:
            _say(f"         fix: {check.fix}")


@app.command("onboard")
def onboard(
    cloud: str = typer.Argument(..., help="a cloud under `clouds:` in lockmaster.yaml"),
    region: str | None = typer.Option(None, "--region", help="one region (default: each)"),
    user: str | None = UserOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Start onboarding a cloud's region(s): preflight first (the later phases are not
    implemented yet)."""
    cfg = load(config)
    try:
        regions = regions_of(find_cloud(cfg, cloud), region)
    except OnboardingInputError as exc:
        fail(str(exc))
    who = acting(user)

    async def go(client: Client) -> list[str]:
        running: list[str] = []
        for name in regions:
            try:
                handle = await start_onboarding(client, cfg, cloud, name, who)
            except AlreadyRunning as exc:
                running.append(str(exc))
                continue
            out.print(f"started {handle.id}; follow it with `lockmaster cloud status "
                      f"{cloud}/{name}`")
        return running

    running = with_client(cfg, go, OnboardingInputError)
    if running:
        fail("; ".join(running), 1)

