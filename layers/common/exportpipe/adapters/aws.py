"""boto3 clients for the runtime: one shared botocore Config, built lazily and cached per process.

Handlers call :func:`aws_clients` at invocation time (never at import); services receive the clients
as arguments, so tests inject their own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

BOTO_CONFIG = Config(
    connect_timeout=5,
    read_timeout=60,
    retries={"max_attempts": 5, "mode": "adaptive"},
    max_pool_connections=20,
)


@dataclass(frozen=True)
class AwsClients:
    s3: Any
    dynamodb: Any
    sfn: Any
    events: Any
    secrets: Any
    lambda_: Any


_lock = threading.Lock()
_cache: dict[tuple[Any, ...], AwsClients] = {}


def aws_clients(*, config: Config | None = None, **client_kwargs: Any) -> AwsClients:
    """Clients for the current region/endpoint (boto3's own resolution: env, config files, IMDS).

    ``config`` is merged over :data:`BOTO_CONFIG` (e.g. tighter timeouts for a function whose caller
    waits); ``client_kwargs`` (``endpoint_url``, ``region_name``, credentials) are passed to every
    client. The result is cached per distinct set of arguments (a ``config`` by identity: pass a
    module-level constant).
    """
    key = (config, *sorted(client_kwargs.items()))
    merged = BOTO_CONFIG if config is None else BOTO_CONFIG.merge(config)
    with _lock:
        found = _cache.get(key)
        if found is None:
            session = boto3.session.Session()
            made: dict[str, Any] = {
                name: session.client(service, config=merged, **client_kwargs)
                for name, service in (
                    ("s3", "s3"),
                    ("dynamodb", "dynamodb"),
                    ("sfn", "stepfunctions"),
                    ("events", "events"),
                    ("secrets", "secretsmanager"),
                    ("lambda_", "lambda"),
                )
            }
            found = AwsClients(**made)
            _cache[key] = found
        return found


def reset_aws_clients() -> None:
    """Forget cached clients (the local stack calls this when it starts or stops an endpoint)."""
    with _lock:
        _cache.clear()
