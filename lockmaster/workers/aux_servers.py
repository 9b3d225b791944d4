"""The auxiliary servers a worker process runs beside its workers: the log server, directory
mirrors served over HTTP, the package cache (apt-cacher-ng), the executor's delivery of
spooled logs to the log store (logs.store driver http), and in `lockmaster run` the codec server
(codec.serve).

None of them is the process's reason to run: one that cannot start is reported (what, why, how
to fix) and the workers and the other servers run on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from lockmaster.config.models import LockmasterConfig
from lockmaster.execution.log_shipping import SpoolDelivery, log_shipping
from lockmaster.logserver import LogServer, TokenError
from lockmaster.packaging.cache_server import CacheError, PackageCache, package_cache

log = logging.getLogger(__name__)


@dataclass
class Running:
    what: str  # "the log server", "mirror local", "the package cache"
    url: str
    stop: Callable[[], None]


@dataclass
class AuxServers:
    running: list[Running] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one message per server that did not start
    cache: PackageCache | None = None

    def url(self, what: str) -> str | None:
        return next((r.url for r in self.running if r.what == what), None)

    def stop(self) -> None:
        for server in reversed(self.running):
            try:
                server.stop()
            except Exception as exc:  # stopping one must not leave the others running
                log.warning("stopping %s: %s", server.what, exc)
        self.running.clear()


PACKAGE_CACHE = "the package cache"
LOG_SERVER = "the log server"
LOG_SPOOL = "the log spool delivery"
CODEC_SERVER = "the codec server"
WEB = "the web service"


def serves_logs(config: LockmasterConfig, role: str) -> bool:
    """The log server runs in `all` (development), and in the executor while the executor
    writes into the served root itself (driver directory); with driver http it is the log
    host's `lockmaster logs serve`."""
    if not config.logs.serve:
        return False
    return role == "all" or (role == "executor" and config.logs.store.driver == "directory")


def start_log_server(config: LockmasterConfig) -> LogServer:
    """The log server on logs.serve (default 127.0.0.1:8000) over logs.root, taking uploads
    with the token in logs.store.token-file when the store is http. OSError: the port;
    TokenError: the token file."""
    from lockmaster.config.models import LogServe

    serve = config.logs.serve or LogServe()
    store = config.logs.store
    token = (config.resolve(store.token_file)
             if store.driver == "http" and store.token_file is not None else None)
    return LogServer(config.logs_root, serve.listen, serve.port, token_file=token).start()


def start_aux_servers(config: LockmasterConfig, role: str,
                      report: Callable[[str], None] | None = None, *,
                      web: bool = False) -> AuxServers:
    """Start the servers `role` runs (blocking: the package cache takes a moment; call it in a
    thread from async code). Every failure is passed to `report` (default: a log warning) and
    kept in `failed`; the servers that did start are in `running`. `web`: also the web service
    (status page, JSON API) on web.listen:web.port, as `lockmaster run` does."""
    say = report or log.warning
    servers = AuxServers()

    def failed(what: str, why: object, fix: str) -> None:
        message = f"{what} did not start: {why}{fix}; the rest keeps running without it"
        servers.failed.append(message)
        say(message)

    if config.logs.serve and serves_logs(config, role):
        serve = config.logs.serve
        try:
            logs = start_log_server(config)
        except OSError as exc:
            failed(LOG_SERVER, f"{serve.listen}:{serve.port}: {exc}",
                   " (stop what uses the port, or change logs.serve.port)")
        except TokenError as exc:
            failed(LOG_SERVER, exc, "")
        else:
            servers.running.append(Running(LOG_SERVER, config.logs.url, logs.stop))
            log.info("serving logs from %s on port %d", config.logs_root, logs.port)
    shipping = log_shipping(config) if role in ("executor", "all") else None
    if shipping is not None:
        # What a build could not deliver (the store down) is delivered from here, later.
        delivery = SpoolDelivery(shipping).start()
        servers.running.append(Running(LOG_SPOOL, shipping.client.url, delivery.stop))
        log.info("delivering undelivered logs from %s to %s every %g s", shipping.spool,
                 shipping.client.url, shipping.retry_interval)
    if role in ("publisher", "all"):
        for mirror in config.publishing.mirrors:
            if not (mirror.serve and mirror.driver == "directory"):
                continue
            root = config.resolve(mirror.path)
            try:
                server = LogServer(root, mirror.serve.listen, mirror.serve.port).start()
            except OSError as exc:
                failed(f"mirror {mirror.name}'s HTTP server",
                       f"{mirror.serve.listen}:{mirror.serve.port}: {exc}",
                       " (stop what uses the port, or change the mirror's serve.port)")
                continue
            servers.running.append(Running(f"mirror {mirror.name}", mirror.url or "",
                                           server.stop))
            log.info("serving mirror %s from %s on port %d", mirror.name, root,
                     mirror.serve.port)
    cache = config.packaging.cache
    if cache.enabled and cache.serve and role in ("executor", "all"):
        # Build and install roots of the local nodes fetch the distribution through it.
        try:
            server_ = package_cache(config).start()
        except CacheError as exc:
            failed(f"{PACKAGE_CACHE} (apt-cacher-ng)", exc, "")
        except OSError as exc:  # the cache's directory cannot be made or written
            failed(f"{PACKAGE_CACHE} (apt-cacher-ng)", exc,
                   " (check packaging.cache.dir and its permissions)")
        else:
            servers.cache = server_
            servers.running.append(Running(PACKAGE_CACHE, cache.base_url(), server_.stop))
            log.info("package cache (apt-cacher-ng) on %s, cache in %s", server_.url,
                     server_.root)
    if web:
        from lockmaster.web.server import WebServer

        try:
            site = WebServer(config, migrate_results=False).start()
        except OSError as exc:
            failed(WEB, f"{config.web.listen}:{config.web.port}: {exc}",
                   " (stop what uses the port, or change web.port)")
        else:
            servers.running.append(Running(WEB, config.web.url, site.stop))
            log.info("web service (status page) on %s", site.url)
    codec = config.codec
    if role == "all" and codec is not None and codec.serve is not None:
        # The Web UI and the temporal CLI read encrypted payloads through it (docs/codec.md).
        from lockmaster.temporal.codec_server import CodecServerSetupError, start_codec_server

        try:
            codec_server = start_codec_server(config)
        except CodecServerSetupError as exc:
            failed(CODEC_SERVER, exc, "")
        except OSError as exc:
            failed(CODEC_SERVER, f"{codec.serve.listen}:{codec.serve.port}: {exc}",
                   " (stop what uses the port, or change codec.serve.port)")
        else:
            servers.running.append(Running(CODEC_SERVER, codec_server.url, codec_server.stop))
            log.info("codec server on %s", codec_server.url)
    return servers
