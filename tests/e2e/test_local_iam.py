"""Each function's template policy is what its code paths need: the local stack answers a call
outside it AccessDenied, as AWS would (exportpipe_dev.local.iam). A backfill through the real state
machine records every AWS call each function made; a template missing one grant is refused."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from exportpipe_dev.local import FunctionFailedError, LocalStack
from exportpipe_dev.local.template import Template, TemplateError
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.store import DynamoJobStore
from exportpipe.models.job import JobStatus
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

UNTIL = datetime(2026, 11, 1, tzinfo=UTC)


def _sandbox() -> PardotSandbox:
    return PardotSandbox(pickup_seconds=0.0, processing_seconds=0.2, seed=41, record_spacing_seconds=86400)


def _backfill(name: str) -> dict[str, Any]:
    """Two windows: [UNTIL - 400 d, +364 d) and the 36 days after it."""
    return {
        "definition": {
            "source": "pardot",
            "name": name,
            "object": "listMembership",
            "procedure": "filter_by_created_at",
            "timezone": "UTC",
            "start": (UNTIL - timedelta(days=400)).isoformat(),
        },
        "until": UNTIL.isoformat(),
    }


def test_a_backfill_makes_only_the_calls_each_functions_policy_grants() -> None:
    with LocalStack(sandboxes={"pardot": _sandbox()}) as stack:
        # WHEN a backfill of two windows runs through the real state machine
        first = stack.invoke("StartExportFunction", _backfill("iam-backfill"))
        assert stack.wait_for_execution(first["job_id"])["status"] == "SUCCEEDED"
        store = DynamoJobStore(stack.client("dynamodb"), stack.table)
        deadline = time.monotonic() + 60
        while store.watermark("iam-backfill") != UNTIL:
            assert time.monotonic() < deadline, "the backfill's second window did not land"
            time.sleep(0.2)
        sfn = stack.client("stepfunctions")
        while sfn.list_executions(stateMachineArn=stack.state_machine_arn, statusFilter="RUNNING")[
            "executions"
        ]:
            assert time.monotonic() < deadline, "an execution of the backfill still runs"
            time.sleep(0.2)
        delivered = store.get(first["job_id"])
        access = stack.access
        used = {fn: access.actions_used(fn) for fn in stack.functions}
        granted = {fn: access.grants[fn] for fn in stack.functions}
    # THEN every call each function made was one its template policy allows
    assert access.denied == []
    assert delivered.status is JobStatus.DELIVERED
    # AND only start_export created jobs and started workflows (the next window included)
    assert {"dynamodb:PutItem", "states:StartExecution", "secretsmanager:GetSecretValue"} <= used[
        "StartExportFunction"
    ]
    for fn in ("CheckStatusFunction", "CopyResultFunction"):
        assert used[fn], f"{fn} made no calls"
        assert not {a for a in used[fn] if a.startswith("states:")}, fn
        assert "dynamodb:PutItem" not in used[fn], fn
        assert "lambda:InvokeFunction" not in used[fn], fn  # today's workflow continues by itself
        assert not granted[fn].allows(
            "states:StartExecution",
            f"arn:aws:states:us-east-1:123456789012:stateMachine:{stack.stack_name}-export-poll",
        )
    assert {"s3:PutObject", "s3:ListBucketMultipartUploads"} <= used["CopyResultFunction"]


def _template_without(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """The project's template with ``change`` applied, written where the local stack can start it (the
    code and definition paths made absolute)."""
    template = Template.load(ROOT / "template.yaml")
    body = copy.deepcopy(template.body)
    for res in body["Resources"].values():
        props = res.get("Properties", {})
        for key in ("CodeUri", "DefinitionUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = str((ROOT / props[key]).resolve())
    change(body)
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def _drop_statement(function: str, sid: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        for policy in body["Resources"][function]["Properties"]["Policies"]:
            if isinstance(policy, dict) and "Statement" in policy:
                kept = [s for s in policy["Statement"] if s.get("Sid") != sid]
                assert len(kept) < len(policy["Statement"]), f"{function} has no statement {sid}"
                policy["Statement"] = kept

    return change


@pytest.mark.access_denied_expected("the template lacks a grant on purpose")
def test_a_function_whose_policy_lacks_a_grant_gets_access_denied(tmp_path: Path) -> None:
    # GIVEN start_export's policy without states:StartExecution
    path = _template_without(tmp_path, _drop_statement("StartExportFunction", "StartPollWorkflow"))
    with LocalStack(template=path, sandboxes={"pardot": _sandbox()}) as stack:
        # WHEN it starts an export THEN its workflow cannot start: AccessDenied, as on AWS
        with pytest.raises(FunctionFailedError, match="AccessDenied"):
            stack.invoke("StartExportFunction", _backfill("iam-missing-grant"))
        (denied,) = stack.access.denied
    assert denied.principal == "StartExportFunction"
    assert denied.operation == "states:StartExecution"
    assert "states:StartExecution" in denied.why


def test_a_state_machine_that_may_not_invoke_a_task_function_is_refused(tmp_path: Path) -> None:
    def change(body: dict[str, Any]) -> None:
        props = body["Resources"]["PollStateMachine"]["Properties"]
        props["Policies"] = [
            p
            for p in props["Policies"]
            if p != {"LambdaInvokePolicy": {"FunctionName": {"Ref": "StartExportFunction"}}}
        ]

    path = _template_without(tmp_path, change)
    with pytest.raises(TemplateError, match="state Delivered invokes"):
        LocalStack(template=path, sandboxes={"pardot": _sandbox()}).start()
