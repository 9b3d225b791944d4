"""The TE host side against real parts: libvirt's `test:///default` driver (in memory, in this
process) and OpenStack's sshd on loopback, whose forced command runs the real `te-shell` in its
own process; that shell forwards to the agent served here, in the test's event loop."""

from __future__ import annotations

import asyncio
import io
import shlex
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import libvirt
import pytest
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from lockmaster.activities.te_host import TEHostActivities
from lockmaster.model.testenv import (
    TEAuthorize,
    TENetwork,
    TENode,
    TEReset,
    TERevoke,
    TESpec,
)
from lockmaster.testenv import shell
from lockmaster.testenv.access import (
    DEFAULT_SHELL_COMMAND,
    AccessError,
    StaleGeneration,
    TEAccess,
)
from lockmaster.testenv.commands import AgentReply, AgentRequest
from lockmaster.testenv.libvirt_host import LibvirtHost, TEHostError, connection
from tests.fixtures.sshd import SSHServer, running_sshd

URI = "test:///default"


def make_spec(host: str = "tehost1", nodes: int = 2) -> TESpec:
    """A TE with names of its own: every test's domains live in the same per-process driver."""
    tag = uuid.uuid4().hex[:6]
    octet = int(tag[:2], 16)
    return TESpec(
        host=host,
        name=f"te{tag}",
        env_number=octet,
        libvirt_uri=URI,
        host_address="127.0.0.1",
        host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDummyDummyDummyDummyDummyDummyDummyDumm",
        ssh_user="root",
        seed=TENode(name=f"seed_{tag}", mac=f"52:54:00:{octet:02x}:00:01", memory=1024, cpu=2),
        seed_ip="192.0.2.10",
        nodes=[
            TENode(name=f"baremetal{tag}_{i}", mac=f"52:54:00:{octet:02x}:01:{i:02x}", disk=40)
            for i in range(nodes)
        ],
        bridge=f"brbm{tag}",
        network=TENetwork(
            cidr="192.0.2.0/24",
            gateway="192.0.2.1",
            range_start="192.0.2.100",
            range_end="192.0.2.200",
        ),
    )


def holder_key() -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="holder@job")
    return key, key.export_public_key().decode()


def libvirt_state(name: str) -> int:
    return int(connection(URI).lookupByName(name).state()[0])


# --- libvirt -----------------------------------------------------------------------------------


def test_ensure_defines_the_te_and_destroy_never_undefines(tmp_path: Path) -> None:
    host = LibvirtHost(image_dir=tmp_path)
    spec = make_spec()
    created = host.ensure_te(spec)
    assert f"domain {spec.seed.name}" in created and f"network {spec.bridge}" in created
    assert host.ensure_te(spec) == []  # idempotent
    conn = connection(URI)
    seed_xml = conn.lookupByName(spec.seed.name).XMLDesc(0)
    assert spec.seed.mac in seed_xml and "<vcpu placement='static'>2</vcpu>" in seed_xml
    assert f"network='{spec.public_bridge}'" in seed_xml and f"network='{spec.bridge}'" in seed_xml
    node_xml = conn.lookupByName(spec.nodes[1].name).XMLDesc(0)
    assert spec.nodes[1].mac in node_xml and f"network='{spec.public_bridge}'" not in node_xml
    volume = conn.storagePoolLookupByName("lockmaster").storageVolLookupByName(
        f"{spec.nodes[0].name}.img"
    )
    assert volume.info()[1] == 40 * 1024**3

    assert host.start_domain(spec, spec.seed.name) is True
    assert host.start_domain(spec, spec.nodes[0].name) is True
    assert host.domain_states(spec) == {
        spec.seed.name: "running",
        spec.nodes[0].name: "running",
        spec.nodes[1].name: "shut off",
    }
    assert host.destroy_domains(spec) == [spec.seed.name, spec.nodes[0].name]
    defined = {dom.name() for dom in conn.listAllDomains()}
    assert set(spec.domains()) <= defined  # destroyed, still defined
    assert set(host.domain_states(spec).values()) == {"shut off"}
    assert host.destroy_domains(spec) == []

    with pytest.raises(TEHostError, match="not one of its domains"):
        host.start_domain(spec, "test")  # the driver's own domain is not this TE's


