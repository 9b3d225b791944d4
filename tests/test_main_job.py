"""The main job as a user runs it: `lockmaster run` with the embedded defaults (here on free ports),
twice: the second run resumes from the SQLite state the first left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lockmaster.config.loader import EXAMPLES
from tests import distribution
from tests.distribution import local_distribution
from tests.ports import restartable_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not distribution.available(), reason=distribution.missing_reason()),
]


def test_main_job_checks_a_demo_change_and_resumes(tmp_path: Path) -> None:
    config = yaml.safe_load((EXAMPLES / "dev.yaml").read_text())
    port, ui, logs = restartable_port(), restartable_port(), restartable_port()
    config["temporal"]["address"] = f"127.0.0.1:{port}"
    config["temporal"]["dev-server"].update({"port": port, "ui-port": ui})
    config["temporal"]["web-url"] = f"http://127.0.0.1:{ui}"
    config["logs"] = {"url": f"http://127.0.0.1:{logs}", "serve": {"port": logs}}
    web = restartable_port()  # the status page, on a port of its own
    config["web"] = {"port": web}
    config["state-dir"] = str(tmp_path / "state")
    # The package cache (apt-cacher-ng) on a port of its own, below 32768 as it needs.
    cache_port = restartable_port()
    config["packaging"]["cache"]["port"] = cache_port
    # The distribution: the tests' local repository of real Debian packages (never upstream),
    # through that cache; prepared roots shared with the other tests.
    config["packaging"]["distribution"] = {"mirror": local_distribution()[0], "keyring": None}
    config["packaging"]["roots"] = {"dir": str(distribution.ROOTS)}
    mirror_port = restartable_port()
    config["publishing"]["signing"]["gnupg-home"] = str(tmp_path / "state" / "publish-gnupg")
    config["publishing"]["mirrors"][0].update({
        "path": str(tmp_path / "state" / "mirrors" / "local"),
        "url": f"http://127.0.0.1:{mirror_port}", "serve": {"port": mirror_port}})
    file = tmp_path / "lockmaster.yaml"
    file.write_text(yaml.safe_dump(config))
    lockmaster = Path(sys.executable).parent / "lockmaster"

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([lockmaster, "run", "--config", str(file), "--exit-after-demo"],
                              capture_output=True, text=True, timeout=900)

    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "demo: uploaded change 1,1 to demo/hello" in first.stdout
    assert "check/demo/hello/1/1: SUCCESS" in first.stdout
    assert "Build succeeded (check)." in first.stdout
    assert "- docs " in first.stdout and "(non-voting)" in first.stdout
    assert f"http://127.0.0.1:{ui}/namespaces/default/workflows/check%2Fdemo%2Fhello%2F1%2F1" in (
        first.stdout)
    assert (tmp_path / "state" / "temporal.db").exists()
    assert f"package cache (apt-cacher-ng) on http://127.0.0.1:{cache_port}" in first.stdout
    assert "did not start" not in first.stderr, first.stderr
    assert f"status page: http://127.0.0.1:{web}" in first.stdout
    # The packaging demo: checked, gated, merged, published, synced, installed by a client.
    assert "packaging demo: change 2,1 uploaded to demo/lockmaster-hello" in first.stdout
    assert "packaging demo: check SUCCESS: package-build SUCCESS" in first.stdout
    assert "packaging demo:   sync:local: done" in first.stdout
    assert ("packaging demo: a client installed lockmaster-hello 1.0.2 from "
            f"http://127.0.0.1:{mirror_port}/deb/current") in first.stdout
    assert "it says: Hello from lockmaster, demo!" in first.stdout

    second = run()
    assert second.returncode == 0, second.stdout + second.stderr
    # The review system and Temporal kept their state: the next demo change is number 2.
    assert "demo: uploaded change 3,1 to demo/hello" in second.stdout
    assert "check/demo/hello/3/1: SUCCESS" in second.stdout
    # The next release of the package is published beside the first.
    assert "a client installed lockmaster-hello 1.0.4 from" in second.stdout

    show = subprocess.run([lockmaster, "change", "show", "1", "--config", str(file)],
                          capture_output=True, text=True)
    assert show.returncode == 0
    assert "Verified: lockmaster +1" in show.stdout
    assert "Build succeeded (check)." in show.stdout
