"""The values of the secrets jobs name (`vars: {TOKEN: {secret: NAME}}`), read on the executor
when a job starts. Only names travel in workflow inputs and histories; the values are read here
from the files the executor's configuration names, handed to the job as environment
variables, and masked in its log."""

from __future__ import annotations

from collections.abc import Callable

from lockmaster.config.models import LockmasterConfig

MASK = "********"


class SecretMissing(Exception):
    """A job names a secret this executor cannot read (configuration or file)."""


SecretSource = Callable[[str], str]


def config_secrets(config: LockmasterConfig) -> SecretSource:
    """Reads `secrets.<name>.file` (relative to the config file) at each call: a rotated
    secret is picked up by the next job without a restart."""

    def read(name: str) -> str:
        secret = config.secrets.get(name)
        if secret is None:
            raise SecretMissing(
                f"the job names the secret {name!r}, which this executor's configuration does "
                f"not define (defined: {', '.join(config.secrets) or 'none'}); give the "
                "executors the same `secrets:` as the orchestrator")
        path = config.resolve(secret.file)
        try:
            value = path.read_text()
        except OSError as exc:
            raise SecretMissing(f"the secret {name!r} cannot be read from {path} on this "
                                f"executor: {exc.strerror or exc}") from None
        return value[:-1] if value.endswith("\n") else value

    return read


def mask(text: str, values: list[str]) -> str:
    """`text` with every secret value replaced (longest first: one may contain another)."""
    for value in sorted(values, key=len, reverse=True):
        if value:
            text = text.replace(value, MASK)
    return text
