"""Static checks of template.yaml and the state machine: the things no linter catches."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from exportpipe_dev.local.template import Template

from exportpipe.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load(ROOT / "template.yaml")


def _state_machine(template: Template) -> tuple[dict[str, Any], str]:
    (sm,) = template.of_type("AWS::Serverless::StateMachine").values()
    return sm["Properties"], (ROOT / sm["Properties"]["DefinitionUri"]).read_text()


def test_definition_uri_exists_with_exact_case(template: Template) -> None:
    props, _ = _state_machine(template)
    path = ROOT / props["DefinitionUri"]
    assert path.name in {p.name for p in path.parent.iterdir()}


def test_asl_placeholders_match_definition_substitutions(template: Template) -> None:
    props, text = _state_machine(template)
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))
    assert placeholders == set(props["DefinitionSubstitutions"])


def _states(text: str) -> dict[str, Any]:
    states: dict[str, Any] = json.loads(text)["States"]
    return states


def test_asl_path_parameters_use_the_dollar_suffix(template: Template) -> None:
    _, text = _state_machine(template)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if (
                    isinstance(value, str)
                    and value.startswith("$.")
                    and key
                    not in {
                        "OutputPath",
                        "InputPath",
                        "ResultPath",
                        "SecondsPath",
                        "Variable",
                        "ItemsPath",
                        "NumericLessThanPath",
                    }
                ):
                    assert key.endswith(".$"), f"{key!r} holds a path but lacks '.$'"
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(text))


def test_wait_loop_is_bounded(template: Template) -> None:
    _, text = _state_machine(template)
    asl = json.loads(text)
    states = asl["States"]
    assert asl["TimeoutSeconds"] > 0
    assert states["WaitForExport"]["SecondsPath"] == "$.wait_seconds"
    route = states["Route"]["Choices"]
    to_wait = [c for c in route if c["Next"] == "WaitForExport"]
    # the services end the wait by time; the Route keeps an attempt guard for other task versions
    assert to_wait and "NumericLessThanPath" in json.dumps(to_wait), "the loop needs its guard"
    assert any(s["Type"] == "Fail" for s in states.values())
    for name in ("CheckStatus", "CopyResult"):
        assert states[name]["Catch"][0]["Next"] == "RecordFailure"
    # Retries name our domain errors exactly as the Lambda errorType reports them
    import exportpipe.errors as errors

    retried = {
        e
        for r in states["CopyResult"]["Retry"]
        for e in r["ErrorEquals"]
        if not e.startswith(("Lambda.", "Sandbox."))
    }
    assert retried <= set(dir(errors))


def test_the_workflow_outlives_the_longest_wait_so_its_failure_recorder_always_runs(
    template: Template,
) -> None:
    # An execution's own timeout cannot be caught: the job would stay COPYING/EXPORTING with no reason.
    # So the services end every wait by time first (check_status at POLL_TIMEOUT_SECONDS, the copy
    # COPY_BUDGET later), and the execution's timeout leaves a day beyond the largest sum for the last
    # copy's Lambda retries and the failure recorder.
    from exportpipe.services.common import COPY_BUDGET

    _, text = _state_machine(template)
    longest_poll = template.parameters["PollTimeoutSeconds"]["MaxValue"]
    assert (
        Settings.model_fields["poll_timeout_seconds"].default
        == template.parameters["PollTimeoutSeconds"]["Default"]
    )
    margin = 86400
    assert json.loads(text)["TimeoutSeconds"] >= longest_poll + COPY_BUDGET.total_seconds() + margin
    # and the default covers what the upstream keeps an export for (Pardot: 7 days)
    assert template.parameters["PollTimeoutSeconds"]["Default"] >= 7 * 86400


def test_every_setting_is_provided_by_the_template(template: Template) -> None:
    env_keys = set(template.body["Globals"]["Function"]["Environment"]["Variables"])
    for logical_id in template.of_type("AWS::Serverless::Function"):
        props = template.function_properties(logical_id)
        env_keys |= set(props.get("Environment", {}).get("Variables", {}))
    from exportpipe.sources.registry import SOURCES

    # each setting's variable, and the variable each source's spec reads its connection's secret from
    aliases = {f.alias for f in Settings.model_fields.values() if f.alias}
    aliases |= {spec.connection_setting for spec in SOURCES.values()}
    missing = aliases - env_keys
    assert not missing, f"settings no template variable provides: {missing}"


def test_handlers_exist_where_the_template_says(template: Template) -> None:
    for logical_id in template.of_type("AWS::Serverless::Function"):
        props = template.function_properties(logical_id)
        module, _, attr = props["Handler"].rpartition(".")
        source = ROOT / props["CodeUri"] / f"{module}.py"
        assert source.is_file(), source
        assert f"def {attr}(" in source.read_text()


def test_schedules_carry_valid_definitions(template: Template) -> None:
    from exportpipe.sources.registry import parse_definition

    props = template.function_properties("StartExportFunction")
    schedules = [e for e in props["Events"].values() if e["Type"] == "ScheduleV2"]
    assert schedules
    for event in schedules:
        payload = json.loads(event["Properties"]["Input"])
        assert payload["scheduled_time"] == "<aws.scheduler.scheduled-time>"
        parse_definition(payload["definition"])


def test_data_stores_are_protected(template: Template) -> None:
    (table,) = template.of_type("AWS::DynamoDB::Table").values()
    tp = table["Properties"]
    assert tp["BillingMode"] == "PAY_PER_REQUEST"
    assert tp["TimeToLiveSpecification"]["Enabled"] is True
    assert tp["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    bp = template.resources["ResultsBucket"]["Properties"]
    assert bp["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True
    assert any("AbortIncompleteMultipartUpload" in r for r in bp["LifecycleConfiguration"]["Rules"])
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p for p in template.of_type("AWS::S3::BucketPolicy").values()
    }
    for logical_id, bucket in template.of_type("AWS::S3::Bucket").items():
        props = bucket["Properties"]
        assert all(props["PublicAccessBlockConfiguration"].values()), logical_id
        assert props["VersioningConfiguration"]["Status"] == "Enabled", logical_id
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}], logical_id
        assert bucket["DeletionPolicy"] == "Retain", logical_id
        statements = policies[logical_id]["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
            for s in statements
        ), f"{logical_id} must refuse requests without TLS"


def test_the_results_bucket_writes_access_logs_that_expire(template: Template) -> None:
    """Who read or changed which export: S3 server access logs, to a bucket of their own that S3's
    log delivery may write (it has no ACLs: its policy says so) and that keeps them LogRetentionDays."""
    results = template.resources["ResultsBucket"]
    logging = results["Properties"]["LoggingConfiguration"]
    target_id = logging["DestinationBucketName"]["Ref"]
    target = template.resources[target_id]["Properties"]
    assert target["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {
        "SSEAlgorithm": "AES256"  # the one encryption S3 log delivery supports
    }
    (rule,) = target["LifecycleConfiguration"]["Rules"]
    assert (
        rule["ExpirationInDays"]
        == rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        == {"Ref": "LogRetentionDays"}
    )
    (policy_id,) = (
        i
        for i, p in template.of_type("AWS::S3::BucketPolicy").items()
        if p["Properties"]["Bucket"] == {"Ref": target_id}
    )
    (delivery,) = (
        s
        for s in template.resources[policy_id]["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    )
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert delivery["Action"] == "s3:PutObject"
    assert delivery["Resource"] == {"Fn::Sub": f"${{{target_id}.Arn}}/{logging['LogFilePrefix']}*"}
    assert delivery["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert policy_id in _as_list(results["DependsOn"]), "logging starts only once the delivery is allowed"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _policies(template: Template, props: dict[str, Any]) -> tuple[list[dict[str, Any]], set[str]]:
    """A function's IAM statements (inline, and those of the template's managed policies it names by
    Ref), and the names of the SAM policy templates / AWS managed policies it uses."""
    statements: list[dict[str, Any]] = []
    managed: set[str] = set()
    for policy in props.get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            statements += policy["Statement"]
        elif isinstance(policy, dict) and set(policy) == {"Ref"}:
            resource = template.resources.get(policy["Ref"])
            assert resource is not None, f"Policies names {policy['Ref']}, which is not in the template"
            assert resource["Type"] == "AWS::IAM::ManagedPolicy", policy["Ref"]
            statements += resource["Properties"]["PolicyDocument"]["Statement"]
        elif isinstance(policy, dict):
            managed |= set(policy)
        else:
            managed.add(str(policy))
    return statements, managed


def _policy_actions(template: Template, props: dict[str, Any]) -> tuple[set[str], set[str]]:
    statements, managed = _policies(template, props)
    actions = {a for stmt in statements for a in _as_list(stmt["Action"])}
    return actions, managed


def test_functions_get_least_privilege(template: Template) -> None:
    for logical_id in template.of_type("AWS::Serverless::Function"):
        actions, managed = _policy_actions(template, template.function_properties(logical_id))
        assert not [a for a in actions if a.endswith(":*") or a == "*"], logical_id
        assert not actions & {"dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}, logical_id
        assert not managed & {"DynamoDBCrudPolicy", "S3CrudPolicy", "AdministratorAccess"}, logical_id
    actions, _ = _policy_actions(template, template.function_properties("WebhookFunction"))
    assert actions == {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"}
    # check_status's failure recorder finishes a committed delivery (it writes the manifest the copy
    # did not get to, after removing what the manifest does not list, open uploads included) and
    # empties the folder of a job that ended undelivered; it uploads no parts
    actions, _ = _policy_actions(template, template.function_properties("CheckStatusFunction"))
    assert {a for a in actions if a.startswith("s3:")} == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListBucket",
        "s3:ListBucketMultipartUploads",
    }


def test_job_permissions_are_declared_once(template: Template) -> None:
    """The functions that read and move jobs share one managed policy instead of copies of it; what
    only start_export does (creating jobs, starting workflows) is not in it."""
    (policy_id,) = template.of_type("AWS::IAM::ManagedPolicy")
    users = {
        logical_id
        for logical_id in template.of_type("AWS::Serverless::Function")
        if {"Ref": policy_id} in template.function_properties(logical_id).get("Policies", [])
    }
    assert users == {"StartExportFunction", "CheckStatusFunction", "CopyResultFunction"}
    shared = {
        a
        for s in template.resources[policy_id]["Properties"]["PolicyDocument"]["Statement"]
        for a in _as_list(s["Action"])
    }
    assert shared == {"dynamodb:GetItem", "dynamodb:UpdateItem", "secretsmanager:GetSecretValue"}
    for logical_id in users:
        inline = [
            a
            for p in template.function_properties(logical_id)["Policies"]
            if isinstance(p, dict) and "Statement" in p
            for s in p["Statement"]
            for a in _as_list(s["Action"])
        ]
        assert not shared & set(inline), f"{logical_id} repeats the managed policy's actions inline"


JOB_RECORDS = {"dynamodb:GetItem", "dynamodb:UpdateItem", "secretsmanager:GetSecretValue"}
FOLDER = {
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
}
# Each function's actions, and the SAM policy templates it uses, as what it does needs them.
GRANTED: dict[str, tuple[set[str], set[str]]] = {
    # creates jobs (a transaction: Put of the job, Update of the lease), starts and watches workflows
    "StartExportFunction": (
        JOB_RECORDS | {"dynamodb:PutItem", "states:StartExecution", "states:DescribeExecution"},
        {"EventBridgePutEventsPolicy"},
    ),
    # moves jobs in their workflow, finishes and empties folders; hands a backfill's next window to
    # start_export (transitional, for executions on the previous definition): never creates a job
    # or starts a workflow itself
    "CheckStatusFunction": (JOB_RECORDS | FOLDER, {"EventBridgePutEventsPolicy", "LambdaInvokePolicy"}),
    "CopyResultFunction": (JOB_RECORDS | FOLDER, {"EventBridgePutEventsPolicy", "LambdaInvokePolicy"}),
    "WebhookFunction": ({"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"}, set()),
}


@pytest.mark.parametrize("logical_id", sorted(GRANTED))
def test_each_function_is_granted_what_it_does_and_no_more(template: Template, logical_id: str) -> None:
    actions, managed = _policy_actions(template, template.function_properties(logical_id))
    assert (actions, managed) == GRANTED[logical_id]
    if logical_id != "StartExportFunction":
        assert not {a for a in actions if a.startswith("states:")}, "only start_export starts workflows"
        assert "dynamodb:PutItem" not in actions, "only start_export creates jobs"
    for policy in template.function_properties(logical_id).get("Policies", []):
        if isinstance(policy, dict) and "LambdaInvokePolicy" in policy:
            # the only function another may invoke is the lifecycle function
            assert policy["LambdaInvokePolicy"] == {"FunctionName": {"Ref": "StartExportFunction"}}


def test_the_state_machine_may_invoke_every_function_its_tasks_name(template: Template) -> None:
    props, text = _state_machine(template)
    named = {m.group(1) for m in re.finditer(r'"FunctionName":\s*"\$\{(\w+)\}"', text)}
    invoked = {props["DefinitionSubstitutions"][n]["Fn::GetAtt"][0] for n in named}
    assert invoked == {"CheckStatusFunction", "CopyResultFunction", "StartExportFunction"}
    granted = {
        p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in props["Policies"] if "LambdaInvokePolicy" in p
    }
    assert granted == invoked


def test_the_local_stack_knows_every_resource_type(template: Template) -> None:
    from exportpipe_dev.local.stack import CREATED, NOT_EMULATED

    unknown = {r["Type"] for r in template.resources.values()} - CREATED - NOT_EMULATED
    assert not unknown, f"the local stack would refuse to start: {unknown}"


BUCKET_ARN = {"Fn::GetAtt": ["ResultsBucket", "Arn"]}


def test_readers_of_objects_may_list_the_bucket_unconditionally(template: Template) -> None:
    """S3 answers a GetObject of a missing key 404 NoSuchKey only to a caller with s3:ListBucket on the
    bucket, and 403 AccessDenied otherwise (which read_manifest does not take for "not written yet").
    A GetObject request carries no s3:prefix, so a ListBucket grant conditioned on s3:prefix does not
    count: the grant must be on the bucket itself, without a Condition."""
    readers = 0
    for logical_id in template.of_type("AWS::Serverless::Function"):
        statements, _ = _policies(template, template.function_properties(logical_id))
        allowed = [s for s in statements if s["Effect"] == "Allow"]
        if not any("s3:GetObject" in _as_list(s["Action"]) for s in allowed):
            continue
        readers += 1
        listing = [
            s
            for s in allowed
            if "s3:ListBucket" in _as_list(s["Action"])
            and BUCKET_ARN in _as_list(s["Resource"])
            and "Condition" not in s
        ]
        assert listing, f"{logical_id} reads objects but has no unconditional s3:ListBucket on the bucket"
    assert readers >= 2  # check_status and copy_result read the manifest


def test_failed_scheduled_starts_are_kept_and_alarmed(template: Template) -> None:
    """Scheduler invokes start_export asynchronously: a failing event (an invalid definition) must land
    in an encrypted queue, definition included, and an alarm must say so; not only the logs."""
    props = template.function_properties("StartExportFunction")
    on_failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    queue_id, attribute = on_failure["Destination"]["Fn::GetAtt"]
    assert attribute == "Arn"
    queue = template.resources[queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    qp = queue["Properties"]
    assert qp.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in qp, "the queue holds definitions"
    assert qp["MessageRetentionPeriod"] >= 7 * 24 * 3600, "keep failures long enough to replay them"
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] <= 2
    # what Scheduler itself could not deliver goes to the same queue
    schedules = [e for e in props["Events"].values() if e["Type"] == "ScheduleV2"]
    assert schedules
    for event in schedules:
        assert event["Properties"]["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    alarms = [
        a["Properties"]
        for a in template.of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace") == "AWS/SQS"
    ]
    assert len(alarms) == 1
    (alarm,) = alarms
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0
    assert alarm["TreatMissingData"] == "notBreaching"


# Parameters that configure the template itself and feed no setting.
TEMPLATE_ONLY_PARAMETERS = {"LogRetentionDays", "ScheduleState", "AlarmTopicArn", "ApiGatewayLogsRole"}


def _bound(field: Any, kinds: tuple[type, ...]) -> float | None:
    """The field's lower (``kinds`` = Ge, Gt) or upper (Le, Lt) bound, if it has one."""
    for m in field.metadata:
        if isinstance(m, kinds):
            (name,) = (k for k in ("ge", "gt", "le", "lt") if hasattr(m, k))
            return float(getattr(m, name))
    return None


