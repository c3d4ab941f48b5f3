"""No signed query string (nor URL userinfo) in a message that leaves the process (issue 12, item 3):
the scrub function, every domain error, the one Logger, and a download's connection error."""

from __future__ import annotations

import io
import logging
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from exportpipe.errors import (
    ExportPipeError,
    TransitionError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
    scrub,
)
from exportpipe.http import make_session, open_download
from exportpipe.observability import logger

SECRET = "Zm9vYmFyc2VjcmV0"
SIGNED = (
    f"https://bucket.s3.amazonaws.com/exports/1.csv?X-Amz-Credential=AKIA%2F{SECRET}&X-Amz-Signature={SECRET}"
)


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        (SIGNED, "https://bucket.s3.amazonaws.com/exports/1.csv?…"),
        (
            f"Max retries exceeded with url: /exports/1.csv?sig={SECRET} (Caused by NewConnectionError(...))",
            "Max retries exceeded with url: /exports/1.csv?… (Caused by NewConnectionError(...))",
        ),
        (
            f"download of '{SIGNED}' failed",
            "download of 'https://bucket.s3.amazonaws.com/exports/1.csv?…' failed",
        ),
        (
            f'{{"message": "at {SIGNED}\\nTraceback"}}',
            '{"message": "at https://bucket.s3.amazonaws.com/exports/1.csv?…\\nTraceback"}',
        ),
        (f"https://user:{SECRET}@pi.pardot.com/x", "https://pi.pardot.com/x"),
        ("no URL here; is it? yes", "no URL here; is it? yes"),
    ],
)
def test_scrub_removes_query_strings_and_userinfo(text: str, scrubbed: str) -> None:
    assert scrub(text) == scrubbed
    assert scrub(scrubbed) == scrubbed


@pytest.mark.parametrize(
    "error",
    [
        ExportPipeError(f"x {SIGNED}"),
        UpstreamError(f"download of {SIGNED} answered 403", status=403),
        UpstreamUnavailableError(f"x {SIGNED}", status=503),
        UpstreamRateLimitedError(f"x {SIGNED}", retry_after=5),
        TransitionError(SIGNED, "READY", "COPYING"),  # type: ignore[arg-type]
    ],
)
def test_every_domain_error_is_scrubbed_when_built(error: ExportPipeError) -> None:
    assert SECRET not in str(error) and SECRET not in repr(error.args)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the one Logger writes, through its own handler and formatter."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    captured = io.StringIO()
    previous = handler.setStream(captured)
    try:
        yield captured
    finally:
        handler.setStream(previous)


def test_the_logger_scrubs_every_line_tracebacks_included(log_output: io.StringIO) -> None:
    logger.warning(f"message {SIGNED}", url=SIGNED, nested={"urls": [SIGNED]})
    try:
        try:
            raise requests.ConnectionError(
                f"HTTPSConnectionPool: Max retries exceeded with url: /x?sig={SECRET}"
            )
        except requests.ConnectionError as exc:
            raise RuntimeError(f"wrapped {SIGNED}") from exc  # not a domain error: nothing scrubbed it
    except RuntimeError:
        logger.exception("download failed")
    output = log_output.getvalue()
    assert output.count("\n") >= 2 and "download failed" in output and "?…" in output
    assert SECRET not in output and "X-Amz" not in output


def test_a_download_whose_connection_fails_keeps_no_query_string() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed}/exports/1.csv?X-Amz-Signature={SECRET}"
    with pytest.raises(UpstreamUnavailableError) as info:
        open_download(
            make_session(total_retries=0),
            url,
            auth_headers={},
            auth_hosts=frozenset(),
            allowed_hosts=("127.0.0.1",),
            timeout=5,
        )
    assert "failed" in str(info.value) and SECRET not in str(info.value)
    # the cause keeps the detail for a debugger; only the Logger, which scrubs, ever prints it
    assert SECRET in str(info.value.__cause__)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_library_logs_go_through_the_scrubbing_handler(
    log_output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    # urllib3 warns "Retrying (...) after connection broken by ...: <path with its query>"
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    root = _Collect()  # what Lambda's own handler on the root logger would print
    logging.getLogger().addHandler(root)
    try:
        with pytest.raises(UpstreamUnavailableError):
            open_download(
                make_session(total_retries=1),
                f"http://127.0.0.1:{closed}/exports/1.csv?X-Amz-Signature={SECRET}",
                auth_headers={},
                auth_hosts=frozenset(),
                allowed_hosts=("127.0.0.1",),
                timeout=5,
            )
    finally:
        logging.getLogger().removeHandler(root)
    assert "Retrying" in log_output.getvalue() and SECRET not in log_output.getvalue()
    assert not [m for m in root.messages if SECRET in m]
