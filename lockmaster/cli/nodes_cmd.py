"""`lockmaster nodes ...`: the node pools for operators (list, requests, hold, delete, disable,
enable, autohold). Each wraps a query, signal or update on the pool workflows."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

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
from lockmaster.model.audit import attributed
from lockmaster.model.nodes import Autohold, OperatorResult
from lockmaster.starters.nodepool import NodePools, PoolError

app = typer.Typer(help="Operate the node pools.", no_args_is_help=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="lockmaster.yaml")
ProviderOpt = typer.Option(None, "--provider", help="only this provider's pools")
JsonOpt = typer.Option(False, "--json", help="machine-readable output")
T = TypeVar("T")
DAY = 86400.0


def _run(cfg: LockmasterConfig, action: Callable[[NodePools], Awaitable[T]]) -> T:
    return with_client(cfg, lambda client: action(NodePools(client, cfg)), PoolError)


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else ""


def _age(since: float, now: float) -> str:
    seconds = max(0.0, now - since)
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 \
        else f"{seconds / 3600:.1f}h"


def _report(result: OperatorResult) -> None:
    if not result.ok:
        fail(result.message)
    out.print(result.message)


@app.command("list")
def list_nodes(provider: str | None = ProviderOpt, as_json: bool = JsonOpt,
               config: Path | None = ConfigOpt) -> None:
    """Every node of every pool: state, label, address, who holds it, holds' expiry."""
    cfg = load(config)
    pools = _run(cfg, lambda p: p.status(provider))
    if as_json:
        out.print_json(json.dumps([p.model_dump(mode="json") for p in pools]))
        return
    now = time.time()
    listing = listing_table("id", "provider/pool", "label", "state", "age", "host", "request",
                            "hold until", "held: who, why")
    for pool in pools:
        for node in pool.nodes:
            listing.add_row(node.id, f"{pool.provider}/{pool.pool}",
                          node.label or ",".join(node.labels), node.state.value,
                          _age(node.state_since, now) if node.state_since else "",
                          node.host or "", node.request_id or "", _when(node.hold_until),
                          attributed(node.hold_reason, node.held_by) or "")
    out.print(listing)
    for pool in pools:
        why = attributed(pool.disabled_reason or None, pool.disabled_by)
        state = "enabled" if pool.enabled else "DISABLED" + (f" ({why})" if why else "")
        limit = f", max-servers {pool.max_servers}" if pool.max_servers is not None else ""
        extra = f", launches {pool.launches}, failed {pool.launch_failures}, " \
                f"leaks deleted {pool.leaks_deleted}" if pool.driver.value == "openstack" else ""
        out.print(f"{pool.provider}/{pool.pool} ({pool.driver.value}): {state}{limit}, "
                  f"{len(pool.nodes)} nodes{extra}")
        for w in pool.stuck:
            out.print(f"  stuck: {w.what} failing since {_age(w.since, now)} "
                      f"({w.failures} round(s)): {w.error}", markup=False)


@app.command("requests")
def list_requests(provider: str | None = ProviderOpt, as_json: bool = JsonOpt,
                  config: Path | None = ConfigOpt) -> None:
    """Node requests waiting or being served, in the order they are served."""
    cfg = load(config)
    pools = _run(cfg, lambda p: p.status(provider))
    rows: list[dict[str, Any]] = []
    for pool in pools:
        for r in sorted(pool.requests, key=lambda r: (r.precedence, r.position, r.arrived)):
            rows.append({"pool": f"{pool.provider}/{pool.pool}", **r.model_dump(mode="json")})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    listing = listing_table("request", "pool", "labels", "state", "precedence", "position",
                            "holder", "nodes")
    for row in rows:
        listing.add_row(row["id"], row["pool"], " ".join(row["labels"]), row["state"],
                      str(row["precedence"]), str(row["position"]), row["holder"],
                      " ".join(row["nodes"]))
    out.print(listing)


