"""`lockmaster change ...`: play the reviewer's part on a local connection.

Each command changes the local review system and sends the same event Gerrit's hooks would.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.markup import escape
from rich.text import Text

from lockmaster.cli.context import err, fail, listing_table, load, out
from lockmaster.config.models import LocalConnection, LockmasterConfig
from lockmaster.model.change import ChangeInfo, ReviewEvent
from lockmaster.review.base import ReviewError
from lockmaster.review.local import LocalReviewStore
from lockmaster.starters.dispatch import dispatch_or_keep
from lockmaster.starters.kept_events import kept_events
from lockmaster.starters.waiting import wait_for_check

app = typer.Typer(help="Act on changes of a local review connection.", no_args_is_help=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="lockmaster.yaml")
ConnOpt = typer.Option("local", "--connection", help="local connection name")
WaitOpt = typer.Option(False, "--wait", help="wait for the check (or the gate) it starts and "
                       "print the result")


def _store(cfg: LockmasterConfig, connection: str) -> LocalReviewStore:
    conn = cfg.connections.get(connection)
    if not isinstance(conn, LocalConnection):
        local = [n for n, c in cfg.connections.items() if isinstance(c, LocalConnection)]
        fail(f"connection {connection!r} is not a local connection "
             f"(local connections: {', '.join(local) or 'none'})")
    return LocalReviewStore(cfg.local_review_path(connection), connection)


def _files(specs: list[str]) -> dict[str, str]:
    files = {}
    for spec in specs:
        path, sep, text = spec.partition("=")
        if not sep or not path:
            fail(f"--file {spec!r}: expected PATH=TEXT (or PATH=@LOCALFILE)")
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text()
            except OSError as exc:
                fail(f"--file {spec!r}: cannot read {text[1:]}: {exc.strerror}")
        files[path] = text if text.endswith("\n") else text + "\n"
    return files


def _event(info: ChangeInfo, type_: str, **extra: object) -> ReviewEvent:
    return ReviewEvent(
        type=type_, connection=info.connection, project=info.project,  # type: ignore[arg-type]
        branch=info.branch, change=info.number, patchset=info.patchset, commit=info.commit,
        change_id=info.change_id, url=info.url, **extra,  # type: ignore[arg-type]
    )


def _send(cfg: LockmasterConfig, event: ReviewEvent, wait: bool, quiet: bool = False) -> None:
    # Quiet: stdout carries only what a script captures; progress goes to stderr.
    say = err if quiet else out

    async def main() -> None:
        done = await dispatch_or_keep(cfg, event, kept_events(cfg.state_path, event.connection))
        if done.kept is not None:
            fail(f"the change was recorded, but its event could not be delivered to Temporal "
                 f"at {cfg.temporal.address} ({done.error}); is `lockmaster run` running? The "
                 f"event is kept ({done.kept}) and delivered by the next `lockmaster change` "
                 f"command, or by `lockmaster events flush --connection {event.connection}`",
                 1)
        if done.flushed:
            say.print(f"  handed over {done.flushed} event(s) kept earlier", markup=False)
        actions = done.actions
        for action in actions:
            say.print(f"  {action}", markup=False)
        if wait:
            started = [a for a in actions if a.action in ("started", "already-running")]
            for action in started:
                assert action.workflow_id
                outcome = await wait_for_check(cfg, action.workflow_id)
                say.print(outcome, markup=False)
            if any(a.action == "enqueued" for a in actions) and event.change is not None:
                say.print(await _gate_result(cfg, event), markup=False)

    try:
        asyncio.run(main())
    except RuntimeError as exc:
        fail(f"the change was recorded, but its event could not be delivered to Temporal at "
             f"{cfg.temporal.address} ({exc}); is `lockmaster run` running?", 1)


GATE_RESULTS = ("success", "failure", "merge-conflict", "merge-failure", "config-error",
                "dequeue", "no-jobs")


async def _gate_result(cfg: LockmasterConfig, event: ReviewEvent, timeout: float = 1800) -> str:
    """The dependent pipeline's report on the change after this event (and its status)."""
    store = LocalReviewStore(cfg.local_review_path(event.connection), event.connection)
    since = time.time() - 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = store.record(event.change or 0)
        for msg in reversed(record["messages"]):
            if msg["author"] == "lockmaster" and msg["at"] >= since and \
                    (msg.get("tag") or "").rsplit(":", 1)[-1] in GATE_RESULTS and \
                    not (msg.get("tag") or "").startswith("check:"):
                # A success is reported, then submitted: give the submit its moment.
                for _ in range(40):
                    record = store.record(event.change or 0)
                    if record["status"] != "NEW" or not msg["tag"].endswith(":success"):
                        break
                    await asyncio.sleep(0.25)
                return f"change {record['number']}: {record['status']}\n{msg['message']}"
        await asyncio.sleep(0.5)
    return f"change {event.change}: no result from the gate after {timeout:.0f} s"


