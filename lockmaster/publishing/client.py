"""A package user's side of a mirror: apt fetches the package from the mirror over HTTP, trusting
only the repository's public key (so the signature and every hash are checked), and dpkg
installs it into a root of its own (`dpkg --root`: nothing on this machine changes). Used by the
demo and the end-to-end tests to show a published package is installable."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from lockmaster.publishing.errors import VerificationError
from lockmaster.publishing.verify import apt_get_check


def install_from_mirror(url: str, public_key: Path, codename: str, package: str, version: str,
                        root: Path, *, arch: str = "all") -> list[str]:
    """Install `package`=`version` from the APT repository at `url` into `root`; returns the
    files dpkg says it installed. VerificationError if apt refuses the repository or dpkg the
    package."""
    with tempfile.TemporaryDirectory(prefix="lm-client-") as tmp:
        debs = Path(tmp)
        apt_get_check(url, public_key, codename, download=[(package, version, arch)],
                      keep_in=debs)
        admin = root / "var" / "lib" / "dpkg"
        for sub in ("info", "updates", "triggers"):
            (admin / sub).mkdir(parents=True, exist_ok=True)
        for name in ("status", "available"):
            (admin / name).touch()
        installed = subprocess.run(
            ["dpkg", f"--root={root}", f"--admindir={admin}", "--log=/dev/null",
             "--force-script-chrootless", "--force-not-root", "--no-triggers", "-i",
             *map(str, sorted(debs.glob("*.deb")))],
            capture_output=True, text=True)
        if installed.returncode != 0:
            raise VerificationError(f"dpkg could not install {package} from {url}",
                                    [installed.stderr.strip() or installed.stdout.strip()])
    listed = subprocess.run(["dpkg", f"--root={root}", f"--admindir={admin}", "-L", package],
                            capture_output=True, text=True, check=True)
    return [line for line in listed.stdout.splitlines() if line.strip()]
