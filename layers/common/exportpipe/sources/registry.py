"""The sources: ``{source id: spec}``. The definition union and each client come from here, so adding
a source is one folder under ``exportpipe.sources`` and one line below."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from exportpipe.adapters.secrets import read_secret_json
from exportpipe.config import Settings
from exportpipe.errors import ConfigurationError, InvalidDefinitionError
from exportpipe.models.connection import Connection
from exportpipe.models.definition import DefinitionBase
from exportpipe.sources.advocate import SPEC as ADVOCATE
from exportpipe.sources.base import ClientContext, Recovery, Replayable, SourceClient, SourceSpec
from exportpipe.sources.pardot import SPEC as PARDOT
from exportpipe.webhooks import ReceiverFactory

SOURCES: dict[str, SourceSpec] = {spec.source: spec for spec in (PARDOT, ADVOCATE)}


@cache
def definition_adapter() -> TypeAdapter[DefinitionBase]:
    """The discriminated union on ``source`` of every registered source's definition model."""
    models = tuple(spec.definition for spec in SOURCES.values())
    union: Any = models[0] if len(models) == 1 else Union[models]  # noqa: UP007
    return TypeAdapter(Annotated[union, Field(discriminator="source")])


def spec_for(source: str) -> SourceSpec:
    """The registered spec of ``source``; ConfigurationError for a source not registered."""
    spec = SOURCES.get(source)
    if spec is None:
        raise ConfigurationError(f"no client for source {source!r}")
    return spec


def webhook_for(source: str) -> ReceiverFactory | None:
    """The factory of ``source``'s webhook receiver; None for a source without one (or unknown)."""
    spec = SOURCES.get(source)
    return spec.webhook if spec is not None else None


def connection_secret(connection: Connection, settings: Settings) -> str:
    """The secret (name or ARN) a connection's credentials are read from: the source's configured
    secret for its default connection, ``<ConnectionSecretPrefix><source>/<name>`` for a named one."""
    spec = spec_for(connection.source)
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
    connection's Secrets Manager secret.

    A spec that declares :attr:`Recovery.REPLAY` with a client that cannot replay is a
    ConfigurationError here, before the client is used."""
    if isinstance(connection, str):
        connection = Connection(connection)
    secret = connection_secret(connection, settings)
    spec = spec_for(connection.source)
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
    client = spec.make_client(context)
    if spec.recovery is Recovery.REPLAY and not isinstance(client, Replayable):
        client.close()
        raise ConfigurationError(
            f"source {connection.source!r} declares recovery {Recovery.REPLAY.value!r} but its client "
            f"{type(client).__name__} has no replay_export"
        )
    return client


def parse_definition(payload: Any) -> DefinitionBase:
    """Validate a definition payload against its source's model (the discriminated union on
    ``source`` built from the registry); raise InvalidDefinitionError naming every bad field."""
    if not isinstance(payload, dict):
        raise InvalidDefinitionError([("definition", "must be a JSON object")])
    source = payload.get("source")
    if source not in SOURCES:
        raise InvalidDefinitionError([("source", f"must be one of {list(SOURCES)}, got {source!r}")])
    try:
        definition: DefinitionBase = definition_adapter().validate_python(payload)
    except ValidationError as exc:
        raise InvalidDefinitionError(_describe(exc, set(SOURCES))) from exc
    return definition


def _describe(exc: ValidationError, sources: set[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if str(p) not in sources]
        msg = err["msg"]
        if not loc and msg.startswith("Value error, "):
            # model-level checks report "field: reason; field: reason"
            for part in msg.removeprefix("Value error, ").split("; "):
                field, _, reason = part.partition(": ")
                out.append((field, reason or part))
            continue
        out.append((".".join(loc) or "definition", msg.removeprefix("Value error, ")))
    return out
