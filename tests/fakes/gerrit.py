"""A fake Gerrit over real sockets: the REST endpoints lockmaster calls, and SSH stream-events.

Usage: `async with FakeGerrit() as fake:`, then `gerrit_connection(fake, tmp_path)` for a config
(password file, client key and known_hosts written), `fake.add_change(...)` for changes, and
`await fake.emit(fake.patchset_created_event(number))` for stream events.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import hashlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from aiohttp import web

from lockmaster.config.models import GerritConnection, GerritSSH
from lockmaster.model.change import change_ref_name
from tests.fakes.gerrit_changes import FakeChange, FakePatchset, gerrit_date
from tests.fakes.gerrit_stream import StreamEvents

XSSI = ")]}'\n"
LOCKMASTER_ACCOUNT = 1000000
STREAM_COMMAND = "gerrit stream-events"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Fault:
    path: str
    status: int
    count: int
    after_apply: bool
    method: str | None


class FakeGerrit(StreamEvents):
    def __init__(
        self,
        *,
        user: str = "lockmaster",
        password: str = "secret",
        host: str = "127.0.0.1",
        submit_requires: dict[str, int] | None = None,
    ) -> None:
        self.user = user
        self.password = password
        self.host = host
        # Labels a change must carry (at least) for submit to succeed; e.g. {"Code-Review": 2}.
        self.submit_requires = dict(submit_requires or {})
        self.changes: dict[int, FakeChange] = {}
        self.reviews: list[dict[str, Any]] = []
        self.submits: list[int] = []
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every REST call
        self._faults: list[_Fault] = []
        self._refusals: dict[int, str] = {}
        self._last_message = 0.0
        self._accounts: dict[str, int] = {user: LOCKMASTER_ACCOUNT}
        self._runner: web.AppRunner | None = None
        self.port = 0
        # SSH side
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._authorized: set[bytes] = set()
        self._ssh_server: asyncssh.SSHAcceptor | None = None
        self._ssh_conns: set[asyncssh.SSHServerConnection] = set()
        self._streams: set[asyncssh.SSHServerProcess[str]] = set()
        self.ssh_port = 0

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeGerrit:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/a/changes/", self._query)
        app.router.add_get("/a/changes/{id}", self._get_change)
        app.router.add_get("/a/changes/{id}/messages", self._messages)
        app.router.add_get("/a/changes/{id}/revisions/{revision}/related", self._related)
        app.router.add_post("/a/changes/{id}/revisions/{revision}/review", self._review)
        app.router.add_post("/a/changes/{id}/revisions/{revision}/submit", self._submit)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._ssh_server = await asyncssh.create_server(
            lambda: _SSHServer(self),
            self.host,
            0,
            server_host_keys=[self.host_key],
            process_factory=self._stream_events,
        )
        self.ssh_port = self._ssh_server.get_port()

    async def stop(self) -> None:
        if self._ssh_server is not None:
            self._ssh_server.close()
            for conn in list(self._ssh_conns):
                conn.close()
            await self._ssh_server.wait_closed()
            self._ssh_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- changes --------------------------------------------------------------------------------

    def add_change(
        self,
        project: str,
        branch: str,
        number: int,
        patchset: int = 1,
        commit: str | None = None,
        message: str | None = None,
        change_id: str | None = None,
        status: str = "NEW",
        approvals: dict[str, int] | None = None,
        parents: list[str] | None = None,
    ) -> FakeChange:
        """A change whose current patchset is `patchset` (earlier ones get made-up commits);
        `parents`: the commits its current patchset sits on (Gerrit's related changes)."""
        change_id = change_id or "I" + uuid.uuid4().hex + uuid.uuid4().hex[:8]
        commit = commit or _sha(f"{number},{patchset}")
        message = message or f"Change {number}\n\nChange-Id: {change_id}\n"
        patchsets = [
            FakePatchset(n, _sha(f"{number},{n}"), message) for n in range(1, patchset)
        ] + [FakePatchset(patchset, commit, message, parents=list(parents or []))]
        change = FakeChange(project, branch, number, change_id, status, patchsets)
        for label, value in (approvals or {}).items():
            self.set_vote(number, label, value, change=change)
        self.changes[number] = change
        return change

    def new_patchset(self, number: int, commit: str, message: str | None = None) -> FakePatchset:
        change = self.changes[number]
        ps = FakePatchset(change.current.number + 1, commit, message or change.current.message)
        change.patchsets.append(ps)
        change.votes.clear()  # a new patchset starts without votes (no copy rules here)
        return ps

    def set_status(self, number: int, status: str) -> None:
        self.changes[number].status = status

    def restore(self, number: int) -> None:
        change = self.changes[number]
        assert change.status == "ABANDONED", f"change {number} is {change.status}"
        change.status = "NEW"

    def set_wip(self, number: int, wip: bool = True) -> None:
        self.changes[number].wip = wip

    def set_private(self, number: int, private: bool = True) -> None:
        self.changes[number].private = private

    def delete_vote(self, number: int, label: str, username: str = "reviewer") -> int:
        """Remove the user's vote on the label; returns the value it had."""
        change = self.changes[number]
        old = change.votes[label].pop(username)
        if not change.votes[label]:
            del change.votes[label]
        return old

    def set_vote(
        self,
        number: int,
        label: str,
        value: int,
        username: str = "reviewer",
        *,
        change: FakeChange | None = None,
    ) -> None:
        change = change or self.changes[number]
        self._account_id(username)
        change.votes.setdefault(label, {})[username] = value

    def refuse_submit(self, number: int, reason: str) -> None:
        """The next submits of this change get 409 with `reason` (until allow_submit)."""
        self._refusals[number] = reason

    def allow_submit(self, number: int) -> None:
        self._refusals.pop(number, None)

    # --- faults ---------------------------------------------------------------------------------

    def fail_next(
        self, path_substring: str, status: int = 500, count: int = 1, method: str | None = None
    ) -> None:
        """The next `count` matching requests fail with `status` before doing anything."""
        self._faults.append(_Fault(path_substring, status, count, False, method))

    def fail_after_apply(
        self, path_substring: str, status: int = 500, count: int = 1, method: str | None = None
    ) -> None:
        """The next `count` matching requests take effect, then answer `status` (response lost)."""
        self._faults.append(_Fault(path_substring, status, count, True, method))

    def _take_fault(self, request: web.Request, after_apply: bool) -> _Fault | None:
        for fault in self._faults:
            if (
                fault.after_apply == after_apply
                and fault.path in request.path_qs
                and fault.method in (None, request.method)
            ):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # --- REST -----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if not self._authorized_request(request):
            return web.Response(status=401, text="Unauthorized")
        fault = self._take_fault(request, after_apply=False)
        if fault is not None:
            return web.Response(status=fault.status, text="injected fault")
        response = await handler(request)
        fault = self._take_fault(request, after_apply=True)
        if fault is not None:
            return web.Response(status=fault.status, text="injected fault after apply")
        return response

    def _authorized_request(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.user and password == self.password

    def _find(self, ident: str) -> FakeChange:
        # Gerrit accepts a number, project~number, or a Change-Id.
        key = ident.rsplit("~", 1)[-1]
        if key.isdigit() and int(key) in self.changes:
            return self.changes[int(key)]
        for change in self.changes.values():
            if change.change_id == key:
                return change
        raise web.HTTPNotFound(text=f"Not found: {ident}")

    async def _get_change(self, request: web.Request) -> web.Response:
        return _json(self.change_json(self._find(request.match_info["id"]),
                                      all_revisions=_all_revisions(request)))

    async def _related(self, request: web.Request) -> web.Response:
        """Gerrit's RelatedChangesInfo: the changes of the same project whose current or older
        patchsets are git ancestors or descendants (here: direct parent/child links)."""
        change = self._find(request.match_info["id"])
        ps = change.patchset(request.match_info["revision"])
        if ps is None:
            raise web.HTTPNotFound(text="revision not found")
        related = []
        for other in self.changes.values():
            if other.project != change.project or other is change:
                continue
            for ops in other.patchsets:
                if ps.commit in ops.parents or ops.commit in ps.parents:
                    related.append({
                        "project": other.project, "change_id": other.change_id,
                        "commit": {"commit": ops.commit,
                                   "parents": [{"commit": p} for p in ops.parents]},
                        "_change_number": other.number, "_revision_number": ops.number,
                        "_current_revision_number": other.current.number,
                        "status": other.status,
                    })
        return _json({"changes": related})

    async def _query(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        since = re.fullmatch(r'since:"([^"]+)"', query)
        if since:
            return self._since(request, since.group(1))
        if query.startswith("status:open ("):
            # `status:open (message:"URL" OR message:I...)`: Zuul's getChangesDependingOn.
            words = re.findall(r'message:(?:"([^"]*)"|(\S+?))(?:\)| |$)', query)
            wanted = [quoted or bare for quoted, bare in words]
            found = [self.change_json(c) for c in self.changes.values()
                     if c.status == "NEW" and any(w in c.current.message for w in wanted)]
            return _json(found)
        if not query.startswith("change:"):
            return web.Response(status=400, text=f"the fake serves only change: queries: {query}")
        wanted = query[len("change:") :]
        found = [
            self.change_json(c, all_revisions=_all_revisions(request))
            for c in self.changes.values()
            if wanted in (c.change_id, str(c.number))
        ]
        return _json(found)

    def _since(self, request: web.Request, when: str) -> web.Response:
        """`since:"2026-12-07 10:00:00 +0000"`: changes updated at or after it (whole seconds,
        as Gerrit), oldest update last (Gerrit sorts newest first), paged by n and S."""
        stamp, _, zone = when.partition(" +")
        assert zone in ("", "0000"), f"the fake reads UTC times only: {when}"
        start = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
        found = sorted((c for c in self.changes.values() if int(c.updated) >= start),
                       key=lambda c: -c.updated)
        skip = int(request.query.get("S", "0"))
        limit = int(request.query.get("n", "500"))
        page = [self.change_json(c, all_revisions=_all_revisions(request),
                                 messages="MESSAGES" in request.query.getall("o", []))
                for c in found[skip:skip + limit]]
        if page and skip + limit < len(found):
            page[-1]["_more_changes"] = True
        return _json(page)

    async def _messages(self, request: web.Request) -> web.Response:
        return _json(self._find(request.match_info["id"]).messages)

    async def _review(self, request: web.Request) -> web.Response:
        change = self._find(request.match_info["id"])
        revision = request.match_info["revision"]
        ps = change.patchset(revision)
        if ps is None:
            raise web.HTTPNotFound(text=f"Not found: revision {revision}")
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise web.HTTPBadRequest(text="body is not JSON") from None
        labels = {str(k): int(v) for k, v in (body.get("labels") or {}).items()}
        if labels and change.status != "NEW":
            raise web.HTTPConflict(text=f"change is {change.status.lower()}: cannot vote")
        self.reviews.append(
            {
                "number": change.number,
                "revision": revision,
                "patchset": ps.number,
                "message": body.get("message", ""),
                "labels": labels,
                "tag": body.get("tag"),
            }
        )
        votes = " ".join(f"{k}{v:+d}" for k, v in labels.items())
        change.messages.append(
            {
                "id": uuid.uuid4().hex,
                "author": self._account(self.user),
                "date": gerrit_date(time.time()),
                "message": f"Patch Set {ps.number}:{' ' + votes if votes else ''}\n\n"
                + body.get("message", ""),
                "_revision_number": ps.number,
                **({"tag": body["tag"]} if body.get("tag") else {}),
            }
        )
        if ps is change.current:
            for label, value in labels.items():
                change.votes.setdefault(label, {})[self.user] = value
        return _json({"labels": labels})

    async def _submit(self, request: web.Request) -> web.Response:
        change = self._find(request.match_info["id"])
        if change.status != "NEW":
            raise web.HTTPConflict(text=f"change is {change.status.lower()}")
        revision = request.match_info["revision"]
        ps = change.patchset(revision)
        if ps is None:
            raise web.HTTPNotFound(text=f"Not found: revision {revision}")
        if ps is not change.current:
            raise web.HTTPConflict(text=f"revision {ps.commit} is not current revision")
        if change.number in self._refusals:
            raise web.HTTPConflict(text=self._refusals[change.number])
        if change.wip:
            raise web.HTTPConflict(text=f"Change {change.number} is work in progress")
        approvals = change.approvals()
        missing = [
            f"{label}+{value}"
            for label, value in self.submit_requires.items()
            if approvals.get(label, 0) < value
        ]
        if missing:
            raise web.HTTPConflict(text=f"submit requirement not fulfilled: {', '.join(missing)}")
        change.status = "MERGED"
        self.submits.append(change.number)
        return _json(self.change_json(change))

    # --- JSON shapes ----------------------------------------------------------------------------

    def change_json(self, change: FakeChange, *, all_revisions: bool = False,
                    messages: bool = False) -> dict[str, Any]:
        """Gerrit's ChangeInfo with CURRENT_REVISION, CURRENT_COMMIT and DETAILED_LABELS (and
        ALL_REVISIONS: every patchset's RevisionInfo, the commit only for the current one)."""
        ps = change.current
        older = {
            old.commit: {"kind": "REWORK", "_number": old.number,
                         "ref": change_ref_name(change.number, old.number)}
            for old in change.patchsets[:-1]
        } if all_revisions else {}
        return {
            "id": f"{change.project.replace('/', '%2F')}~{change.branch}~{change.change_id}",
            "project": change.project,
            "branch": change.branch,
            "change_id": change.change_id,
            "subject": ps.message.splitlines()[0] if ps.message else "",
            "status": change.status,
            "_number": change.number,
            "owner": {"_account_id": self._account_id("owner")},
            "current_revision": ps.commit,
            "revisions": {
                **older,
                ps.commit: {
                    "kind": "REWORK",
                    "_number": ps.number,
                    "ref": change_ref_name(change.number, ps.number),
                    "commit": {
                        "parents": [{"commit": p} for p in ps.parents],
                        "subject": ps.message.splitlines()[0] if ps.message else "",
                        "message": ps.message,
                    },
                }
            },
            "labels": {
                label: {
                    "all": [
                        {"value": value, "_account_id": self._account_id(user), "username": user}
                        for user, value in by_user.items()
                    ],
                    "values": {"-2": "", "-1": "", " 0": "", "+1": "", "+2": ""},
                    "default_value": 0,
                }
                for label, by_user in change.votes.items()
            },
            "updated": gerrit_date(change.updated),
            **({"messages": list(change.messages)} if messages else {}),
            # Gerrit sets both only when true.
            **({"work_in_progress": True} if change.wip else {}),
            **({"is_private": True} if change.private else {}),
        }

    def _account_id(self, username: str) -> int:
        return self._accounts.setdefault(username, LOCKMASTER_ACCOUNT + len(self._accounts))

    def _account(self, username: str) -> dict[str, Any]:
        return {
            "_account_id": self._account_id(username),
            "name": username.title(),
            "email": f"{username}@example.org",
            "username": username,
        }

    # --- SSH ------------------------------------------------------------------------------------

    def authorize_key(self, key: asyncssh.SSHKey) -> None:
        self._authorized.add(key.public_data)

    @property
    def host_key_line(self) -> str:
        """This server's known_hosts line (the port is part of the host pattern)."""
        public = self.host_key.export_public_key("openssh").decode().strip()
        return f"[{self.host}]:{self.ssh_port} {public}"

    def write_known_hosts(self, path: Path) -> Path:
        path.write_text(self.host_key_line + "\n")
        return path

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    async def wait_streams(self, count: int, within: float = 5.0) -> None:
        """Until exactly `count` stream-events sessions are open."""
        deadline = time.monotonic() + within
        while self.stream_count != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.stream_count} streams open, waited for {count}")
            await asyncio.sleep(0.01)

    async def emit(self, event: dict[str, Any]) -> int:
        """Write the event to every open stream (flushed on return); returns how many got it."""
        line = json.dumps(event) + "\n"
        sent = 0
        for process in list(self._streams):
            try:
                process.stdout.write(line)
                await process.stdout.drain()
                sent += 1
            except (OSError, asyncssh.Error):
                self._streams.discard(process)
        return sent

    async def drop_streams(self) -> None:
        """Close every stream's SSH connection, as a Gerrit restart would."""
        for process in list(self._streams):
            process.get_extra_info("connection").close()
        await self.wait_streams(0)

    async def _stream_events(self, process: asyncssh.SSHServerProcess[str]) -> None:
        if process.command != STREAM_COMMAND:
            process.stderr.write(f"fatal: the fake Gerrit serves only {STREAM_COMMAND!r}\n")
            process.exit(1)
            return
        self._streams.add(process)
        try:
            # Events are written by emit(); the session lasts until either side closes it.
            await process.wait_closed()
        finally:
            self._streams.discard(process)


class _SSHServer(asyncssh.SSHServer):
    def __init__(self, fake: FakeGerrit) -> None:
        self.fake = fake
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.fake._ssh_conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.fake._ssh_conns.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self.fake.user and key.public_data in self.fake._authorized


def gerrit_connection(
    fake: FakeGerrit,
    directory: Path,
    *,
    git_url: str | None = None,
    password: str | None = None,
    tag_prefix: str = "autogenerated:lockmaster",
) -> GerritConnection:
    """A GerritConnection pointing at the fake: password file, client key and known_hosts
    are written under `directory` (the client key is authorised with the fake)."""
    directory.mkdir(parents=True, exist_ok=True)
    password_file = directory / "gerrit-password"
    password_file.write_text((fake.password if password is None else password) + "\n")
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = directory / "gerrit-ssh-key"
    key.write_private_key(key_file)
    key_file.chmod(0o600)
    fake.authorize_key(key)
    known_hosts = fake.write_known_hosts(directory / "gerrit-known-hosts")
    return GerritConnection(
        driver="gerrit",
        url=fake.url,
        user=fake.user,
        password_file=password_file,
        git_url=git_url,
        ssh=GerritSSH(
            host=fake.host,
            port=fake.ssh_port,
            user=fake.user,
            key_file=key_file,
            known_hosts_file=known_hosts,
        ),
        tag_prefix=tag_prefix,
    )


def _all_revisions(request: web.Request) -> bool:
    return "ALL_REVISIONS" in request.query.getall("o", [])


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=XSSI + json.dumps(data), content_type="application/json"
    )


def _sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()
