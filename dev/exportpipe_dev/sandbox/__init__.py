"""Source sandboxes: faithful emulators of the upstream export APIs, served over loopback HTTP.

Development and test only (never imported by the Lambda handlers).
:mod:`exportpipe_dev.sandbox.base` holds the shared machinery (clock, HTTP server, base class,
``run_cli``); one module per source implements its API (:mod:`exportpipe_dev.sandbox.pardot`).
"""

from exportpipe_dev.sandbox.base import (
    SANDBOXES,
    Clock,
    Headers,
    LogEntry,
    Request,
    Response,
    Sandbox,
    SandboxServer,
    build_sandbox,
    run_cli,
)

__all__ = [
    "SANDBOXES",
    "Clock",
    "Headers",
    "LogEntry",
    "Request",
    "Response",
    "Sandbox",
    "SandboxServer",
    "build_sandbox",
    "run_cli",
]
