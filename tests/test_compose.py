"""docker-compose.yml cannot run here (no Docker engine): check that what it refers to exists."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

from lockmaster.cli.main import COMMANDS
from lockmaster.config.loader import load_config
from lockmaster.packaging.cache_server import cache_root

ROOT = Path(__file__).resolve().parent.parent


def test_compose_services_refer_to_real_files_and_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgresql", "temporal", "temporal-ui", "orchestrator", "executor"} <= set(services)
    assert services["temporal"]["environment"]["DB"].startswith("postgres")
    commands = set(COMMANDS)
    built = [s for s in services.values() if s.get("build")]
    assert built, "no lockmaster service"
    for service in built:
        assert (ROOT / service["build"] / "Dockerfile").exists()
        command = service["command"]
        assert command[0] in commands, f"{command[0]} is not a lockmaster command"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{source} is missing"
                if source.endswith(".yaml"):
                    load_config(ROOT / source)  # the mounted configuration is valid
        if "--config" in command:
            config_in_container = command[command.index("--config") + 1]
            mounts = [v.split(":")[1] for v in service.get("volumes", [])]
            assert config_in_container in mounts


def test_dockerfile_copies_what_exists() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_the_package_cache_service_is_what_the_workers_use() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    cache = services["package-cache"]
    assert cache["command"][:2] == ["packaging", "serve-cache"]
    config = load_config(ROOT / "lockmaster/config/examples/production.yaml")
    settings = config.packaging.cache
    # lockmaster's workers do not start a cache of their own; they reach this service.
    assert settings.enabled and settings.serve is False
    # The build nodes (cloud VMs, static hosts) reach it at the docker host's published port,
    # not at the compose-internal service name.
    url = urlsplit(settings.url or "")
    assert url.port == settings.port and url.hostname not in (None, "package-cache")
    assert settings.listen == "0.0.0.0"
    assert f"{settings.port}:{settings.port}" in cache["ports"]
    # The cache's files live on a volume of their own, where the configuration puts them.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in cache["volumes"]}
    assert mounts[str(cache_root(config))] == "package-cache"
    assert "package-cache" in services["executor"]["depends_on"]
    assert "apt-cacher-ng" in (ROOT / "Dockerfile").read_text()
