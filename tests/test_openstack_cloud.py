"""OpenStackCloud against real Keystone and the fake Nova/Glance/Neutron (openstacksdk unmocked)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from lockmaster.clouds import (
    CloudError,
    CloudQuotaError,
    CloudServer,
    OpenStackCloud,
    ServerSpec,
)
from tests.fakes.openstack_cloud import FakeOpenStack

if TYPE_CHECKING:  # imported by pytest as a plugin: importing it here first would warn
    from tests.fixtures.openstack import CloudConfig

pytest_plugins = ["tests.fixtures.openstack"]


def spec(name: str = "node-1", node: str = "0001", **overrides: object) -> ServerSpec:
    fields: dict[str, object] = {
        "name": name,
        "image": "debian-12",
        "flavor": "m1.small",
        "networks": ["private"],
        "key_name": "lockmaster",
        "metadata": {"lockmaster_node": node, "lockmaster_pool": "main"},
    }
    return ServerSpec.model_validate({**fields, **overrides})


@pytest.fixture
def cloud(cloud_config: CloudConfig) -> OpenStackCloud:
    return OpenStackCloud(cloud_config.cloud, cloud_config.region, cloud_config.clouds_file)


async def wait_for(cloud: OpenStackCloud, server_id: str, status: str | None) -> CloudServer | None:
    """Poll until the server has `status` (None: until it is gone); fail after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        server = await cloud.get_server(server_id)
        if (server.status if server else None) == status:
            return server
        assert time.monotonic() < deadline, f"server still {server}"
        await asyncio.sleep(0.05)


async def test_create_goes_from_build_to_active(
    cloud: OpenStackCloud, fake_openstack: FakeOpenStack
) -> None:
    fake_openstack.boot_delay = 0.3
    server = await cloud.create_server(spec())
    assert server.status == "BUILD"
    assert server.ip is None
    active = await wait_for(cloud, server.id, "ACTIVE")
    assert active is not None
    assert active.ip == "127.0.0.1"
    assert active.metadata == {"lockmaster_node": "0001", "lockmaster_pool": "main"}
    # What Nova was asked for: names resolved to ids.
    [call] = fake_openstack.server_creates
    body = call.body["server"]
    image = next(i for i in fake_openstack.images.values() if i.name == "debian-12")
    flavor = next(f for f in fake_openstack.flavors.values() if f.name == "m1.small")
    network = next(n for n in fake_openstack.networks.values() if n.name == "private")
    assert body["imageRef"] == image.id
    assert body["flavorRef"] == flavor.id
    assert body["networks"] == [{"uuid": network.id}]
    assert body["key_name"] == "lockmaster"


async def test_slow_boot_is_per_server_and_servers_can_crash(
    cloud: OpenStackCloud, fake_openstack: FakeOpenStack
) -> None:
    fake_openstack.slow_boot_next(0.4)
    slow = await cloud.create_server(spec("node-1", "1"))
    fast = await cloud.create_server(spec("node-2", "2"))
    assert (slow.status, fast.status) == ("BUILD", "ACTIVE")
    assert (await wait_for(cloud, slow.id, "ACTIVE")) is not None
    fake_openstack.crash_server(fast.id, "Hypervisor went away")
    crashed = await cloud.get_server(fast.id)
    assert crashed is not None and (crashed.status, crashed.fault) == (
        "ERROR",
        "Hypervisor went away",
    )


async def test_create_is_idempotent(cloud: OpenStackCloud, fake_openstack: FakeOpenStack) -> None:
    first = await cloud.create_server(spec())
    again = await cloud.create_server(spec())
    assert again.id == first.id
    assert fake_openstack.created_count == 1
    # Same name but another node's metadata is a different server.
    other = await cloud.create_server(spec(node="0002"))
    assert other.id != first.id
    assert fake_openstack.created_count == 2


async def test_create_after_a_lost_answer_finds_the_server(
    cloud: OpenStackCloud, fake_openstack: FakeOpenStack
) -> None:
    fake_openstack.boot_delay = 0.5
    first = await cloud.create_server(spec())
    # Nova booted it, but the activity's next step failed; the retry must not boot another.
    fake_openstack.fail_requests(r"/servers/[0-9a-f-]{36}$", count=1)
    with pytest.raises(CloudError):
        await cloud.get_server(first.id)
    retried = await cloud.create_server(spec())
    assert retried.id == first.id
    assert retried.status == "BUILD"
    assert fake_openstack.created_count == 1


