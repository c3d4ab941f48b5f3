"""Scheduled entry point: one export definition in, one export started (or found already started)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from exportpipe.observability import logger, metrics, tracer
from exportpipe.runtime import build_deps
from exportpipe.services.start_export import start_export


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return start_export(
        event, build_deps(remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000)
    )
