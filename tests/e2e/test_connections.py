"""End-to-end: definitions naming a connection run through the real state machine with that
connection's credentials: a second business unit (a Pardot sandbox of its own), and the default
account's credentials under another name while the default secret holds wrong ones."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.secrets import clear_secret_cache
from exportpipe.adapters.store import DynamoJobStore
from exportpipe.errors import UpstreamError
from exportpipe.models.connection import Connection
from exportpipe.models.definition import Window
from exportpipe.models.job import Job, JobStatus
from exportpipe.runtime import build_deps
from exportpipe.sources.registry import parse_definition
from tests.conftest import ground_truth, load_event

pytestmark = pytest.mark.e2e

EMEA_UNIT = "0Uv8b000000EmeaBU1"
WINDOW = Window.of(datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 24, 1, tzinfo=UTC))
DEFAULT = PardotSandbox(pickup_seconds=0.0, processing_seconds=0.5, seed=5)
EMEA = PardotSandbox(
    pickup_seconds=0.0,
    processing_seconds=0.5,
    seed=9,
    client_id="3MVG9sandboxEmeaClientId",
    client_secret="emea-client-secret",
    username="emea-integration@example.com",
    business_unit_id=EMEA_UNIT,
)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    connections = {"pardot/emea": EMEA, "pardot/alias": DEFAULT}
    with LocalStack(sandboxes={"pardot": DEFAULT}, connections=connections) as running:
        yield running


def _creates(sandbox: PardotSandbox) -> list[str | None]:
    """The business unit of each export the sandbox was asked to create."""
    return [
        e.headers.get("Pardot-Business-Unit-Id")
        for e in sandbox.request_log
        if e.method == "POST" and e.path == "/api/v5/exports"
    ]


def _deliver(stack: LocalStack, name: str, connection: str) -> Job:
    event = load_event("start_export_schedule")
    event["definition"] = {**event["definition"], "name": name, "connection": connection}
    started = stack.invoke("StartExportFunction", event)
    assert started["status"] == "EXPORTING", started
    assert stack.wait_for_execution(started["job_id"], timeout=90)["status"] == "SUCCEEDED"
    job = DynamoJobStore(stack.client("dynamodb"), stack.table).get(started["job_id"])
    assert job.status is JobStatus.DELIVERED
    return job


def _rows(stack: LocalStack, job: Job) -> list[dict[str, str]]:
    s3 = stack.client("s3")
    assert job.manifest_key is not None
    manifest = json.loads(s3.get_object(Bucket=stack.bucket, Key=job.manifest_key)["Body"].read())
    rows: list[dict[str, str]] = []
    for f in manifest["files"]:
        body = s3.get_object(Bucket=stack.bucket, Key=f["key"])["Body"].read().decode()
        rows += csv.DictReader(io.StringIO(body, newline=""))
    return sorted(rows, key=lambda r: int(r["id"]))


def test_a_named_connection_exports_from_its_own_business_unit(stack: LocalStack) -> None:
    default_before, emea_before = len(_creates(DEFAULT)), len(_creates(EMEA))
    # GIVEN a definition naming the connection "emea" (a second business unit) WHEN it runs
    job = _deliver(stack, "e2e-conn-emea", "emea")
    # THEN the job is that connection's, and every call went to that account with its unit
    assert job.connection == "pardot/emea"
    assert _creates(EMEA)[emea_before:] == [EMEA_UNIT]
    assert len(_creates(DEFAULT)) == default_before
    assert all(
        e.headers.get("Pardot-Business-Unit-Id") == EMEA_UNIT
        for e in EMEA.request_log
        if e.path.startswith("/api/v5/")
    )
    # AND what landed is that account's data
    assert _rows(stack, job) == ground_truth(EMEA, job) != []


def test_a_named_connection_reads_its_own_secret_not_the_sources_default(stack: LocalStack) -> None:
    secrets = stack.client("secretsmanager")
    default_secret = stack.connection_secret("pardot/default")
    kept = secrets.get_secret_value(SecretId=default_secret)["SecretString"]
    wrong = {**json.loads(kept), "business_unit_id": "0Uv8b000000WrongBU"}
    secrets.put_secret_value(SecretId=default_secret, SecretString=json.dumps(wrong))
    clear_secret_cache()
    try:
        # GIVEN the default connection's secret holds credentials the account refuses
        deps = build_deps()
        definition = parse_definition(load_event("start_export_schedule")["definition"])
        client = deps.client_for(Connection("pardot"))
        try:
            with pytest.raises(UpstreamError):
                client.create_export(definition, WINDOW)
        finally:
            client.close()
        # WHEN a definition names "alias", the same account's right credentials under another name
        before = len(_creates(DEFAULT))
        job = _deliver(stack, "e2e-conn-alias", "alias")
        # THEN it was delivered with those: the default secret was never the one used
        assert job.connection == "pardot/alias"
        assert _creates(DEFAULT)[before:] == [DEFAULT.business_unit_id]
        assert _rows(stack, job) == ground_truth(DEFAULT, job) != []
    finally:
        secrets.put_secret_value(SecretId=default_secret, SecretString=kept)
        clear_secret_cache()
