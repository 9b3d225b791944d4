"""Build the review drivers a deployment's connections describe."""

from __future__ import annotations

from lockmaster.config.models import GerritConnection, LockmasterConfig
from lockmaster.review.base import ReviewDriver
from lockmaster.review.local import LocalReviewDriver


def review_drivers(config: LockmasterConfig) -> dict[str, ReviewDriver]:
    drivers: dict[str, ReviewDriver] = {}
    for name, conn in config.connections.items():
        if isinstance(conn, GerritConnection):
            from lockmaster.review.gerrit import GerritDriver  # httpx only where Gerrit is used

            password_file = config.resolve(conn.password_file)
            drivers[name] = GerritDriver(
                name, conn.model_copy(update={"password_file": password_file})
            )
        else:
            drivers[name] = LocalReviewDriver(name, config.local_review_path(name))
    return drivers
