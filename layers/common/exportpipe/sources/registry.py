"""The sources: ``{source id: spec}``. The definition union and each client come from here, so adding
a source is one folder under ``exportpipe.sources`` and one line below."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from exportpipe.adapters.secrets import read_secret_json
from exportpipe.config import Settings
from exportpipe.errors import ConfigurationError
from exportpipe.models.connection import Connection
from exportpipe.models.definition import DefinitionBase
from exportpipe.sources.base import ClientContext, SourceClient, SourceSpec
from exportpipe.sources.pardot import SPEC as PARDOT

SOURCES: dict[str, SourceSpec] = {spec.source: spec for spec in (PARDOT,)}


@cache
def definition_adapter() -> TypeAdapter[DefinitionBase]:
    """The discriminated union on ``source`` of every registered source's definition model."""
    models = tuple(spec.definition for spec in SOURCES.values())
    union: Any = models[0] if len(models) == 1 else Union[models]  # noqa: UP007
    return TypeAdapter(Annotated[union, Field(discriminator="source")])


def connection_secret(connection: Connection, settings: Settings) -> str:
    """The secret (name or ARN) a connection's credentials are read from: the source's configured
    secret for its default connection, ``<ConnectionSecretPrefix><source>/<name>`` for a named one."""
    spec = SOURCES.get(connection.source)
    if spec is None:
        raise ConfigurationError(f"no client for source {connection.source!r}")
    if connection.is_default:
        return settings.secret_arns.get(spec.connection_setting, "")
    return f"{settings.connection_secret_prefix}{connection.source}/{connection.name}"


def build_client(
    connection: Connection | str,
    settings: Settings,
    secrets_client: Any,
    remaining_seconds: Callable[[], float] | None = None,
) -> SourceClient[Any]:
    """The client for ``connection`` (a source id: its default connection), with credentials from the
    connection's Secrets Manager secret."""
    if isinstance(connection, str):
        connection = Connection(connection)
    secret = connection_secret(connection, settings)
    spec = SOURCES[connection.source]
    try:
        credentials = read_secret_json(secrets_client, secret)
    except ConfigurationError as exc:
        raise ConfigurationError(f"connection {connection}: {exc}") from exc
    context = ClientContext(
        settings=settings,
        credentials=credentials,
        allowed_hosts=(*spec.allowed_hosts, *settings.allowed_download_hosts),
        remaining_seconds=remaining_seconds,
    )
    return spec.make_client(context)
