"""A source the core has never heard of runs through the unchanged services: the stub of
``tests/stub_source.py`` (JSON or zipped XLSX per definition, a REPLAY recovery, a fast poll policy
of its own), registered for each test, driven through start_export → check_status → copy_result
against the local stack's AWS (moto) with the template's default poll settings (30 s doubling to
900 s), so every wait answered is the stub's own policy. Its webhook receiver, declared on its spec,
reads its connection's secret through the dependencies and keeps its key across invocations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack

from exportpipe.config import load_settings
from exportpipe.models.job import JobStatus
from exportpipe.runtime import Deps, build_deps
from exportpipe.services.check_status import check_status
from exportpipe.services.copy_result import copy_result
from exportpipe.services.start_export import start_export
from exportpipe.sources import registry
from exportpipe.sources.base import Recovery, UpstreamState
from exportpipe.webhooks import Completion, parse_json_body
from functions.webhook.app import lambda_handler as webhook
from tests.conftest import load_event
from tests.stub_source import (
    FAST,
    JSON,
    XLSX,
    StubUpstream,
    registered,
    stub_spec,
    xlsx_bytes,
)

TICK = datetime(2026, 11, 25, 6, 5, tzinfo=UTC)
PENDING, READY, FAILED, EXPIRED = (
    UpstreamState.PENDING,
    UpstreamState.READY,
    UpstreamState.FAILED,
    UpstreamState.EXPIRED,
)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def connection(stack: LocalStack) -> str:
    """The stub's connection: a secret in the stack's Secrets Manager."""
    created = stack.client("secretsmanager").create_secret(
        Name=f"exportpipe/stub-{uuid.uuid4().hex[:8]}", SecretString=json.dumps({"signing_key": "k-stub"})
    )
    return str(created["ARN"])


@pytest.fixture
def upstream() -> Iterator[StubUpstream]:
    yield StubUpstream()


@pytest.fixture
def clock() -> Clock:
    return Clock(TICK + timedelta(minutes=10))


@pytest.fixture
def deps(stack: LocalStack, upstream: StubUpstream, connection: str, clock: Clock) -> Iterator[Deps]:
    """The services' dependencies as a handler builds them, with the template's default poll
    settings and the stub registered (its client talking to ``upstream``) for this test only."""
    defaults = {
        name: str(stack.template.parameters[param]["Default"])
        for name, param in {
            "POLL_BASE_SECONDS": "PollBaseSeconds",
            "POLL_MAX_SECONDS": "PollMaxSeconds",
            "POLL_TIMEOUT_SECONDS": "PollTimeoutSeconds",
            "UPSTREAM_RECREATE_ATTEMPTS": "UpstreamRecreateAttempts",
        }.items()
    }
    settings = load_settings({**os.environ, **defaults, "STUB_SECRET_ARN": connection})
    assert (settings.poll_base_seconds, settings.poll_max_seconds) == (30, 900)
    with registered(stub_spec(upstream)):
        yield dataclasses.replace(build_deps(settings), clock=clock.now)


def _start(deps: Deps, **definition: Any) -> dict[str, Any]:
    payload = {
        "source": "stub",
        "name": f"stub-{uuid.uuid4().hex[:10]}",
        "things": ["clicks"],
        "start": (TICK - timedelta(days=1)).isoformat(),
        **definition,
    }
    started = start_export({"scheduled_time": TICK.isoformat(), "definition": payload}, deps)
    assert started["status"] == "EXPORTING", started
    return started


def _poll(deps: Deps, clock: Clock, job_id: str) -> tuple[dict[str, Any], list[int]]:
    """The workflow's wait loop: check, sleep the answered wait, until the job leaves it."""
    attempt, waits = 0, []
    for _ in range(50):
        answer = check_status({"job_id": job_id, "attempt": attempt}, deps)
        if answer["status"] not in ("EXPORTING", "REQUESTED"):
            return answer, waits
        attempt = answer["attempt"]
        waits.append(answer["wait_seconds"])
        clock.advance(answer["wait_seconds"])
    raise AssertionError("still waiting after 50 checks")


def _manifest(stack: LocalStack, key: str) -> dict[str, Any]:
    body = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    return dict(json.loads(body))