async def test_boot_from_volume(cloud: OpenStackCloud, fake_openstack: FakeOpenStack) -> None:
    await cloud.create_server(spec(boot_from_volume=True, volume_size=30))
    body = fake_openstack.server_creates[0].body["server"]
    assert not body.get("imageRef")
    [bdm] = body["block_device_mapping_v2"]
    assert (bdm["source_type"], bdm["destination_type"], bdm["volume_size"]) == (
        "image",
        "volume",
        30,
    )


async def test_error_state_carries_the_fault(
    cloud: OpenStackCloud, fake_openstack: FakeOpenStack
) -> None:
    fake_openstack.fail_next_servers(1, message="No valid host was found.")
    server = await cloud.create_server(spec())
    failed = await wait_for(cloud, server.id, "ERROR")
    assert failed is not None
    assert failed.fault == "No valid host was found."
    # Only the scripted one fails.
    ok = await cloud.create_server(spec("node-2", "0002"))
    assert (await wait_for(cloud, ok.id, "ACTIVE")) is not None


async def test_instance_quota_exceeded(
    cloud: OpenStackCloud, fake_openstack: FakeOpenStack
) -> None:
    fake_openstack.set_limits(instances=1)
    await cloud.create_server(spec())
    with pytest.raises(CloudQuotaError) as raised:
        await cloud.create_server(spec("node-2", "0002"))
    message = str(raised.value)
    assert "Quota exceeded for instances" in message
    assert "'fakecloud'" in message and "node-2" in message
    assert [c.status for c in fake_openstack.server_creates] == [202, 403]


async def test_core_quota_and_scripted_quota(
    cloud: OpenStackCloud, fake_openstack: FakeOpenStack
) -> None:
    fake_openstack.set_limits(cores=1)
    with pytest.raises(CloudQuotaError, match="Quota exceeded for cores"):
        await cloud.create_server(spec(flavor="m1.medium"))
    fake_openstack.set_limits(cores=-1)
    fake_openstack.quota_exceeded_next(1, resource="ram")
    with pytest.raises(CloudQuotaError, match="Quota exceeded for ram"):
        await cloud.create_server(spec())
    assert (await cloud.create_server(spec())).name == "node-1"
    assert fake_openstack.created_count == 1


async def test_server_errors_are_cloud_errors(
    cloud: OpenStackCloud, fake_openstack: FakeOpenStack
) -> None:
    fake_openstack.fail_requests(r"/servers$", count=1, method="POST")
    with pytest.raises(CloudError) as raised:
        await cloud.create_server(spec())
    assert not isinstance(raised.value, CloudQuotaError)
    assert "HTTP 500" in str(raised.value) and "'fakecloud'" in str(raised.value)
    assert fake_openstack.created_count == 0
    fake_openstack.fail_requests(r"/servers/detail$", count=2)
    for _ in range(2):
        with pytest.raises(CloudError, match="list servers failed: HTTP 500"):
            await cloud.list_servers({})
    # The fault is spent after its count: the next attempts work.
    await cloud.list_servers({})
    assert (await cloud.create_server(spec())).name == "node-1"


async def test_unknown_image_boots_nothing(
    cloud: OpenStackCloud, fake_openstack: FakeOpenStack
) -> None:
    with pytest.raises(CloudError, match="image 'no-such-image' not found"):
        await cloud.create_server(spec(image="no-such-image"))
    with pytest.raises(CloudError, match="network 'nowhere' not found"):
        await cloud.create_server(spec(networks=["nowhere"]))
    assert fake_openstack.server_creates == []


async def test_delete_is_idempotent(cloud: OpenStackCloud, fake_openstack: FakeOpenStack) -> None:
    server = await cloud.create_server(spec())
    fake_openstack.delete_delay = 0.3
    await cloud.delete_server(server.id)
    deleting = await cloud.get_server(server.id)
    assert deleting is not None and deleting.status == "DELETING"
    await cloud.delete_server(server.id)  # asked twice while deleting: fine
    assert await wait_for(cloud, server.id, None) is None
    await cloud.delete_server(server.id)  # already gone: fine
    assert [d.status for d in fake_openstack.server_deletes] == [204, 204, 404]
    assert fake_openstack.live_servers() == []


async def test_delete_failures(cloud: OpenStackCloud, fake_openstack: FakeOpenStack) -> None:
    server = await cloud.create_server(spec())
    fake_openstack.fail_next_deletes(1, mode="error")
    with pytest.raises(CloudError, match=f"delete server {server.id} failed: HTTP 500"):
        await cloud.delete_server(server.id)
    fake_openstack.fail_next_deletes(1, mode="stuck")
    await cloud.delete_server(server.id)
    await asyncio.sleep(0.1)
    stuck = await cloud.get_server(server.id)
    assert stuck is not None and stuck.status == "DELETING"


