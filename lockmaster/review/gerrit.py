"""The Gerrit review driver: Gerrit's REST API over httpx (authenticated `/a/` endpoints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import httpx

from lockmaster.config.models import GerritConnection
from lockmaster.model.change import ChangeInfo, ChangeRef
from lockmaster.model.report import ReportRequest, ReportResult
from lockmaster.review.base import ChangeNotFound, ReviewError, SubmitRefused
from lockmaster.review.gerrit_catchup import QUERY_OPTIONS as CATCHUP_OPTIONS
from lockmaster.review.gerrit_catchup import since_query

# Gerrit prefixes every JSON answer with this line against cross-site script inclusion.
XSSI_PREFIX = ")]}'"

# What get_change needs: the current patchset and its commit, and every reviewer's vote.
CHANGE_OPTIONS = ("CURRENT_REVISION", "CURRENT_COMMIT", "DETAILED_LABELS")

_STATUSES: dict[str, Literal["NEW", "MERGED", "ABANDONED"]] = {
    "NEW": "NEW",
    "MERGED": "MERGED",
    "ABANDONED": "ABANDONED",
    "DRAFT": "NEW",  # Gerrit 2.x drafts are open changes
}


class GerritAuthError(ReviewError):
    """Gerrit refused the credentials (401/403): check `user` and `password-file`."""


def strip_xssi(text: str) -> str:
    if text.startswith(XSSI_PREFIX):
        return text[len(XSSI_PREFIX) :].lstrip("\r\n")
    return text


def read_password(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ReviewError(f"cannot read Gerrit password file {path}: {exc}") from exc


class GerritDriver:
    """One Gerrit connection: reads changes, posts tagged reviews, submits."""

    def __init__(
        self,
        name: str,
        config: GerritConnection,
        *,
        password: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.connection = name
        self.config = config
        self._url = config.url.rstrip("/")
        secret = password if password is not None else read_password(config.password_file)
        self._client = httpx.AsyncClient(
            base_url=self._url,
            auth=httpx.BasicAuth(config.user, secret),
            transport=transport,
            timeout=httpx.Timeout(30.0),
            headers={"Accept": "application/json"},
        )

    # --- ReviewDriver ---------------------------------------------------------------------------

    async def get_change(self, number: int) -> ChangeInfo:
        data = await self._json("GET", f"/a/changes/{number}", params=_options())
        return self._change_info(data)

    async def find_change_id(self, change_id: str) -> list[ChangeInfo]:
        # Every revision: a child commit may sit on an older patchset (which one, is needed).
        params = [("q", f"change:{change_id}"), *_options(), ("o", "ALL_REVISIONS")]
        data = await self._json("GET", "/a/changes/", params=params)
        if not isinstance(data, list):
            raise ReviewError(f"Gerrit answered a change query with {type(data).__name__}")
        return [self._change_info(item) for item in data]

    async def needed_by(self, change: ChangeInfo) -> list[ChangeInfo]:
        """Git children from the current revision's related changes (Gerrit's neededBy), and
        open changes whose message names the change's URL or Change-Id (Zuul's
        getChangesDependingOn)."""
        numbers: list[int] = []
        if change.connection == self.connection:
            related = await self._json(
                "GET", f"/a/changes/{change.number}/revisions/current/related")
            for entry in (related or {}).get("changes") or []:
                parents = [p.get("commit") for p in (entry.get("commit") or {}).get("parents")
                           or []]
                current = entry.get("_revision_number") == entry.get("_current_revision_number")
                if change.commit in parents and current and entry.get("status", "NEW") == "NEW":
                    numbers.append(int(entry["_change_number"]))
        terms = [f'message:"{change.url}"'] if change.url else []
        if change.change_id and change.connection == self.connection:
            terms.append(f"message:{change.change_id}")
        if terms:
            found = await self._json("GET", "/a/changes/",
                                     params=[("q", f"status:open ({' OR '.join(terms)})")])
            numbers += [int(item["_number"]) for item in found or []]
        out = []
        for number in dict.fromkeys(numbers):
            if change.connection == self.connection and number == change.number:
                continue
            try:
                out.append(await self.get_change(number))
            except ChangeNotFound:
                continue  # deleted meanwhile
        return out

    async def changes_since(self, since: float, page: int = 100) -> list[dict[str, Any]]:
        """Every change updated at or after `since`, with its messages, revisions and votes
        (ChangeInfo objects as Gerrit sends them; gerrit_catchup reads them), page by page."""
        out: list[dict[str, Any]] = []
        while True:
            params = [("q", since_query(since)), *(("o", o) for o in CATCHUP_OPTIONS),
                      ("n", str(page)), ("S", str(len(out)))]
            data = await self._json("GET", "/a/changes/", params=params)
            if not isinstance(data, list):
                raise ReviewError(f"Gerrit answered a since: query with {type(data).__name__}")
            out += data
            if not data or not data[-1].get("_more_changes"):
                return out

    async def post_report(self, report: ReportRequest) -> ReportResult:
        number = report.change.number
        tag = f"{self.config.tag_prefix}:{report.tag}"
        # A retried activity may find its earlier attempt already posted (response lost).
        messages = await self._json("GET", f"/a/changes/{number}/messages")
        if not isinstance(messages, list):
            raise ReviewError(f"Gerrit answered change {number}'s messages with a non-list")
        if any(isinstance(m, dict) and m.get("tag") == tag for m in messages):
            return ReportResult(posted=False)
        revision = report.change.commit or str(report.change.patchset)
        body: dict[str, Any] = {"message": report.message, "labels": report.labels, "tag": tag}
        await self._json("POST", f"/a/changes/{number}/revisions/{revision}/review", json=body)
        return ReportResult(posted=True)

    async def submit(self, change: ChangeRef) -> None:
        # The tested revision, not the change's current one (as Zuul): a patchset uploaded
        # after the gate tested this one makes Gerrit refuse (409) instead of merging
        # untested code.
        revision = change.commit or str(change.patchset)
        response = await self._request(
            "POST", f"/a/changes/{change.number}/revisions/{revision}/submit", json={})
        if response.status_code == 409:
            raise SubmitRefused(
                f"Gerrit refused to submit change {change.number}: {_error_text(response)}"
            )
        self._check(response, f"submit change {change.number}")

    def git_url(self, project: str) -> str:
        base = self.config.git_url or self._url
        if "://" in base:
            return f"{base.rstrip('/')}/{project}"
        # A local directory of bare repositories (development, tests).
        return str(Path(base).expanduser() / project)

    def change_url(self, number: int) -> str:
        # Gerrit redirects the short form to the change; no project needed.
        return f"{self._url}/{number}"

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- HTTP -----------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ReviewError(f"Gerrit {method} {path}: {type(exc).__name__}: {exc}") from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        self._check(response, f"{method} {path}")
        text = strip_xssi(response.text)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ReviewError(f"Gerrit {method} {path}: answer is not JSON: {exc}") from exc

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 400:
            return
        text = _error_text(response)
        if status == 404:
            raise ChangeNotFound(f"Gerrit {what}: not found ({text})")
        if status in (401, 403):
            raise GerritAuthError(
                f"Gerrit {what}: HTTP {status} for user {self.config.user!r} ({text}); "
                f"check the HTTP password in {self.config.password_file}"
            )
        raise ReviewError(f"Gerrit {what}: HTTP {status}: {text}")

    # --- mapping --------------------------------------------------------------------------------

    def _change_info(self, data: Any) -> ChangeInfo:
        try:
            sha = data["current_revision"]
            revision = data["revisions"][sha]
            number = int(data["_number"])
            project = data["project"]
            status = _STATUSES[data["status"]]
            return ChangeInfo(
                connection=self.connection,
                project=project,
                branch=data["branch"],
                number=number,
                patchset=int(revision["_number"]),
                status=status,
                commit=sha,
                change_id=data.get("change_id"),
                url=f"{self._url}/c/{project}/+/{number}",
                message=(revision.get("commit") or {}).get("message", ""),
                approvals=max_approvals(data.get("labels") or {}),
                # Gerrit leaves both out when false.
                wip=bool(data.get("work_in_progress", False)),
                private=bool(data.get("is_private", False)),
                revisions={str(commit): int(rev["_number"])
                           for commit, rev in (data.get("revisions") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReviewError(f"Gerrit change answer is missing or has a bad {exc}") from exc


def max_approvals(labels: dict[str, Any]) -> dict[str, int]:
    """Highest current vote per label; labels nobody voted on (all zero) are left out."""
    result: dict[str, int] = {}
    for name, info in labels.items():
        votes = [int(a["value"]) for a in info.get("all") or [] if a.get("value")]
        if votes:
            result[name] = max(votes)
    return result


def _options() -> list[tuple[str, str]]:
    return [("o", option) for option in CHANGE_OPTIONS]


def _error_text(response: httpx.Response) -> str:
    return strip_xssi(response.text).strip() or response.reason_phrase
