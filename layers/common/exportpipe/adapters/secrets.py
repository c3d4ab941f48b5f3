"""Upstream credentials from Secrets Manager through Powertools parameters (cached for 5 minutes)."""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import ClientError

from exportpipe.errors import ConfigurationError

CACHE_SECONDS = 300

_lock = threading.Lock()
_providers: dict[int, SecretsProvider] = {}


def read_secret_json(secrets_client: Any, secret_id: str) -> dict[str, Any]:
    """The secret's JSON object; cached per client so warm invocations skip the call."""
    if not secret_id:
        raise ConfigurationError("no secret configured for this source (its *_SECRET_ARN setting is empty)")
    with _lock:
        provider = _providers.get(id(secrets_client))
        if provider is None:
            provider = SecretsProvider(boto3_client=secrets_client)
            _providers[id(secrets_client)] = provider
    try:
        value = provider.get(secret_id, transform="json", max_age=CACHE_SECONDS)
    except GetParameterError as exc:
        # Powertools wraps the SDK's error; a secret that does not exist is a configuration problem
        # (a connection named in a definition but never created), not an outage to retry.
        if _error_code(exc.__context__) == "ResourceNotFoundException":
            raise ConfigurationError(f"secret {secret_id} does not exist") from exc
        raise
    if not isinstance(value, dict):
        raise ConfigurationError(f"secret {secret_id}: expected a JSON object")
    return value


def _error_code(exc: BaseException | None) -> str | None:
    return str(exc.response.get("Error", {}).get("Code")) if isinstance(exc, ClientError) else None


def clear_secret_cache() -> None:
    with _lock:
        for provider in _providers.values():
            provider.clear_cache()  # type: ignore[no-untyped-call]
        _providers.clear()