def test_restore_disks_gives_blank_disks_and_refuses_running_domains(tmp_path: Path) -> None:
    host = LibvirtHost(image_dir=tmp_path)
    spec = make_spec()
    host.ensure_te(spec)
    upload = host.open_seed_upload(spec)
    upload.write(b"seed image")
    upload.finish()
    image = host.seed_image_file(spec)
    assert image is not None and image.read_bytes() == b"seed image"
    pool = connection(URI).storagePoolLookupByName("lockmaster")
    # A restore that died between delete and create left this volume missing.
    pool.storageVolLookupByName(f"{spec.nodes[1].name}.img").delete(0)

    host.start_domain(spec, spec.nodes[0].name)
    with pytest.raises(TEHostError, match=f"{spec.nodes[0].name} is running"):
        host.restore_disks(spec)
    host.destroy_domains(spec)

    restored = host.restore_disks(spec)
    assert restored == [f"lockmaster/{name}.img" for name in spec.domains()]
    assert not image.exists()
    recreated = pool.storageVolLookupByName(f"{spec.nodes[1].name}.img")
    assert recreated.info()[1] == 40 * 1024**3  # from the spec, since the volume was gone
    assert host.restore_disks(spec) == restored  # idempotent


def test_file_disks_of_operator_defined_domains_are_found_and_restored() -> None:
    host = LibvirtHost()
    spec = make_spec(nodes=1)
    host.ensure_te(spec)
    conn = connection(URI)
    node = spec.nodes[0].name
    path = f"/var/lib/lockmaster/images/{node}.img"  # the pool's target directory
    xml = conn.lookupByName(node).XMLDesc(0)
    xml = xml.replace("<disk type='volume'", "<disk type='file'").replace(
        f"<source pool='lockmaster' volume='{node}.img'/>", f"<source file='{path}'/>"
    )
    conn.defineXML(xml)  # as an operator would have defined it
    conn.storagePoolLookupByName("lockmaster").storageVolLookupByName(f"{node}.img").delete(0)
    with pytest.raises(TEHostError, match=f"missing volume lockmaster/{node}.img"):
        LibvirtHost(create_missing=False).ensure_te(spec)
    assert f"lockmaster/{node}.img" in host.restore_disks(spec)
    assert conn.storageVolLookupByPath(path).name() == f"{node}.img"
    LibvirtHost(create_missing=False).ensure_te(spec)


def test_check_bridges_starts_inactive_networks_and_reports_missing_ones() -> None:
    host = LibvirtHost()
    spec = make_spec()
    host.ensure_te(spec)
    connection(URI).networkLookupByName(spec.bridge).destroy()
    assert host.check_bridges(spec) == [spec.bridge]
    assert connection(URI).networkLookupByName(spec.bridge).isActive()
    assert host.check_bridges(spec) == []
    broken = spec.model_copy(update={"bridge": "brbm-missing"})
    with pytest.raises(TEHostError, match=f"TE {spec.key}: libvirt network 'brbm-missing'"):
        host.check_bridges(broken)


def test_check_only_mode_creates_nothing_and_lists_what_is_missing() -> None:
    spec = make_spec()
    checker = LibvirtHost(create_missing=False)
    with pytest.raises(TEHostError) as caught:
        checker.ensure_te(spec)
    assert f"network {spec.bridge}" in str(caught.value)
    assert f"domain {spec.seed.name}" in str(caught.value)
    assert all(dom.name() != spec.seed.name for dom in connection(URI).listAllDomains())
    LibvirtHost().ensure_te(spec)
    assert checker.ensure_te(spec) == []


def test_one_connection_per_uri_keeps_the_in_memory_state() -> None:
    spec = make_spec()
    LibvirtHost().ensure_te(spec)
    assert connection(URI) is connection(URI)
    other = libvirt.open(URI)  # any connection of this process sees the same driver state
    try:
        assert other.lookupByName(spec.seed.name).name() == spec.seed.name
    finally:
        other.close()
    assert connection(URI).lookupByName(spec.seed.name).name() == spec.seed.name


# --- authorized_keys ---------------------------------------------------------------------------


