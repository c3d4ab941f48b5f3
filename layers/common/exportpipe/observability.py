"""The one Logger, Tracer and Metrics of exportpipe.

Powertools reads its own ``POWERTOOLS_*`` variables when these objects are built; the service name
and namespace are fixed here so that nothing of ours depends on the environment at import.

Every line the Logger writes passes :func:`exportpipe.errors.scrub` once serialized — message,
extra keys, exception and stack trace alike — so no signed query string or URL userinfo reaches the
logs, whatever a caller (or a library's exception text) put in it.
"""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from exportpipe.errors import scrub

SERVICE = "exportpipe"


class ScrubbingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, with the query strings and userinfo of URLs removed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


logger = Logger(service=SERVICE, logger_formatter=ScrubbingFormatter())
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="ExportPipe", service=SERVICE)
