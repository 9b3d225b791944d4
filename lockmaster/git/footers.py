"""Parse `Depends-On:` footers from commit messages.

Pure (no I/O, standard library and models only): the workflow sandbox imports it too.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from lockmaster.model.base import Model

# Like Zuul: the key at the start of any line of the message, not only in the footer block
# (people put it above Signed-off-by or in the body), any case, any number of them.
_FOOTER = re.compile(r"^depends-on:[ \t]*(.*?)[ \t\r]*$", re.MULTILINE | re.IGNORECASE)
_CHANGE_ID = re.compile(r"I[0-9a-f]{40}")
# Gerrit change pages: /c/<project>/+/<n>[/<ps>], /c/<n>[/<ps>], also under a path prefix
# (https://host/r/c/...) and in old-UI fragments (https://host/#/c/<n>/).
_GERRIT_PATH = re.compile(r"(?:^|/)c/(?:.+/\+/)?(\d+)(?:/\d+)?/?$")
# Gerrit's short form https://host/<n>, also under a path prefix (a Gerrit served at
# https://host/prefixed_gerrit_ui/: Zuul's TestGerritCRDAltBaseUrl), and local://<conn>/<n>.
_SHORT_PATH = re.compile(r"^(?:/[^/]+)*?/(\d+)/?$")


class DependsOn(Model):
    """One footer. A URL gives `number` and `host` (the URL's host[:port], lower-cased; for
    local://<connection>/<n> the connection name); a legacy Change-Id gives `change_id`.
    All three None: the value is neither, and resolving it must fail loudly."""

    number: int | None = None
    change_id: str | None = None
    host: str | None = None
    raw: str


def depends_on(message: str) -> list[DependsOn]:
    """Every Depends-On footer of `message`, in order, each distinct dependency once."""
    found: dict[tuple[object, ...], DependsOn] = {}
    for match in _FOOTER.finditer(message):
        raw = match.group(1)
        if not raw:
            continue
        dep = parse_depends_on(raw)
        key = (dep.number, dep.change_id, dep.host) if dep.number or dep.change_id else (raw,)
        found.setdefault(key, dep)
    return list(found.values())


def parse_depends_on(raw: str) -> DependsOn:
    """Parse one footer value (see DependsOn)."""
    if _CHANGE_ID.fullmatch(raw):
        return DependsOn(change_id=raw, raw=raw)
    try:
        url = urlsplit(raw)
    except ValueError:  # e.g. a malformed IPv6 host
        return DependsOn(raw=raw)
    if not url.scheme or not url.netloc:
        return DependsOn(raw=raw)
    number = _number_from(url.path)
    if number is None and url.fragment.startswith("/"):
        number = _number_from(url.fragment)
    if number is None:
        return DependsOn(raw=raw)
    return DependsOn(number=number, host=url.netloc.lower(), raw=raw)


def _number_from(path: str) -> int | None:
    match = _GERRIT_PATH.search(path) or _SHORT_PATH.match(path)
    return int(match.group(1)) if match else None
