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


def build_client(
    source: str, settings: Settings, secrets_client: Any, remaining_seconds: Callable[[], float] | None = None
) -> SourceClient[Any]:
    """The client for ``source``, with credentials from its connection's Secrets Manager secret."""
    spec = SOURCES.get(source)
    if spec is None:
        raise ConfigurationError(f"no client for source {source!r}")
    secret = settings.secret_arns.get(spec.connection_setting, "")
    context = ClientContext(
        settings=settings,
        credentials=read_secret_json(secrets_client, secret),
        allowed_hosts=(*spec.allowed_hosts, *settings.allowed_download_hosts),
        remaining_seconds=remaining_seconds,
    )
    return spec.make_client(context)
