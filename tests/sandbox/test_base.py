"""The shared sandbox machinery: fault injection in ``Sandbox.dispatch`` and the request log."""

from __future__ import annotations

import time
from typing import ClassVar

from exportpipe_dev.sandbox.base import Request, Response, Sandbox
from exportpipe_dev.sandbox.impact_clicks import ImpactClicksSandbox
from exportpipe_dev.sandbox.pardot import PardotSandbox


class _Echo(Sandbox):
    source: ClassVar[str] = "echo"
    fault_path_prefix: ClassVar[str] = "/v1/"

    def __init__(self) -> None:
        super().__init__()
        self.handled: list[str] = []

    def handle(self, request: Request) -> Response:
        self.handled.append(request.path)
        return Response.text(200, "ok")

    def credentials(self) -> dict[str, str]:
        return {}


def statuses(sandbox: Sandbox, *paths: str) -> list[int]:
    return [sandbox.dispatch(Request("GET", path)).status for path in paths]


def test_faults_match_the_class_prefix_by_default_and_never_reach_handle() -> None:
    sandbox = _Echo()
    sandbox.fail_requests(502, times=2)

    assert statuses(sandbox, "/health", "/v1/a", "/v1/b", "/v1/c") == [200, 502, 502, 200]
    assert sandbox.handled == ["/health", "/v1/c"]
    assert [(e.path, e.status) for e in sandbox.request_log] == [
        ("/health", 200),
        ("/v1/a", 502),
        ("/v1/b", 502),
        ("/v1/c", 200),
    ]


def test_an_explicit_prefix_and_queued_faults_are_used_up_in_order() -> None:
    sandbox = _Echo()
    sandbox.fail_requests(503, times=1, path_prefix="/v1/jobs")
    sandbox.fail_requests(500, times=1, path_prefix="/")

    answers = [sandbox.dispatch(Request("GET", p)) for p in ("/v1/jobs/1", "/v1/jobs/2", "/v1/jobs/3")]

    assert [a.status for a in answers] == [503, 500, 200]
    assert answers[0].headers["Content-Type"].startswith("text/html")
    assert b"Error 503" in b"".join(answers[0].chunks())


def test_each_sandbox_defaults_to_its_api_root() -> None:
    pardot, impact = PardotSandbox(), ImpactClicksSandbox()
    pardot.fail_requests(503)
    impact.fail_requests(503)

    # the token endpoint and storage are outside the API root: untouched
    assert pardot.dispatch(Request("POST", "/services/oauth2/token")).status == 400
    assert pardot.dispatch(Request("GET", "/api/v5/exports")).status == 503
    assert impact.dispatch(Request("GET", "/storage/impact-exports/x/1/y")).status != 503
    assert impact.dispatch(Request("GET", f"{ImpactClicksSandbox.fault_path_prefix}IRabc/Jobs")).status == 503
    assert PardotSandbox.fault_path_prefix == "/api/"


def test_the_log_records_when_each_request_arrived_in_real_time() -> None:
    sandbox = _Echo()
    sandbox.clock.freeze()  # the sandbox clock standing still does not matter
    before = time.monotonic()

    statuses(sandbox, "/a")
    time.sleep(0.05)
    statuses(sandbox, "/b")

    first, second = sandbox.request_log
    assert before <= first.received < second.received <= time.monotonic()
    assert second.received - first.received >= 0.05
