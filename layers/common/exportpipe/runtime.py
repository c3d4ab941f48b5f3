"""What the services need, built once per invocation by the handlers (or by tests, with fakes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exportpipe.adapters.aws import AwsClients, aws_clients
from exportpipe.adapters.bucket import S3ResultsBucket
from exportpipe.adapters.events import EventPublisher
from exportpipe.adapters.lifecycle import StartExportFunction
from exportpipe.adapters.secrets import read_secret_json
from exportpipe.adapters.store import DynamoJobStore
from exportpipe.adapters.workflow import StepFunctionsWorkflow
from exportpipe.config import Settings, load_settings
from exportpipe.errors import ConfigurationError
from exportpipe.models.connection import Connection
from exportpipe.ports import EventBus, JobStore, Lifecycle, ResultsBucket, Workflow
from exportpipe.sources.base import SourceClient
from exportpipe.sources.registry import build_client


def utcnow() -> datetime:
    return datetime.now(UTC)


def no_secrets(secret_id: str) -> dict[str, Any]:
    raise ConfigurationError(f"no secrets reader in these dependencies (asked for {secret_id!r})")


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: JobStore
    bucket: ResultsBucket
    workflow: Workflow
    publisher: EventBus
    # A client with the credentials of a connection (a job's or a definition's ``connection_ref``),
    # built per call: the caller closes it.
    client_for: Callable[[Connection], SourceClient[Any]]
    clock: Callable[[], datetime] = utcnow
    # seconds left in this invocation (the Lambda context's), when known
    remaining_seconds: Callable[[], float] | None = None
    # a secret's JSON by its id (cached a few minutes per process): a webhook receiver reads its
    # connection's secret with it (the id: ``settings.secret_arns[spec.connection_setting]``)
    read_secret: Callable[[str], dict[str, Any]] = no_secrets
    # start_export, for tasks of executions on an earlier workflow definition (services.delivery)
    lifecycle: Lifecycle | None = None


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
        store=DynamoJobStore(clients.dynamodb, settings.state_table, ttl_days=settings.job_ttl_days),
        bucket=S3ResultsBucket(clients.s3, settings.results_bucket),
        workflow=StepFunctionsWorkflow(clients.sfn, settings.poll_state_machine_arn),
        publisher=EventPublisher(clients.events, settings.event_bus),
        client_for=lambda connection: build_client(connection, settings, clients.secrets, remaining_seconds),
        remaining_seconds=remaining_seconds,
        read_secret=lambda secret_id: read_secret_json(clients.secrets, secret_id),
        lifecycle=StartExportFunction(clients.lambda_, settings.start_export_function),
    )
