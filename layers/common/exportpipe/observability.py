"""The one Logger, Tracer and Metrics of exportpipe.

Powertools reads its own ``POWERTOOLS_*`` variables when these objects are built; the service name
and namespace are fixed here so that nothing of ours depends on the environment at import.

Every line the Logger writes passes :func:`exportpipe.errors.scrub` once serialized — message,
extra keys, exception and stack trace alike — so no signed query string or URL userinfo reaches the
logs, whatever a caller (or a library's exception text) put in it. Two libraries log such text on
their own: urllib3's retry warning names the request's path with its query string, and the
tracer logs a failed handler's exception with its causes. Their records go through the same
handler instead of the root logger's (:data:`SCRUBBED_LIBRARY_LOGGERS`).
"""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from exportpipe.errors import scrub

__all__ = ["NAMESPACE", "SERVICE", "MetricUnit", "logger", "metrics", "put_single_metric", "tracer"]

SERVICE = "exportpipe"
NAMESPACE = "ExportPipe"


class ScrubbingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, with the query strings and userinfo of URLs removed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


logger = Logger(service=SERVICE, logger_formatter=ScrubbingFormatter())

SCRUBBED_LIBRARY_LOGGERS = ("urllib3", "aws_lambda_powertools.tracing")
for _name in SCRUBBED_LIBRARY_LOGGERS:
    _library = logging.getLogger(_name)
    _library.handlers = [logger.registered_handler]
    _library.propagate = False  # the root logger (Lambda's own handler) would print them unscrubbed
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def put_single_metric(name: str, value: float, unit: MetricUnit, dimensions: dict[str, str]) -> None:
    """Emit one metric at once with dimensions of its own (``metrics`` gives every metric of an
    invocation the same ones), in our namespace and with our ``service`` dimension, like ``metrics``.

    Powertools' ``single_metric`` prints even where ``POWERTOOLS_METRICS_DISABLED`` turns ``metrics``
    off; this honours it the same way.
    """
    if is_metrics_disabled():
        return
    with single_metric(
        name=name,
        unit=unit,
        value=value,
        namespace=NAMESPACE,
        default_dimensions={"service": SERVICE, **dimensions},
    ):
        pass
