"""`packaging:` in lockmaster.yaml: where package builds and install tests get the target
distribution from, the package cache in front of it, and the prepared roots (docs/packaging.md).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from lockmaster.config.base import ConfigModel

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class DistributionConfig(ConfigModel):
    """The target distribution's APT repositories, from which clean build roots and install
    roots are made and build and runtime dependencies are resolved. The codename is
    `publishing.codename`."""

    # The upstream mirror, over http (the package cache proxies it; apt checks the signatures).
    mirror: str = "http://deb.debian.org/debian"
    # Suites besides the codename itself (e.g. bookworm-updates), from the same mirror.
    extra_suites: list[str] = Field(default_factory=list)
    components: list[str] = Field(default_factory=lambda: ["main"])
    # The keyring apt checks the mirror's Release files with; none: the mirror is trusted
    # without a signature (a local repository of one's own, as in the tests).
    keyring: Path | None = DEBIAN_KEYRING

    @field_validator("mirror")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL of an APT repository "
                             "(e.g. http://deb.debian.org/debian)")
        return value.rstrip("/")


class PackageCacheConfig(ConfigModel):
    """The caching proxy (apt-cacher-ng) that build and install roots fetch the distribution's
    packages through, started by `lockmaster run` (and a service in docker-compose.yml)."""

    enabled: bool = True
    listen: str = "127.0.0.1"
    port: int = Field(default=3142, gt=0, lt=65536)
    dir: Path | None = None  # default: <state-dir>/package-cache
    # Where build nodes reach the cache (default http://<listen>:<port>).
    url: str | None = None
    # Run it from `lockmaster run`; false when a cache runs elsewhere (docker-compose's service).
    serve: bool = True

    @field_validator("port")
    @classmethod
    def _acng_port(cls, value: int) -> int:
        # apt-cacher-ng 3.7.4 reads its port as a signed 16-bit number and cannot bind above.
        if value > 32767:
            raise ValueError(f"{value}: apt-cacher-ng cannot listen on ports above 32767; "
                             "choose a lower port (default 3142)")
        return value

    @field_validator("url")
    @classmethod
    def _cache_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "http" or not parts.netloc:
                raise ValueError(f"{value!r} is not the cache's http URL "
                                 "(e.g. http://package-cache:3142)")
        return value

    def base_url(self) -> str:
        return (self.url or f"http://{self.listen}:{self.port}").rstrip("/")


class RootsConfig(ConfigModel):
    """Prepared base roots (mmdebstrap tarballs) on build nodes, reused by every build and
    install test and remade when older than `max-age` (seed 003: prepared ahead of time)."""

    dir: Path | None = None  # on the node; default: <state-dir>/roots for local nodes
    max_age: float = Field(default=86400.0, gt=0)  # seconds
    # Preinstalled in the prepared build root: most Debian packages build-depend on debhelper,
    # which would otherwise be installed into every fresh copy (about 4 s a build). A build
    # still gets the version its Build-Depends ask for (apt upgrades it in the copy).
    build_include: list[str] = Field(default_factory=lambda: ["debhelper"])


class PackagingConfig(ConfigModel):
    # The target distribution that DEB builds and install tests run in clean roots of.
    distribution: DistributionConfig | None = Field(default_factory=DistributionConfig)
    # false (or `distribution: null`): builds use the node's own tools and install tests a
    # minimal root made from the host (no distribution packages); only for nodes that cannot
    # reach any mirror.
    clean_roots: bool = True
    cache: PackageCacheConfig = Field(default_factory=PackageCacheConfig)
    roots: RootsConfig = Field(default_factory=RootsConfig)
    # RPM repositories (baseurl) that BuildRequires are resolved from; none: rpmbuild --nodeps
    # on non-RPM nodes, and BuildRequires are listed as unverified.
    rpm_repositories: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cache_needs_http(self) -> PackagingConfig:
        if self.distribution and self.cache.enabled and \
                urlsplit(self.distribution.mirror).scheme != "http":
            raise ValueError(
                f"packaging.distribution.mirror {self.distribution.mirror!r}: the package cache "
                "proxies plain http only (apt checks the signatures); use the mirror's http URL "
                "or set packaging.cache.enabled: false")
        return self

    @model_validator(mode="after")
    def _cache_reaches_mirror_port(self) -> PackagingConfig:
        # apt-cacher-ng 3.7.4 reads ports as signed 16-bit numbers: it cannot fetch from above.
        mirror = self.distribution.mirror if self.distribution else None
        port = urlsplit(mirror).port if mirror else None
        if self.cache.enabled and port is not None and port > 32767:
            raise ValueError(
                f"packaging.distribution.mirror {mirror!r}: the package cache (apt-cacher-ng) "
                "cannot fetch from ports above 32767; serve the mirror on a lower port or set "
                "packaging.cache.enabled: false")
        return self

    def target(self) -> DistributionConfig | None:
        """The distribution builds and install tests use, or None (the node's own tools)."""
        return self.distribution if self.clean_roots else None

    def mirror_for_roots(self) -> str | None:
        """The distribution mirror as build nodes use it: through the cache when there is one
        (apt-cacher-ng's `http://cache:3142/<host>/<path>` form)."""
        if self.target() is None or self.distribution is None:
            return None
        mirror = self.distribution.mirror
        if not self.cache.enabled:
            return mirror
        parts = urlsplit(mirror)
        return f"{self.cache.base_url()}/{parts.netloc}{parts.path}"
