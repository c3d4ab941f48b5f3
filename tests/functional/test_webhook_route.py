"""The webhook route's answers, with a stand-in receiver registered the way a source registers its own.

Through the local stack's API Gateway front door (``stack.webhook_url``) where the request can be
made over HTTP; with crafted API Gateway proxy events where API Gateway itself would never send it
(a body flagged base64 that is not base64, a text body that is not UTF-8).

The stand-in signs like a real source would (HMAC-SHA256 over the exact bytes received) and parses
its body with the shared :func:`~exportpipe.webhooks.parse_json_body`; it is registered as a source's
spec (``SourceSpec.webhook``) in the registry for each test, and taken out after.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import pytest
import requests
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from exportpipe_dev.local import LocalStack

from exportpipe.adapters.aws import BOTO_CONFIG, aws_clients, reset_aws_clients
from exportpipe.adapters.store import DynamoJobStore, upstream_ref
from exportpipe.models.definition import DefinitionBase, Window
from exportpipe.models.job import Job, JobStatus
from exportpipe.runtime import Deps
from exportpipe.sources import registry
from exportpipe.sources.base import ClientContext, SourceClient, SourceSpec
from exportpipe.webhooks import (
    MAX_BODY_BYTES,
    Completion,
    MalformedWebhookError,
    parse_json_body,
)
from functions.webhook.app import STORE_CONFIG
from functions.webhook.app import lambda_handler as webhook
from tests.conftest import load_event

Ctx = Callable[[str], Any]

KEY = b"stand-in signing key"
SIGNATURE = "X-Standin-Signature"


def sign(body: bytes) -> str:
    return hmac.new(KEY, body, hashlib.sha256).hexdigest()


class StandInReceiver:
    """Verifies an HMAC over the exact bytes, then reads an Advocate-like ``export.completed`` event."""

    source = "advocate"
    built_with: ClassVar[list[Deps]] = []

    def __init__(self, deps: Deps) -> None:
        StandInReceiver.built_with.append(deps)

    def verify(self, headers: Mapping[str, str], body: bytes) -> Completion | None:
        if not hmac.compare_digest(headers.get(SIGNATURE, ""), sign(body)):
            return None
        event = parse_json_body(body)
        try:
            assert event["type"] == "export.completed"
            return Completion(
                event_id=str(event["id"]),
                upstream_id=str(event["data"]["id"]),
                result_urls=[str(event["data"]["downloadUrl"])],
            )
        except (AssertionError, KeyError, TypeError) as exc:
            raise MalformedWebhookError(f"not an export.completed event: {exc!r}") from exc


class StandInDefinition(DefinitionBase):
    source: Literal["advocate"]
    longest_window: ClassVar[timedelta] = timedelta(days=1)


def no_client(context: ClientContext) -> SourceClient[Any]:
    raise AssertionError("the webhook route builds no upstream client")


STAND_IN = SourceSpec(
    source="advocate",
    definition=StandInDefinition,
    make_client=no_client,
    connection_setting="STANDIN_SECRET_ARN",
    webhook=StandInReceiver,
)


@pytest.fixture(autouse=True)
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(registry.SOURCES, "advocate", STAND_IN)
    registry.definition_adapter.cache_clear()
    StandInReceiver.built_with.clear()
    yield
    monkeypatch.undo()
    registry.definition_adapter.cache_clear()


def completion_body(upstream_id: str, **extra: Any) -> bytes:
    event = {
        "id": uuid.uuid4().hex,
        "type": "export.completed",
        "data": {"id": upstream_id, "downloadUrl": f"https://example.com/{upstream_id}.csv"},
        **extra,
    }
    return json.dumps(event).encode()


def post(stack: LocalStack, body: bytes, *, signed: bool = True) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if signed:
        headers[SIGNATURE] = sign(body)
    return requests.post(f"{stack.webhook_url}/webhooks/advocate", data=body, headers=headers, timeout=30)


def exporting_job(stack: LocalStack, upstream_id: str) -> Job:
    """An ``advocate`` job waiting for its export, recorded the way start_export records one."""
    store = DynamoJobStore(stack.client("dynamodb"), stack.table)
    now = datetime.now(UTC)
    name = f"webhook-{upstream_id}"
    job = Job(
        job_id=f"{name}_job",
        definition_name=name,
        source="advocate",
        dataset="users",
        definition={"source": "advocate", "name": name},
        window=Window(start=now - timedelta(days=1), end=now),
        moves_watermark=False,
        status=JobStatus.REQUESTED,
        created_at=now,
        updated_at=now,
    )
    assert store.create(job).result == "created"
    return store.transition(
        job.job_id,
        JobStatus.EXPORTING,
        updates={"upstream_id": upstream_id, "upstream_ref": upstream_ref("advocate", upstream_id)},
    )


def proxy_event(body: str | None, *, base64_encoded: bool, source: str = "advocate") -> dict[str, Any]:
    event = load_event("webhook_advocate", body=body, isBase64Encoded=base64_encoded)
    event["path"] = event["resource"] = f"/webhooks/{source}"
    return event


def answer(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return response["statusCode"], json.loads(response["body"])


# ---- what is taken ----------------------------------------------------------------------------


def test_a_signed_completion_moves_its_job_to_ready(stack: LocalStack) -> None:
    # GIVEN a job waiting for its export
    job = exporting_job(stack, "adv-ready")
    body = completion_body("adv-ready")
    # WHEN its completion arrives through the front door
    resp = post(stack, body)
    # THEN the job is READY with the result URL, and the receiver was built with the dependencies
    assert (resp.status_code, resp.json()) == (202, {"message": "job ready", "job_id": job.job_id})
    stored = DynamoJobStore(stack.client("dynamodb"), stack.table).get(job.job_id)
    assert stored.status is JobStatus.READY
    assert stored.result_urls == ["https://example.com/adv-ready.csv"]
    assert [type(d) for d in StandInReceiver.built_with] == [Deps]
    # AND the same event again changes nothing
    again = post(stack, body)
    assert (again.status_code, again.json()["message"]) == (200, "job already READY")


def test_an_unsigned_or_forged_completion_is_refused(stack: LocalStack) -> None:
    job = exporting_job(stack, "adv-forged")
    body = completion_body("adv-forged")
    assert post(stack, body, signed=False).status_code == 401
    forged = requests.post(
        f"{stack.webhook_url}/webhooks/advocate",
        data=body,
        headers={SIGNATURE: sign(body + b" ")},
        timeout=30,
    )
    assert (forged.status_code, forged.json()) == (401, {"message": "signature missing or invalid"})
    assert DynamoJobStore(stack.client("dynamodb"), stack.table).get(job.job_id).status is JobStatus.EXPORTING


def test_a_binary_body_reaches_the_receiver_byte_for_byte(stack: LocalStack) -> None:
    # GIVEN a body that is not UTF-8 (the front door flags it base64, as API Gateway does for binary)
    body = b'{"type": "export.completed", "\xff": 1}'
    # WHEN it is posted signed THEN the signature verifies over the exact bytes: the answer is about
    # the body (400, not UTF-8), not the signature (401)
    resp = post(stack, body)
    assert resp.status_code == 400
    assert resp.json() == {"message": "body is not UTF-8: invalid start byte at byte 30"}


def test_a_source_without_a_receiver_still_answers_404(
    stack: LocalStack, context: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.SOURCES, "advocate", dataclasses.replace(STAND_IN, webhook=None))
    resp = requests.post(f"{stack.webhook_url}/webhooks/advocate", json={}, timeout=30)
    assert (resp.status_code, resp.json()) == (404, {"message": "no webhook receiver for source 'advocate'"})
    crafted = webhook(proxy_event("{}", base64_encoded=False, source="other"), context("WebhookFunction"))
    assert answer(crafted) == (404, {"message": "no webhook receiver for source 'other'"})


# ---- malformed requests: 4xx, never 5xx -------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("not base64!", id="outside-the-alphabet"),
        pytest.param("eyJhIjoxfQ", id="padding-missing"),
        pytest.param("eyJhIjoxfQ==\n", id="trailing-newline"),
        pytest.param("ZXhwb3J0é=", id="non-ascii"),
    ],
)
def test_a_body_flagged_base64_that_is_not_base64_answers_400(body: str, context: Ctx) -> None:
    status, message = answer(webhook(proxy_event(body, base64_encoded=True), context("WebhookFunction")))
    assert status == 400
    assert message["message"].startswith("body flagged base64 is not valid base64: ")


def test_a_text_body_that_is_not_utf8_answers_400(context: Ctx) -> None:
    # an event whose body holds a lone surrogate (JSON "\udc80"): no UTF-8 bytes were ever sent
    event = json.loads(json.dumps(proxy_event("{}", base64_encoded=False)).replace('"{}"', '"{\\udc80}"'))
    status, message = answer(webhook(event, context("WebhookFunction")))
    assert (status, message) == (400, {"message": "body is not UTF-8 text: surrogates not allowed at 1"})


def test_a_base64_body_that_is_not_utf8_answers_400(context: Ctx) -> None:
    raw = b"\xc3\x28 not UTF-8"
    event = proxy_event(base64.b64encode(raw).decode(), base64_encoded=True)
    event["headers"] = {**event["headers"], SIGNATURE: sign(raw)}
    status, message = answer(webhook(event, context("WebhookFunction")))
    assert (status, message) == (400, {"message": "body is not UTF-8: invalid continuation byte at byte 0"})


@pytest.mark.parametrize(("opener", "times"), [("[", 100_000), ('{"a":', 50_000)])
def test_deeply_nested_json_answers_400(stack: LocalStack, opener: str, times: int) -> None:
    resp = post(stack, (opener * times).encode())
    assert (resp.status_code, resp.json()) == (400, {"message": "JSON nested deeper than 32 levels"})


def test_json_that_is_not_a_completion_answers_400(stack: LocalStack) -> None:
    for body in (b"", b"[]", b'{"type": "export.completed"}', b"NaN", b"{"):
        resp = post(stack, body)
        assert resp.status_code == 400, body


def test_a_body_over_the_limit_answers_413(stack: LocalStack, context: Ctx) -> None:
    # GIVEN a signed completion padded to one byte over the limit (valid JSON: spaces)
    job = exporting_job(stack, "adv-large")
    compact = completion_body("adv-large")
    over = compact + b" " * (MAX_BODY_BYTES + 1 - len(compact))
    # WHEN it is posted THEN it is refused before the receiver runs, and the job has not moved
    resp = post(stack, over)
    assert (resp.status_code, resp.json()) == (
        413,
        {"message": f"body over the limit of {MAX_BODY_BYTES} bytes"},
    )
    assert StandInReceiver.built_with == []
    assert DynamoJobStore(stack.client("dynamodb"), stack.table).get(job.job_id).status is JobStatus.EXPORTING
    # AND flagged base64 (binary), too, before it is decoded
    big = base64.b64encode(b"\xff" * (MAX_BODY_BYTES + 1)).decode()
    assert answer(webhook(proxy_event(big, base64_encoded=True), context("WebhookFunction")))[0] == 413
    # AND a body of exactly the limit is taken
    exact = compact + b" " * (MAX_BODY_BYTES - len(compact))
    assert post(stack, exact).status_code == 202


# ---- failures on our side: 503 with Retry-After, so the sender redelivers ----------------------


@pytest.mark.access_denied_expected("the function is pointed at a table its role does not name, as on AWS")
def test_the_store_unavailable_answers_503_and_the_redelivery_is_taken(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a job waiting for its export, and the job store unavailable (its table is not there)
    job = exporting_job(stack, "adv-503")
    body = completion_body("adv-503")
    with monkeypatch.context() as patched:
        patched.setenv("STATE_TABLE_NAME", "exportpipe-no-such-table")
        # WHEN the completion arrives THEN the sender is told to come back
        resp = post(stack, body)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "60"
    assert resp.json() == {"message": "temporarily unable to process the webhook; retry later"}
    assert DynamoJobStore(stack.client("dynamodb"), stack.table).get(job.job_id).status is JobStatus.EXPORTING
    # AND its redelivery, once the store is back, moves the job
    assert post(stack, body).status_code == 202
    assert DynamoJobStore(stack.client("dynamodb"), stack.table).get(job.job_id).status is JobStatus.READY


@contextlib.contextmanager
def dynamodb_unavailable(how: str) -> Iterator[None]:
    """DynamoDB's endpoint, for the functions' own clients, refusing connections or never answering."""
    with socket.socket() as sock, pytest.MonkeyPatch.context() as patched:
        sock.bind(("127.0.0.1", 0))
        if how == "hangs":
            sock.listen(16)  # the kernel completes the handshake; nothing ever answers
        patched.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{sock.getsockname()[1]}")
        reset_aws_clients()
        try:
            yield
        finally:
            reset_aws_clients()


@pytest.mark.parametrize(
    ("how", "error"), [("refuses", EndpointConnectionError), ("hangs", ReadTimeoutError)]
)
def test_a_store_that_is_unreachable_answers_503_inside_the_function_timeout(
    stack: LocalStack, how: str, error: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    body = completion_body("adv-unreachable")
    with dynamodb_unavailable(how):
        # WHEN a completion arrives while the functions cannot reach DynamoDB
        started = time.monotonic()
        resp = post(stack, body)
        elapsed = time.monotonic() - started
    # THEN the sender is told to come back, before the function's timeout would answer 502 for us
    assert (resp.status_code, resp.headers["Retry-After"]) == (503, "60")
    assert elapsed < stack.functions["WebhookFunction"].timeout_seconds / 2
    # AND the error is logged
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert [r.exc_info[0] for r in errors if r.exc_info] == [error]


def test_a_receiver_that_fails_answers_503(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(StandInReceiver):
        def verify(self, headers: Mapping[str, str], body: bytes) -> Completion | None:
            raise RuntimeError("a bug in the receiver")

    monkeypatch.setitem(registry.SOURCES, "advocate", dataclasses.replace(STAND_IN, webhook=Broken))
    resp = post(stack, completion_body("adv-broken"))
    assert (resp.status_code, resp.headers["Retry-After"]) == (503, "60")


def test_the_webhook_clients_keep_the_shared_config_with_tighter_timeouts(stack: LocalStack) -> None:
    tight = aws_clients(config=STORE_CONFIG)
    assert tight is aws_clients(config=STORE_CONFIG) and tight is not aws_clients()
    config = tight.dynamodb.meta.config
    assert (config.connect_timeout, config.read_timeout, config.retries) == (
        1,
        2,
        {"total_max_attempts": 2, "mode": "standard"},
    )
    assert config.max_pool_connections == BOTO_CONFIG.max_pool_connections
    assert aws_clients().dynamodb.meta.config.read_timeout == BOTO_CONFIG.read_timeout


# ---- the shared JSON reader -------------------------------------------------------------------


def test_parse_json_body_bounds_depth_but_not_brackets_inside_strings() -> None:
    assert parse_json_body(b"[" * 32 + b"]" * 32)
    with pytest.raises(MalformedWebhookError, match="deeper than 32"):
        parse_json_body(b"[" * 33 + b"]" * 33)
    text = json.dumps({"s": "[" * 1000 + '\\"{' * 100, "n": [[1]]}).encode()
    assert parse_json_body(text)["n"] == [[1]]
    assert parse_json_body(b'{"a": [1, {"b": null}]}', max_depth=3) == {"a": [1, {"b": None}]}


@pytest.mark.parametrize(
    "body",
    [b"\xef\xbb\xbf{}", b'{"a": NaN}', b"[Infinity]", b"1" * 5000, b'{"a": 1', b"\xed\xa0\x80"],
    ids=["bom", "nan", "infinity", "huge-integer", "unclosed", "encoded-surrogate"],
)
def test_parse_json_body_refuses_what_rfc_8259_refuses(body: bytes) -> None:
    with pytest.raises(MalformedWebhookError):
        parse_json_body(body)
