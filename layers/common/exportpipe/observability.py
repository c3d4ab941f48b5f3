"""The one Logger, Tracer and Metrics of exportpipe.

Powertools reads its own ``POWERTOOLS_*`` variables when these objects are built; the service name
and namespace are fixed here so that nothing of ours depends on the environment at import.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

__all__ = ["NAMESPACE", "SERVICE", "MetricUnit", "logger", "metrics", "put_single_metric", "tracer"]

SERVICE = "exportpipe"
NAMESPACE = "ExportPipe"

logger = Logger(service=SERVICE)
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
