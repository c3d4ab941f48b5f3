"""impact.com Advocate (SaaSquatch) Export API: the definition (six types × CSV / XLSX), the client,
the catalog of types, filters and date columns."""

from __future__ import annotations

from typing import Any

from exportpipe.sources.advocate.definition import AdvocateDefinition
from exportpipe.sources.base import ClientContext, PollPolicy, Recovery, SourceClient, SourceSpec


def _client(context: ClientContext) -> SourceClient[Any]:
    from exportpipe.sources.advocate.client import AdvocateClient, AdvocateCredentials  # requests: when used

    return AdvocateClient(
        AdvocateCredentials.parse(context.credentials),
        timeout=context.settings.http_timeout_seconds,
        allowed_hosts=context.allowed_hosts,
        remaining_seconds=context.remaining_seconds,
    )


# Exports take seconds to minutes: the first check 10 s after creation, then 15 s doubling to 5 min.
# (Completion webhooks are to make this a slow safety net; until then the poll is the only signal.)
POLL = PollPolicy(first_wait=10, base=15, max=300, factor=2.0)

SPEC = SourceSpec(
    source="advocate",
    definition=AdvocateDefinition,
    make_client=_client,
    connection_setting="ADVOCATE_SECRET_ARN",
    # the signed storage URLs the download redirects to (storage.googleapis.com/tenant-files.ssqt.io/…);
    # a wildcard, so that the name must resolve to a public address (see exportpipe.http)
    allowed_hosts=("*.storage.googleapis.com",),
    poll=POLL,
    recovery=Recovery.RECREATE,
)

__all__ = ["POLL", "SPEC", "AdvocateDefinition"]