def _parameter_of(value: Any) -> str | None:
    """The parameter an environment value passes on: ``Ref`` it, or ``Fn::If`` [condition, ``Ref`` it,
    ``AWS::NoValue``] (a variable set only when the parameter is)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, then, otherwise = value["Fn::If"]
        value = then if otherwise == {"Ref": "AWS::NoValue"} else None
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return str(value["Ref"])
    return None


def test_settings_match_the_parameters_that_feed_them(template: Template) -> None:
    """Each template parameter passed to the functions' environment has, in Settings, the same default
    and the same bounds (MinValue ↔ ge, MaxValue ↔ le: CloudFormation's bounds are inclusive), so a
    setting read outside the template (tests, the local stack) behaves as the deployed one."""
    import annotated_types as at

    env = template.body["Globals"]["Function"]["Environment"]["Variables"]
    fed = {_parameter_of(value): var for var, value in env.items() if _parameter_of(value)}
    fields = {f.alias: f for f in Settings.model_fields.values()}
    problems: list[str] = []
    from exportpipe.sources.registry import SOURCES

    secrets = {spec.connection_setting for spec in SOURCES.values()}  # read into Settings.secret_arns
    for name, spec in template.parameters.items():
        if name not in fed:
            assert name in TEMPLATE_ONLY_PARAMETERS, f"parameter {name} feeds no setting"
            continue
        if fed[name] in secrets:
            continue
        field = fields.get(fed[name])
        assert field is not None, f"{name} feeds {fed[name]}, which no setting reads"
        numeric = spec["Type"] == "Number"
        if "Default" in spec:
            expected = float(spec["Default"]) if numeric else str(spec["Default"])
            actual = None if field.is_required() else field.default
            if (float(actual) if numeric and actual is not None else actual) != expected:
                problems.append(f"{name} Default {spec['Default']!r} vs {field.alias} default {actual!r}")
        if numeric:
            if any(isinstance(m, (at.Gt, at.Lt)) for m in field.metadata):
                problems.append(f"{field.alias}: use ge/le, the template's bounds are inclusive")
            for key, kinds in (("MinValue", (at.Ge, at.Gt)), ("MaxValue", (at.Le, at.Lt))):
                template_bound = float(spec[key]) if key in spec else None
                setting_bound = _bound(field, kinds)
                if template_bound != setting_bound:
                    problems.append(f"{name} {key} {template_bound} vs {field.alias} {setting_bound}")
    assert not problems, problems


def test_local_parameters_are_within_the_template_bounds(template: Template) -> None:
    from exportpipe_dev.local.stack import LOCAL_PARAMETERS

    for name, value in LOCAL_PARAMETERS.items():
        spec = template.parameters[name]
        if spec["Type"] == "Number":
            assert (
                float(spec.get("MinValue", "-inf")) <= float(value) <= float(spec.get("MaxValue", "inf"))
            ), name


def test_the_local_stack_finds_the_template_from_the_package_or_a_folder_below_it(tmp_path: Path) -> None:
    from exportpipe_dev.local.stack import find_template
    from exportpipe_dev.local.template import TemplateError

    assert find_template() == ROOT / "template.yaml"  # from the package: this checkout's
    project, bare = tmp_path / "project", tmp_path / "bare"
    (project / "a" / "b").mkdir(parents=True)
    bare.mkdir()
    (project / "template.yaml").write_text("Resources: {}\n")
    assert find_template(project / "a" / "b") == project / "template.yaml"
    with pytest.raises(TemplateError, match=r"no template\.yaml in .*bare or any folder above"):
        find_template(bare)


# ---- operations: alarm actions, metric math, access logs, freshness, checkov -----------------------

ALARM_ACTIONS = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
# alarms whose OK means the problem is over (a state, not an event of the last period)
STATE_ALARMS = {"StartExportFailuresAlarm"}


def _alarms(template: Template) -> dict[str, dict[str, Any]]:
    return {i: a["Properties"] for i, a in template.of_type("AWS::CloudWatch::Alarm").items()}


def _resolver(template: Template, **parameters: str) -> Any:
    from exportpipe_dev.local.template import Resolver

    values = {n: str(p.get("Default", "")) for n, p in template.parameters.items()}
    return Resolver({**values, **parameters}, {}, {}, {}, template.conditions)


def test_every_alarm_notifies_the_alarm_topic_when_one_is_given(template: Template) -> None:
    spec = template.parameters["AlarmTopicArn"]
    assert spec["Default"] == ""
    assert template.conditions["HasAlarmTopic"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]
    }
    alarms = _alarms(template)
    assert alarms
    freshness = {i for i, a in alarms.items() if a.get("MetricName") == "WatermarkAgeSeconds"}
    for logical_id, props in alarms.items():
        assert props.get("AlarmActions") == ALARM_ACTIONS, f"{logical_id} notifies nobody"
        if logical_id in STATE_ALARMS | freshness:
            assert props.get("OKActions") == ALARM_ACTIONS, f"{logical_id} should also say when it is over"
    # resolved: no topic, no actions; a topic, that topic
    arn = "arn:aws:sns:us-east-1:123456789012:exportpipe-alarms"
    some = {k: alarms["StartExportFailuresAlarm"][k] for k in ("AlarmActions", "OKActions")}
    assert _resolver(template).resolve(some) == {}
    resolved = _resolver(template, AlarmTopicArn=arn).resolve(some)
    assert resolved["AlarmActions"] == resolved["OKActions"] == [arn]
    pattern = re.compile(spec["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch(arn)
    assert not pattern.fullmatch("arn:aws:sqs:us-east-1:123456789012:queue")


def test_metric_math_fills_every_metric_it_combines(template: Template) -> None:
    """A metric that published nothing in a period (no failure happened) is missing, and missing in
    an expression makes the result missing: ``a + b`` never breaches while either is silent, so
    each metric an expression combines must be wrapped in FILL(id, …)."""
    for logical_id, props in _alarms(template).items():
        queries = props.get("Metrics", [])
        metric_ids = {q["Id"] for q in queries if "MetricStat" in q}
        for query in queries:
            expression = query.get("Expression")
            if expression is None:
                continue
            named = {m for m in metric_ids if re.search(rf"\b{m}\b", expression)}
            assert named, f"{logical_id}: {expression} names no metric"
            if len(named) < 2:
                continue
            unfilled = {
                m
                for m in named
                if re.search(rf"\b{m}\b", re.sub(rf"FILL\(\s*{m}\s*,[^)]*\)", "", expression))
            }
            assert not unfilled, f"{logical_id}: {expression} does not FILL {sorted(unfilled)}"


def test_the_webhook_api_writes_a_json_access_log_without_bodies(template: Template) -> None:
    api = template.resources["WebhookApi"]
    setting = api["Properties"]["AccessLogSetting"]
    (group_id, attribute) = setting["DestinationArn"]["Fn::GetAtt"]
    group = template.resources[group_id]
    assert attribute == "Arn" and group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    fmt = setting["Format"]
    assert "\n" not in fmt, "one line per request"
    fields = json.loads(fmt)
    assert {"requestId", "ip", "requestTime", "httpMethod", "resourcePath", "status"} <= set(fields)
    assert {"responseLatency", "integrationLatency", "integrationError", "errorMessage"} <= set(fields)
    variables = re.findall(r"\$[\w.]+", fmt)
    assert all(v.startswith("$context.") for v in variables), "only $context variables: no $input, no body"
    assert not [v for v in variables if re.search(r"body|header|authorizer|stageVariables", v, re.I)]


def test_the_api_stage_waits_for_the_accounts_logging_role(template: Template) -> None:
    """API Gateway refuses a stage with an access log until the account's settings name a CloudWatch
    Logs role. When the stack sets it, the API must be created after it; a DependsOn cannot name a
    conditional resource, so it goes through a handle that references it only then."""
    handle_id = template.resources["WebhookApi"]["DependsOn"]
    handle = template.resources[handle_id]
    assert handle["Type"] == "AWS::CloudFormation::WaitConditionHandle" and "Condition" not in handle
    reference = handle["Metadata"]["AccountSetting"]["Fn::If"]
    condition = reference[0]
    assert reference[1] == {"Ref": "ApiGatewayAccount"}
    account = template.resources["ApiGatewayAccount"]
    assert account["Condition"] == condition and account["DeletionPolicy"] == "Retain"
    role_id, _ = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"]
    role = template.resources[role_id]
    assert role["Condition"] == condition and role["DeletionPolicy"] == "Retain"
    assert _resolver(template).condition(condition), (
        "by default the stack sets the role: a fresh account works"
    )
    assert not _resolver(template, ApiGatewayLogsRole="existing").condition(condition)


def _cron_matches(field: str, value: int) -> bool:
    for part in field.split(","):
        base, _, step = part.partition("/")
        if base in ("*", "?"):
            low, high = 0, 59
        elif "-" in base:
            low, high = (int(x) for x in base.split("-"))
        else:
            low = int(base)
            high = 59 if step else low
        if low <= value <= high and (value - low) % int(step or 1) == 0:
            return True
    return False


def _schedule_interval(expression: str) -> int:
    """The longest time in seconds between two runs of a ``rate(…)`` or ``cron(…)`` schedule."""
    rate = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", expression)
    if rate:
        return int(rate[1]) * {"minute": 60, "hour": 3600, "day": 86400}[rate[2]]
    cron = re.fullmatch(r"cron\((.+)\)", expression)
    assert cron, expression
    minute, hour, dom, month, dow, year = cron[1].split()
    assert {dom, month, dow, year} <= {"*", "?"}, f"teach this test the schedule {expression}"
    runs = [
        m for m in range(2 * 24 * 60) if _cron_matches(minute, m % 60) and _cron_matches(hour, m // 60 % 24)
    ]
    return max(b - a for a, b in itertools.pairwise(runs)) * 60


def test_schedule_intervals_are_read_right() -> None:
    assert _schedule_interval("cron(5 * * * ? *)") == 3600
    assert _schedule_interval("cron(15 2 * * ? *)") == 86400
    assert _schedule_interval("cron(0/15 * * * ? *)") == 900
    assert _schedule_interval("cron(0 6,18 * * ? *)") == 12 * 3600
    assert _schedule_interval("rate(30 minutes)") == 1800


def test_every_schedule_has_a_freshness_alarm_for_its_definition(template: Template) -> None:
    """A definition that silently stops landing data (its exports failing, given up, or its ticks
    no longer running) is seen: each schedule's definition has an alarm on its WatermarkAgeSeconds
    that fires past 2 intervals + the lag (a healthy tick reads about one interval + the lag) and
    when no tick reports."""
    from exportpipe.sources.registry import parse_definition

    freshness = {
        {d["Name"]: d["Value"] for d in a["Dimensions"]}["definition"]: (i, a)
        for i, a in _alarms(template).items()
        if a.get("MetricName") == "WatermarkAgeSeconds"
    }
    props = template.function_properties("StartExportFunction")
    schedules = [e["Properties"] for e in props["Events"].values() if e["Type"] == "ScheduleV2"]
    assert schedules
    names = set()
    for schedule in schedules:
        definition = parse_definition(json.loads(schedule["Input"])["definition"])
        names.add(definition.name)
        assert definition.name in freshness, f"schedule of {definition.name} has no freshness alarm"
        logical_id, alarm = freshness[definition.name]
        interval = _schedule_interval(schedule["ScheduleExpression"])
        assert alarm["Namespace"] == "ExportPipe"
        assert alarm["Dimensions"] == [
            {"Name": "service", "Value": "exportpipe"},
            {"Name": "definition", "Value": definition.name},
        ], "the dimensions start_export emits (put_single_metric adds service)"
        assert alarm["Statistic"] == "Maximum" and alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["Threshold"] == 2 * interval + definition.lag.total_seconds(), logical_id
        assert alarm["Period"] == min(interval, 86400) and alarm["EvaluationPeriods"] == 1, logical_id
        assert alarm["TreatMissingData"] == "breaching", f"{logical_id}: ticks that stop must count"
        assert alarm["ActionsEnabled"] == {"Fn::If": ["SchedulesEnabled", True, False]}
    assert set(freshness) == names, "a freshness alarm for a definition no schedule runs"
    assert template.conditions["SchedulesEnabled"] == {"Fn::Equals": [{"Ref": "ScheduleState"}, "ENABLED"]}


def test_checkov_suppressions_each_say_why(template: Template) -> None:
    for logical_id, res in template.resources.items():
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert set(skip) == {"id", "comment"}, logical_id
            assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), logical_id
            assert len(skip["comment"]) > 30, f"{logical_id} {skip['id']}: say why it does not apply"


CONNECTION_SECRETS = (
    "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ConnectionSecretPrefix}*"
)


def test_functions_that_call_upstreams_may_read_every_connections_secret_and_no_other(
    template: Template,
) -> None:
    """A job runs with its definition's connection: the source's default secret (its parameter), or a
    named one under ConnectionSecretPrefix. Every grant of GetSecretValue names exactly those."""
    from exportpipe.sources.registry import SOURCES

    env = template.body["Globals"]["Function"]["Environment"]["Variables"]
    defaults = [env[spec.connection_setting] for spec in SOURCES.values()]  # {"Ref": "PardotSecretArn"}
    expected = [*defaults, {"Fn::Sub": CONNECTION_SECRETS}]
    readers = set()
    for logical_id in template.of_type("AWS::Serverless::Function"):
        statements, _ = _policies(template, template.function_properties(logical_id))
        for statement in statements:
            if "secretsmanager:GetSecretValue" in _as_list(statement["Action"]):
                assert _as_list(statement["Action"]) == ["secretsmanager:GetSecretValue"], logical_id
                resources = _as_list(statement["Resource"])
                assert sorted(map(json.dumps, resources)) == sorted(map(json.dumps, expected)), logical_id
                readers.add(logical_id)
    assert {"StartExportFunction", "CheckStatusFunction", "CopyResultFunction"} <= readers


def test_the_connection_prefix_parameter_and_setting_accept_the_same_prefixes(template: Template) -> None:
    import annotated_types as at

    from exportpipe.config import CONNECTION_PREFIX_PATTERN

    spec = template.parameters["ConnectionSecretPrefix"]
    field = Settings.model_fields["connection_secret_prefix"]
    assert spec["AllowedPattern"] == CONNECTION_PREFIX_PATTERN
    assert [m.max_length for m in field.metadata if isinstance(m, at.MaxLen)] == [spec["MaxLength"]]
    assert template.body["Globals"]["Function"]["Environment"]["Variables"]["CONNECTION_SECRET_PREFIX"] == {
        "Ref": "ConnectionSecretPrefix"
    }
    # the grant covers "<prefix>*": a prefix always ends a path segment, so it never reaches a secret
    # whose name merely starts like it ("exportpipe" would reach "exportpipe-prod-db")
    assert re.fullmatch(CONNECTION_PREFIX_PATTERN.strip("^$"), spec["Default"])
    for wide in ("", "*", "exportpipe", "exportpipe*/"):
        assert not re.fullmatch(spec["AllowedPattern"].strip("^$"), wide)
