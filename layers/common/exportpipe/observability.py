"""The one Logger, Tracer and Metrics of exportpipe.

Powertools reads its own ``POWERTOOLS_*`` variables when these objects are built; the service name
and namespace are fixed here so that nothing of ours depends on the environment at import.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "exportpipe"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="ExportPipe", service=SERVICE)
