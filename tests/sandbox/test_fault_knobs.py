"""The fault knobs the fault matrix uses: wire misbehaviours of the base class (reset, truncate,
delay, trickle, error pages with headers) over real sockets, and the Pardot export's own faults
(expire now, a state going backwards once)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
import requests
from exportpipe_dev.sandbox.base import Clock, Request, Response, Sandbox, SandboxServer

from tests.sandbox.conftest import PardotApi
from tests.sandbox.test_pardot_sandbox import complete, prospect_export, refs_of

BODY = bytes(range(256)) * 4096  # 1 MiB


class _Files(Sandbox):
    source: ClassVar[str] = "files"
    fault_path_prefix: ClassVar[str] = "/files/"

    def handle(self, request: Request) -> Response:
        if request.path == "/missing":
            return Response.text(404, "no")
        return Response(200, {"Content-Type": "application/octet-stream"}, BODY)

    def credentials(self) -> dict[str, str]:
        return {}


@pytest.fixture
def files() -> Iterator[tuple[_Files, str]]:
    app = _Files()
    with SandboxServer(app) as server:
        yield app, server.base_url


def _download(url: str, timeout: float = 10) -> bytes:
    with requests.get(url, stream=True, timeout=timeout) as resp:
        return b"".join(resp.iter_content(65536))


def test_a_reset_after_some_bytes_breaks_the_body_once(files: tuple[_Files, str]) -> None:
    app, base = files
    app.reset_requests(after_bytes=100_000)

    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="reset by peer"):
        _download(f"{base}/files/a")
    assert _download(f"{base}/files/a") == BODY
    assert [(e.status, e.disruption) for e in app.request_log] == [(200, "reset"), (200, None)]


def test_a_reset_before_the_response_answers_nothing(files: tuple[_Files, str]) -> None:
    app, base = files
    app.reset_requests(before_response=True)

    with pytest.raises(requests.exceptions.ConnectionError, match="reset by peer"):
        requests.get(f"{base}/files/a", timeout=10)
    assert [(e.status, e.disruption) for e in app.request_log] == [(0, "reset")]


def test_a_truncated_body_announces_its_full_length_and_closes_cleanly(files: tuple[_Files, str]) -> None:
    app, base = files
    app.truncate_requests(after_bytes=1000)

    with pytest.raises(requests.exceptions.ChunkedEncodingError, match=r"IncompleteRead\(1000 bytes read"):
        _download(f"{base}/files/a")
    assert _download(f"{base}/files/a") == BODY


def test_a_delayed_answer_outlasts_a_shorter_read_timeout(files: tuple[_Files, str]) -> None:
    app, base = files
    app.delay_requests(1.0)

    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{base}/files/a", timeout=0.3)
    started = time.monotonic()
    assert _download(f"{base}/files/a", timeout=0.3) == BODY
    assert time.monotonic() - started < 0.9


def test_a_trickled_body_is_slow_but_never_silent_for_a_read_timeout(files: tuple[_Files, str]) -> None:
    app, base = files
    app.trickle_requests(1.0, after_bytes=len(BODY) // 2)

    started = time.monotonic()
    assert _download(f"{base}/files/a", timeout=0.5) == BODY
    assert time.monotonic() - started >= 0.9
    assert app.request_log[-1].disruption == "trickle"


def test_disruptions_match_a_prefix_or_a_predicate_and_only_successful_answers(
    files: tuple[_Files, str],
) -> None:
    app, base = files
    app.reset_requests(match=lambda path: path.endswith("/b"))
    app.truncate_requests(after_bytes=10, path_prefix="/")

    assert requests.get(f"{base}/missing", timeout=10).status_code == 404  # not used up by an error
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        _download(f"{base}/files/a")  # the truncation (prefix "/"); the reset wants a path ending /b
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="reset by peer"):
        _download(f"{base}/files/b")
    assert [e.disruption for e in app.request_log] == [None, "truncate", "reset"]
    with pytest.raises(ValueError, match="either path_prefix or match"):
        app.delay_requests(1, path_prefix="/", match=lambda p: True)


def test_error_pages_carry_the_headers_given_and_clear_faults_forgets_the_rest(
    files: tuple[_Files, str],
) -> None:
    app, base = files
    app.fail_requests(429, times=2, headers={"Retry-After": "120"})
    app.delay_requests(5)

    first = requests.get(f"{base}/files/a", timeout=10)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "120")
    app.clear_faults()
    assert requests.get(f"{base}/files/a", timeout=2).status_code == 200  # neither 429 nor slow


def test_an_export_expired_now_loses_its_data(api: PardotApi, clock: Clock) -> None:
    export = complete(api, clock, prospect_export(["id"]))
    url = refs_of(export)[0]

    api.sandbox.expire_export(export["id"])

    read = api.read_ok(export["id"])
    assert (read["state"], read["isExpired"], "resultRefs" in read) == ("Complete", True, False)
    refused = api.download(url)
    assert (refused.status_code, refused.json()["code"]) == (400, 178)
    assert "expired" in refused.json()["message"]


def test_an_export_expired_before_it_completed_is_canceled(api: PardotApi, clock: Clock) -> None:
    export_id = api.create_ok(prospect_export(["id"]))["id"]

    api.sandbox.expire_export(export_id)
    clock.advance(5)

    read = api.read_ok(export_id)
    assert (read["state"], read["isExpired"]) == ("Canceled", True)


def test_a_state_going_backwards_once(api: PardotApi, clock: Clock) -> None:
    export = complete(api, clock, prospect_export(["id"]))
    url = refs_of(export)[0]
    api.sandbox.go_back_once(export["id"])

    assert api.read_ok(export["id"])["state"] == "Complete"  # the next read: as it is
    refused = api.download(url)  # then it went back
    assert (refused.status_code, refused.json()["code"]) == (400, 178)
    assert refused.json()["message"].endswith("the export is Processing.")
    back = api.read_ok(export["id"])
    assert (back["state"], "resultRefs" in back) == ("Processing", False)
    again = api.read_ok(export["id"])  # and forward again, with the same files
    assert (again["state"], refs_of(again)) == ("Complete", [url])
    assert api.download(url).status_code == 200