def test_a_stub_source_runs_through_the_services_in_its_format_and_at_its_cadence(
    stack: LocalStack, deps: Deps, upstream: StubUpstream, clock: Clock
) -> None:
    # GIVEN a JSON definition of the stub, whose export runs for four checks, then has two files
    files = [json.dumps([{"id": 1}, {"id": 2}, {"id": 3}]).encode(), b'{"clicks": [{"id": 4}, {"id": 5}]}']
    upstream.script = lambda d: ([PENDING] * 4 + [READY], files)
    started = _start(deps, format="json")
    # WHEN the workflow polls it
    answer, waits = _poll(deps, clock, started["job_id"])
    # THEN check_status answers the stub's own waits (3, 9, then its 20 s cap), not the settings' 30, 60 …
    assert answer["status"] == "READY"
    assert waits == [FAST.backoff(n, deps.settings) for n in (1, 2, 3, 4)] == [3, 9, 20, 20]
    # AND the copy lands its files with its extension and content type, the manifest counting the
    # records with its checker
    delivered = copy_result({"job_id": started["job_id"]}, deps)
    assert delivered["status"] == "DELIVERED", delivered
    manifest = _manifest(stack, delivered["manifest_key"])
    assert manifest["source"] == "stub" and manifest["format"] == "json"
    assert [f["key"].rsplit("/", 1)[1] for f in manifest["files"]] == ["part-00001.json", "part-00002.json"]
    typed = [(f["content_type"], f["records"]) for f in manifest["files"]]
    assert typed == [("application/json", 3), ("application/json", 2)]
    assert manifest["totals"] == {"files": 2, "bytes": sum(map(len, files)), "records": 5}
    head = stack.client("s3").head_object(Bucket=stack.bucket, Key=manifest["files"][0]["key"])
    assert head["ContentType"] == JSON.content_type
    assert upstream.called("create_export") == [started["upstream_id"]] and not upstream.called(
        "replay_export"
    )


