"""`lockmaster te ...`: leasing test environments by hand, and operating the TE brokers. Each
command wraps an update or query on the broker workflow (`te/<label>`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table
from temporalio.client import Client

from lockmaster.cli.context import fail, load, out, with_client
from lockmaster.config.models import LockmasterConfig
from lockmaster.leases.errors import TEError
from lockmaster.model.testenv import OperatorAnswer
from lockmaster.starters.testenv import TEBrokers, TEHolder, description

app = typer.Typer(help="Lease test environments; operate the TE brokers.", no_args_is_help=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="lockmaster.yaml")
LabelOpt = typer.Option("default", "--label", help="TE label")
T = TypeVar("T")


def _run(cfg: LockmasterConfig, action: Callable[[Client], Awaitable[T]]) -> T:
    return with_client(cfg, action, TEError)


def _answer(answer: OperatorAnswer) -> None:
    if not answer.ok:
        fail(answer.message)
    out.print(answer.message)


@app.command("lease")
def lease(
    label: str = LabelOpt,
    ttl: float = typer.Option(3600.0, "--ttl", help="seconds; renew before it runs out"),
    wait: float = typer.Option(600.0, "--wait", help="give up after waiting this long"),
    lease_id: str | None = typer.Option(None, "--id", help="default: a new one"),
    datafile: Path | None = typer.Option(None, "--datafile",
                                         help="where to write the TE description (0600)"),
    as_json: bool = typer.Option(False, "--json", help="print the TE description as JSON"),
    config: Path | None = ConfigOpt,
) -> None:
    """Lease a TE for yourself: prints its description (with your private key). Renew it with
    `lockmaster te renew` before the TTL runs out; release it when done."""
    if ttl <= 0 or wait <= 0:
        fail("--ttl and --wait must be positive")
    cfg = load(config)
    lid = lease_id or f"manual-{uuid.uuid4().hex[:8]}"
    path = datafile or Path(f"te-{lid}.json")

    async def go(client: Client) -> dict[str, object]:
        holder = TEHolder(client, cfg, label, lid, f"{_me()} (lockmaster te lease)", ttl=ttl)
        try:
            status = await holder.acquire(timeout=wait)
        except TimeoutError:
            fail(f"no TE with label {label!r} became free within {wait:g} s (request withdrawn)",
                 1)
        holder.write_datafile(path)
        return description(status, holder.private_key, path.with_name(path.name + ".key"))

    desc = _run(cfg, go)
    if as_json:
        out.print_json(json.dumps(desc))
    else:
        lease_info = desc["lease"]
        assert isinstance(lease_info, dict)
        out.print(f"leased {desc['te']} (lease {lid}, generation {lease_info['generation']}) "
                  f"until {time.strftime('%H:%M:%S', time.localtime(lease_info['expires']))}; "
                  f"description in {path}")
        out.print(f"renew:   lockmaster te renew {lid} --label {label} --generation "
                  f"{lease_info['generation']}")
        out.print(f"release: lockmaster te release {lid} --label {label} --generation "
                  f"{lease_info['generation']}")


def _me() -> str:
    import getpass
    import socket

    return f"{getpass.getuser()}@{socket.gethostname()}"


@app.command("renew")
def renew(lease_id: str, label: str = LabelOpt,
          generation: int = typer.Option(..., "--generation"),
          config: Path | None = ConfigOpt) -> None:
    """Extend your lease by its TTL."""
    cfg = load(config)
    status = _run(cfg, lambda c: TEBrokers(c, cfg).renew(label, lease_id, generation))
    if status.state.value != "granted":
        fail(status.reason or f"lease {lease_id} is {status.state.value}")
    out.print(f"lease {lease_id} renewed until "
              f"{time.strftime('%H:%M:%S', time.localtime(status.expires or 0))}")


@app.command("release")
def release(lease_id: str, label: str = LabelOpt,
            generation: int = typer.Option(..., "--generation"),
            config: Path | None = ConfigOpt) -> None:
    """Give your TE back (it is reset before anyone else gets it)."""
    cfg = load(config)
    _answer(_run(cfg, lambda c: TEBrokers(c, cfg).release(label, lease_id, generation)))


@app.command("list")
def list_tes(as_json: bool = typer.Option(False, "--json"),
             config: Path | None = ConfigOpt) -> None:
    """Every TE: state, generation, holder, lease expiry; and who waits."""
    cfg = load(config)
    brokers = _run(cfg, lambda c: TEBrokers(c, cfg).status())
    if as_json:
        out.print_json(json.dumps([b.model_dump(mode="json") for b in brokers]))
        return
    table = Table("TE", "label", "state", "generation", "holder", "expires", "note")
    for broker in brokers:
        for te in broker.tes:
            expires = time.strftime("%H:%M:%S", time.localtime(te.expires)) if te.expires \
                else ""
            table.add_row(te.key, broker.label, te.state.value, str(te.generation),
                          te.holder or "", expires, te.reason or "")
    out.print(table)
    for broker in brokers:
        if broker.waiting:
            out.print(f"{broker.label}: {len(broker.waiting)} waiting: "
                      + ", ".join(w.holder for w in broker.waiting[:10]))
        if broker.draining_hosts:
            out.print(f"{broker.label}: draining {', '.join(broker.draining_hosts)}")


@app.command("drain")
def drain(host: str, config: Path | None = ConfigOpt) -> None:
    """Take a TE host out of service: its TEs are handed to nobody once free."""
    cfg = load(config)
    _answer(_run(cfg, lambda c: TEBrokers(c, cfg).drain(host)))


@app.command("undrain")
def undrain(host: str, config: Path | None = ConfigOpt) -> None:
    cfg = load(config)
    _answer(_run(cfg, lambda c: TEBrokers(c, cfg).undrain(host)))


@app.command("force-release")
def force_release(te: str = typer.Argument(..., help="HOST/NAME"),
                  config: Path | None = ConfigOpt) -> None:
    """End a TE's lease now (its holder's key stops working); the TE is reset."""
    cfg = load(config)
    _answer(_run(cfg, lambda c: TEBrokers(c, cfg).force_release(te)))


@app.command("unquarantine")
def unquarantine(te: str = typer.Argument(..., help="HOST/NAME"),
                 config: Path | None = ConfigOpt) -> None:
    """Reset a quarantined TE again; it is handed out if the reset succeeds."""
    cfg = load(config)
    _answer(_run(cfg, lambda c: TEBrokers(c, cfg).unquarantine(te)))
