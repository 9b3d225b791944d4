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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from aiohttp import web

from lockmaster.config.models import GerritConnection, GerritSSH
from lockmaster.model.change import change_ref_name

XSSI = ")]}'\n"
LOCKMASTER_ACCOUNT = 1000000
STREAM_COMMAND = "gerrit stream-events"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakePatchset:
    number: int
    commit: str
    message: str
    created: int = field(default_factory=lambda: int(time.time()))
    parents: list[str] = field(default_factory=list)  # commits this one sits on


@dataclass
class FakeChange:
    project: str
    branch: str
    number: int
    change_id: str
    status: str
    patchsets: list[FakePatchset]
    # label -> username -> value (current patchset only, as Gerrit without copy rules)
    votes: dict[str, dict[str, int]] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    wip: bool = False
    private: bool = False
    # When anything about the change last changed (Gerrit's `updated`; `since:` queries).
    updated: float = field(default_factory=time.time)

    @property
    def current(self) -> FakePatchset:
        return self.patchsets[-1]

    def patchset(self, revision: str) -> FakePatchset | None:
        """By sha, patchset number, or `current`, as Gerrit's revision ids."""
        for ps in self.patchsets:
            if revision in (ps.commit, str(ps.number)):
                return ps
        return self.current if revision == "current" else None

    def approvals(self) -> dict[str, int]:
        return {
            label: max(v for v in by_user.values())
            for label, by_user in self.votes.items()
            if any(by_user.values())
        }


@dataclass
class _Fault:
    path: str
    status: int
    count: int
    after_apply: bool
    method: str | None


