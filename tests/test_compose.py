"""docker-compose.yml cannot run here (no Docker engine): check that what it refers to exists,
and that the deployment it describes is locked down (docs/deployment.md): Temporal's current
images on the tests' server line, mutual TLS on the frontend, a read-only Web UI on loopback,
and each secret mounted only where it is used."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from lockmaster.cli.main import COMMANDS
from lockmaster.config.loader import load_config
from lockmaster.packaging.cache_server import cache_root
from lockmaster.temporal.devserver import temporal_binary

ROOT = Path(__file__).resolve().parent.parent
SECRETS = "./deploy/secrets"
TLS = f"{SECRETS}/tls"
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"


def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def binds(service: dict[str, Any]) -> dict[str, str]:
    """The service's bind mounts: container path -> host path (./...)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = source
    return out


def host_path(service: dict[str, Any], container_path: str) -> str | None:
    """The host path (./...) a path in the container is mounted from, or None."""
    path = PurePosixPath(container_path)
    for target, source in binds(service).items():
        if path == PurePosixPath(target):
            return source
        if PurePosixPath(target) in path.parents:
            return f"{source}/{path.relative_to(target)}"
    return None


def secret_kinds(service: dict[str, Any]) -> set[str]:
    """The deploy/secrets directories a service mounts (tls/<dir> for certificates)."""
    kinds = set()
    for source in binds(service).values():
        if source == SECRETS:
            kinds.add("*")  # the whole directory
        elif source.startswith(f"{SECRETS}/"):
            kinds.add(source[len(SECRETS) + 1:])
    return kinds


@pytest.fixture(scope="module")
def made_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What deploy/make-certs.sh makes, in a temporary deploy/secrets/tls."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    out = tmp_path_factory.mktemp("deploy") / "secrets" / "tls"
    subprocess.run(["sh", str(MAKE_CERTS), str(out)], check=True, capture_output=True)
    return out


def exists_after_setup(source: str, made_certs: Path) -> bool:
    """A mounted host path exists in the repository, or (certificates) once make-certs.sh ran."""
    if source == TLS or source.startswith(f"{TLS}/"):
        return (made_certs / source[len(TLS):].lstrip("/")).exists()
    return (ROOT / source).exists()


def test_compose_services_refer_to_real_files_and_commands(made_certs: Path) -> None:
    services_ = services()
    assert {"postgresql", "temporal", "temporal-ui", "orchestrator", "executor"} <= set(services_)
    assert services_["temporal"]["environment"]["DB"].startswith("postgres")
    commands = set(COMMANDS)
    built = [s for s in services_.values() if s.get("build")]
    assert built, "no lockmaster service"
    for service in built:
        assert (ROOT / service["build"] / "Dockerfile").exists()
        command = service["command"]
        assert command[0] in commands, f"{command[0]} is not a lockmaster command"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source.endswith(".yaml"):
                load_config(ROOT / source)  # the mounted configuration is valid
        if "--config" in command:
            config_in_container = command[command.index("--config") + 1]
            mounts = [v.split(":")[1] for v in service.get("volumes", [])]
            assert config_in_container in mounts


def test_every_mounted_file_exists_and_every_script_is_mounted(made_certs: Path) -> None:
    for name, service in services().items():
        for target, source in binds(service).items():
            assert exists_after_setup(source, made_certs), \
                f"{name}: {source} (mounted at {target}) is missing"
        # A script the service runs is a file mounted into it (the images do not have them).
        for part in [*service.get("entrypoint", []), *service.get("command", [])]:
            if isinstance(part, str) and part.startswith("/deploy/"):
                source = host_path(service, part)
                assert source and (ROOT / source).is_file(), f"{name}: {part} is not mounted"
                subprocess.run(["sh", "-n", str(ROOT / source)], check=True)


def test_dockerfile_copies_what_exists() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_the_package_cache_service_is_what_the_workers_use() -> None:
    services_ = services()
    cache = services_["package-cache"]
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
    assert "package-cache" in services_["executor"]["depends_on"]
    assert "apt-cacher-ng" in (ROOT / "Dockerfile").read_text()


# --- Temporal: images and schema ----------------------------------------------------------


