"""Domain errors. Every error the pipeline raises on purpose ends in ``Error``.

The state machine matches on the exception class name (the Lambda ``errorType``), so the names
here are part of the workflow's contract: ``statemachine/export_poll.asl.json`` retries
:class:`UpstreamUnavailableError` and routes everything else to the failure branch.

Messages leave the process (the Lambda ``errorMessage`` that Step Functions keeps, a job's
``reason``, the ``Export Failed`` event, the logs), and upstream URLs carry credentials: a signed
storage URL in its query string, sometimes a user in its authority. :func:`scrub` removes both from
any text; every :class:`ExportPipeError`'s message is scrubbed when it is built.
"""

from __future__ import annotations

import re

# The userinfo of an absolute URL: ``scheme://user:password@`` (up to the first character that
# cannot be part of an authority, or a quote or backslash of the text around it).
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@'\"<>\\]*@")
# A query string (and fragment): a ``?`` inside a token, up to white space, a quote, an angle
# bracket or a backslash (the end of a JSON string or a repr). Relative URLs count too: requests
# writes ``Max retries exceeded with url: /path?X-Amz-Signature=...``.
_QUERY = re.compile(r"(?<=[^\s?'\"<>\\])\?[^\s'\"<>\\]+")
REDACTED_QUERY = "?\u2026"


def scrub(text: str) -> str:
    """``text`` with the query string and the userinfo of every URL in it removed.

    A removed query string shows as ``?…``, so a reader still sees that there was one. Idempotent.
    """
    return _QUERY.sub(REDACTED_QUERY, _USERINFO.sub(r"\1", text))


class ExportPipeError(Exception):
    """Base class for every error raised on purpose by exportpipe; its text arguments are scrubbed."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class ConfigurationError(ExportPipeError):
    """A required setting (environment variable, secret) is missing or malformed."""


class InvalidDefinitionError(ExportPipeError):
    """An export definition failed validation; the message names each field and the reason."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        detail = "; ".join(f"{field}: {reason}" for field, reason in errors)
        super().__init__(f"invalid export definition: {detail}")


class InvalidEventError(ExportPipeError):
    """A handler received an event that does not match its contract."""


class JobNotFoundError(ExportPipeError):
    """No job record exists for the given id."""


class TransitionError(ExportPipeError):
    """A status change was refused: the job is not in a state that allows it (out of order or duplicate)."""

    def __init__(self, job_id: str, current: str | None, target: str) -> None:
        self.job_id = job_id
        self.current = current
        self.target = target
        super().__init__(f"job {job_id}: cannot move from {current} to {target}")


class UpstreamError(ExportPipeError):
    """The upstream API refused a request for a reason that retrying will not fix."""

    def __init__(self, message: str, *, status: int | None = None, code: str | int | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class UpstreamAuthError(UpstreamError):
    """The upstream rejected our credentials even after a fresh login."""


class UpstreamUnavailableError(UpstreamError):
    """A transient upstream failure (5xx, 429, rate limit, connection) that outlived our own retries.

    The services wait it out (a deferred create, a poll backoff, a resumed copy), a bounded number of
    times in a row, instead of failing the job.
    """


class UpstreamRateLimitedError(UpstreamUnavailableError):
    """The upstream's rate limit (too many concurrent calls, or the daily allowance spent) refused
    the call, or an HTTP 429 / 503 said with ``Retry-After`` when to come back (a wait longer than a call may
    spend waiting inside the Lambda, see :data:`exportpipe.http.IN_CALL_WAIT_LIMIT`).

    Retrying soon would only burn the allowance: callers wait ``retry_after`` seconds (or their own
    rate-limit wait) before the next call, and do not count the refusal as a failed attempt.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | int | None = None,
        retry_after: float = 0,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class UnsafeDownloadError(ExportPipeError):
    """A result URL or redirect points at a host outside the allow-list, is one that URL parsers
    could read differently, or a host resolved to an internal address it may not have."""


class DownloadIncompleteError(ExportPipeError):
    """A result file ended before its announced length, or the connection broke mid-stream."""


class ExportExpiredError(ExportPipeError):
    """The upstream export's files are gone (expired) before they were copied."""


class ExportCanceledError(ExportPipeError):
    """The upstream export was canceled (by someone upstream) before its files were copied."""


class ManifestConflictError(ExportPipeError):
    """The job's folder holds a manifest that is not this job's delivery (never overwritten)."""


class CopySupersededError(ExportPipeError):
    """Another copy attempt holds the job's copy now (or the job ended): this one must stop."""


class EventPublishError(ExportPipeError):
    """EventBridge did not accept an event."""
