"""`lockmaster te ...`: leasing test environments by hand, and operating the TE brokers. Each
command wraps an update or query on the broker workflow (`te/<label>`)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from temporalio.client import Client

from lockmaster.cli.context import (
    ReasonOpt,
    UserOpt,
    acting,
    err,
    fail,
    listing_table,
    load,
    out,
    with_client,
)
from lockmaster.config.models import LockmasterConfig
from lockmaster.leases.errors import TEError
from lockmaster.model.testenv import BrokerStatus, LeaseState, LeaseStatus, OperatorAnswer
from lockmaster.starters import te_files
from lockmaster.starters.testenv import TEBrokers, TEHolder

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
    datafile: Path | None = typer.Option(
        None, "--datafile", help="where to write the TE description, which holds the private "
        "key (0600, a new file); default: <state-dir>/te-leases/<id>/te.json"),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="where to write the private key alone (0600, a new file); "
        "default: beside the description, as <datafile>.key"),
    as_json: bool = typer.Option(False, "--json", help="print the TE description as JSON"),
    config: Path | None = ConfigOpt,
) -> None:
    """Lease a TE for yourself: writes its description (TripleO's JSON, with your private key)
    and the key, and prints where. Renew it with `lockmaster te renew` before the TTL runs out;
    `lockmaster te release` gives it back and removes both files."""
    if ttl <= 0 or wait <= 0:
        fail("--ttl and --wait must be positive")
    cfg = load(config)
    lid = lease_id or f"manual-{uuid.uuid4().hex[:8]}"
    try:
        files = te_files.plan(cfg, lid, label, datafile, key_file)
    except te_files.LeaseFileError as exc:
        fail(str(exc))

    async def go(client: Client) -> dict[str, object]:
        await _sweep(TEBrokers(client, cfg))
        holder = TEHolder(client, cfg, label, lid, f"{_me()} (lockmaster te lease)", ttl=ttl)
        try:
            status = await holder.acquire(timeout=wait)
        except TimeoutError:
            fail(f"no TE with label {label!r} became free within {wait:g} s (request withdrawn)",
                 1)
        try:
            files.record(status)
            holder.write_datafile(files.datafile, files.key_file, exclusive=True)
        except BaseException as exc:
            files.remove()
            await asyncio.shield(holder.release())
            if isinstance(exc, OSError):
                fail(f"cannot write the TE description ({exc}); the lease is released", 1)
            raise
        return holder.description(files.key_file)

    desc = _run(cfg, go)
    lease_info = desc["lease"]
    assert isinstance(lease_info, dict)
    where = (f"description in {files.datafile}, key in {files.key_file} "
             f"(removed by `lockmaster te release`)")
    if as_json:
        err.print(where, markup=False)
        out.print_json(json.dumps(desc))
        return
    out.print(f"leased {desc['te']} (lease {lid}, generation {lease_info['generation']}) "
              f"until {time.strftime('%H:%M:%S', time.localtime(lease_info['expires']))}; "
              + where, markup=False)
    out.print(f"renew:   lockmaster te renew {lid} --label {label} --generation "
              f"{lease_info['generation']}", markup=False)
    out.print(f"release: lockmaster te release {lid} --label {label} --generation "
              f"{lease_info['generation']}", markup=False)


async def _sweep(brokers: TEBrokers, lease_id: str | None = None) -> list[Path]:
    """Remove the files of ended leases (all recorded ones, or `lease_id`'s); say so."""
    removed: list[Path] = []
    for files, paths in await te_files.sweep(brokers, brokers.config, lease_id):
        if lease_id is None:
            err.print(f"lease {files.lease_id} has ended: removed "
                      + (", ".join(map(str, paths)) or "its record"), markup=False)
        removed += paths
    return removed


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

    async def go(client: Client) -> tuple[LeaseStatus, list[Path]]:
        brokers = TEBrokers(client, cfg)
        status = await brokers.renew(label, lease_id, generation)
        ended = [] if status.state is LeaseState.GRANTED else await _sweep(brokers, lease_id)
        return status, ended

    status, removed = _run(cfg, go)
    if status.state is not LeaseState.GRANTED:
        fail((status.reason or f"lease {lease_id} is {status.state.value}") + _removed(removed))
    out.print(f"lease {lease_id} renewed until "
              f"{time.strftime('%H:%M:%S', time.localtime(status.expires or 0))}")


@app.command("release")
def release(lease_id: str, label: str = LabelOpt,
            generation: int = typer.Option(..., "--generation"),
            config: Path | None = ConfigOpt) -> None:
    """Give your TE back (it is reset before anyone else gets it); removes the description and
    key `te lease` wrote."""
    cfg = load(config)

    async def go(client: Client) -> tuple[OperatorAnswer, list[Path]]:
        brokers = TEBrokers(client, cfg)
        answer = await brokers.release(label, lease_id, generation)
        # Removed only once the broker says the lease is over (a refused release, e.g. a
        # mistyped generation, leaves the holder's lease and its files as they were).
        return answer, await _sweep(brokers, lease_id)

    answer, removed = _run(cfg, go)
    if not answer.ok:
        fail(answer.message + _removed(removed))
    out.print(answer.message + _removed(removed), markup=False)


def _removed(paths: list[Path]) -> str:
    return f"; removed {', '.join(map(str, paths))}" if paths else ""


@app.command("list")
def list_tes(as_json: bool = typer.Option(False, "--json"),
             config: Path | None = ConfigOpt) -> None:
    """Every TE: state, generation, holder, lease expiry; and who waits."""
    cfg = load(config)

    async def go(client: Client) -> list[BrokerStatus]:
        ops = TEBrokers(client, cfg)
        await _sweep(ops)
        return await ops.status()

    brokers = _run(cfg, go)
    if as_json:
        out.print_json(json.dumps([b.model_dump(mode="json") for b in brokers]))
        return
    listing = listing_table("TE", "label", "state", "generation", "holder", "expires", "note")
    for broker in brokers:
        for te in broker.tes:
            expires = time.strftime("%H:%M:%S", time.localtime(te.expires)) if te.expires \
                else ""
            notes = [te.reason or ""]
            if te.operator is not None:  # the last operator action on it: who, when, why
                notes.append(f"{te.operator.describe(te.operator_action or 'acted on')} "
                             f"({_clock(te.operator.at)})")
            listing.add_row(te.key, broker.label, te.state.value, str(te.generation),
                          te.holder or "", expires, "; ".join(n for n in notes if n))
    out.print(listing)
    for broker in brokers:
        if broker.waiting:
            out.print(f"{broker.label}: {len(broker.waiting)} waiting: "
                      + ", ".join(w.holder for w in broker.waiting[:10]))
        if broker.draining_hosts:
            out.print(f"{broker.label}: draining " + ", ".join(
                host + (f" ({note.describe('drained')}, {_clock(note.at)})"
                        if (note := broker.drained_by.get(host)) else "")
                for host in broker.draining_hosts), markup=False)
        for w in broker.stuck:  # a TE host that does not answer: retried until it does
            out.print(f"{broker.label}: stuck: {w.what} failing since "
                      f"{time.strftime('%H:%M:%S', time.localtime(w.since))} "
                      f"({w.failures} round(s)): {w.error}", markup=False)


def _clock(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else "earlier"


@app.command("drain")
def drain(host: str, reason: str | None = ReasonOpt, user: str | None = UserOpt,
          config: Path | None = ConfigOpt) -> None:
    """Take a TE host out of service: its TEs are handed to nobody once free (`te list` says
    who drained it and why)."""
    cfg = load(config)
    by = acting(user)
    _answer(_run(cfg, lambda c: TEBrokers(c, cfg).drain(host, by, reason)))


@app.command("undrain")
def undrain(host: str, reason: str | None = ReasonOpt, user: str | None = UserOpt,
            config: Path | None = ConfigOpt) -> None:
    cfg = load(config)
    by = acting(user)
    _answer(_run(cfg, lambda c: TEBrokers(c, cfg).undrain(host, by, reason)))


@app.command("force-release")
def force_release(te: str = typer.Argument(..., help="HOST/NAME"),
                  reason: str | None = ReasonOpt, user: str | None = UserOpt,
                  config: Path | None = ConfigOpt) -> None:
    """End a TE's lease now (its holder's key stops working); the TE is reset. The holder's
    lease and `te list` say who released it and why."""
    cfg = load(config)
    by = acting(user)
    _answer(_run(cfg, lambda c: TEBrokers(c, cfg).force_release(te, by, reason)))


@app.command("unquarantine")
def unquarantine(te: str = typer.Argument(..., help="HOST/NAME"),
                 reason: str | None = ReasonOpt, user: str | None = UserOpt,
                 config: Path | None = ConfigOpt) -> None:
    """Reset a quarantined TE again; it is handed out if the reset succeeds."""
    cfg = load(config)
    by = acting(user)
    _answer(_run(cfg, lambda c: TEBrokers(c, cfg).unquarantine(te, by, reason)))
