"""API Gateway entry point: ``POST /webhooks/{source}`` completions from upstreams that push."""

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from exportpipe.observability import logger, metrics, tracer
from exportpipe.runtime import build_deps
from exportpipe.services.receive_webhook import receive_completion
from exportpipe.webhooks import RECEIVERS

app = APIGatewayRestResolver()


def _json(status: int, body: dict[str, Any]) -> Response[dict[str, Any]]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.post("/webhooks/<source>")
def receive(source: str) -> Response[dict[str, Any]]:
    receiver = RECEIVERS.get(source)
    if receiver is None:
        return _json(404, {"message": f"no webhook receiver for source {source!r}"})
    raw = app.current_event.decoded_body or ""
    completion = receiver.verify(app.current_event.headers, raw.encode())
    if completion is None:
        return _json(401, {"message": "signature missing or invalid"})
    outcome = receive_completion(build_deps(), source, completion)
    return _json(outcome.status_code, {"message": outcome.message, "job_id": outcome.job_id})


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False, clear_state=True
)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