def test_authorized_keys_one_line_per_te_fenced_by_generation(tmp_path: Path) -> None:
    access = TEAccess.in_directory(tmp_path)
    access.authorized_keys.write_text("ssh-ed25519 AAAAoperator operator@host\n")
    te1, te2 = make_spec(), make_spec()
    (_, key_a), (_, key_b), (_, key_c) = holder_key(), holder_key(), holder_key()
    access.authorize(te1, 1, key_a)
    access.authorize(te2, 7, key_c)
    access.authorize(te1, 2, key_b)
    access.authorize(te1, 2, key_b)  # a retried activity changes nothing
    lines = access.authorized_keys.read_text().splitlines()
    assert lines[0] == "ssh-ed25519 AAAAoperator operator@host"
    assert len(lines) == 3
    te1_line = next(line for line in lines if f"{te1.key}:" in line)
    shell_command = shlex.join(DEFAULT_SHELL_COMMAND)
    assert te1_line.startswith(f'command="{shell_command} --te {te1.name} --generation 2 ')
    assert ",restrict " in te1_line and key_b.split()[1] in te1_line
    assert "holder@job" not in te1_line
    assert key_a.split()[1] not in access.authorized_keys.read_text()
    assert access.lease(te1.name).generation == 2  # type: ignore[union-attr]

    with pytest.raises(StaleGeneration):
        access.authorize(te1, 1, key_a)  # an old lease's late authorize
    assert access.revoke(te1, 1) is False  # older than the current key: it stays
    assert access.authorized_generations(te1) == [2]
    assert access.revoke(te1, 2) is True
    assert access.authorized_generations(te1) == []
    assert access.authorized_generations(te2) == [7]
    with pytest.raises(StaleGeneration):
        access.authorize(te1, 2, key_b)  # revoked through 2
    access.authorize(te1, 3, key_a)
    assert access.authorized_generations(te1) == [3]
    assert "operator@host" in access.authorized_keys.read_text()


@pytest.mark.parametrize(
    "bad",
    [
        'command="/bin/sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA',
        "ssh-ed25519 AAAA\nssh-ed25519 BBBB",
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA",  # an ed25519 blob under another name
        "ssh-ed25519 not*base64",
        "",
    ],
)
def test_authorize_refuses_anything_but_a_plain_public_key(tmp_path: Path, bad: str) -> None:
    access = TEAccess.in_directory(tmp_path)
    with pytest.raises(AccessError):
        access.authorize(make_spec(), 1, bad)
    assert not access.authorized_keys.exists() or access.authorized_keys.read_text() == ""


# --- the forced command over real SSH ----------------------------------------------------------


@dataclass
class Site:
    server: SSHServer
    access: TEAccess
    host: LibvirtHost
    acts: TEHostActivities
    env: ActivityEnvironment

    async def lease(self, spec: TESpec, generation: int) -> asyncssh.SSHKey:
        """A TE ready for a holder: prepared, with the holder's new key authorized."""
        assert (await self.env.run(self.acts.prepare, spec)).ok
        key, public = holder_key()
        result = await self.env.run(self.acts.authorize, TEAuthorize(
            te=spec, generation=generation, public_key=public))  # fmt: skip
        assert result.ok, result.error
        return key

    async def ssh(
        self, key: asyncssh.SSHKey, command: str, stdin: bytes | None = None
    ) -> asyncssh.SSHCompletedProcess:
        known = asyncssh.import_known_hosts(
            f"[{self.server.host}]:{self.server.port} {self.server.host_key}\n"
        )
        async with asyncssh.connect(
            self.server.host,
            port=self.server.port,
            username=self.server.user,
            client_keys=[key],
            known_hosts=known,
            agent_path=None,
        ) as conn:
            return await conn.run(command, input=stdin, encoding=None, check=False, timeout=20)

    def log_lines(self) -> list[str]:
        log = self.access.log
        return log.read_text().splitlines() if log.exists() else []


@pytest_asyncio.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("tesshd")
    with running_sshd(directory) as server:
        access = TEAccess(
            authorized_keys=server.directory / "authorized_keys",  # the one sshd reads
            state_dir=server.directory / "leases",
            socket=server.directory / "agent.sock",
            log=server.directory / "te-shell.log",
            # The real te-shell, in a process of its own; -I: nothing from sshd's cwd or env.
            shell_command=(sys.executable, "-I", "-m", "lockmaster.testenv.shell"),
        )
        host = LibvirtHost(image_dir=server.directory / "images")
        acts = TEHostActivities(host, access, heartbeat_every=0.05)
        async with acts.agent:
            yield Site(server, access, host, acts, ActivityEnvironment())


async def test_holder_lists_starts_and_destroys_its_own_domains_over_ssh(site: Site) -> None:
    spec = make_spec()
    key = await site.lease(spec, 1)
    listed = await site.ssh(key, "list")
    assert listed.exit_status == 0, listed.stderr
    assert listed.stdout.decode().splitlines() == [f"{name} shut off" for name in spec.domains()]

    started = await site.ssh(key, f"start {spec.seed.name}")
    assert started.exit_status == 0, started.stderr
    assert libvirt_state(spec.seed.name) == libvirt.VIR_DOMAIN_RUNNING  # in the worker's libvirt
    destroyed = await site.ssh(key, f"destroy {spec.seed.name}")
    assert destroyed.exit_status == 0, destroyed.stderr
    assert destroyed.stdout.decode() == f"{spec.seed.name} destroyed\n"
    assert libvirt_state(spec.seed.name) == libvirt.VIR_DOMAIN_SHUTOFF
    assert any(f"accepted command=\"destroy {spec.seed.name}\"" in x for x in site.log_lines())