class FakeGerrit:
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

    def record(self, event: dict[str, Any]) -> dict[str, Any]:
        """Make what a stream event says true in the REST API, as Gerrit writes it: the change
        message (dated at the event), votes, status, patchsets. Returns the event (emit it to
        deliver it by the stream too; leave it unsent for an event the stream lost)."""
        type_ = event["type"]
        change = self.changes[int(event["change"]["number"])]
        # Gerrit dates a message to the millisecond (one after the other here); its stream
        # event carries whole seconds.
        at = self._last_message = max(time.time(), float(event["eventCreatedOn"]),
                                      self._last_message + 0.001)
        ps = int(event["patchSet"]["number"])
        name = {"comment-added": "author", "patchset-created": "uploader",
                "change-abandoned": "abandoner", "change-restored": "restorer",
                "change-merged": "submitter", "vote-deleted": "remover",
                "wip-state-changed": "changer"}[type_]
        who = event[name]["username"]
        tag = None
        if type_ == "comment-added":
            text = event.get("comment") or ""
            for item in event.get("approvals") or []:
                change.votes.setdefault(item["type"], {})[who] = int(item["value"])
        elif type_ == "patchset-created":
            tag, text = "autogenerated:gerrit:newPatchSet", f"Uploaded patch set {ps}."
        elif type_ == "change-abandoned":
            change.status = "ABANDONED"
            tag, text = "autogenerated:gerrit:abandon", _with_reason("Abandoned", event)
        elif type_ == "change-restored":
            change.status = "NEW"
            tag, text = "autogenerated:gerrit:restore", _with_reason("Restored", event)
        elif type_ == "change-merged":
            change.status = "MERGED"
            tag = "autogenerated:gerrit:merged"
            text = f"Change has been successfully merged by {who.title()}"
        elif type_ == "vote-deleted":
            removed = next(a for a in event["approvals"] if "oldValue" in a)
            voter = event["reviewer"]["username"]
            change.votes.get(removed["type"], {}).pop(voter, None)
            tag = "autogenerated:gerrit:deleteVote"
            text = event["comment"]
        else:  # wip-state-changed: the new state is on the change already (set_wip)
            tag = ("autogenerated:gerrit:setWorkInProgress" if change.wip
                   else "autogenerated:gerrit:setReadyForReview")
            text = "Set Work In Progress" if change.wip else "Set Ready For Review"
        self._account_id(who)
        change.messages.append({
            "id": uuid.uuid4().hex, "author": self._account(who), "date": _gerrit_date(at),
            "message": text, "_revision_number": ps, **({"tag": tag} if tag else {}),
        })
        change.updated = max(change.updated, at)
        return event

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
                "date": _gerrit_date(time.time()),
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
            "updated": _gerrit_date(change.updated),
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

    # --- stream-events event builders -----------------------------------------------------------

    def _stream_account(self, username: str) -> dict[str, str]:
        return {"name": username.title(), "email": f"{username}@example.org", "username": username}

    def _stream_change(self, change: FakeChange) -> dict[str, Any]:
        return {
            "project": change.project,
            "branch": change.branch,
            "id": change.change_id,
            "number": change.number,
            "subject": change.current.message.splitlines()[0] if change.current.message else "",
            "owner": self._stream_account("owner"),
            "url": f"{self.url}/c/{change.project}/+/{change.number}",
            "commitMessage": change.current.message,
            "createdOn": change.created,
            "status": change.status,
            # Gerrit sets both only when true (EventFactory.asChangeAttribute).
            **({"wip": True} if change.wip else {}),
            **({"private": True} if change.private else {}),
        }

    def _stream_patchset(self, change: FakeChange, ps: FakePatchset) -> dict[str, Any]:
        return {
            "number": ps.number,
            "revision": ps.commit,
            "parents": [],
            "ref": change_ref_name(change.number, ps.number),
            "uploader": self._stream_account("owner"),
            "createdOn": ps.created,
            "author": self._stream_account("owner"),
            "kind": "REWORK",
            "sizeInsertions": 1,
            "sizeDeletions": 0,
        }

    def _change_event(
        self, type_: str, number: int, patchset: int | None, **extra: Any
    ) -> dict[str, Any]:
        change = self.changes[number]
        ps = change.patchset(str(patchset)) if patchset else change.current
        assert ps is not None, f"change {number} has no patchset {patchset}"
        return {
            **extra,
            "patchSet": self._stream_patchset(change, ps),
            "change": self._stream_change(change),
            "project": change.project,
            "refName": f"refs/heads/{change.branch}",
            "changeKey": {"id": change.change_id},
            "type": type_,
            "eventCreatedOn": int(time.time()),
        }

    def patchset_created_event(
        self, number: int, patchset: int | None = None, uploader: str = "owner"
    ) -> dict[str, Any]:
        return self._change_event(
            "patchset-created", number, patchset, uploader=self._stream_account(uploader)
        )

    def comment_added_event(
        self,
        number: int,
        comment: str,
        approvals: dict[str, int] | None = None,
        author: str = "reviewer",
        patchset: int | None = None,
    ) -> dict[str, Any]:
        # Stream-events values are strings; oldValue appears only for a changed vote.
        items = [
            {"type": k, "description": k, "value": str(v), "oldValue": "0"}
            for k, v in (approvals or {}).items()
        ]
        return self._change_event(
            "comment-added",
            number,
            patchset,
            author=self._stream_account(author),
            approvals=items,
            comment=comment,
        )

    def change_merged_event(
        self, number: int, newrev: str | None = None, submitter: str = "lockmaster"
    ) -> dict[str, Any]:
        return self._change_event(
            "change-merged",
            number,
            None,
            submitter=self._stream_account(submitter),
            newRev=newrev or self.changes[number].current.commit,
        )

    def change_abandoned_event(
        self, number: int, reason: str = "", abandoner: str = "owner"
    ) -> dict[str, Any]:
        return self._change_event(
            "change-abandoned",
            number,
            None,
            abandoner=self._stream_account(abandoner),
            reason=reason,
        )

    def change_restored_event(
        self, number: int, reason: str = "", restorer: str = "owner"
    ) -> dict[str, Any]:
        return self._change_event(
            "change-restored",
            number,
            None,
            restorer=self._stream_account(restorer),
            reason=reason,
        )

    def vote_deleted_event(
        self,
        number: int,
        label: str,
        old_value: int,
        reviewer: str = "reviewer",
        remover: str | None = None,
        others: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Gerrit's vote-deleted: approvals lists the removed label at "0" with its oldValue,
        and (`others`) the reviewer's untouched votes, without oldValue."""
        items = [{"type": k, "description": k, "value": str(v)} for k, v in (others or {}).items()]
        items.append(
            {"type": label, "description": label, "value": "0", "oldValue": str(old_value)}
        )
        remover = remover or reviewer
        return self._change_event(
            "vote-deleted",
            number,
            None,
            reviewer=self._stream_account(reviewer),
            remover=self._stream_account(remover),
            approvals=items,
            comment=f"Removed {label}{old_value:+d} by {reviewer.title()}\n",
        )

    def wip_state_changed_event(self, number: int, changer: str = "owner") -> dict[str, Any]:
        """The change's new state is in change.wip: set the state first (set_wip)."""
        return self._change_event(
            "wip-state-changed", number, None, changer=self._stream_account(changer)
        )

    def private_state_changed_event(self, number: int, changer: str = "owner") -> dict[str, Any]:
        """The change's new state is in change.private: set it first (set_private)."""
        return self._change_event(
            "private-state-changed", number, None, changer=self._stream_account(changer)
        )

    def ref_updated_event(
        self, project: str, refname: str, oldrev: str, newrev: str, submitter: str = "owner"
    ) -> dict[str, Any]:
        return {
            "submitter": self._stream_account(submitter),
            "refUpdate": {
                "oldRev": oldrev,
                "newRev": newrev,
                "refName": refname,
                "project": project,
            },
            "type": "ref-updated",
            "eventCreatedOn": int(time.time()),
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


def _with_reason(what: str, event: dict[str, Any]) -> str:
    reason = event.get("reason") or ""
    return f"{what}\n\n{reason}" if reason else what


def _gerrit_date(ts: float) -> str:
    millis = int(ts * 1000) % 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{millis:03d}000000"
