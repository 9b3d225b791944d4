"""What every web handler needs, in one place: the deployment's configuration, its state
directory, the Temporal client (None while Temporal is unreachable: pages say so, the server
stays up) and the results database (None when there is none).

Handlers get it with `request.app[CTX]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import temporalio.client
from aiohttp import web

from lockmaster.config.models import LockmasterConfig

if TYPE_CHECKING:  # the results database is an optional part; avoid importing it eagerly
    from lockmaster.results.db import ResultsDB  # type: ignore[import-not-found]
else:
    ResultsDB = Any


@dataclass
class WebContext:
    config: LockmasterConfig
    state_dir: Path
    client: temporalio.client.Client | None
    results: ResultsDB | None
    # What handlers keep between requests (web/sources.py: answers shared by the viewers
    # polling at once, when Temporal was last tried).
    cache: dict[str, Any] = field(default_factory=dict, repr=False)


CTX = web.AppKey("lockmaster", WebContext)