@app.command("upload")
def upload(
    project: str = typer.Option(..., "--project", "-p"),
    file: list[str] = typer.Option([], "--file", "-f", help="PATH=TEXT to add or replace"),
    directory: Path | None = typer.Option(
        None, "--dir", help="add every file of this directory (e.g. an unpacked source "
        "package), modes kept"),
    subject: str = typer.Option("Update", "--subject", "-m"),
    branch: str = typer.Option("master", "--branch"),
    parent: int | None = typer.Option(None, "--parent", help="on top of this change"),
    depends_on: list[int] = typer.Option([], "--depends-on", help="add a Depends-On footer"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt, wait: bool = WaitOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the new change's "
                               "number, e.g. N=$(lockmaster change upload -q ...)"),
) -> None:
    """Upload a new change (patchset 1) and send patchset-created."""
    cfg = load(config)
    store = _store(cfg, connection)
    if cfg.project(project) is None:
        fail(f"project {project!r} is not configured (projects: "
             f"{', '.join(p.name for p in cfg.projects) or 'none'})")
    if directory is not None and not directory.is_dir():
        fail(f"--dir {directory}: not a directory (give the directory whose files the change "
             "adds, e.g. an unpacked source package)")
    if not store.has_project(project):
        # A project configured in lockmaster.yaml but new to the local review system (a
        # Gerrit admin would create it): its repository starts with a README.
        store.create_project(project, {"README": f"{project}\n"})
        err.print(f"created project {project} in the local review system ({connection})")
    default = {} if directory else {f"change-{len(store.numbers()) + 1}.txt": "a change\n"}
    try:
        info = store.upload(project, branch=branch, files=_files(file) or default,
                            subject=subject, parent=parent, depends_on=depends_on,
                            tree=directory)
    except ReviewError as exc:
        fail(str(exc))
    uploaded = f"change {info.number} patchset {info.patchset} uploaded ({info.commit[:10]})"
    if quiet:
        out.print(info.number)
        err.print(uploaded)
    else:
        out.print(uploaded)
    _send(cfg, _event(info, "patchset-created"), wait, quiet)


