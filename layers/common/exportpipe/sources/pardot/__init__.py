"""Account Engagement (Pardot) Export API v5: the definition (object × procedure), the client, the
catalog of objects, procedures, arguments and fields."""

from __future__ import annotations

from typing import Any

from exportpipe.sources.base import ClientContext, SourceClient, SourceSpec
from exportpipe.sources.pardot.definition import PardotDefinition


def _client(context: ClientContext) -> SourceClient[Any]:
    from exportpipe.sources.pardot.client import PardotClient, PardotCredentials  # requests: when used

    settings = context.settings
    return PardotClient(
        PardotCredentials.parse(context.credentials),
        timeout=settings.http_timeout_seconds,
        allowed_hosts=context.allowed_hosts,
        backoff_seconds=settings.upstream_backoff_seconds,
        rate_limit_wait=settings.rate_limit_wait_seconds,
        remaining_seconds=context.remaining_seconds,
    )


SPEC = SourceSpec(
    source="pardot",
    definition=PardotDefinition,
    make_client=_client,
    connection_setting="PARDOT_SECRET_ARN",
    allowed_hosts=("*.pardot.com", "*.salesforce.com"),
)

__all__ = ["SPEC", "PardotDefinition"]