def test_each_definition_of_the_stub_chooses_its_format(
    stack: LocalStack, deps: Deps, upstream: StubUpstream, clock: Clock
) -> None:
    # GIVEN a definition of the same source asking for zipped XLSX
    book = xlsx_bytes([["id"], ["1"]])
    upstream.script = lambda d: ([READY], [book])
    started = _start(deps, format="xlsx")
    assert _poll(deps, clock, started["job_id"])[0]["status"] == "READY"
    # WHEN it is copied THEN its file is an .xlsx of the XLSX type, checked whole by the zip checker
    # (its records are not counted)
    delivered = copy_result({"job_id": started["job_id"]}, deps)
    manifest = _manifest(stack, delivered["manifest_key"])
    assert manifest["format"] == "xlsx"
    assert [(f["key"].rsplit("/", 1)[1], f["content_type"], f["records"]) for f in manifest["files"]] == [
        ("part-00001.xlsx", XLSX.content_type, None)
    ]
    # AND a workbook cut short never lands: the copy is interrupted (and retried), not delivered
    upstream.script = lambda d: ([READY], [book[: len(book) // 2]])
    cut = _start(deps, format="xlsx")
    assert _poll(deps, clock, cut["job_id"])[0]["status"] == "READY"
    interrupted = copy_result({"job_id": cut["job_id"]}, deps)
    assert interrupted["status"] == "COPYING" and interrupted["wait_seconds"] == FAST.backoff(
        1, deps.settings
    )


def test_a_failed_upstream_export_is_replayed_not_created_again(
    stack: LocalStack, deps: Deps, upstream: StubUpstream, clock: Clock
) -> None:
    # GIVEN an export that fails upstream on its first run, and succeeds when replayed
    upstream.script = lambda d: ([FAILED], [b"[1, 2]"])
    upstream.replay_script = lambda e: [PENDING, READY]
    started = _start(deps)
    upstream_id = started["upstream_id"]
    # WHEN the workflow finds it FAILED
    first = check_status({"job_id": started["job_id"], "attempt": 0}, deps)
    # THEN the stub's client replays it: the same export, no second create call, the bounded counter
    # used, and the first check of the replayed export is after the stub's first wait
    assert upstream.called("replay_export") == [upstream_id]
    assert upstream.called("create_export") == [upstream_id]
    assert (first["status"], first["attempt"], first["wait_seconds"]) == ("EXPORTING", 0, FAST.first_wait)
    job = deps.store.get(started["job_id"])
    assert (job.upstream_id, job.recreates, job.reexports) == (upstream_id, 1, 0)
    assert job.history[-1].reason == (
        f"upstream export {upstream_id} is failed (0 replays); replayed as {upstream_id} (1/2)"
    )
    # AND the replayed export is polled and delivered
    clock.advance(first["wait_seconds"])
    answer, waits = _poll(deps, clock, started["job_id"])
    assert answer["status"] == "READY" and waits == [3]
    delivered = copy_result({"job_id": started["job_id"]}, deps)
    assert delivered["status"] == "DELIVERED"
    assert _manifest(stack, delivered["manifest_key"])["totals"]["records"] == 2
    assert len(upstream.called("create_export")) == 1


def test_files_that_expired_before_the_copy_are_replayed(
    stack: LocalStack, deps: Deps, upstream: StubUpstream, clock: Clock
) -> None:
    # GIVEN an export whose files are gone when the copy comes (the download refused, the export EXPIRED)
    upstream.script = lambda d: ([READY, EXPIRED], [b"[1]"])
    upstream.replay_script = lambda e: [READY]
    started = _start(deps)
    assert _poll(deps, clock, started["job_id"])[0]["status"] == "READY"
    # WHEN it is copied THEN it is replayed (a re-export), back to EXPORTING after the stub's first wait
    again = copy_result({"job_id": started["job_id"]}, deps)
    assert (again["status"], again["wait_seconds"]) == ("EXPORTING", FAST.first_wait)
    assert upstream.called("replay_export") == [started["upstream_id"]]
    assert deps.store.get(started["job_id"]).reexports == 1
    # AND the replayed export is delivered, created once
    assert _poll(deps, clock, started["job_id"])[0]["status"] == "READY"
    assert copy_result({"job_id": started["job_id"]}, deps)["status"] == "DELIVERED"
    assert len(upstream.called("create_export")) == 1


def test_replays_are_bounded_like_recreates(
    stack: LocalStack, deps: Deps, upstream: StubUpstream, clock: Clock
) -> None:
    # GIVEN an export that fails however often it is replayed
    upstream.script = lambda d: ([FAILED], [])
    upstream.replay_script = lambda e: [FAILED]
    started = _start(deps)
    # WHEN the workflow polls it THEN it is replayed UPSTREAM_RECREATE_ATTEMPTS times, then the job fails
    answer, _ = _poll(deps, clock, started["job_id"])
    job = deps.store.get(started["job_id"])
    assert answer["status"] == "FAILED" and job.status is JobStatus.FAILED
    assert len(upstream.called("replay_export")) == deps.settings.max_recreates == 2
    assert job.reason is not None and job.reason.endswith("gave up after 3 upstream export(s)")


def test_a_source_that_cannot_recover_fails_with_the_reason(
    stack: LocalStack, deps: Deps, upstream: StubUpstream, clock: Clock
) -> None:
    with registered(stub_spec(upstream, recovery=Recovery.NONE)):
        # GIVEN a source that declares no recovery, and an export that fails upstream
        upstream.script = lambda d: ([FAILED], [])
        started = _start(deps)
        # WHEN the workflow finds it FAILED THEN the job ends FAILED, saying the source cannot recover
        answer = check_status({"job_id": started["job_id"], "attempt": 0}, deps)
        job = deps.store.get(started["job_id"])
        assert answer["status"] == "FAILED" and job.status is JobStatus.FAILED
        assert job.reason == (
            f"upstream export {started['upstream_id']} is failed (0 replays); "
            "source 'stub' cannot recover a failed or expired upstream export (recovery: none)"
        )
        assert not upstream.called("replay_export") and len(upstream.called("create_export")) == 1


# ---- a webhook receiver declared on the spec ---------------------------------------------------

SIGNATURE = "X-Stub-Signature"
_keys: dict[str, bytes] = {}  # the receiver's per-process cache, by secret id
key_reads: list[str] = []


class StubReceiver:
    """Verifies an HMAC with its connection's signing key, read once per process."""

    source = "stub"

    def __init__(self, deps: Deps) -> None:
        secret_id = deps.settings.secret_arns[registry.spec_for(self.source).connection_setting]
        if secret_id not in _keys:
            key_reads.append(secret_id)
            _keys[secret_id] = str(deps.read_secret(secret_id)["signing_key"]).encode()
        self.key = _keys[secret_id]

    def verify(self, headers: Mapping[str, str], body: bytes) -> Completion | None:
        expected = hmac.new(self.key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get(SIGNATURE, ""), expected):
            return None
        event = parse_json_body(body)
        return Completion(event_id=event["id"], upstream_id=event["export"], result_urls=event["files"])


def _completion(job_id: str, upstream_id: str, key: bytes) -> dict[str, Any]:
    body = json.dumps({"id": uuid.uuid4().hex, "export": upstream_id, "files": [f"https://x/{job_id}"]})
    event = load_event("webhook_advocate", body=body)
    event["path"] = event["resource"] = "/webhooks/stub"
    event["headers"] = {
        "Content-Type": "application/json",
        SIGNATURE: hmac.new(key, body.encode(), hashlib.sha256).hexdigest(),
    }
    return event


def test_the_webhook_receiver_on_the_spec_reads_its_secret_once_per_process(
    stack: LocalStack,
    deps: Deps,
    upstream: StubUpstream,
    connection: str,
    context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the stub declaring a webhook receiver, and two jobs waiting for their exports
    monkeypatch.setenv("STUB_SECRET_ARN", connection)  # the function's environment names the connection
    _keys.clear()
    key_reads.clear()
    upstream.script = lambda d: ([PENDING], [b"[]"])
    jobs = [_start(deps), _start(deps)]
    with registered(stub_spec(upstream, webhook=StubReceiver)):
        # WHEN their completions arrive, signed with the connection's key
        answers = [
            webhook(_completion(j["job_id"], j["upstream_id"], b"k-stub"), context("WebhookFunction"))
            for j in jobs
        ]
        forged = webhook(_completion(jobs[0]["job_id"], "x", b"not the key"), context("WebhookFunction"))
    # THEN both jobs are READY, the key read from its secret once for both (the factory's cache)
    assert [a["statusCode"] for a in answers] == [202, 202] and forged["statusCode"] == 401
    assert [deps.store.get(j["job_id"]).status for j in jobs] == [JobStatus.READY, JobStatus.READY]
    assert key_reads == [connection]
    # AND without a receiver on its spec, the source answers 404 as before
    gone = webhook(_completion(jobs[0]["job_id"], "x", b"k-stub"), context("WebhookFunction"))
    assert (gone["statusCode"], json.loads(gone["body"])) == (
        404,
        {"message": "no webhook receiver for source 'stub'"},
    )
