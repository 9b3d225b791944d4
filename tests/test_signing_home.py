"""A GnuPG home too deep for gpg-agent's sockets (107 bytes for a UNIX socket path) is used
through a short link: `lockmaster run`'s demo signing key failed with "No agent running" in a
deep state directory (seen when the tests ran under pytest-xdist's longer temporary paths)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lockmaster.activities.publishing import _fingerprint, _generate_key
from lockmaster.publishing.signing import LONGEST_SOCKET, SOCKET_PATH_MAX, usable_home


@pytest.fixture
def deep(tmp_path: Path):  # type: ignore[no-untyped-def]
    home = tmp_path / ("state-" + "d" * 70) / "publish-gnupg"
    assert len(str(home) + LONGEST_SOCKET) > SOCKET_PATH_MAX
    yield home
    for where in {home, usable_home(home)}:
        subprocess.run(["gpgconf", "--homedir", str(where), "--kill", "all"],
                       capture_output=True)
    link = usable_home(home)
    if link != home:
        link.unlink()


@pytest.mark.skipif(Path(f"/run/user/{os.getuid()}").is_dir(),
                    reason="gpg puts its sockets under /run/user/<uid> here")
def test_a_deep_gnupg_home_fails_as_it_is(deep: Path) -> None:
    deep.mkdir(parents=True, mode=0o700)
    made = subprocess.run(["gpg", "--homedir", str(deep), "--batch", "--passphrase", "",
                           "--quick-gen-key", "deep key", "rsa3072", "sign", "never"],
                          capture_output=True, text=True)
    assert made.returncode != 0 and "agent" in made.stderr, made.stderr


def test_a_deep_gnupg_home_is_used_through_a_short_link(deep: Path) -> None:
    home = usable_home(deep)
    assert home != deep and home.resolve() == deep.resolve()
    assert len(str(home) + LONGEST_SOCKET) <= SOCKET_PATH_MAX
    assert usable_home(deep) == home  # the same link the next time
    _generate_key(home, "deep key")
    assert len(_fingerprint(home, "deep key")) == 40
    assert any(p.name == "pubring.kbx" for p in deep.iterdir())


def test_a_short_home_is_used_as_it_is(tmp_path: Path) -> None:
    assert usable_home(tmp_path / "gnupg") == tmp_path / "gnupg"