def dev_server_versions() -> tuple[str, str]:
    """(Server, UI) versions of the dev server the tests run on, from `temporal --version`."""
    text = subprocess.run([temporal_binary(), "--version"], capture_output=True, text=True,
                          check=True).stdout
    match = re.search(r"Server ([0-9.]+), UI ([0-9.]+)", text)
    assert match, text
    return match[1], match[2]


def line(version: str) -> str:
    return ".".join(version.split(".")[:2])


def image(service: dict[str, Any]) -> tuple[str, str]:
    name, _, tag = service.get("image", "").partition(":")
    return name, tag


def test_temporal_runs_from_the_server_image_on_the_tests_server_line() -> None:
    services_ = services()
    server, ui = dev_server_versions()
    assert not [n for n, s in services_.items() if "auto-setup" in s.get("image", "")], \
        "temporalio/auto-setup is deprecated and no longer built"
    name, tag = image(services_["temporal"])
    assert name == "temporalio/server"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"temporal: pin a release, not {tag!r}"
    assert line(tag) == line(server), f"server {tag}: the tests run Server {server}"
    admin = [s for s in services_.values() if image(s)[0] == "temporalio/admin-tools"]
    assert admin and {image(s)[1] for s in admin} == {tag}, "admin-tools: the server's version"
    ui_name, ui_tag = image(services_["temporal-ui"])
    assert ui_name == "temporalio/ui" and re.fullmatch(r"\d+\.\d+\.\d+", ui_tag)
    assert line(ui_tag) == line(ui), f"ui {ui_tag}: the dev server's UI is {ui}"


