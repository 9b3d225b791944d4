"""`clouds:` in lockmaster.yaml: donated OpenStack clouds to onboard (issue 17, seed 004).

Public settings only. Passwords are named by reference (a file path or an environment variable
name) and read by the onboarding activity on the worker: nothing secret is in this file, in a
workflow's input, its history, a search attribute or its ID.

    clouds:
      - name: examplecloud
        auth-url: https://keystone.example.org:5000/v3
        regions: [RegionOne]
        ca-file: /etc/lockmaster/examplecloud-ca.pem   # self-signed Keystone: its CA
        users:                                         # seed 004's two projects
          zuul: {username: openstackzuul, project: openstackzuul,
                 password-file: /etc/lockmaster/secrets/examplecloud-zuul}
          ci: {username: openstackci, project: openstackci, password-env: EXAMPLE_CI_PASSWORD}
        labels:
          - {name: ubuntu-noble, flavor: ci.8c8g80d}   # needs default to 8 vCPU, 8 GB, 80 GB
        max-servers: 100
        image-disk-format: qcow2
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lockmaster.config.base import ConfigModel, check_unique

# Seed 004: "Each test instance requires: 8GB RAM, 8vCPU, 80GB of storage".
DEFAULT_RAM_MB = 8192
DEFAULT_VCPUS = 8
DEFAULT_DISK_GB = 80
DISK_FORMATS = ("qcow2", "raw", "vhd", "vhdx", "vmdk", "vdi", "iso", "ploop", "aki", "ari", "ami")
# Names become parts of workflow IDs and host names (mirror.<region>.<cloud>.<domain>).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CloudCredential(ConfigModel):
    """A Keystone user and its project; the password by reference, never inline."""

    username: str = Field(min_length=1)
    project: str = Field(min_length=1)
    user_domain: str = "Default"
    project_domain: str = "Default"
    # Exactly one of these: a file holding the password (first line), or an environment
    # variable of the worker that runs the onboarding activities.
    password_file: Path | None = None
    password_env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: object) -> object:
        if isinstance(data, dict) and "password" in data:
            raise ValueError("password: a password never goes in lockmaster.yaml; put it in a "
                             "file (password-file: PATH, mode 0600) or an environment variable "
                             "of the worker (password-env: NAME)")
        return data

    @model_validator(mode="after")
    def _one_reference(self) -> CloudCredential:
        given = [n for n, v in (("password-file", self.password_file),
                                ("password-env", self.password_env)) if v]
        if len(given) != 1:
            raise ValueError(
                f"user {self.username!r}: give exactly one of password-file (a path) or "
                f"password-env (an environment variable name), not {given or 'neither'}; the "
                "password itself never goes in lockmaster.yaml")
        if self.password_env and not ENV_NAME.match(self.password_env):
            raise ValueError(f"user {self.username!r}: password-env {self.password_env!r} is "
                             "not an environment variable name (letters, digits, _)")
        return self


class CloudUsers(ConfigModel):
    # Seed 004: a `zuul` project for test nodes, a `ci` project for control-plane services.
    zuul: CloudCredential
    ci: CloudCredential


class CloudLabel(ConfigModel):
    """A node label this cloud serves, and what its nodes need."""

    name: str = Field(min_length=1)
    # The flavor to use; none: preflight looks for any flavor that meets the needs.
    flavor: str | None = None
    min_ram: int = Field(default=DEFAULT_RAM_MB, gt=0)  # MiB
    min_vcpus: int = Field(default=DEFAULT_VCPUS, gt=0)
    min_disk: int = Field(default=DEFAULT_DISK_GB, ge=0)  # GiB; 0: boot from volume


class CloudMirror(ConfigModel):
    # Seed 004: "a single instance with 500GB of disk (via Cinder is preferred)".
    volume: bool = True
    volume_size: int = Field(default=500, gt=0)  # GiB


class CloudConfig(ConfigModel):
    name: str
    auth_url: str
    regions: list[str] = Field(min_length=1)
    # PEM bundle of the CA that signed Keystone's certificate (self-signed clouds); none: the
    # system's trust store.
    ca_file: Path | None = None
    # Allow a plain http:// auth-url. Only for tests (the real Keystone there is on loopback
    # http): seed 004 requires https to Keystone, and preflight fails http without this.
    insecure_for_tests: bool = False
    interface: Literal["public", "internal", "admin"] = "public"
    users: CloudUsers
    # The donor's admin, supplied once to make the projects and users (a later phase); optional.
    admin: CloudCredential | None = None
    labels: list[CloudLabel] = Field(min_length=1)
    max_servers: int = Field(default=100, ge=1)  # seed 004: "a minimum of 100 instances"
    # Seed 004: each test instance needs a public IP; with this, quota must cover a floating
    # IP per server.
    floating_ips: bool = True
    image_disk_format: str = "qcow2"
    mirror: CloudMirror = Field(default_factory=CloudMirror)

    @model_validator(mode="after")
    def _check(self) -> CloudConfig:
        if not NAME.match(self.name):
            raise ValueError(f"cloud name {self.name!r}: use letters, digits, '.', '-', '_' "
                             "(it becomes part of workflow IDs and host names)")
        for region in self.regions:
            if not NAME.match(region):
                raise ValueError(f"cloud {self.name!r}: region {region!r}: use letters, digits, "
                                 "'.', '-', '_' (give the name exactly as the catalog has it)")
        check_unique(("regions",), self.regions)
        check_unique(("labels",), [label.name for label in self.labels])
        if not self.auth_url.startswith(("https://", "http://")):
            raise ValueError(f"cloud {self.name!r}: auth-url {self.auth_url!r} is not a URL; "
                             "give Keystone's identity endpoint, e.g. https://host:5000/v3")
        if self.auth_url.startswith("http://") and not self.insecure_for_tests:
            raise ValueError(
                f"cloud {self.name!r}: auth-url {self.auth_url!r} is plain http; Keystone must "
                "be reached over https (configure ca-file for a self-signed certificate); "
                "insecure-for-tests: true allows http, for tests only")
        if self.image_disk_format not in DISK_FORMATS:
            raise ValueError(f"cloud {self.name!r}: image-disk-format "
                             f"{self.image_disk_format!r} is not one of {', '.join(DISK_FORMATS)}")
        return self

    def resolved(self, base: Path | None) -> CloudConfig:
        """A copy with its file references made absolute against `base` (the config file's
        folder): the activity reads them on a worker with another working directory."""
        if base is None:
            return self

        def absolute(path: Path | None) -> Path | None:
            return None if path is None or path.is_absolute() else (base / path)

        update: dict[str, object] = {}
        if (ca := absolute(self.ca_file)) is not None:
            update["ca_file"] = ca
        users = {}
        for role in ("zuul", "ci"):
            cred: CloudCredential = getattr(self.users, role)
            if (pw := absolute(cred.password_file)) is not None:
                cred = cred.model_copy(update={"password_file": pw})
            users[role] = cred
        update["users"] = CloudUsers(**users)
        if self.admin is not None and (pw := absolute(self.admin.password_file)) is not None:
            update["admin"] = self.admin.model_copy(update={"password_file": pw})
        return self.model_copy(update=update)

