"""The local stack's IAM check (exportpipe_dev.local.iam): calls translated into the actions and
resources AWS authorizes them by, the template's policies read as AWS and SAM read them, and calls
outside them answered AccessDenied."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from exportpipe_dev.local.iam import (
    AccessControl,
    Grants,
    Request,
    Statement,
    UntranslatableError,
    check_task_invocations,
    grants_of,
    requests_of,
    run_as,
)
from exportpipe_dev.local.template import Resolver, Template, TemplateError

REGION, ACCOUNT = "us-east-1", "123456789012"
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": "st"}
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/jobs"


def _requests(service: str, operation: str, **params: Any) -> list[Request]:
    return requests_of(service, operation, params, region=REGION, account=ACCOUNT)


def test_a_job_creation_transaction_is_authorized_item_by_item() -> None:
    put = {"Put": {"TableName": "jobs", "Item": {}}}
    update = {"Update": {"TableName": "jobs", "Key": {}, "UpdateExpression": "SET a = :a"}}
    check = {"ConditionCheck": {"TableName": "jobs", "Key": {}, "ConditionExpression": "x"}}
    assert _requests("dynamodb", "TransactWriteItems", TransactItems=[put, update, check]) == [
        Request("dynamodb:PutItem", TABLE_ARN),
        Request("dynamodb:UpdateItem", TABLE_ARN),
        Request("dynamodb:ConditionCheckItem", TABLE_ARN),
    ]
    assert _requests("dynamodb", "Query", TableName="jobs", IndexName="ByUpstreamId") == [
        Request("dynamodb:Query", f"{TABLE_ARN}/index/ByUpstreamId")
    ]


def test_s3_calls_are_authorized_by_their_iam_actions() -> None:
    obj = "arn:aws:s3:::b/exports/x/part-00001.csv"
    for operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
        assert _requests("s3", operation, Bucket="b", Key="exports/x/part-00001.csv") == [
            Request("s3:PutObject", obj)
        ]
    assert _requests("s3", "HeadObject", Bucket="b", Key="exports/x/part-00001.csv") == [
        Request("s3:GetObject", obj)
    ]
    assert _requests("s3", "ListObjectsV2", Bucket="b", Prefix="exports/") == [
        Request("s3:ListBucket", "arn:aws:s3:::b")
    ]
    assert _requests("s3", "ListMultipartUploads", Bucket="b") == [
        Request("s3:ListBucketMultipartUploads", "arn:aws:s3:::b")
    ]
    deleted = _requests("s3", "DeleteObjects", Bucket="b", Delete={"Objects": [{"Key": "k1"}, {"Key": "k2"}]})
    assert deleted == [
        Request("s3:DeleteObject", "arn:aws:s3:::b/k1"),
        Request("s3:DeleteObject", "arn:aws:s3:::b/k2"),
    ]


def test_other_services_name_their_resources() -> None:
    machine = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:st-export-poll"
    assert _requests("states", "StartExecution", stateMachineArn=machine, name="j") == [
        Request("states:StartExecution", machine)
    ]
    assert _requests("lambda", "Invoke", FunctionName="st-Start", InvocationType="Event") == [
        Request("lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:st-Start")
    ]
    assert _requests("events", "PutEvents", Entries=[{"EventBusName": "bus"}]) == [
        Request("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/bus")
    ]
    with pytest.raises(UntranslatableError, match="sqs:SendMessage"):
        _requests("sqs", "SendMessage", QueueUrl="q")


def test_iam_wildcards_match_as_aws_matches_them() -> None:
    stmt = Statement(("S3:Get*",), ("arn:aws:s3:::b/exports/*",))
    assert stmt.allows("s3:GetObject", "arn:aws:s3:::b/exports/a/b.csv")
    assert not stmt.allows("s3:GetObject", "arn:aws:s3:::b/other/a.csv")
    assert not stmt.allows("s3:PutObject", "arn:aws:s3:::b/exports/a.csv")
    assert Statement(("s3:GetObject",), ("arn:aws:s3:::b/?",)).allows("s3:GetObject", "arn:aws:s3:::b/k")


def _template(resources: dict[str, Any]) -> Template:
    return Template(Path("template.yaml"), {"Resources": resources})


RESOLVER = Resolver({}, {"Start": "st-Start", "Bus": "bus"}, {("Table", "Arn"): TABLE_ARN}, PSEUDO)


def test_policies_are_read_from_inline_statements_managed_policies_and_sam_templates() -> None:
    managed = {
        "Type": "AWS::IAM::ManagedPolicy",
        "Properties": {
            "PolicyDocument": {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "dynamodb:GetItem",
                        "Resource": {"Fn::GetAtt": ["Table", "Arn"]},
                    }
                ]
            }
        },
    }
    policies = [
        {"Ref": "Records"},
        {"Statement": [{"Sid": "S", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"}]},
        {"LambdaInvokePolicy": {"FunctionName": {"Ref": "Start"}}},
        {"EventBridgePutEventsPolicy": {"EventBusName": {"Ref": "Bus"}}},
    ]
    grants = grants_of("Fn", policies, _template({"Records": managed}), RESOLVER)
    assert grants.allows("dynamodb:GetItem", TABLE_ARN)
    assert not grants.allows("dynamodb:PutItem", TABLE_ARN)
    assert grants.allows("s3:GetObject", "arn:aws:s3:::any/key")
    assert grants.allows("lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:st-Start")
    assert not grants.allows("lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:st-Other")
    assert grants.allows("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/bus")


@pytest.mark.parametrize(
    "policy",
    [
        {"Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {}}]},
        {"Statement": [{"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}]},
        {"DynamoDBCrudPolicy": {"TableName": "jobs"}},
        "AWSLambdaBasicExecutionRole",
        {"Ref": "NoSuchPolicy"},
    ],
)
def test_a_policy_the_check_cannot_read_exactly_is_refused(policy: Any) -> None:
    with pytest.raises(TemplateError):
        grants_of("Fn", [policy], _template({}), RESOLVER)


def test_a_state_machine_whose_role_may_not_invoke_a_task_function_is_refused() -> None:
    fn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:st-Start"
    definition = (
        '{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",'
        f' "Parameters": {{"FunctionName": "{fn}"}}, "End": true}}}}}}'
    )
    allowed = Grants("Machine", (Statement(("lambda:InvokeFunction",), (f"{fn}*",)),))
    check_task_invocations(definition, allowed, region=REGION, account=ACCOUNT)
    with pytest.raises(TemplateError, match="state A invokes"):
        check_task_invocations(definition, Grants("Machine", ()), region=REGION, account=ACCOUNT)


def _model(service: str, operation: str) -> Any:
    return SimpleNamespace(name=operation, service_model=SimpleNamespace(signing_name=service))


def test_a_call_outside_the_grants_is_answered_access_denied_and_recorded() -> None:
    control = AccessControl(
        {"Fn": Grants("Fn", (Statement(("dynamodb:GetItem",), (TABLE_ARN,)),))},
        region=REGION,
        account=ACCOUNT,
    )
    assert control.authorize("Fn", _model("dynamodb", "GetItem"), {"TableName": "jobs"}) is None
    refused = control.authorize("Fn", _model("dynamodb", "PutItem"), {"TableName": "jobs"})
    assert refused is not None
    http, parsed = refused
    assert http.status_code == 403 and parsed["Error"]["Code"] == "AccessDeniedException"
    assert "dynamodb:PutItem" in parsed["Error"]["Message"]
    assert [c.operation for c in control.denied] == ["dynamodb:PutItem"]
    assert control.actions_used("Fn") == {"dynamodb:GetItem"}
    # an operation the check does not know is refused too, saying so
    assert control.authorize("Fn", _model("sqs", "SendMessage"), {}) is not None
    assert "does not know its IAM actions" in control.denied[-1].why


def test_calls_of_a_functions_threads_and_the_threads_they_start_are_checked() -> None:
    control = AccessControl({"Fn": Grants("Fn", ())}, region=REGION, account=ACCOUNT)
    control.install()
    errors: list[str] = []
    try:
        # a client made now (the check is registered on sessions made after install), pointed nowhere:
        # a refused call never leaves the process
        client = boto3.session.Session().client(
            "dynamodb",
            region_name=REGION,
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )

        def call() -> None:
            try:
                client.get_item(TableName="jobs", Key={"pk": {"S": "x"}})
            except ClientError as exc:
                errors.append(exc.response["Error"]["Code"])

        def handler() -> None:
            call()
            with ThreadPoolExecutor(max_workers=1) as pool:  # like the S3 transfer manager's workers
                pool.submit(call).result()

        worker = threading.Thread(target=handler)
        run_as(worker, "Fn")
        worker.start()
        worker.join(timeout=30)
    finally:
        control.uninstall()
    assert errors == ["AccessDeniedException", "AccessDeniedException"]
    assert len(control.denied) == 2 and {c.principal for c in control.denied} == {"Fn"}