def test_schema_and_namespace_are_one_shot_admin_tools_services() -> None:
    services_ = services()
    schema, namespace = services_["temporal-schema"], services_["temporal-namespace"]
    # The server starts once the schema is set up; the namespace once the server answers.
    assert services_["temporal"]["depends_on"]["temporal-schema"]["condition"] == \
        "service_completed_successfully"
    assert namespace["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert services_["lockmaster-setup"]["depends_on"]["temporal-namespace"]["condition"] == \
        "service_completed_successfully"
    setup = (ROOT / host_path(schema, schema["entrypoint"][-1])).read_text()
    # Both stores (database:schema directory), each created, set up and updated to the
    # schema the admin-tools image carries for its server version.
    assert "for db in temporal:temporal temporal_visibility:visibility" in setup
    assert "schema=/etc/temporal/schema/postgresql/v12" in setup
    for step in ('create', 'setup-schema -v 0.0', 'update-schema -d "$schema/$dir/versioned"'):
        assert f'sql --db "$name" {step}' in setup
    assert "temporal-sql-tool --plugin postgres12" in setup
    script = (ROOT / host_path(namespace, namespace["entrypoint"][-1])).read_text()
    assert "operator namespace create" in script
    assert namespace["environment"]["NAMESPACE"] == load_config(
        ROOT / "lockmaster/config/examples/production.yaml").temporal.namespace


# --- Temporal: mutual TLS and the Web UI ---------------------------------------------------


def published(service: dict[str, Any], port: int) -> list[str]:
    return [p for p in service.get("ports", []) if str(p).split(":")[-1] == str(port)]


def test_no_service_publishes_the_frontend_without_mutual_tls(made_certs: Path) -> None:
    for name, service in services().items():
        if not published(service, 7233):
            continue
        env = service["environment"]
        assert env.get("TEMPORAL_TLS_REQUIRE_CLIENT_AUTH") == "true", \
            f"{name} publishes 7233 without requiring client certificates"
        for key in ("TEMPORAL_TLS_FRONTEND_CERT", "TEMPORAL_TLS_FRONTEND_KEY",
                    "TEMPORAL_TLS_CLIENT1_CA_CERT", "TEMPORAL_TLS_SERVER_CERT",
                    "TEMPORAL_TLS_SERVER_KEY", "TEMPORAL_TLS_SERVER_CA_CERT"):
            source = host_path(service, env[key])
            assert source and exists_after_setup(source, made_certs), f"{name}: {key}"
    temporal = services()["temporal"]
    assert published(temporal, 7233), "the frontend is for workers on other hosts too"


def test_the_web_ui_is_read_only_on_loopback_and_a_tls_client(made_certs: Path) -> None:
    ui = services()["temporal-ui"]
    env = ui["environment"]
    assert env["TEMPORAL_DISABLE_WRITE_ACTIONS"] == "true"
    for port in ui["ports"]:
        assert str(port).startswith("127.0.0.1:"), f"temporal-ui publishes {port} to all"
    for key in ("TEMPORAL_TLS_CA", "TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY"):
        source = host_path(ui, env[key])
        assert source and exists_after_setup(source, made_certs), key
    assert env["TEMPORAL_TLS_ENABLE_HOST_VERIFICATION"] == "true"
    assert env["TEMPORAL_TLS_SERVER_NAME"] == "temporal"
    assert env["TEMPORAL_DEFAULT_NAMESPACE"] == "lockmaster"


def test_lockmaster_services_connect_with_their_own_client_certificate(made_certs: Path) -> None:
    config = load_config(ROOT / "lockmaster/config/examples/production.yaml")
    tls = config.temporal.tls
    assert tls is not None and tls.server_name == "temporal"
    seen: dict[str, str] = {}
    for name, service in services().items():
        if not service.get("build") or service["command"][:2] in (
                ["packaging", "serve-cache"], ["logs", "serve"], ["codec-server", "--config"]):
            continue  # the package cache, the log store, the codec server: no Temporal
        for path in (tls.ca_cert, tls.client_cert, tls.client_key):
            source = host_path(service, str(path))
            assert source and source.startswith(f"{TLS}/"), f"{name}: {path} is not mounted"
            assert exists_after_setup(source, made_certs), f"{name}: {source}"
        directory = str(PurePosixPath(host_path(service, str(tls.client_cert)) or "").parent)
        assert directory not in seen, f"{name} shares {directory} with {seen.get(directory)}"
        seen[directory] = name


# --- Secrets: each where it is used ---------------------------------------------------------


EXPECTED_SECRETS = {
    "temporal": {"tls/temporal"},
    "temporal-namespace": {"tls/temporal-admin"},
    "temporal-ui": {"tls/temporal-ui"},
    "lockmaster-setup": {"tls/lockmaster-setup", "codec"},
    "orchestrator": {"tls/orchestrator", "gerrit", "codec", "results"},
    "results-db-setup": {"results"},
    "executor": {"tls/executor", "nodes", "jobs", "logs", "codec"},
    "logs": {"logs"},
    "launcher": {"tls/launcher", "cloud", "codec"},
    "publisher": {"tls/publisher", "signing", "mirrors", "codec"},
    "gerrit-listener": {"tls/gerrit-listener", "gerrit", "codec"},
    # The payload keys and the token that lets operators use them; nothing of Temporal's.
    "codec-server": {"codec", "codec-token"},
    # The status page: asks the workflows, reads the build history; nothing it could change.
    "web": {"tls/web", "codec", "results"},
}


def test_each_service_mounts_only_the_secrets_it_needs() -> None:
    mounted = {name: secret_kinds(s) for name, s in services().items()}
    for name, kinds in mounted.items():
        assert "*" not in kinds, f"{name} mounts every secret ({SECRETS})"
        assert "tls" not in kinds and "tls/ca" not in kinds, f"{name} mounts the CA's key"
        assert kinds == EXPECTED_SECRETS.get(name, set()), f"{name}: {sorted(kinds)}"
    assert not mounted["executor"] & {"gerrit", "cloud", "signing", "mirrors"}
    assert [n for n, kinds in mounted.items() if "signing" in kinds] == ["publisher"]
    assert {n for n, kinds in mounted.items() if "cloud" in kinds} == {"launcher"}
    assert {n for n, kinds in mounted.items() if "gerrit" in kinds} == \
        {"orchestrator", "gerrit-listener"}
    # Every secret directory the compose file mounts is in the repository (with its README).
    for kind in {k for kinds in mounted.values() for k in kinds if not k.startswith("tls/")}:
        assert (ROOT / SECRETS / kind / "README.md").exists(), kind


def test_the_roles_keep_their_state_apart() -> None:
    """The executor, which faces untrusted nodes, shares no writable volume with the publisher
    (whose repositories it would otherwise write before they are signed) or the orchestrator."""
    services_ = services()

    def volumes(name: str) -> set[str]:
        return {v.split(":")[0] for v in services_[name].get("volumes", [])
                if not v.split(":")[0].startswith("./") and not v.endswith(":ro")}

    assert not volumes("executor") & volumes("publisher")
    assert not volumes("executor") & volumes("orchestrator")


def test_the_configured_secret_paths_are_mounted_in_the_roles_that_read_them() -> None:
    """production.yaml's secret files lie inside the mounts of the services that open them:
    the Gerrit password and SSH key (orchestrator reports, listener), the node key (executor),
    clouds.yaml (launcher), the GnuPG home and the mirror keys (publisher)."""
    config = load_config(ROOT / "lockmaster/config/examples/production.yaml")
    services_ = services()
    gerrit = config.connections["gerrit"]
    uses: dict[str, list[Path]] = {
        "orchestrator": [gerrit.password_file],
        "gerrit-listener": [gerrit.password_file, gerrit.ssh.key_file,
                            gerrit.ssh.known_hosts_file],
        "executor": [], "launcher": [], "publisher": [],
    }
    for provider in config.nodes.providers:
        if provider.driver == "openstack":
            uses["launcher"].append(Path(provider.clouds_file))
            uses["executor"].append(Path(provider.key_file))
        elif provider.driver == "static":
            uses["executor"] += [n.key_file for p in provider.pools for n in p.nodes]
    assert config.publishing.signing is not None
    uses["publisher"].append(config.publishing.signing.gnupg_home)
    for mirror in config.publishing.mirrors:
        uses["publisher"] += [mirror.key_file, mirror.known_hosts_file]
    uses["executor"] += [secret.file for secret in config.secrets.values()]  # jobs' secrets
    assert config.results.password_file is not None  # the results database's (orchestrator)
    uses["orchestrator"].append(config.results.password_file)
    assert config.secrets, "the example shows a job secret"
    for name, paths in uses.items():
        assert paths, name
        for path in paths:
            source = host_path(services_[name], str(path))
            assert source and source.startswith(f"{SECRETS}/"), f"{name} cannot read {path}"


# --- Payload encryption: the codec and its server -------------------------------------------


def test_every_temporal_client_has_the_codec_keys_and_the_ui_reaches_the_codec_server() -> None:
    """production.yaml encrypts payloads: every service that talks to Temporal can read the key
    file where the configuration names it (a worker without it could not read a history); the
    codec server alone holds the token; the Web UI asks it, at its published loopback address,
    from an origin it allows."""
    config = load_config(ROOT / "lockmaster/config/examples/production.yaml")
    assert config.codec is not None and config.codec.serve is not None
    keys, serve = str(config.codec.key_file), config.codec.serve
    services_ = services()
    clients = [name for name, s in services_.items() if s.get("build") and host_path(
        s, str(config.temporal.tls.client_cert))]  # type: ignore[union-attr]
    assert {"orchestrator", "executor", "launcher", "publisher", "gerrit-listener",
            "lockmaster-setup"} <= set(clients)
    for name in [*clients, "codec-server"]:
        source = host_path(services_[name], keys)
        assert source == f"{SECRETS}/codec/keys", f"{name} cannot read the codec keys {keys}"
    server = services_["codec-server"]
    assert server["command"][0] == "codec-server"
    assert serve.token_file is not None
    assert host_path(server, str(serve.token_file)) == f"{SECRETS}/codec-token/token"
    assert [n for n, s in services_.items() if "codec-token" in secret_kinds(s)] == [
        "codec-server"]
    # Published on the docker host's loopback only (the UI's browser reaches it there).
    assert server["ports"] == [f"127.0.0.1:{serve.port}:{serve.port}"]
    assert serve.listen == "0.0.0.0"  # inside its container, so the published port reaches it
    ui = services_["temporal-ui"]["environment"]
    endpoint = urlsplit(ui["TEMPORAL_CODEC_ENDPOINT"])
    assert endpoint.hostname in ("localhost", "127.0.0.1") and endpoint.port == serve.port
    assert ui["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true"  # the /login session cookie
    # The UI's own origin (its published loopback port) may call the codec server.
    ui_port = services_["temporal-ui"]["ports"][0].split(":")[1]
    assert f"http://localhost:{ui_port}" in serve.cors_origins
    assert ui["TEMPORAL_CORS_ORIGINS"] in serve.cors_origins
    assert urlsplit(config.temporal.web_url)._replace(path="").geturl() in serve.cors_origins
