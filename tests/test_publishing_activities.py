"""The publisher's sync activity with an rsync/SSH mirror as configured in lockmaster.yaml
(against the real sshd on loopback): the snapshot reaches `<path>/deb` on the mirror host; a
mirror that is down is a retryable failure that leaves it as it was, and the retry completes."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from lockmaster.activities.publishing import PublishingActivities
from lockmaster.config.models import LockmasterConfig
from lockmaster.git.cache import RepoCache
from lockmaster.model.publish import SyncMirrorRequest
from lockmaster.publishing import AptRepoConfig, PublishRequest, publish_apt
from tests.deployment import make_config
from tests.fixtures.sshd import SSHServer
from tests.ports import free_port
from tests.publishing_helpers import (
    build_deb,
    build_dir,
    make_git_repo,
    make_signing_key,
    stop_gpg_agent,
)

pytestmark = pytest.mark.slow


def config_with_ssh_mirror(tmp_path: Path, server: SSHServer, port: int) -> LockmasterConfig:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{server.host}]:{server.port} {server.host_key}\n"
                           f"[{server.host}]:{port} {server.host_key}\n")
    data = make_config(tmp_path, projects=[], jobs=[]).model_dump(
        by_alias=True, mode="json", exclude_none=True)
    data["publishing"] = {"mirrors": [{
        "name": "remote", "driver": "rsync", "host": server.host, "port": port,
        "user": server.user, "key-file": str(server.client_key),
        "known-hosts-file": str(known_hosts), "path": str(tmp_path / "remote-mirror")}]}
    return LockmasterConfig.model_validate(data)


async def test_sync_activity_to_an_rsync_ssh_mirror(tmp_path: Path,
                                                    sshd_server: SSHServer) -> None:
    key = make_signing_key(tmp_path / "key")
    try:
        git = make_git_repo(tmp_path / "git")
        down_port = free_port()
        config = config_with_ssh_mirror(tmp_path, sshd_server, down_port)
        # A snapshot on the publishing host, as publish_stable leaves it.
        deb = build_deb(tmp_path / "debs", "hello", "1.0")
        manifest = build_dir(tmp_path / "builds", "b1", [deb], git.merged)
        snapshot = "000001-hello-1"
        publish_apt(AptRepoConfig(root=config.publish_root / "deb", codename="bookworm"), key,
                    PublishRequest(snapshot_id=snapshot, manifest=manifest, git_repo=git.path,
                                   branch="main"))
        activities = PublishingActivities(config, RepoCache(tmp_path / "cache", str), {})
        request = SyncMirrorRequest(mirror="remote", snapshot=snapshot)

        with pytest.raises(ApplicationError) as down:  # nothing listens on that port
            await activities.sync_mirror(request)
        assert not down.value.non_retryable and "remote" in str(down.value)
        assert not (tmp_path / "remote-mirror" / "deb" / "current").exists()

        config.publishing.mirrors[0].port = sshd_server.port  # the mirror is back
        result = await activities.sync_mirror(request)
        assert result.snapshot == snapshot and not result.skipped
        assert any(name.endswith("hello_1.0_all.deb") for name in result.added)
        current = tmp_path / "remote-mirror" / "deb" / "current"
        assert current.resolve().name == snapshot
        assert (current / "dists" / "bookworm" / "InRelease").exists()
        again = await activities.sync_mirror(request)  # idempotent: nothing sent again
        assert again.snapshot == snapshot
    finally:
        stop_gpg_agent(key)