async def test_list_and_find(cloud: OpenStackCloud, fake_openstack: FakeOpenStack) -> None:
    a = await cloud.create_server(spec("node-1", "1"))
    b = await cloud.create_server(spec("node-10", "10"))
    c = await cloud.create_server(spec("other", "3", metadata={"lockmaster_pool": "other"}))
    main = await cloud.list_servers({"lockmaster_pool": "main"})
    assert sorted(s.id for s in main) == sorted([a.id, b.id])
    assert [s.id for s in await cloud.list_servers({"lockmaster_node": "10"})] == [b.id]
    assert len(await cloud.list_servers({})) == 3
    # Nova's name filter is a regex ("node-1" matches "node-10"); find_server is exact.
    found = await cloud.find_server("node-1")
    assert found is not None and found.id == a.id
    assert (await cloud.find_server("other")) == await cloud.get_server(c.id)
    assert await cloud.find_server("node") is None


async def test_limits(cloud: OpenStackCloud, fake_openstack: FakeOpenStack) -> None:
    fake_openstack.set_limits(instances=5, cores=-1, ram=16384)
    await cloud.create_server(spec(flavor="m1.medium"))
    limits = await cloud.limits()
    assert (limits.max_servers, limits.max_cores, limits.max_ram) == (5, None, 16384)
    assert (limits.used_servers, limits.used_cores, limits.used_ram) == (1, 2, 4096)


async def test_flavor_lookup(cloud: OpenStackCloud, fake_openstack: FakeOpenStack) -> None:
    flavor = await cloud.flavor("m1.medium")
    assert (flavor.name, flavor.vcpus, flavor.ram) == ("m1.medium", 2, 4096)
    with pytest.raises(CloudError, match=r"flavor 'm9.huge' not found \(it has \[.*'m1.large'"):
        await cloud.flavor("m9.huge")


async def test_floating_ips(cloud: OpenStackCloud, fake_openstack: FakeOpenStack) -> None:
    server = await cloud.create_server(spec())
    address = await cloud.create_floating_ip("public", server.id, "lockmaster/node-1")
    assert address.startswith("127.")
    # Idempotent by description.
    assert await cloud.create_floating_ip("public", server.id, "lockmaster/node-1") == address
    assert len(fake_openstack.floating_ips) == 1
    [fip] = await cloud.list_floating_ips("lockmaster/")
    assert (fip.address, fip.description) == (address, "lockmaster/node-1")
    [port] = [p for p in fake_openstack.ports.values() if p.device_id == server.id]
    assert fip.port_id == port.id
    assert await cloud.list_floating_ips("someone-else/") == []
    with pytest.raises(CloudError, match=r"HTTP 400: .* is not a valid external network"):
        await cloud.create_floating_ip("private", server.id, "lockmaster/node-x")  # not external
    await cloud.delete_floating_ip(fip.id)
    await cloud.delete_floating_ip(fip.id)  # already gone: fine
    assert await cloud.list_floating_ips("lockmaster/") == []


async def test_unknown_cloud_names_file_and_clouds(cloud_config: CloudConfig) -> None:
    wrong = OpenStackCloud("no-such-cloud", cloud_config.region, cloud_config.clouds_file)
    with pytest.raises(CloudError) as raised:
        await wrong.limits()
    message = str(raised.value)
    assert str(cloud_config.clouds_file) in message
    assert "it has: fakecloud" in message
    missing = OpenStackCloud("fakecloud", None, cloud_config.clouds_file.with_name("nope.yaml"))
    with pytest.raises(CloudError, match=r"nope\.yaml does not exist"):
        await missing.limits()
    broken = cloud_config.clouds_file.with_name("broken.yaml")
    broken.write_text("clouds: [unclosed\n")
    with pytest.raises(CloudError, match=r"broken\.yaml is not readable YAML"):
        await OpenStackCloud("fakecloud", None, broken).limits()


async def test_bad_password_is_a_clear_error_without_the_password(
    cloud_config: CloudConfig, tmp_path: Path
) -> None:
    document = yaml.safe_load(cloud_config.clouds_file.read_text())
    document["clouds"]["fakecloud"]["auth"]["password"] = "not-the-password-xyzzy"
    path = tmp_path / "bad-clouds.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(CloudError) as raised:
        await OpenStackCloud("fakecloud", "RegionOne", path).limits()
    message = str(raised.value)
    assert "'fakecloud'" in message and "Unauthorized" in message
    assert "xyzzy" not in message
