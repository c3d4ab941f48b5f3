"""Webhook receivers, one per source that announces completions by webhook.

A receiver verifies the request's signature, and maps a completion event to (upstream id, result
URLs). The webhook function looks the job up by upstream id (one index query) and moves it to READY.
No source has a receiver yet: Advocate's ``export.completed`` receiver lands with the Advocate source;
until then the route answers 404 naming the source, after the front door and resolver have run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    event_id: str
    upstream_id: str
    result_urls: list[str]


class WebhookReceiver(Protocol):
    source: str

    def verify(self, headers: Mapping[str, str], body: bytes) -> Completion | None: ...


RECEIVERS: dict[str, WebhookReceiver] = {}
