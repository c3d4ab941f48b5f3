"""What the services need, built once per invocation by the handlers (or by tests, with fakes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exportpipe.adapters.aws import AwsClients, aws_clients
from exportpipe.adapters.events import EventPublisher
from exportpipe.adapters.lifecycle import StartExportFunction
from exportpipe.adapters.store import JobStore
from exportpipe.config import Settings, load_settings
from exportpipe.sources.base import SourceClient
from exportpipe.sources.registry import build_client


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: JobStore
    s3: Any
    sfn: Any
    publisher: EventPublisher
    client_for: Callable[[str], SourceClient[Any]]
    clock: Callable[[], datetime] = utcnow
    # seconds left in this invocation (the Lambda context's), when known
    remaining_seconds: Callable[[], float] | None = None
    # start_export, for tasks of executions on an earlier workflow definition (services.delivery)
    lifecycle: StartExportFunction | None = None


def build_deps(
    settings: Settings | None = None,
    clients: AwsClients | None = None,
    *,
    remaining_seconds: Callable[[], float] | None = None,
) -> Deps:
    """``remaining_seconds``: time left in this invocation (from the Lambda context); upstream calls
    are cut short to fit in it, so a slow upstream ends in a handled error, not a Lambda timeout."""
    settings = settings or load_settings()
    clients = clients or aws_clients()
    return Deps(
        settings=settings,
        store=JobStore(clients.dynamodb, settings.state_table, ttl_days=settings.job_ttl_days),
        s3=clients.s3,
        sfn=clients.sfn,
        publisher=EventPublisher(clients.events, settings.event_bus),
        client_for=lambda source: build_client(source, settings, clients.secrets, remaining_seconds),
        remaining_seconds=remaining_seconds,
        lifecycle=StartExportFunction(clients.lambda_, settings.start_export_function),
    )
