"""API Gateway entry point: ``POST /webhooks/{source}`` completions from upstreams that push.

Answers: 202 for a completion taken (or for an export that is not ours), 200 for one already taken;
404 for a source without a receiver; 400 for a request that cannot be read (bad base64, not UTF-8,
not JSON, nested too deep, not the source's event); 413 for a body over ``MAX_BODY_BYTES``; 401 for
a signature missing or invalid; 503 with ``Retry-After`` for anything that fails on our side (the job
store unavailable or slow, a bug), so that the sender delivers the event again. Never 500 or 502.
"""

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from exportpipe.adapters.aws import aws_clients
from exportpipe.observability import logger, metrics, tracer
from exportpipe.runtime import build_deps
from exportpipe.services.receive_webhook import receive_completion
from exportpipe.sources.registry import webhook_for
from exportpipe.webhooks import MalformedWebhookError, WebhookTooLargeError, request_body

RETRY_AFTER_SECONDS = 60
# The sender waits for the answer: a job store that hangs must end in our 503 well inside the
# function's 15 s timeout, not in a Lambda timeout (API Gateway's 502). Each call: at most 2
# attempts of 1 s to connect and 2 s to read, plus one backoff of at most 1 s.
STORE_CONFIG = Config(
    connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 2, "mode": "standard"}
)

app = APIGatewayRestResolver()


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers
    )


@app.post("/webhooks/<source>")
def receive(source: str) -> Response[Any]:
    factory = webhook_for(source)
    if factory is None:
        return _json(404, {"message": f"no webhook receiver for source {source!r}"})
    event = app.current_event
    body = request_body(event.body, base64_encoded=bool(event.is_base64_encoded))
    deps = build_deps(clients=aws_clients(config=STORE_CONFIG))
    completion = factory(deps).verify(event.headers, body)
    if completion is None:
        return _json(401, {"message": "signature missing or invalid"})
    outcome = receive_completion(deps, source, completion)
    return _json(outcome.status_code, {"message": outcome.message, "job_id": outcome.job_id})


def _too_large(exc: WebhookTooLargeError) -> Response[Any]:
    logger.warning("webhook refused", status=413, reason=str(exc))
    return _json(413, {"message": str(exc)})


def _malformed(exc: MalformedWebhookError) -> Response[Any]:
    logger.warning("webhook refused", status=400, reason=str(exc))
    return _json(400, {"message": str(exc)})


@app.not_found
def _no_route(exc: NotFoundError) -> Response[Any]:
    event = app.current_event
    return _json(404, {"message": f"no route for {event.http_method} {event.path}"})


def _unavailable(exc: Exception) -> Response[Any]:
    if isinstance(exc, ServiceError):
        raise exc  # Powertools answers its own errors with their status
    # Our side failed (the job store unavailable, a bug): the sender keeps the event and redelivers.
    logger.exception("webhook not processed; the sender is asked to redeliver", exc_info=exc)
    return _json(
        503,
        {"message": "temporarily unable to process the webhook; retry later"},
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


# Powertools runs the handler of the nearest class in the exception's MRO.
app.exception_handler(WebhookTooLargeError)(_too_large)
app.exception_handler(MalformedWebhookError)(_malformed)
app.exception_handler(Exception)(_unavailable)


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False, clear_state=True
)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
