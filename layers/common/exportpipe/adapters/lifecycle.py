"""The lifecycle function (start_export), invoked asynchronously to continue a backfill.

Only for tasks of poll workflow executions started on an earlier state machine definition, which
has no Delivered task that starts a backfill's next window: their check_status / copy_result hand
it to start_export here. Lambda retries a failed asynchronous invocation, then keeps the event in
StartExportFailuresQueue (alarmed).
"""

from __future__ import annotations

import json
from typing import Any

from exportpipe.errors import ConfigurationError


class StartExportFunction:
    """:class:`exportpipe.ports.Lifecycle` by an asynchronous Lambda invocation."""

    def __init__(self, client: Any, function_name: str) -> None:
        self._lambda = client
        self._name = function_name

    def continue_after(self, job_id: str) -> None:
        """Ask start_export to start the next window after the delivered job ``job_id``."""
        if not self._name:
            raise ConfigurationError("START_EXPORT_FUNCTION is not set: no function to continue the backfill")
        self._lambda.invoke(
            FunctionName=self._name,
            InvocationType="Event",
            Payload=json.dumps({"continue_after": job_id}).encode(),
        )