@app.command("hold")
def hold(node: str = typer.Argument(..., help="node id, or provider/pool/id"),
         days: float = typer.Option(20.0, "--days", help="keep it this long"),
         reason: str = typer.Option("held by an operator", "--reason"),
         user: str | None = UserOpt, config: Path | None = ConfigOpt) -> None:
    """Keep a cloud node for debugging (a node in use is kept once its job ends); `nodes list`
    says who held it and why."""
    if days <= 0:
        fail("--days must be positive")
    cfg = load(config)
    by = acting(user)
    _report(_run(cfg, lambda p: p.hold(node, time.time() + days * DAY, reason, by)))


@app.command("delete")
def delete(node: str = typer.Argument(..., help="node id, or provider/pool/id"),
           reason: str | None = ReasonOpt, user: str | None = UserOpt,
           config: Path | None = ConfigOpt) -> None:
    """Delete a cloud node now (a held one, or one in use: its job loses it)."""
    cfg = load(config)
    by = acting(user)
    _report(_run(cfg, lambda p: p.delete(node, by, reason)))


@app.command("disable")
def disable(provider: str = typer.Argument(...),
            reason: str = typer.Option("disabled by an operator", "--reason"),
            user: str | None = UserOpt, config: Path | None = ConfigOpt) -> None:
    """No new launches (max-servers 0); nodes in use finish; waiting requests go elsewhere.
    `nodes list` says who disabled it and why."""
    cfg = load(config)
    by = acting(user)
    for message in _run(cfg, lambda p: p.set_enabled(provider, False, reason, by)):
        out.print(message)


@app.command("enable")
def enable(provider: str = typer.Argument(...), user: str | None = UserOpt,
           config: Path | None = ConfigOpt) -> None:
    """Launch again in a disabled provider."""
    cfg = load(config)
    by = acting(user)
    for message in _run(cfg, lambda p: p.set_enabled(provider, True, "", by)):
        out.print(message)


autohold_app = typer.Typer(help="Keep the nodes of failing builds for debugging.",
                           no_args_is_help=True)
app.add_typer(autohold_app, name="autohold")


@autohold_app.command("add")
def autohold_add(
    project: str = typer.Option(..., "--project"), job: str = typer.Option(..., "--job"),
    change: int | None = typer.Option(None, "--change", help="only this change"),
    reason: str = typer.Option(..., "--reason"),
    count: int = typer.Option(1, "--count", help="how many failing builds to hold"),
    days: float = typer.Option(20.0, "--days", help="how long held nodes are kept"),
    user: str | None = UserOpt, config: Path | None = ConfigOpt,
) -> None:
    """Hold the nodes of the next failing build(s) of a job."""
    cfg = load(config)
    if cfg.project(project) is None:
        fail(f"project {project!r} is not configured (projects: "
             f"{', '.join(p.name for p in cfg.projects) or 'none'})")
    if job not in {j.name for j in cfg.jobs}:
        fail(f"job {job!r} is not configured (jobs: {', '.join(j.name for j in cfg.jobs)})")
    if count < 1 or days <= 0:
        fail("--count must be at least 1 and --days positive")
    hold = Autohold(id="", project=project, job=job, change=change, reason=reason, count=count,
                    hold_seconds=days * DAY, by=acting(user))
    _report(_run(cfg, lambda p: p.autohold_add(hold)))


@autohold_app.command("list")
def autohold_list(config: Path | None = ConfigOpt) -> None:
    cfg = load(config)
    holds = _run(cfg, lambda p: p.autohold_list()).autoholds
    listing = listing_table("id", "project", "job", "change", "count", "days", "by", "reason")
    for h in holds:
        listing.add_row(h.id, h.project, h.job, str(h.change or "any"), str(h.count),
                      f"{h.hold_seconds / DAY:g}", h.by or "", h.reason)
    out.print(listing)


@autohold_app.command("delete")
def autohold_delete(hold_id: str = typer.Argument(...), config: Path | None = ConfigOpt) -> None:
    cfg = load(config)
    _report(_run(cfg, lambda p: p.autohold_remove(hold_id)))
