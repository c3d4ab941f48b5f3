"""Scheduled entry point: one export definition in, one export started (or found already started).

Also the poll workflow's Delivered state: ``{"continue_after": <job id>}`` starts a backfill's next
window after that job's delivery."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from exportpipe.observability import logger, metrics, tracer
from exportpipe.runtime import build_deps
from exportpipe.services.start_export import continue_backfill, start_export


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = build_deps(remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000)
    if isinstance(event, dict) and "continue_after" in event:
        return continue_backfill(event, deps)
    return start_export(event, deps)
