"""Which client serves which source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exportpipe.config import Settings
from exportpipe.errors import ConfigurationError
from exportpipe.secrets import read_secret_json
from exportpipe.sources.base import SourceClient


def build_client(
    source: str, settings: Settings, secrets_client: Any, remaining_seconds: Callable[[], float] | None = None
) -> SourceClient:
    """The client for ``source``, with credentials from its Secrets Manager secret."""
    if source == "pardot":
        from exportpipe.sources.pardot import PardotClient, PardotCredentials

        creds = PardotCredentials.parse(read_secret_json(secrets_client, settings.pardot_secret_arn))
        return PardotClient(
            creds,
            timeout=settings.http_timeout_seconds,
            allowed_hosts=settings.allowed_download_hosts,
            backoff_seconds=settings.upstream_backoff_seconds,
            rate_limit_wait=settings.rate_limit_wait_seconds,
            remaining_seconds=remaining_seconds,
        )
    raise ConfigurationError(f"no client for source {source!r}")
