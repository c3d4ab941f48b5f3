"""A verified completion webhook moves its job to READY; duplicates and late events change nothing.

The poll workflow started for every job sees READY on its next check and goes on to the copy, so a
webhook only shortens the wait; it never starts a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from exportpipe.errors import TransitionError
from exportpipe.models.job import JobStatus
from exportpipe.observability import logger
from exportpipe.runtime import Deps
from exportpipe.webhooks import Completion


@dataclass(frozen=True)
class WebhookOutcome:
    status_code: int
    message: str
    job_id: str | None = None


def receive_completion(deps: Deps, source: str, completion: Completion) -> WebhookOutcome:
    job = deps.store.find_by_upstream(source, completion.upstream_id)
    if job is None:
        # Not ours (another consumer's export) or not recorded yet: acknowledge so it is not resent.
        logger.warning("webhook for an unknown export", source=source, upstream_id=completion.upstream_id)
        return WebhookOutcome(202, "unknown export; ignored")
    try:
        deps.store.transition(
            job.job_id,
            JobStatus.READY,
            updates={"result_urls": completion.result_urls, "upstream_state": "completed (webhook)"},
        )
    except TransitionError as exc:
        logger.info(
            "duplicate or late webhook", job_id=job.job_id, current=exc.current, event=completion.event_id
        )
        return WebhookOutcome(200, f"job already {exc.current}", job.job_id)
    return WebhookOutcome(202, "job ready", job.job_id)