async def test_other_tes_domains_and_arbitrary_commands_are_refused_and_logged(
    site: Site,
) -> None:
    mine, other = make_spec(), make_spec()
    key = await site.lease(mine, 4)
    await site.lease(other, 1)
    site.host.start_domain(other, other.seed.name)

    foreign = await site.ssh(key, f"destroy {other.seed.name}")
    assert foreign.exit_status == 1
    assert b"refused" in foreign.stderr and b"not part of TE" in foreign.stderr
    assert libvirt_state(other.seed.name) == libvirt.VIR_DOMAIN_RUNNING

    sneaky = await site.ssh(key, "cat /etc/passwd")
    assert sneaky.exit_status == 1
    assert b"root:" not in sneaky.stdout and b"'cat' is not allowed" in sneaky.stderr
    chained = await site.ssh(key, f"list; destroy {other.seed.name}")
    assert chained.exit_status == 1

    refused = [x for x in site.log_lines() if f"te={mine.key} generation=4 refused" in x]
    assert any(f'command="destroy {other.seed.name}"' in x for x in refused)
    assert any('command="cat /etc/passwd"' in x for x in refused)
    assert len(refused) == 3


async def test_seed_image_is_copied_from_stdin_and_purged(site: Site) -> None:
    spec = make_spec()
    key = await site.lease(spec, 1)
    image = bytes(range(256)) * 8192  # 2 MiB: several chunks through the socket
    copied = await site.ssh(key, "copy-seed-image", stdin=image)
    assert copied.exit_status == 0, copied.stderr
    target = site.host.seed_image_file(spec)
    assert target is not None and target.read_bytes() == image

    site.host.start_domain(spec, spec.seed.name)
    busy = await site.ssh(key, "copy-seed-image", stdin=b"x" * 4096)
    assert busy.exit_status == 1 and b"is running" in busy.stderr
    assert target.read_bytes() == image  # untouched

    site.host.destroy_domain(spec, spec.seed.name)
    purged = await site.ssh(key, "purge-disks")
    assert purged.exit_status == 0, purged.stderr
    assert not target.exists()


async def test_revoked_or_superseded_keys_are_refused_by_sshd(site: Site) -> None:
    spec = make_spec()
    old = await site.lease(spec, 1)
    assert (await site.ssh(old, "list")).exit_status == 0
    new = await site.lease(spec, 2)  # the next lease of the same TE
    with pytest.raises(asyncssh.PermissionDenied):
        await site.ssh(old, "list")
    assert (await site.ssh(new, "list")).exit_status == 0

    result = await site.env.run(site.acts.revoke, TERevoke(te=spec, generation=2))
    assert result.ok
    with pytest.raises(asyncssh.PermissionDenied):
        await site.ssh(new, "list")


async def test_a_command_waiting_while_the_lease_ends_is_refused(site: Site) -> None:
    spec = make_spec()
    key = await site.lease(spec, 1)
    async with site.acts.locks(spec.name):  # as a reset does, after revoking
        waiting = asyncio.create_task(site.ssh(key, f"start {spec.seed.name}"))
        for _ in range(200):  # until te-shell accepted it and the agent waits for the lock
            if any(f"te={spec.key} generation=1 accepted" in x for x in site.log_lines()):
                break
            await asyncio.sleep(0.05)
        site.access.revoke(spec, 1)
    result = await waiting
    assert result.exit_status == 1 and b"lease ended" in result.stderr
    assert libvirt_state(spec.seed.name) == libvirt.VIR_DOMAIN_SHUTOFF


