"""Connections against the local stack's AWS (moto) and the Pardot sandbox: each connection's client
reads its own secret, and a definition naming a connection that has none fails its job saying so."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.secrets import clear_secret_cache
from exportpipe.adapters.store import DynamoJobStore
from exportpipe.errors import ConfigurationError, UpstreamError
from exportpipe.models.connection import Connection
from exportpipe.models.definition import Window
from exportpipe.runtime import build_deps
from exportpipe.sources.registry import parse_definition
from functions.start_export.app import lambda_handler as start_export
from tests.conftest import load_event

Ctx = Callable[[str], Any]
OTHER_UNIT = "0Uv8b000000EmeaBU1"  # a business unit the sandbox does not serve


@pytest.fixture
def named(stack: LocalStack) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Create named connections' secrets (under the stack's prefix), removed after the test."""
    secrets = stack.client("secretsmanager")
    created: list[str] = []

    def create(name: str, value: dict[str, Any]) -> None:
        secret = stack.connection_secret(f"pardot/{name}")
        secrets.create_secret(Name=secret, SecretString=json.dumps(value))
        created.append(secret)

    yield create
    for secret in created:
        secrets.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
    clear_secret_cache()


def _default_credentials(stack: LocalStack) -> dict[str, Any]:
    secret = stack.client("secretsmanager").get_secret_value(
        SecretId=stack.connection_secret("pardot/default")
    )
    value: dict[str, Any] = json.loads(secret["SecretString"])
    return value


def test_each_connection_gets_a_client_with_its_own_secret(
    stack: LocalStack, pardot: PardotSandbox, named: Callable[[str, dict[str, Any]], None]
) -> None:
    # GIVEN the default connection, one under another name with the same credentials, and one for
    # another business unit
    credentials = _default_credentials(stack)
    named("same-bu", credentials)
    named("other-bu", {**credentials, "business_unit_id": OTHER_UNIT})
    deps = build_deps()
    definition = parse_definition(load_event("start_export_schedule")["definition"])
    window = Window.of(datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 24, 1, tzinfo=UTC))
    pardot.clear_log()

    def create(connection: Connection) -> str:
        client = deps.client_for(connection)
        try:
            return client.create_export(definition, window).upstream_id
        finally:
            client.close()

    # WHEN each creates an export THEN each sent its own secret's business unit
    assert create(Connection("pardot"))
    assert create(Connection("pardot", "same-bu"))
    with pytest.raises(UpstreamError):
        create(Connection("pardot", "other-bu"))  # the sandbox serves one business unit only
    units = [
        e.headers.get("Pardot-Business-Unit-Id")
        for e in pardot.request_log
        if e.method == "POST" and e.path == "/api/v5/exports"
    ]
    assert units == [pardot.business_unit_id, pardot.business_unit_id, OTHER_UNIT]


def test_a_connection_without_a_secret_is_a_configuration_error_naming_it(stack: LocalStack) -> None:
    deps = build_deps()
    secret = stack.connection_secret("pardot/nowhere")
    with pytest.raises(
        ConfigurationError, match=f"connection pardot/nowhere: secret {secret} does not exist"
    ):
        deps.client_for(Connection("pardot", "nowhere"))


def test_a_definition_naming_a_missing_connection_fails_its_job_with_the_reason(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    event = load_event("start_export_schedule")
    event["definition"] = {**event["definition"], "name": "conn-missing", "connection": "nowhere"}
    before = len(pardot.request_log)
    answer = start_export(event, context("StartExportFunction"))
    # THEN the job ends FAILED with the reason (not left REQUESTED for the next tick to stumble on),
    # and nothing reached the upstream
    assert answer["status"] == "FAILED"
    assert "connection pardot/nowhere" in answer["reason"] and "does not exist" in answer["reason"]
    assert len(pardot.request_log) == before
    # AND the job record names the connection
    item = stack.client("dynamodb").get_item(
        TableName=stack.table, Key={"pk": {"S": f"JOB#{answer['job_id']}"}}
    )["Item"]
    assert item["connection"] == {"S": "pardot/nowhere"}
    job = DynamoJobStore(stack.client("dynamodb"), stack.table).get(answer["job_id"])
    assert job.connection_ref == Connection("pardot", "nowhere")
