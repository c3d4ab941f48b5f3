"""The poll workflow on Step Functions: one execution per job, named after it."""

from __future__ import annotations

import json
from typing import Any


class StepFunctionsWorkflow:
    """:class:`exportpipe.ports.Workflow` on the poll state machine."""

    def __init__(self, sfn: Any, state_machine_arn: str) -> None:
        self._sfn = sfn
        self._arn = state_machine_arn

    def start(self, name: str, job_id: str) -> str:
        sfn = self._sfn
        try:
            resp = sfn.start_execution(
                stateMachineArn=self._arn, name=name, input=json.dumps({"job_id": job_id, "attempt": 0})
            )
            return str(resp["executionArn"])
        except sfn.exceptions.ExecutionAlreadyExists:
            return self._arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def running(self, execution_id: str) -> bool | None:
        try:
            status = self._sfn.describe_execution(executionArn=execution_id)["status"]
        except self._sfn.exceptions.ExecutionDoesNotExist:
            return None
        return bool(status == "RUNNING")