async def test_a_stalled_upload_does_not_hold_up_the_reset(site: Site) -> None:
    spec = make_spec()
    await site.lease(spec, 1)
    # As te-shell would: the request, part of an image, then silence (the holder hung).
    reader, writer = await asyncio.open_unix_connection(str(site.access.socket))
    request = AgentRequest(te=spec.name, generation=1, command="copy-seed-image")
    writer.write(request.model_dump_json().encode() + b"\n" + b"partial image")
    await writer.drain()
    await asyncio.sleep(0.3)  # the agent holds the TE's lock, waiting for more
    assert site.acts.locks(spec.name).locked()
    reset = await asyncio.wait_for(
        site.env.run(site.acts.reset, TEReset(te=spec, generation=1)), timeout=10
    )
    assert reset.ok, reset.error
    reply = AgentReply.model_validate_json(await reader.readline())
    assert not reply.ok and "lease ended during the upload" in (reply.error or "")
    writer.close()
    image = site.host.seed_image_file(spec)
    assert image is not None and not image.exists()
    assert not image.with_name(image.name + ".part").exists()


async def test_reset_revokes_destroys_restores_and_is_idempotent(site: Site) -> None:
    spec = make_spec()
    key = await site.lease(spec, 3)
    assert (await site.ssh(key, "copy-seed-image", stdin=b"image")).exit_status == 0
    for name in spec.domains():
        site.host.start_domain(spec, name)
    connection(URI).networkLookupByName(spec.bridge).destroy()

    beats: list[object] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    first = await env.run(site.acts.reset, TEReset(te=spec, generation=3))
    assert first.ok, first.error
    assert beats
    assert site.access.authorized_generations(spec) == []
    assert set(site.host.domain_states(spec).values()) == {"shut off"}
    assert {dom.name() for dom in connection(URI).listAllDomains()} >= set(spec.domains())
    assert not site.host.seed_image_file(spec).exists()  # type: ignore[union-attr]
    assert connection(URI).networkLookupByName(spec.bridge).isActive()
    with pytest.raises(asyncssh.PermissionDenied):
        await site.ssh(key, "list")

    second = await env.run(site.acts.reset, TEReset(te=spec, generation=3))
    assert second.ok, second.error
    late = await env.run(site.acts.authorize, TEAuthorize(
        te=spec, generation=3, public_key=holder_key()[1]))  # fmt: skip
    assert not late.ok and "stale" in (late.error or "")


async def test_reset_failure_is_reported_not_raised(site: Site) -> None:
    spec = make_spec()
    await site.lease(spec, 1)
    broken = spec.model_copy(update={"bridge": f"gone{spec.name}"})
    result = await site.env.run(site.acts.reset, TEReset(te=broken, generation=1))
    assert not result.ok
    assert f"libvirt network 'gone{spec.name}' is missing" in (result.error or "")
    assert site.access.authorized_generations(spec) == []  # revoked before failing

    missing_domain = spec.model_copy(
        update={"nodes": [*spec.nodes, TENode(name=f"ghost{spec.name}", mac="52:54:00:ff:ff:ff")]}
    )
    result = await site.env.run(site.acts.reset, TEReset(te=missing_domain, generation=1))
    assert not result.ok and f"ghost{spec.name}" in (result.error or "")


# --- te-shell as a plain function --------------------------------------------------------------


def run_shell(argv: list[str], command: str | None) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    env = {} if command is None else {"SSH_ORIGINAL_COMMAND": command}
    status = shell.main(argv, env, io.BytesIO(), stdout, stderr)
    return status, stdout.getvalue(), stderr.getvalue()


def test_shell_refuses_without_a_current_lease(tmp_path: Path) -> None:
    access = TEAccess.in_directory(tmp_path)
    spec = make_spec()
    access.authorize(spec, 1, holder_key()[1])
    argv_1 = [
        "--te", spec.name, "--generation", "1",
        "--state-file", str(access.lease_file(spec.name)),
        "--socket", str(access.socket), "--log", str(access.log),
    ]  # fmt: skip
    argv_2 = [*argv_1[:3], "2", *argv_1[4:]]

    status, _, err = run_shell(argv_1, None)
    assert status == 1 and "no interactive login" in err
    status, _, err = run_shell(argv_1, "list")  # current lease, but no agent is listening
    assert status == 1 and "agent unreachable" in err

    access.authorize(spec, 2, holder_key()[1])
    status, _, err = run_shell(argv_1, "list")
    assert status == 1 and "lease ended" in err
    status, _, err = run_shell(argv_2, f"destroy {spec.seed.name}x")
    assert status == 1 and "not part of TE" in err
    status, _, err = run_shell(["--te", spec.name], "list")
    assert status == 2 and "bad forced command" in err

    log = access.log.read_text()
    assert f"te={spec.key} generation=1 refused command=\"\"" in log
    assert f"te={spec.key} generation=1 failed command=\"list\"" in log
    assert 'refused command="list" reason="lease ended' in log
