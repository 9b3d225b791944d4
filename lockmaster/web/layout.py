"""The layout every HTML page shares: static/layout.html (head, nav bar, footer) with the
page's title, body and scripts put in. Pages are plain HTML + vanilla JS that read the JSON API;
nothing is built with npm.

    from lockmaster.web.layout import page
    return page("Builds", "<div id=builds></div>", scripts=["builds.js"], active="Builds")
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

# The nav bar: (label, path), in order. A page passes its label as `active`.
NAV: list[tuple[str, str]] = [
    ("Status", "/"),
    ("Builds", "/builds"),
    ("Buildsets", "/buildsets"),
    ("Nodes", "/nodes"),
    ("TEs", "/tes"),
    ("Publications", "/publications"),
    ("Signatures", "/signatures"),
]


@cache
def _template() -> str:
    return (STATIC / "layout.html").read_text()


def nav_html(active: str = "") -> str:
    links = []
    for label, path in NAV:
        cls = ' class="active" aria-current="page"' if label == active else ""
        links.append(f'<a href="{path}"{cls}>{html.escape(label)}</a>')
    return "\n".join(links)


def render(title: str, body: str, scripts: list[str] | tuple[str, ...] = (),
           active: str = "") -> str:
    """The whole page as text. `body` is trusted HTML (the page's own markup); `scripts` are
    file names under static/."""
    tags = "\n".join(f'<script src="/static/{html.escape(s)}" defer></script>' for s in scripts)
    return (_template()
            .replace("{{title}}", html.escape(title))
            .replace("{{nav}}", nav_html(active))
            .replace("{{scripts}}", tags)
            .replace("{{body}}", body))


def page(title: str, body: str, scripts: list[str] | tuple[str, ...] = (), active: str = "",
         status: int = 200) -> web.Response:
    return web.Response(text=render(title, body, scripts, active), status=status,
                        content_type="text/html")
