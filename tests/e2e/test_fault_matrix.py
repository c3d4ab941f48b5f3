"""The fault matrix (issue 12): every scenario through the local stack, then the same invariants.

Each scenario runs the real pipeline (schedules or start_export invoked through the Lambda bridge, the
template's state machine executed by moto, the Pardot sandbox upstream, downloads redirected to its
signed storage URLs on another host name) with one fault injected, waits until every job it started
has ended and its workflow is over, and is then judged only by what the systems hold, never by what
the code says it did:

- S3: each delivered job has exactly one manifest; every file it lists is there with its bytes and
  SHA-256 and its record count; the rows of all its files equal the sandbox's ground truth for the
  job's window (``tests.conftest.ground_truth``); nothing else is in its folder. A job that ended
  undelivered has nothing left in its folder. No multipart upload of the scenario is left open.
- DynamoDB (the table scanned): every job ended DELIVERED, or FAILED / EXPIRED / CANCELED with a
  reason; a delivered window moved its definition's watermark and overlaps no other delivered window.
- The bus (``stack.consumer_events``): one ``Export Delivered`` per delivered job, naming its
  manifest, and no ``Export Failed`` for it.
- The sandbox's request log: ``Authorization`` and ``Pardot-Business-Unit-Id`` reached only the API
  host (``127.0.0.1``), never the storage host (``localhost``, the same server under another name).
- Logs (the handlers' Powertools JSON lines as they leave the process, captured at the logger's
  stream, and WARNING+ records of other loggers on the handlers' threads, e.g. urllib3's, as
  Lambda's root handler ships them), job records, events and what the functions answered Step
  Functions (the executions' histories, errors included): no signed query string (``expires=`` /
  ``sig=``), no password, client secret or access token.

Violations are counted in four counters:

- **lost**: something that should be there is not: a job that never ended or ended without a
  reason, a delivered job without its manifest, a listed file missing, ground-truth rows missing, a
  delivered job without its ``Export Delivered`` event.
- **duplicated**: something is there twice: rows repeated, two delivered jobs over one stretch of
  time, a watermark left behind a delivery (the next tick exports it again), more than one
  ``Export Delivered`` event, or an ``Export Failed`` event for a delivered job.
- **partial**: something is there that is not a whole delivery: a listed file with other bytes, hash
  or record count, rows that differ from the ground truth, unlisted objects beside a manifest,
  objects of a job that ended undelivered, an open multipart upload.
- **leaked**: a secret outside where it belongs: upstream credentials sent to another host, or a
  signed query string or credential in a log line, a job record, an event or an execution history.

The module prints one line at the end of the run (``pytest_terminal_summary`` in tests/conftest.py),
``fault matrix: N scenarios, 0 lost, 0 duplicated, 0 partial, 0 leaked``, and each scenario's test
fails on any non-zero counter (or on a check of its own, e.g. that a copy resumed rather than
restarted). The last tests plant a defect (one guarantee monkeypatched away) and show the counters
catch it.

The scenarios (every download goes through the signed storage URL):

  ======================== ==========================================================================
  baseline                 no fault (the control)
  upstream-5xx-burst       a 502 on the create (the job waits REQUESTED, its workflow creates it),
                           two 503s on the download
  429-retry-after          a 429 with ``Retry-After: 5`` on the first read: the wait must be the
                           workflow's (no Lambda sleeps it), and honoured
  reset-mid-download       the 2nd file's connection reset (RST) after 2000 bytes: only it is fetched again
  reset-before-response    every storage connection reset before an answer: the job fails, its
                           reason quoting the error
  short-body               the 2nd file stops short of its Content-Length once: only it is fetched again
  slow-past-timeout        one storage answer held past the client's read timeout
  s3-error-mid-multipart   two files over the 5 MiB part; S3 refuses the 2nd file's 2nd part
  copy-lambda-timeout      the copy times out (13 s) mid-file during a slow download; Step Functions
                           retries; the zombie's next upload is held until the retry delivered
  two-copies-race          a second copy invoked while the first is held at its first upload
  recorder-vs-commit       the failure recorder runs while the copy is held before its manifest
  recorder-before-commit   the failure recorder fails the job while the copy is held before file 2
  schedule-fired-twice     the template's schedule fired twice at once, then again after the delivery
  ddb-conditional-conflict two starts of one definition (different ticks) racing at the conditional write
  eventbridge-put-fails    the ``Export Delivered`` put answers FailedEntryCount 1, once
  expires-before-copy      the export expires while its copy is about to start: re-exported
  state-goes-backwards     Complete, then Processing on the next read (downloads refused meanwhile)
  ======================== ==========================================================================

For the module, two gaps of moto (which the local stack runs) are closed where they would make a
scenario test the emulator instead of the pipeline: UploadPart of an aborted upload answers S3's
404 ``NoSuchUpload`` (moto: a 500 that botocore retries for seconds), and moto's request-id stamping
no longer cuts a DynamoDB item holding two XML error texts. moto's DynamoDB takes no lock, so racing
writes are let through one at a time, as DynamoDB applies them (``racing_creates``).

Adding a scenario is one decorated function: ``@scenario("name")`` on ``def _(run: Run) -> None``
that arms its fault and starts its export(s) through ``run`` (``run.definition()``, ``run.start()``);
everything else — waiting, invariants, counters, the summary line — is shared. Later sources add
theirs the same way.

Sandbox knobs used here (see the sandboxes' docstrings): ``fail_requests(..., headers=)``,
``reset_requests``, ``truncate_requests``, ``delay_requests``, ``trickle_requests`` (base class);
``expire_export``, ``go_back_once`` (Pardot); ``LocalStack.set_function_timeout`` (the bridge answers
``Sandbox.Timedout`` while the handler runs on).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox
from moto.core.responses import BaseResponse
from moto.s3.exceptions import NoSuchUpload
from moto.s3.models import S3Backend
from moto.utilities.aws_headers import gen_amzn_requestid_long

from exportpipe.adapters.aws import aws_clients
from exportpipe.http import IN_CALL_WAIT_LIMIT
from exportpipe.models.job import TERMINAL, Job, JobStatus
from exportpipe.observability import logger
from tests.conftest import FAULT_MATRIX, PARDOT_KNOBS, ground_truth, load_event

pytestmark = pytest.mark.e2e

TICK = "2026-11-25T06:05:00Z"  # the sample event's scheduled time: a window of about 30 hours
SCHEDULE = "StartExportFunctionPardotVisitorActivity"  # the template's own schedule
HTTP_TIMEOUT = 3  # UpstreamTimeoutSeconds for this stack: a slow answer can outlast it quickly
# The local stack's short waits, the longest one second: retries and re-polls come at once.
PARAMETERS = {"UpstreamTimeoutSeconds": str(HTTP_TIMEOUT), "PollMaxSeconds": "1"}
CREDENTIAL_HEADERS = ("Authorization", "Pardot-Business-Unit-Id")
SIGNED = re.compile(r"\b(?:sig|expires)=[\w%-]{3,}")
SETTLE_SECONDS = 60.0
HANDLER_THREAD = "lambda-"  # the bridge runs each invocation on a thread named lambda-<logical id>
MIB = 1024 * 1024
# A copy's timeout for the Lambda-timeout scenario: the Pardot client keeps 10 s of an invocation
# back to record what happened (DEADLINE_MARGIN), so a copy needs a little more than that to download.
COPY_TIMEOUT = 13

_de = TypeDeserializer()


# ---- captured logs ----------------------------------------------------------------------------


class LogTap:
    """Every log line the handlers write, as it leaves the process.

    The Powertools logger's stream is wrapped (so its formatter, and any scrubbing it does, has
    already run); other loggers' WARNING+ records (urllib3's retries, botocore's) are formatted as
    Lambda's root handler would ship them. Lines are kept in order; :meth:`since` reads from a mark.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lines: list[str] = []
        self._partial = ""
        self._handler: logging.StreamHandler[Any] | None = None
        self._stream: Any = None
        self._root = _RootTap(self)

    def write(self, text: str) -> int:
        with self._lock:
            pieces = (self._partial + text).split("\n")
            self._partial = pieces.pop()
            self.lines += [p for p in pieces if p]
        if self._stream is not None:
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        if self._stream is not None:
            self._stream.flush()

    def add(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def since(self, mark: int) -> list[str]:
        with self._lock:
            return self.lines[mark:]

    def install(self) -> None:
        handler = logger.registered_handler
        assert isinstance(handler, logging.StreamHandler), handler
        self._handler = handler
        self._stream = handler.stream
        handler.setStream(self)  # type: ignore[arg-type]
        logging.getLogger().addHandler(self._root)

    def uninstall(self) -> None:
        logging.getLogger().removeHandler(self._root)
        if self._handler is not None:
            self._handler.setStream(self._stream)


class _RootTap(logging.Handler):
    def __init__(self, tap: LogTap) -> None:
        super().__init__(level=logging.WARNING)
        self._tap = tap
        self.setFormatter(logging.Formatter("[%(levelname)s]\t%(name)s\t%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(logger.service):  # captured at its own stream, formatted
            return
        if not record.threadName or not record.threadName.startswith(HANDLER_THREAD):
            return  # moto's, the sandbox's: not a function's logs
        self._tap.add(self.format(record))


# ---- one scenario's run -----------------------------------------------------------------------


@dataclass
class Run:
    """What a scenario works with; it registers the definitions (hence the jobs) it is judged on."""

    case: str
    stack: LocalStack
    pardot: PardotSandbox
    matrix: Matrix
    names: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    log_mark: int = 0
    request_mark: int = 0
    invocation_mark: int = 0

    def definition(self, tag: str = "", **fields: Any) -> dict[str, Any]:
        """The sample event's visitor-activity definition under a name of this scenario's."""
        name = f"fm-{self.case}" + (f"-{tag}" if tag else "")
        self.names.add(name)
        base: dict[str, Any] = load_event("start_export_schedule")["definition"]
        return {**base, "name": name, **fields}

    def big_definition(self, tag: str = "") -> dict[str, Any]:
        """Prospects, every field: with the module's record spacing, hours of them make files of MiBs."""
        return self.definition(
            tag or "big", object="prospect", procedure="filter_by_created_at", fields=None, arguments={}
        )

    def start(self, definition: dict[str, Any], **event: Any) -> dict[str, Any]:
        """Invoke start_export (as a schedule would, at ``TICK`` unless the event says otherwise)."""
        payload = {"definition": definition, **(event or {"scheduled_time": TICK})}
        return self.stack.invoke("StartExportFunction", payload)

    def job(self, job_id: str) -> Job:
        return self.matrix.store_get(job_id)

    def wait_job(self, job_id: str, done: Callable[[Job], bool], timeout: float = 30.0) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if done(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"{job_id} stayed {job.status} for {timeout} s")
            time.sleep(0.1)

    def check(self, ok: bool, message: str) -> None:
        """A scenario's own expectation (beyond the invariants): recorded, and failed at the end."""
        if not ok:
            self.failures.append(message)

    def requests(self) -> list[Any]:
        return self.pardot.request_log[self.request_mark :]

    def saw(self, disruption: str, status: int | None = None) -> bool:
        """Whether the sandbox answered a request of this run with that misbehaviour (or status)."""
        return any(
            (e.disruption == disruption if disruption else True) and (status is None or e.status == status)
            for e in self.requests()
        )

    def invocations(self) -> list[Any]:
        return self.stack.bridge.invocations[self.invocation_mark :]


Scenario = Callable[[Run], None]


@dataclass(frozen=True)
class Case:
    name: str
    run: Scenario
    xfail: str | None = None


CASES: list[Case] = []


def scenario(name: str, *, xfail: str | None = None) -> Callable[[Scenario], Scenario]:
    """Register a scenario of the matrix. ``xfail``: the pending fix it waits for (strict: the mark
    must go once the fix is merged)."""

    def register(fn: Scenario) -> Scenario:
        assert name not in {c.name for c in CASES}, name
        CASES.append(Case(name, fn, xfail))
        return fn

    return register


# ---- the invariants ---------------------------------------------------------------------------


@dataclass
class Tally:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("lost", "duplicated", "partial", "leaked")}

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def report(self) -> str:
        lines = [f"{k}: {v}" for k, v in self.counts().items()]
        for kind in ("lost", "duplicated", "partial", "leaked"):
            lines += [f"  {kind}: {detail}" for detail in getattr(self, kind)]
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _row_key(row: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(row.items()))


class Matrix:
    """The module's shared stack, log tap and results; judges each scenario's run."""

    def __init__(self, stack: LocalStack, pardot: PardotSandbox, tap: LogTap) -> None:
        self.stack = stack
        self.pardot = pardot
        self.tap = tap
        self.s3 = stack.client("s3")
        self.ddb = stack.client("dynamodb")
        self.sfn = stack.client("stepfunctions")
        self.results: dict[str, tuple[Tally, str | None]] = {}
        self.api_host = urlsplit(pardot.base_url or "").hostname
        self._seen_uploads: set[str] = set()
        self.events: list[dict[str, Any]] = []  # everything the consumer queue received, in order

    def drain(self, wait_seconds: float = 0.0) -> list[dict[str, Any]]:
        fresh = list(self.stack.consumer_events(wait_seconds=wait_seconds))
        self.events += fresh
        return fresh

    # -- running ---------------------------------------------------------------------------------

    def begin(self, case: str) -> Run:
        self.drain()  # whatever earlier runs left on the bus is theirs
        return Run(
            case=case,
            stack=self.stack,
            pardot=self.pardot,
            matrix=self,
            log_mark=self.tap.mark(),
            request_mark=len(self.pardot.request_log),
            invocation_mark=len(self.stack.bridge.invocations),
        )

    def store_get(self, job_id: str) -> Job:
        item = self.ddb.get_item(
            TableName=self.stack.table, Key={"pk": {"S": f"JOB#{job_id}"}}, ConsistentRead=True
        )["Item"]
        return Job.model_validate({k: _de.deserialize(v) for k, v in item.items()})

    def _items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in self.ddb.get_paginator("scan").paginate(TableName=self.stack.table, ConsistentRead=True):
            items += [_plain({k: _de.deserialize(v) for k, v in item.items()}) for item in page["Items"]]
        return items

    def _jobs(self, run: Run) -> list[Job]:
        return [
            Job.model_validate(item)
            for item in self._items()
            if str(item["pk"]).startswith("JOB#") and item.get("definition_name") in run.names
        ]

    def _running(self, jobs: list[Job]) -> list[str]:
        ids = {j.job_id for j in jobs}
        running = self.sfn.list_executions(
            stateMachineArn=self.stack.state_machine_arn, statusFilter="RUNNING"
        )
        return [e["name"] for e in running["executions"] if e["name"].split("-r")[0] in ids]

    def settle(self, run: Run) -> list[Job]:
        """Wait until every job of the run has ended and no workflow of theirs runs, nor a timed-out
        handler; then the jobs as recorded."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            jobs = self._jobs(run)
            if all(j.status in TERMINAL for j in jobs) and not self._running(jobs):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.stack.bridge.join_timed_out(timeout=SETTLE_SECONDS)
        return self._jobs(run)

    # -- judging ---------------------------------------------------------------------------------

    def observe(self, run: Run) -> Tally:
        jobs = self.settle(run)
        tally = Tally()
        fresh = self.drain(wait_seconds=0.1)  # moto delivers bus -> queue within put_events
        ids = {j.job_id for j in jobs}
        events = [e for e in self.events if e.get("detail", {}).get("job_id") in ids]
        self._judge_jobs(run, jobs, events, tally)
        self._judge_windows(jobs, tally)
        self._judge_uploads(jobs, tally)
        self._judge_leaks(run, jobs, [*fresh, *(e for e in events if e not in fresh)], tally)
        return tally

    def _folder_keys(self, job: Job) -> dict[str, int]:
        prefix = f"exports/source={job.source}/dataset={job.dataset}/"
        keys: dict[str, int] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.stack.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                if f"/export={job.job_id}/" in obj["Key"]:
                    keys[obj["Key"]] = int(obj["Size"])
        return keys

    def _judge_jobs(self, run: Run, jobs: list[Job], events: list[dict[str, Any]], tally: Tally) -> None:
        for job in jobs:
            mine = [e for e in events if e.get("detail", {}).get("job_id") == job.job_id]
            delivered_events = [e for e in mine if e["detail-type"] == "Export Delivered"]
            failed_events = [e for e in mine if e["detail-type"] == "Export Failed"]
            keys = self._folder_keys(job)
            if job.status not in TERMINAL:
                tally.lost.append(f"{job.job_id} never ended: {job.status.value}")
                continue
            if job.status is not JobStatus.DELIVERED:
                if not (job.reason or "").strip():
                    tally.lost.append(f"{job.job_id} ended {job.status.value} without a reason")
                if keys:
                    tally.partial.append(
                        f"{job.job_id} ended {job.status.value} with objects left: {sorted(keys)}"
                    )
                continue
            manifests = [k for k in keys if k.endswith("/_manifest.json")]
            if len(manifests) > 1:
                tally.duplicated.append(f"{job.job_id}: {len(manifests)} manifests")
            if not job.manifest_key or job.manifest_key not in keys:
                tally.lost.append(f"{job.job_id} is DELIVERED without its manifest ({job.manifest_key})")
                continue
            self._judge_delivery(job, keys, tally)
            if not delivered_events:
                tally.lost.append(f"{job.job_id}: no Export Delivered event")
            elif len(delivered_events) > 1:
                tally.duplicated.append(f"{job.job_id}: {len(delivered_events)} Export Delivered events")
            elif (
                delivered_events[0]["detail"].get("manifest_uri")
                != f"s3://{self.stack.bucket}/{job.manifest_key}"
            ):
                tally.lost.append(f"{job.job_id}: Export Delivered names {delivered_events[0]['detail']}")
            if failed_events:
                tally.duplicated.append(f"{job.job_id} is DELIVERED and was announced as failed too")

    def _judge_delivery(self, job: Job, keys: dict[str, int], tally: Tally) -> None:
        assert job.manifest_key is not None
        body = self.s3.get_object(Bucket=self.stack.bucket, Key=job.manifest_key)["Body"].read()
        manifest = json.loads(body)
        if manifest.get("job_id") != job.job_id or manifest.get("upstream_id") != job.upstream_id:
            tally.partial.append(
                f"{job.job_id}: the manifest is another delivery's: {manifest.get('job_id')}"
            )
        listed = {f["key"] for f in manifest["files"]}
        stray = sorted(set(keys) - listed - {job.manifest_key})
        if stray:
            tally.partial.append(f"{job.job_id}: objects no manifest lists: {stray}")
        rows: list[dict[str, str]] = []
        for f in manifest["files"]:
            if f["key"] not in keys:
                tally.lost.append(f"{job.job_id}: {f['key']} is listed but absent")
                continue
            data = self.s3.get_object(Bucket=self.stack.bucket, Key=f["key"])["Body"].read()
            if len(data) != f["bytes"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
                tally.partial.append(f"{job.job_id}: {f['key']} holds {len(data)} bytes, not the listed ones")
            parsed = list(csv.DictReader(io.StringIO(data.decode("utf-8", "replace"), newline="")))
            if f.get("records") is not None and len(parsed) != f["records"]:
                tally.partial.append(
                    f"{job.job_id}: {f['key']} has {len(parsed)} records, lists {f['records']}"
                )
            rows += parsed
        truth = Counter(_row_key(r) for r in ground_truth(self.pardot, job))
        landed = Counter(_row_key(r) for r in rows)
        missing = truth - landed
        extra = landed - truth
        if missing:
            tally.lost.append(f"{job.job_id}: {sum(missing.values())} of {sum(truth.values())} rows missing")
        repeated = sum(n for row, n in extra.items() if row in truth)
        if repeated:
            tally.duplicated.append(f"{job.job_id}: {repeated} rows landed more than once")
        foreign = sum(n for row, n in extra.items() if row not in truth)
        if foreign:
            tally.partial.append(f"{job.job_id}: {foreign} rows that are not the window's (cut or mangled)")

    def _judge_windows(self, jobs: list[Job], tally: Tally) -> None:
        by_definition: dict[str, list[Job]] = {}
        for job in jobs:
            if job.status is JobStatus.DELIVERED:
                by_definition.setdefault(job.definition_name, []).append(job)
        for name, delivered in by_definition.items():
            delivered.sort(key=lambda j: j.window.start)
            for a, b in itertools.pairwise(delivered):
                if b.window.start < a.window.end:
                    tally.duplicated.append(f"{a.job_id} and {b.job_id} both delivered {b.window.start}")
            moving = [j for j in delivered if j.moves_watermark]
            if moving:
                item = self.ddb.get_item(
                    TableName=self.stack.table, Key={"pk": {"S": f"DEF#{name}"}}, ConsistentRead=True
                ).get("Item", {})
                mark = item.get("watermark", {}).get("S")
                last = max(j.window.end for j in moving)
                if mark is None or datetime.fromisoformat(mark) < last:
                    tally.duplicated.append(f"{name}: watermark {mark} is behind the delivery up to {last}")

    def _judge_uploads(self, jobs: list[Job], tally: Tally) -> None:
        ids = {j.job_id for j in jobs}
        uploads = self.s3.list_multipart_uploads(Bucket=self.stack.bucket).get("Uploads", [])
        for upload in uploads:
            if upload["UploadId"] in self._seen_uploads:
                continue
            owner = next((i for i in ids if f"/export={i}/" in upload["Key"]), None)
            if owner is not None or not ids:
                self._seen_uploads.add(upload["UploadId"])
                tally.partial.append(f"open multipart upload of {upload['Key']}")

    def _secrets(self) -> list[str]:
        p = self.pardot
        return [p.password, p.client_secret, f"{p.org_id[:15]}!"]

    def _scan_text(self, where: str, text: str, tally: Tally) -> None:
        found = SIGNED.search(text)
        if found:
            tally.leaked.append(
                f"signed query string in {where}: …{text[max(0, found.start() - 60) : found.end()]}"
            )
        for secret in self._secrets():
            if secret in text:
                tally.leaked.append(f"a credential ({secret[:6]}…) in {where}")

    def _judge_leaks(self, run: Run, jobs: list[Job], events: list[dict[str, Any]], tally: Tally) -> None:
        for entry in run.requests():
            host = urlsplit(f"http://{entry.host}").hostname
            sent = [h for h in CREDENTIAL_HEADERS if h in entry.headers]
            if sent and host != self.api_host:
                tally.leaked.append(f"{', '.join(sent)} sent to {host} ({entry.method} {entry.path})")
        for line in run.matrix.tap.since(run.log_mark):
            self._scan_text("a log line", line, tally)
        ids = {j.job_id for j in jobs}
        for item in self._items():
            pk = str(item["pk"])
            if pk.removeprefix("JOB#") in ids or pk.removeprefix("DEF#") in run.names:
                self._scan_text(f"the record {pk}", json.dumps(item, default=str), tally)
        for event in events:
            self._scan_text(f"the event {event.get('detail-type')}", json.dumps(event), tally)
        for arn in self._executions(ids):  # what the functions answered Step Functions (errors too)
            history = self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
            self._scan_text(
                f"the execution history of {arn.rsplit(':', 1)[1]}", json.dumps(history, default=str), tally
            )

    def _executions(self, ids: set[str]) -> list[str]:
        found: list[str] = []
        for page in self.sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.stack.state_machine_arn
        ):
            found += [e["executionArn"] for e in page["executions"] if e["name"].split("-r")[0] in ids]
        return found


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> Iterator[Matrix]:
    sandbox = PardotSandbox(
        pickup_seconds=0.0,
        processing_seconds=0.0,
        seed=12,
        redirect_downloads=True,  # every download crosses to the storage host with a signed URL
        record_spacing_seconds={"prospect": 2},  # hours of prospects make files bigger than a part
    )
    tap = LogTap()
    with (
        pytest.MonkeyPatch.context() as patch,
        LocalStack(sandboxes={"pardot": sandbox}, parameters=PARAMETERS) as stack,
    ):
        patch.setattr(S3Backend, "upload_part", _upload_part_as_s3_answers(S3Backend.upload_part))
        patch.setattr(BaseResponse, "_enrich_response", staticmethod(_enrich_response_in_place))
        tap.install()
        try:
            found = Matrix(stack, sandbox, tap)
            request.config.stash[FAULT_MATRIX] = lambda: _summary(found)
            yield found
        finally:
            tap.uninstall()


def _upload_part_as_s3_answers(upload_part: Callable[..., Any]) -> Callable[..., Any]:
    """S3 answers a part of an aborted (or unknown) upload 404 NoSuchUpload; moto's server answers
    500 (a KeyError), which botocore retries for seconds. A copy that timed out and goes on after the
    next one aborted its upload meets exactly this."""

    def checked(self: S3Backend, bucket_name: str, multipart_id: str, *args: Any, **kwargs: Any) -> Any:
        if multipart_id not in self.get_bucket(bucket_name).multiparts:
            raise NoSuchUpload(upload_id=multipart_id)
        return upload_part(self, bucket_name, multipart_id, *args, **kwargs)

    return checked


def _enrich_response_in_place(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
    """moto stamps its request id into ``<RequestId>…</RequestId>`` of every response body with a
    greedy pattern: a DynamoDB item holding two such XML error texts (a job's reason and its
    history, quoting a storage host's error) comes back with everything between them cut out. The
    same stamping, inside one element only."""
    if "status" in headers:
        headers["status"] = str(headers["status"])
    request_id = gen_amzn_requestid_long(headers)
    if isinstance(body, str | bytes):
        pattern = r"(?<=<RequestId>)[^<]*(?=</RequestId>)"
        body = (
            re.sub(pattern, request_id, body)
            if isinstance(body, str)
            else re.sub(pattern.encode(), request_id.encode(), body)
        )
    return headers, body


@pytest.fixture
def run_case(matrix: Matrix) -> Iterator[Callable[[Case], tuple[Run, Tally]]]:
    """Run one case on a sandbox whose knobs and faults are as the module set them."""
    sandbox = matrix.pardot
    saved = {name: getattr(sandbox, name) for name in PARDOT_KNOBS}

    def execute(case: Case) -> tuple[Run, Tally]:
        run = matrix.begin(case.name)
        case.run(run)
        return run, matrix.observe(run)

    try:
        yield execute
    finally:
        for name, value in saved.items():
            setattr(sandbox, name, value)
        sandbox.clear_faults()


def _summary(m: Matrix) -> str:
    totals = Counter[str]()
    for tally, _ in m.results.values():
        totals.update(tally.counts())
    line = (
        f"fault matrix: {len(m.results)} scenarios, {totals['lost']} lost, "
        f"{totals['duplicated']} duplicated, {totals['partial']} partial, {totals['leaked']} leaked"
    )
    pending = sorted(name for name, (_, xfail) in m.results.items() if xfail)
    if pending:
        line += f" ({len(pending)} marked xfail, awaiting fixes: {', '.join(pending)})"
    return line


# ---- helpers for scenarios ----------------------------------------------------------------------


def _service(client: Any) -> str:
    return str(client.meta.service_model.service_id.hyphenize())


@contextmanager
def hooked(client: Any, event: str, handler: Callable[..., Any]) -> Iterator[None]:
    """A botocore hook on the handlers' shared client (``event`` without the service: ``before-call.X``)."""
    name = f"{event.split('.')[0]}.{_service(client)}.{event.split('.', 1)[1]}"
    client.meta.events.register(name, handler)
    try:
        yield
    finally:
        client.meta.events.unregister(name, handler)


class Pause:
    """Holds the first ``operation`` call on ``client`` whose parameters match, until :meth:`go`."""

    def __init__(self, client: Any, operation: str, match: Callable[[dict[str, Any]], bool]) -> None:
        self.client, self.operation, self.match = client, operation, match
        self.reached, self._go = threading.Event(), threading.Event()
        self._used = threading.Lock()
        self.skip_first = False  # let the first matching call through, hold the second

    def _hook(self, params: dict[str, Any], **_: Any) -> None:
        if not self.match(params):
            return
        if self.skip_first:
            self.skip_first = False
            return
        if self._used.acquire(blocking=False):
            self.reached.set()
            assert self._go.wait(90), "the paused call was never released"

    def go(self) -> None:
        self._go.set()

    @contextmanager
    def armed(self) -> Iterator[Pause]:
        with hooked(self.client, f"before-parameter-build.{self.operation}", self._hook):
            try:
                yield self
            finally:
                self._go.set()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:  # the scenario looks at it
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def nth_download(n: int) -> Callable[[str], bool]:
    """Matches the downloads (from the storage host) of the n-th distinct file asked for."""
    seen: list[str] = []

    def match(path: str) -> bool:
        if not path.startswith("/storage/"):
            return False
        if path not in seen:
            seen.append(path)
        return seen.index(path) == n - 1

    return match


def downloads(run: Run) -> Counter[str]:
    return Counter(e.path for e in run.requests() if e.path.startswith("/storage/") and e.status == 200)


def _failure_event(job_id: str) -> dict[str, Any]:
    """What the workflow's RecordFailure state sends check_status (a copy that failed)."""
    return {**load_event("check_status_failure"), "job_id": job_id}


def _key_of(job_id: str, name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda params: str(params.get("Key", "")).endswith(f"/export={job_id}/{name}")


# ---- the scenarios ------------------------------------------------------------------------------


@scenario("baseline")
def _baseline(run: Run) -> None:
    run.start(run.definition())


@scenario("upstream-5xx-burst")
def _upstream_5xx_burst(run: Run) -> None:
    # a load balancer's 502 on the create (the job waits in REQUESTED, its workflow creates it), and
    # two 503s on the storage download (retried in the call)
    run.pardot.fail_requests(502, times=1, path_prefix="/api/")
    run.pardot.fail_requests(503, times=2, path_prefix="/storage/")
    started = run.start(run.definition())
    run.check(started["status"] == "REQUESTED", f"the refused create left {started}")
    run.matrix.settle(run)
    run.check(run.saw("", 502) and run.saw("", 503), "the burst did not happen")


@scenario("429-retry-after")
def _rate_limited_with_retry_after(run: Run) -> None:
    wait = int(IN_CALL_WAIT_LIMIT) + 3
    run.pardot.fail_requests(429, times=1, path_prefix="/api/v5/exports/", headers={"Retry-After": str(wait)})
    # longer than a call may wait in the Lambda (IN_CALL_WAIT_LIMIT): the workflow must wait it
    run.start(run.definition())
    run.matrix.settle(run)
    calls = [e for e in run.requests() if e.path.startswith("/api/")]
    refused = next(i for i, e in enumerate(calls) if e.status == 429)
    later = calls[refused + 1] if refused + 1 < len(calls) else None
    run.check(
        later is not None and later.received - calls[refused].received >= wait - 0.1,
        "the next API call did not wait for the Retry-After",
    )
    slept = [i for i in run.invocations() if i.seconds >= IN_CALL_WAIT_LIMIT + 0.5]
    run.check(
        not slept, f"a Lambda slept the Retry-After in-process: {[(i.function, i.seconds) for i in slept]}"
    )


@scenario("reset-mid-download")
def _connection_reset_mid_download(run: Run) -> None:
    run.pardot.file_count = 2
    run.pardot.reset_requests(after_bytes=2000, match=nth_download(2))
    run.start(run.definition())
    run.matrix.settle(run)
    run.check(run.saw("reset"), "no download was reset")
    got = downloads(run)
    run.check(sorted(got.values()) == [1, 2], f"the copy did not resume with the broken file only: {got}")


@scenario("reset-before-response")
def _connection_reset_before_every_response(run: Run) -> None:
    # the storage host resets every connection before answering: urllib3 retries, the copy is tried
    # again after growing waits, then the job fails with the error as its reason
    run.pardot.reset_requests(times=100, path_prefix="/storage/", before_response=True)
    started = run.start(run.definition())
    run.matrix.settle(run)
    run.check(run.saw("reset", 0), "no connection was reset")
    run.check(run.job(started["job_id"]).status is JobStatus.FAILED, "the job did not fail")


@scenario("short-body")
def _body_shorter_than_content_length(run: Run) -> None:
    run.pardot.file_count = 2
    run.pardot.truncate_requests(after_bytes=1500, match=nth_download(2))
    run.start(run.definition())
    run.matrix.settle(run)
    run.check(run.saw("truncate"), "no download was cut short")
    got = downloads(run)
    run.check(sorted(got.values()) == [1, 2], f"the copy did not resume with the short file only: {got}")


@scenario("close-delimited-truncation")
def _close_delimited_download_cut_halfway(run: Run) -> None:
    # no Content-Length, no chunking: the clean close looks like the end; only the CSV shows the cut
    run.pardot.download_framing = "close"
    run.pardot.file_count = 2
    run.pardot.truncate_requests(after_bytes=1500, match=nth_download(2))
    run.start(run.definition())
    run.matrix.settle(run)
    run.check(run.saw("truncate"), "no download was cut short")
    got = downloads(run)
    run.check(sorted(got.values()) == [1, 2], f"the copy did not resume with the cut file only: {got}")


@scenario("slow-past-timeout")
def _slow_upstream_past_the_client_timeout(run: Run) -> None:
    run.pardot.delay_requests(HTTP_TIMEOUT + 1.5, times=1, path_prefix="/storage/")
    run.start(run.definition())
    run.matrix.settle(run)
    # the slow answer is logged once it was sent, after the client gave up on it and went on
    deadline = time.monotonic() + HTTP_TIMEOUT + 5
    while not run.saw("delay") and time.monotonic() < deadline:
        time.sleep(0.1)
    run.check(run.saw("delay"), "no answer was slow")


@scenario("s3-error-mid-multipart")
def _s3_error_in_a_multipart_upload(run: Run) -> None:
    # two files larger than the stack's 5 MiB part: the first lands, the second's part 2 is refused
    run.pardot.file_count = 2
    run.pardot.record_fill = 0.9
    refused = threading.Lock()

    def refuse(params: dict[str, Any], **_: Any) -> None:
        second = str(params.get("Key", "")).endswith("/part-00002.csv") and params.get("PartNumber") == 2
        if second and refused.acquire(blocking=False):
            raise ClientError(
                {"Error": {"Code": "InternalError", "Message": "We encountered an internal error."}},
                "UploadPart",
            )

    with hooked(aws_clients().s3, "before-parameter-build.UploadPart", refuse):
        started = run.start(
            run.big_definition(), window={"start": "2026-11-24T00:00:00Z", "end": "2026-11-24T10:00:00Z"}
        )
        run.matrix.settle(run)
    job = run.job(started["job_id"])
    run.check(refused.locked(), "no multipart upload reached its second part")
    run.check(job.status is JobStatus.FAILED, f"the job ended {job.status}")


@scenario("copy-lambda-timeout")
def _copy_lambda_times_out_mid_file(run: Run) -> None:
    # One file of ~9 MB: 5.5 MiB come at once (its first part is uploaded), then the rest trickles for
    # longer than what is left of the copy's 13 s: Lambda answers Sandbox.Timedout, Step Functions
    # retries, and the retry takes the job over once the first invocation's time is up, while the
    # first handler runs on. That zombie's next upload call (its second part) is held until the
    # retry has delivered, so it always comes after the takeover, however fast this machine is.
    run.pardot.file_count = 1
    run.pardot.record_fill = 0.9
    run.pardot.trickle_requests(COPY_TIMEOUT, times=1, path_prefix="/storage/", after_bytes=int(5.5 * MIB))
    s3 = aws_clients().s3
    first_upload: list[str] = []

    def created(parsed: dict[str, Any], **_: Any) -> None:
        if not first_upload and parsed.get("UploadId"):
            first_upload.append(str(parsed["UploadId"]))

    zombie = Pause(s3, "UploadPart", lambda p: bool(first_upload) and p.get("UploadId") == first_upload[0])
    zombie.skip_first = True  # its first part goes through; the one after the trickle is held
    previous = run.stack.set_function_timeout("CopyResultFunction", COPY_TIMEOUT)
    try:
        with hooked(s3, "after-call.CreateMultipartUpload", created), zombie.armed():
            started = run.start(
                run.big_definition(), window={"start": "2026-11-24T00:00:00Z", "end": "2026-11-24T07:00:00Z"}
            )
            run.wait_job(started["job_id"], lambda j: j.status in TERMINAL, timeout=SETTLE_SECONDS)
            zombie.go()
            run.matrix.settle(run)
    finally:
        run.stack.set_function_timeout("CopyResultFunction", previous)
    timed_out = [i for i in run.invocations() if i.timed_out]
    run.check(len(timed_out) == 1, f"expected one timed-out copy, got {len(timed_out)}")
    run.check(bool(timed_out) and timed_out[0].error is not None, "the zombie copy did not fail")
    copies = [t for t in run.job(started["job_id"]).history if t.status is JobStatus.COPYING]
    run.check(len(copies) >= 2, "the retried copy did not take the job over")
    run.check(run.saw("trickle") and zombie.reached.is_set(), "the download was not slow, or no zombie")


@scenario("two-copies-race")
def _two_copies_of_one_job(run: Run) -> None:
    run.pardot.file_count = 2
    run.pardot.processing_seconds = 1.0  # the job id is known before it is READY
    started = run.start(run.definition())
    job_id = started["job_id"]
    pause = Pause(aws_clients().s3, "PutObject", _key_of(job_id, "part-00001.csv"))
    with pause.armed():
        assert pause.reached.wait(30), "the workflow's copy never wrote its first file"
        second = run.stack.invoke("CopyResultFunction", {"job_id": job_id})  # a duplicate invocation
        pause.go()
    run.check(
        second["status"] == "COPYING" and second["wait_seconds"] >= 1, f"the second copy answered {second}"
    )
    run.matrix.settle(run)
    got = downloads(run)
    run.check(sorted(got.values()) == [1, 1], f"files downloaded more than once: {got}")


@scenario("recorder-vs-commit")
def _failure_recorder_racing_a_commit(run: Run) -> None:
    # the copy decided its delivery and is held before the manifest; the recorder runs meanwhile
    run.pardot.processing_seconds = 1.0
    started = run.start(run.definition())
    job_id = started["job_id"]
    pause = Pause(aws_clients().s3, "PutObject", _key_of(job_id, "_manifest.json"))
    with pause.armed():
        assert pause.reached.wait(30), "the copy never reached its manifest"
        recorded = run.stack.invoke("CheckStatusFunction", _failure_event(job_id))
        pause.go()
    run.check(recorded["status"] == "DELIVERED", f"the recorder answered {recorded}")


@scenario("recorder-before-commit")
def _failure_recorder_winning_before_the_commit(run: Run) -> None:
    # the copy landed its first file and is held before the second; the recorder fails the job
    run.pardot.file_count = 2
    run.pardot.processing_seconds = 1.0
    started = run.start(run.definition())
    job_id = started["job_id"]
    pause = Pause(aws_clients().s3, "PutObject", _key_of(job_id, "part-00002.csv"))
    with pause.armed():
        assert pause.reached.wait(30), "the copy never reached its second file"
        recorded = run.stack.invoke("CheckStatusFunction", _failure_event(job_id))
        pause.go()
    run.check(recorded["status"] == "FAILED", f"the recorder answered {recorded}")


@contextmanager
def racing_creates(parties: int) -> Iterator[None]:
    """The first ``parties`` job creations (DynamoDB transactions) are held until all have planned,
    then reach the table one at a time: DynamoDB applies each conditional write atomically, so the
    later ones see the first's item and lease. (moto, which the local stack runs, takes no lock:
    two truly simultaneous transactions could both pass their conditions there, a gap of the
    emulator that real DynamoDB does not have.)"""
    ddb = aws_clients().dynamodb
    barrier = threading.Barrier(parties, timeout=10)
    turn, count_lock = threading.Lock(), threading.Lock()
    counted = Counter[str]()
    holding = threading.local()

    def before(**_: Any) -> None:
        with count_lock:
            counted["calls"] += 1
            mine = counted["calls"]
        if mine <= parties:
            barrier.wait()
            turn.acquire()
            holding.on = True

    def after(**_: Any) -> None:
        if getattr(holding, "on", False):
            holding.on = False
            turn.release()

    with (
        hooked(ddb, "before-call.TransactWriteItems", before),
        hooked(ddb, "after-call.TransactWriteItems", after),
        hooked(ddb, "after-call-error.TransactWriteItems", after),
    ):
        yield


@scenario("schedule-fired-twice")
def _a_schedule_event_fired_twice(run: Run) -> None:
    run.names.add("pardot-visitor-activity")  # the template's schedule's own definition
    at = datetime.fromisoformat(TICK)
    creates = lambda: [e for e in run.requests() if e.method == "POST" and e.path == "/api/v5/exports"]  # noqa: E731
    with racing_creates(2):
        threads = [in_thread(lambda: run.stack.fire(SCHEDULE, at)) for _ in range(2)]
        for thread, _ in threads:
            thread.join(30)
    answers = [out.get("result") or out.get("error") for _, out in threads]
    run.check(
        sum(1 for a in answers if isinstance(a, dict) and a.get("duplicate")) == 1, f"answers: {answers}"
    )
    run.matrix.settle(run)
    late = run.stack.fire(SCHEDULE, at)  # delivered again after the delivery
    run.check(late["status"] in ("UP_TO_DATE", "DELIVERED"), f"the late duplicate answered {late}")
    run.check(len(creates()) == 1, f"{len(creates())} upstream exports created")


@scenario("ddb-conditional-conflict")
def _two_concurrent_starts_of_one_definition(run: Run) -> None:
    definition = run.definition()
    ticks = ["2026-11-25T06:05:00Z", "2026-11-25T07:05:00Z"]
    with racing_creates(2):
        threads = [in_thread(lambda t=t: run.start(definition, scheduled_time=t)) for t in ticks]
        for thread, _ in threads:
            thread.join(30)
    answers = [out.get("result") or out.get("error") for _, out in threads]
    started = [a for a in answers if isinstance(a, dict) and a.get("status") == "EXPORTING"]
    run.check(len(started) == 1, f"one start wins the definition, the other skips: {answers}")
    run.matrix.settle(run)
    for tick in ticks:  # the next ticks go on from the delivered window
        run.start(definition, scheduled_time=tick)
        run.matrix.settle(run)


@scenario("eventbridge-put-fails")
def _event_put_failing_after_the_manifest(run: Run) -> None:
    failed = threading.Lock()

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if failed.acquire(blocking=False):  # the first put: the delivery's
            http = AWSResponse("https://events.local/", 200, {}, None)  # type: ignore[arg-type]
            entry = {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service error"}
            return http, {"FailedEntryCount": 1, "Entries": [entry]}
        return None

    with hooked(aws_clients().events, "before-call.PutEvents", refuse):
        started = run.start(run.definition())
        run.matrix.settle(run)
    run.check(failed.locked(), "no event was refused")
    run.check(run.job(started["job_id"]).status is JobStatus.DELIVERED, "the job did not end DELIVERED")


@scenario("expires-before-copy")
def _export_expires_while_waiting_for_its_copy(run: Run) -> None:
    run.pardot.processing_seconds = 1.0
    started = run.start(run.definition())
    job_id = started["job_id"]
    pause = Pause(
        aws_clients().s3, "ListMultipartUploads", lambda p: f"/export={job_id}/" in str(p.get("Prefix", ""))
    )
    with pause.armed():
        assert pause.reached.wait(30), "the copy never started"
        run.pardot.expire_export(int(started["upstream_id"]))
        pause.go()
    job = run.wait_job(job_id, lambda j: j.status in TERMINAL, timeout=SETTLE_SECONDS)
    run.check(
        job.reexports == 1 and job.upstream_id != started["upstream_id"], f"no re-export: {job.reexports}"
    )


@scenario("state-goes-backwards")
def _upstream_state_going_backwards(run: Run) -> None:
    run.pardot.processing_seconds = 1.0
    started = run.start(run.definition())
    run.pardot.go_back_once(int(started["upstream_id"]))
    run.matrix.settle(run)
    reads = [e.status for e in run.requests() if e.path == f"/api/v5/exports/{started['upstream_id']}"]
    run.check(len(reads) >= 2, f"the export was read {len(reads)} times")
    refused = [e for e in run.requests() if "/results/" in e.path and e.status == 400]
    run.check(bool(refused), "no download met the export gone back to Processing")


# ---- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
        for c in CASES
    ],
)
def test_scenario(case: Case, matrix: Matrix, run_case: Callable[[Case], tuple[Run, Tally]]) -> None:
    run, tally = run_case(case)
    matrix.results[case.name] = (tally, case.xfail)
    assert not run.failures and tally.total == 0, "\n".join([*run.failures, tally.report()])


def _case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def _skip_the_failed_jobs_clean_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # the failure recorder ends the job FAILED but no longer empties its folder
    import exportpipe.services.check_status as check_status

    monkeypatch.setattr(check_status, "discard", lambda deps, job: None)


def _skip_the_copiers_end_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    # the copier takes a download that stops early for its end: no length check, a break ends it
    import exportpipe.adapters.copier as copier

    def lenient_pull(self: copier.MeasuringReader) -> bool:
        try:
            chunk = next(self._chunks)
        except Exception:
            self._done = True
            return False
        self.sha256.update(chunk)
        self.bytes += len(chunk)
        if self.checker is not None:
            self.checker.feed(chunk)
        self._buffer += chunk
        return True

    monkeypatch.setattr(copier.MeasuringReader, "_pull", lenient_pull)


def _skip_settling_the_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    # a delivery no longer moves its definition's watermark (nor releases the lease)
    from exportpipe.adapters.store import DynamoJobStore

    monkeypatch.setattr(DynamoJobStore, "settle", lambda self, job: None)


def _credentials_to_every_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # downloads take every host for the API's, so the storage host gets the credentials too
    import exportpipe.sources.pardot.client as pardot

    real = pardot.open_download

    def leaky(*args: Any, auth_hosts: frozenset[str], **kwargs: Any) -> Any:
        return real(*args, auth_hosts=auth_hosts | {"localhost", "127.0.0.1"}, **kwargs)

    monkeypatch.setattr(pardot, "open_download", leaky)


@pytest.mark.parametrize(
    ("name", "counter", "plant"),
    [
        pytest.param("recorder-before-commit", "partial", _skip_the_failed_jobs_clean_up, id="no-clean-up"),
        pytest.param("short-body", "lost", _skip_the_copiers_end_checks, id="no-length-check"),
        pytest.param("baseline", "duplicated", _skip_settling_the_delivery, id="no-watermark"),
        pytest.param("baseline", "leaked", _credentials_to_every_host, id="credentials-everywhere"),
    ],
)
def test_a_planted_defect_is_counted(
    name: str,
    counter: str,
    plant: Callable[[pytest.MonkeyPatch], None],
    run_case: Callable[[Case], tuple[Run, Tally]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scenario again, under definitions of its own, with one guarantee removed: the counter that
    guarantee keeps at zero is not zero any more (these runs are not part of the summary line)."""
    plant(monkeypatch)
    case = _case(name)
    _, tally = run_case(Case(f"p-{counter}-{name}", case.run))
    assert tally.counts()[counter] > 0, tally.report()
