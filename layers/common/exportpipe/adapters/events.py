"""EventBridge events (contract 5): ``Export Delivered`` after the manifest, ``Export Failed`` otherwise."""

from __future__ import annotations

import json
from typing import Any

from exportpipe.errors import EventPublishError, scrub
from exportpipe.models.job import Job
from exportpipe.models.layout import Manifest

EVENT_SOURCE = "exportpipe"
DELIVERED = "Export Delivered"
FAILED = "Export Failed"


class EventPublisher:
    def __init__(self, client: Any, bus: str) -> None:
        self._events = client
        self._bus = bus

    def delivered(self, job: Job, bucket: str, manifest_key: str, manifest: Manifest) -> dict[str, Any]:
        detail = {
            "job_id": job.job_id,
            "definition_name": job.definition_name,
            "source": job.source,
            "dataset": job.dataset,
            "window": manifest.window.model_dump(mode="json"),
            "upstream_id": job.upstream_id,
            "manifest_uri": f"s3://{bucket}/{manifest_key}",
            "bucket": bucket,
            "manifest_key": manifest_key,
            "totals": manifest.totals.model_dump(mode="json"),
            "schema_version": manifest.schema_version,
        }
        self._put(DELIVERED, detail)
        return detail

    def failed(self, job: Job) -> dict[str, Any]:
        detail = {
            "job_id": job.job_id,
            "definition_name": job.definition_name,
            "source": job.source,
            "dataset": job.dataset,
            "window": job.window.model_dump(mode="json"),
            "upstream_id": job.upstream_id,
            "status": job.status.value,
            # the reason may quote an upstream URL: never its signed query string
            "reason": scrub(job.reason) if job.reason else job.reason,
        }
        self._put(FAILED, detail)
        return detail

    def _put(self, detail_type: str, detail: dict[str, Any]) -> None:
        resp = self._events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": self._bus,
                    "Resources": [],
                }
            ]
        )
        if resp.get("FailedEntryCount"):
            raise EventPublishError(f"EventBridge refused {detail_type!r}: {resp.get('Entries')}")
