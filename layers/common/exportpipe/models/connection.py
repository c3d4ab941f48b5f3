"""Connections: whose account an export runs in.

A user may run several accounts of one source (business units, partner accounts, tenants). A
definition names its connection (``"connection": "emea"``); one that names none uses its source's
default connection, the secret the deployment configures for the source. Credentials come from the
connection's secret, so the upstream's allowances and quotas are those of the connection's account,
never shared by two connections of one source.

The connection's id (``<source>/emea``, ``<source>/default``) is recorded on the job. Which secret a
connection reads is decided in one place, :func:`exportpipe.sources.registry.connection_secret`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

DEFAULT_CONNECTION = "default"
"""The name of a source's default connection; a definition may also name it explicitly."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _checked_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            "must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit, "
            f"got {value!r}"
        )
    return value


ConnectionName = Annotated[str, AfterValidator(_checked_name)]


@dataclass(frozen=True)
class Connection:
    """One account of a source: ``name`` is :data:`DEFAULT_CONNECTION` for the source's default one."""

    source: str
    name: str = DEFAULT_CONNECTION

    @classmethod
    def of(cls, source: str, name: str | None) -> Connection:
        """The connection a definition's ``connection`` field names (None: the source's default)."""
        return cls(source, _checked_name(name) if name else DEFAULT_CONNECTION)

    @property
    def id(self) -> str:
        """Stable and readable: ``<source>/<name>``."""
        return f"{self.source}/{self.name}"

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_CONNECTION

    def __str__(self) -> str:
        return self.id
