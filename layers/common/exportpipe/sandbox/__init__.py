"""Source sandboxes: faithful emulators of the upstream export APIs, served over loopback HTTP.

Development and test only (never imported by the Lambda handlers). :mod:`exportpipe.sandbox.base` holds the
shared machinery (clock, HTTP server, base class, ``run_cli``); one module per source implements its API
(:mod:`exportpipe.sandbox.pardot`).
"""

from exportpipe.sandbox.base import (
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
