"""Poll workflow task: check the upstream export once, or record the workflow's failure."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from exportpipe.models.tasks import TaskAnswer
from exportpipe.observability import logger, metrics, tracer
from exportpipe.runtime import build_deps
from exportpipe.services.check_status import check_status


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> TaskAnswer:
    return check_status(
        event, build_deps(remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000)
    )