@app.command("list")
def list_changes(
    project: str | None = typer.Option(None, "--project", "-p"),
    open_only: bool = typer.Option(False, "--open", help="only changes not merged or abandoned"),
    as_json: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only the numbers, one a line, "
                               "e.g. N=$(lockmaster change list -q -p demo/hello | tail -1)"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt,
) -> None:
    """Every change of the local review system: number, project, status, votes, subject."""
    cfg = load(config)
    store = _store(cfg, connection)
    records = [store.record(n) for n in sorted(store.numbers())]
    records = [r for r in records if (project is None or r["project"] == project)
               and (not open_only or r["status"] == "NEW")]
    if as_json:
        out.print_json(json.dumps(records))
        return
    if quiet:
        for r in records:
            out.print(r["number"])
        return
    if not records:
        out.print("no changes" + (f" of {project}" if project else "")
                  + (" open" if open_only else ""))
        return
    listing = listing_table("change", "project", "branch", "status", "patchset", "votes",
                            "subject")
    for r in records:
        info = store.info(r["number"])
        votes = " ".join(f"{label} {v:+d}" for label, v in sorted(info.approvals.items()))
        flags = [f for f in ("wip", "private") if r.get(f)]
        listing.add_row(str(r["number"]), r["project"], r["branch"],
                        r["status"] + (f" ({', '.join(flags)})" if flags else ""),
                        str(info.patchset), votes, Text(r["subject"]))
    out.print(listing)


@app.command("new-patchset")
def new_patchset(
    number: int, file: list[str] = typer.Option([], "--file", "-f"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt, wait: bool = WaitOpt,
) -> None:
    """Upload the change's next patchset and send patchset-created."""
    cfg = load(config)
    try:
        info = _store(cfg, connection).new_patchset(number, _files(file) or None)
    except ReviewError as exc:
        fail(str(exc))
    out.print(f"change {info.number} patchset {info.patchset} uploaded ({info.commit[:10]})")
    _send(cfg, _event(info, "patchset-created"), wait)


@app.command("approve")
def approve(
    number: int,
    code_review: int = typer.Option(2, "--code-review", min=-2, max=2),
    workflow: int = typer.Option(1, "--workflow", min=-1, max=1),
    author: str = typer.Option("core-reviewer", "--author"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt, wait: bool = WaitOpt,
) -> None:
    """Vote Code-Review and Workflow, then send comment-added."""
    cfg = load(config)
    labels = {"Code-Review": code_review, "Workflow": workflow}
    try:
        info = _store(cfg, connection).vote(number, labels, author=author)
    except ReviewError as exc:
        fail(str(exc))
    comment = f"Patch Set {info.patchset}:" + "".join(f" {k}{v:+d}" for k, v in labels.items())
    out.print(f"change {number}: {comment}")
    _send(cfg, _event(info, "comment-added", comment=comment, author=author,
                      approvals=labels), wait)


@app.command("comment")
def comment(
    number: int, text: str,
    author: str = typer.Option("developer", "--author"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt, wait: bool = WaitOpt,
) -> None:
    """Comment on the change (e.g. `recheck`), then send comment-added."""
    cfg = load(config)
    try:
        info = _store(cfg, connection).vote(number, {}, author=author, message=text)
    except ReviewError as exc:
        fail(str(exc))
    _send(cfg, _event(info, "comment-added", comment=f"Patch Set {info.patchset}:\n\n{text}",
                      author=author), wait)


@app.command("abandon")
def abandon(
    number: int, author: str = typer.Option("developer", "--author"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt,
) -> None:
    """Abandon the change, then send change-abandoned (its running checks are cancelled)."""
    cfg = load(config)
    try:
        info = _store(cfg, connection).abandon(number, author=author)
    except ReviewError as exc:
        fail(str(exc))
    out.print(f"change {number} abandoned")
    _send(cfg, _event(info, "change-abandoned"), False)


@app.command("restore")
def restore(
    number: int, author: str = typer.Option("developer", "--author"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt, wait: bool = WaitOpt,
) -> None:
    """Restore an abandoned change, then send change-restored."""
    cfg = load(config)
    try:
        info = _store(cfg, connection).restore(number, author=author)
    except ReviewError as exc:
        fail(str(exc))
    out.print(f"change {number} restored")
    _send(cfg, _event(info, "change-restored", author=author), wait)


@app.command("remove-vote")
def remove_vote(
    number: int,
    label: str = typer.Option(..., "--label", help="e.g. Workflow or Code-Review"),
    author: str = typer.Option("core-reviewer", "--author", help="whose vote to remove"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt,
) -> None:
    """Remove one reviewer's vote on a label, then send vote-deleted."""
    cfg = load(config)
    store = _store(cfg, connection)
    try:
        # The old value goes into the event, as Gerrit's oldValue; delete_vote checks it exists.
        old = store.record(number)["approvals"].get(label, {}).get(author)
        info = store.delete_vote(number, label, author=author)
    except ReviewError as exc:
        fail(str(exc))
    comment = f"Removed {label}{old:+d} by {author}"
    out.print(f"change {number}: {comment}")
    _send(cfg, _event(info, "vote-deleted", comment=comment, author=author,
                      approvals={label: 0}, old_approvals={label: old}), False)


def _set_wip(number: int, wip: bool, author: str, connection: str, config: Path | None,
             wait: bool) -> None:
    cfg = load(config)
    try:
        info = _store(cfg, connection).set_wip(number, wip, author=author)
    except ReviewError as exc:
        fail(str(exc))
    out.print(f"change {number} " + ("is a work in progress" if wip else "is ready for review"))
    _send(cfg, _event(info, "wip-state-changed", author=author, wip=wip), wait)


def _set_private(number: int, private: bool, author: str, connection: str,
                 config: Path | None, wait: bool) -> None:
    cfg = load(config)
    try:
        info = _store(cfg, connection).set_private(number, private, author=author)
    except ReviewError as exc:
        fail(str(exc))
    out.print(f"change {number} is " + ("private" if private else "public"))
    _send(cfg, _event(info, "private-state-changed", author=author, private=private), wait)


@app.command("wip")
def wip(
    number: int, author: str = typer.Option("developer", "--author"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt,
) -> None:
    """Mark the change work in progress, then send wip-state-changed."""
    _set_wip(number, True, author, connection, config, False)


@app.command("ready")
def ready(
    number: int, author: str = typer.Option("developer", "--author"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt, wait: bool = WaitOpt,
) -> None:
    """Mark a work-in-progress change ready for review, then send wip-state-changed."""
    _set_wip(number, False, author, connection, config, wait)


@app.command("private")
def private(
    number: int, author: str = typer.Option("developer", "--author"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt,
) -> None:
    """Mark the change private, then send private-state-changed."""
    _set_private(number, True, author, connection, config, False)


@app.command("public")
def public(
    number: int, author: str = typer.Option("developer", "--author"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt, wait: bool = WaitOpt,
) -> None:
    """Make a private change public again, then send private-state-changed."""
    _set_private(number, False, author, connection, config, wait)


@app.command("show")
def show(
    number: int, as_json: bool = typer.Option(False, "--json"),
    connection: str = ConnOpt, config: Path | None = ConfigOpt,
) -> None:
    """The change's patchsets, votes and messages (lockmaster's reports among them)."""
    cfg = load(config)
    try:
        record = _store(cfg, connection).record(number)
    except ReviewError as exc:
        fail(str(exc))
    if as_json:
        out.print_json(json.dumps(record))
        return
    flags = [name for key, name in (("wip", "work in progress"), ("private", "private"))
             if record.get(key)]
    status = record["status"] + (f" ({', '.join(flags)})" if flags else "")
    out.print(f"[bold]change {record['number']}[/] {record['project']} ({record['branch']}) "
              f"{status}: {escape(record['subject'])}")
    for ps in record["patchsets"]:
        out.print(f"  patchset {ps['number']}: {ps['commit'][:10]}")
    for label, votes in sorted(record["approvals"].items()):
        out.print(f"  {label}: " + ", ".join(f"{who} {v:+d}" for who, v in votes.items()))
    for msg in record["messages"]:
        when = datetime.fromtimestamp(msg["at"], UTC).strftime("%H:%M:%S")
        out.print(f"[dim]--- {msg['author']} at {when} (patchset {msg['patchset']})[/]")
        out.print(msg["message"], markup=False, highlight=False)
