"""LocalStack: the whole application on one machine, derived from ``template.yaml``.

- moto's server on a free loopback port, with Step Functions executing the real ASL file
  (``stepfunctions.execute_state_machine``) and Lambda bridged in-process to the real handlers, each
  function's ``Timeout`` enforced as Lambda does (``function_timeouts={"CopyResultFunction": 12}``
  or :meth:`LocalStack.set_function_timeout` gives a function a shorter one for a test);
- the template's buckets, tables, queues, event buses, functions, state machines and schedules created in it,
  with each function's environment (Globals merged, Refs resolved to the local resources);
- the source sandboxes, and a Secrets Manager secret per source holding the sandbox's credentials
  (its default connection); ``connections={"pardot/emea": PardotSandbox(...)}`` adds named
  connections, each a secret ``<stack name>/<source>/<name>`` (the local ``ConnectionSecretPrefix``)
  holding its own sandbox's credentials (a sandbox of its own: a second account; the source's
  sandbox itself: the same credentials under another name);
- the API Gateway front door for the template's ``Api`` events;
- a consumer queue subscribed to the export event bus, so tests and the demo see what consumers see.

moto's Scheduler stores schedules but never fires them: :meth:`LocalStack.fire` delivers a
schedule's input (with ``<aws.scheduler.*>`` placeholders filled) to its target function, the way
EventBridge Scheduler would. Only one LocalStack runs per process (the Lambda bridge and
``MOTO_PORT`` are process-wide).
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import requests
from moto.server import ThreadedMotoServer

from exportpipe.adapters.aws import reset_aws_clients
from exportpipe.adapters.secrets import clear_secret_cache
from exportpipe.models.connection import Connection
from exportpipe_dev.local.bridge import FunctionSpec, LambdaBridge
from exportpipe_dev.local.frontdoor import FrontDoor, Route
from exportpipe_dev.local.iam import AccessControl, Grants, check_task_invocations, grants_of
from exportpipe_dev.local.template import Resolver, Template, TemplateError, substitute_definition
from exportpipe_dev.sandbox.base import Sandbox, SandboxServer

ACCOUNT = "123456789012"
REGION = "us-east-1"
TEMPLATE_NAME = "template.yaml"

# Resource types the local stack creates, and those it knowingly leaves out (they change nothing a
# local run can observe: logs, alarms, bucket policies; IAM roles and policies are not created, but
# each function's Policies are enforced on its calls, see local/iam.py). Any other type is an error, so a new
# resource in the template is never silently missing locally. A resource whose Condition is false
# (with the local parameters) is left out, as CloudFormation does.
CREATED = {
    "AWS::Serverless::Function",
    "AWS::Serverless::StateMachine",
    "AWS::DynamoDB::Table",
    "AWS::S3::Bucket",
    "AWS::Events::EventBus",
    "AWS::Serverless::Api",
    "AWS::Scheduler::Schedule",
    "AWS::SQS::Queue",
}
NOT_EMULATED = {
    "AWS::Serverless::LayerVersion",  # the layer's code is imported directly
    "AWS::Logs::LogGroup",
    "AWS::CloudWatch::Alarm",
    "AWS::S3::BucketPolicy",
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::ApiGateway::Account",  # the account's logging role: the local front door logs nothing
    "AWS::CloudFormation::WaitConditionHandle",  # only orders resources
}

# AWS::SQS::Queue properties that are queue attributes of the same name.
_QUEUE_ATTRIBUTES = {
    "ContentBasedDeduplication",
    "DelaySeconds",
    "FifoQueue",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
}

# Local settings for the template's parameters: short waits so the real state machine runs in seconds.
LOCAL_PARAMETERS = {
    "DownloadHostAllowlist": "127.0.0.1,localhost",
    "PollBaseSeconds": "1",
    "PollMaxSeconds": "2",
    "PollMaxAttempts": "30",
    "PollTimeoutSeconds": "300",
    "CopyPartSizeMiB": "5",
    "RateLimitWaitSeconds": "1",
    "UpstreamBackoffSeconds": "0.1",
}

# Template parameter that receives each sandbox's secret ARN.
SECRET_PARAMETERS = {"pardot": "PardotSecretArn", "advocate": "AdvocateSecretArn"}

_active = threading.Lock()


@dataclass(frozen=True)
class Schedule:
    name: str
    expression: str
    input: str
    target_function: str


def _quiet() -> None:
    for name in ("werkzeug", "moto.stepfunctions.parser", "botocore.credentials"):
        logging.getLogger(name).setLevel(logging.ERROR)


def find_template(*starts: Path) -> Path:
    """The first ``template.yaml`` in one of ``starts`` or a folder above it. By default the search
    starts at this package (the checkout it is installed from, editable) and then at the working
    directory (a checkout whose package is installed elsewhere)."""
    folders = [p.resolve() for p in starts] or [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in folders:
        for folder in (start, *start.parents):
            candidate = folder / TEMPLATE_NAME
            if candidate.is_file():
                return candidate
    raise TemplateError(
        f"no {TEMPLATE_NAME} in {' or '.join(map(str, folders))} or any folder above; "
        "pass LocalStack(template=<path to the project's template.yaml>)"
    )


def _queue_attribute(value: Any) -> str:
    """A queue property as SQS's attribute string (booleans lower case, RedrivePolicy as JSON)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _zip(source_dir: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(source_dir.rglob("*.py")):
            zf.write(path, path.relative_to(source_dir))
    return buf.getvalue()


class LocalStack:
    def __init__(
        self,
        template: str | Path | None = None,
        *,
        parameters: Mapping[str, str] | None = None,
        sandboxes: Mapping[str, Sandbox] | None = None,
        stack_name: str = "exportpipe-local",
        log_level: str | None = None,
        execute_workflows: bool = True,
        function_timeouts: Mapping[str, int] | None = None,
        connections: Mapping[str, Sandbox] | None = None,
    ) -> None:
        self.template = Template.load(template if template is not None else find_template())
        self.stack_name = stack_name
        self._parameter_overrides = {**LOCAL_PARAMETERS, **(parameters or {})}
        self._sandbox_apps = dict(sandboxes) if sandboxes is not None else _default_sandboxes()
        # named connections, by id ("pardot/emea"): the sandbox whose credentials each one holds
        self._connection_apps = dict(connections or {})
        for connection_id, app in self._connection_apps.items():
            source, _, name = connection_id.partition("/")
            if source != app.source or Connection.of(source, name).is_default:
                raise ValueError(
                    f"connection {connection_id!r}: expected '{app.source}/<name>', not the default"
                )
        self._log_level = log_level
        self._execute_workflows = execute_workflows
        # the template's Timeout of these functions (logical ids), replaced for tests; the bridge
        # enforces whichever applies, as Lambda does (see set_function_timeout)
        self._function_timeouts = dict(function_timeouts or {})
        self._template_timeouts: dict[str, int] = {}
        self._saved_env: dict[str, str | None] = {}
        self._moto: ThreadedMotoServer | None = None
        self._sandbox_servers: dict[str, SandboxServer] = {}
        self._connection_servers: dict[str, SandboxServer] = {}  # those not a source's own sandbox
        self._connection_prefix = f"{stack_name}/"
        self.bridge = LambdaBridge()
        self.front_door: FrontDoor | None = None
        self.endpoint_url = ""
        self.functions: dict[str, FunctionSpec] = {}
        self.schedules: dict[str, Schedule] = {}
        self.refs: dict[str, Any] = {}
        self.queues: dict[str, str] = {}  # the template's SQS queues: logical id -> queue URL
        # each function's template policies, enforced on its handler's AWS calls (local/iam.py)
        self.access = AccessControl({}, region=REGION, account=ACCOUNT)
        self.consumer_queue_url = ""
        self._owns_lock = False

    # ---- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if not _active.acquire(blocking=False):
            raise RuntimeError("a LocalStack is already running in this process")
        self._owns_lock = True
        try:
            _quiet()
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._moto.start()
            host, port = self._moto.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
            self._set_env(
                {
                    "MOTO_PORT": str(port),
                    "AWS_ENDPOINT_URL": self.endpoint_url,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SESSION_TOKEN": "testing",
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_REGION": REGION,
                    "POWERTOOLS_TRACE_DISABLED": "true",
                }
            )
            reset_aws_clients()
            clear_secret_cache()
            # moto's backends live in this process: start from an empty account every time
            requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()
            requests.post(
                f"{self.endpoint_url}/moto-api/config",
                json={
                    "stepfunctions": {"execute_state_machine": self._execute_workflows},
                    "lambda": {"use_docker": False},
                },
                timeout=10,
            ).raise_for_status()
            for source, app in self._sandbox_apps.items():
                server = SandboxServer(app)
                server.start()
                self._sandbox_servers[source] = server
            for connection_id, app in self._connection_apps.items():
                if app is not self._sandbox_apps.get(app.source):
                    server = SandboxServer(app)
                    server.start()
                    self._connection_servers[connection_id] = server
            self._deploy()
            self.access.install()
            reset_aws_clients()  # the handlers' clients are made after the check is registered
            self.bridge.install()
            if self._log_level:
                from exportpipe.observability import logger

                logger.setLevel(self._log_level)
                # quiet runs (the demo) also skip the metrics' EMF lines: there is no CloudWatch here
                self._set_env({"POWERTOOLS_METRICS_DISABLED": "true"})
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.bridge.uninstall()
        self.access.uninstall()
        if self.front_door is not None:
            self.front_door.stop()
            self.front_door = None
        for server in [*self._sandbox_servers.values(), *self._connection_servers.values()]:
            server.stop()
        self._sandbox_servers.clear()
        self._connection_servers.clear()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        reset_aws_clients()
        clear_secret_cache()
        if self._owns_lock:
            self._owns_lock = False
            _active.release()

    def _set_env(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    # ---- clients and handles -----------------------------------------------------------------

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    @property
    def sandboxes(self) -> dict[str, Sandbox]:
        return dict(self._sandbox_apps)

    def sandbox_url(self, source: str) -> str:
        return self._sandbox_servers[source].base_url

    @property
    def connection_secret_prefix(self) -> str:
        """Where named connections' secrets are (the ``ConnectionSecretPrefix`` parameter): locally
        ``<stack name>/``, so a secret ``exportpipe-local/pardot/emea`` is the connection ``emea``."""
        return self._connection_prefix

    def connection_secret(self, connection_id: str) -> str:
        """The name of the secret a connection reads (``pardot/default``: the source's own)."""
        source, _, name = connection_id.partition("/")
        if Connection.of(source, name).is_default:
            return f"{self.stack_name}/{source}"
        return f"{self._connection_prefix}{connection_id}"

    @property
    def webhook_url(self) -> str:
        if self.front_door is None:
            raise RuntimeError("the template declares no Api events")
        return self.front_door.url

    @property
    def bucket(self) -> str:
        """The results bucket: the template's bucket that is not another's access-log target."""
        buckets = self.template.of_type("AWS::S3::Bucket")
        targets = {
            str(
                res.get("Properties", {})
                .get("LoggingConfiguration", {})
                .get("DestinationBucketName", {})
                .get("Ref")
            )
            for res in buckets.values()
        }
        ids = [logical_id for logical_id in buckets if logical_id not in targets]
        if len(ids) != 1:
            raise TemplateError(f"expected one bucket that is no access-log target, the template has {ids}")
        return str(self.refs[ids[0]])

    @property
    def table(self) -> str:
        return str(self._single("AWS::DynamoDB::Table"))

    @property
    def event_bus(self) -> str:
        return str(self._single("AWS::Events::EventBus"))

    @property
    def state_machine_arn(self) -> str:
        return str(self._single("AWS::Serverless::StateMachine"))

    def _single(self, resource_type: str) -> Any:
        ids = list(self.template.of_type(resource_type))
        if len(ids) != 1:
            raise TemplateError(f"expected one {resource_type}, the template has {len(ids)}")
        return self.refs[ids[0]]

    # ---- deployment from the template --------------------------------------------------------

    def _deploy(self) -> None:
        for logical_id, res in self.template.resources.items():
            if res["Type"] not in CREATED | NOT_EMULATED:
                raise TemplateError(f"{logical_id}: resource type {res['Type']} is not supported locally")
        pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        params = self._parameters()
        conditions = self.template.conditions
        # First pass: physical names, Refs and GetAtts (all deterministic), so the second pass can
        # resolve any property no matter which resource it points at.
        name_resolver = Resolver(params, {}, {}, pseudo, conditions)
        self.template = tpl = self.template.active(name_resolver)
        attrs: dict[tuple[str, str], Any] = {}
        for logical_id, res in tpl.resources.items():
            kind, props = res["Type"], res.get("Properties", {})
            base = f"{self.stack_name}-{logical_id}"
            if kind == "AWS::Serverless::Function":
                arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{base}"
                self.refs[logical_id] = base
                attrs[(logical_id, "Arn")] = arn
            elif kind == "AWS::Serverless::StateMachine":
                name = name_resolver.resolve(props.get("Name", base))
                arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
                self.refs[logical_id] = arn
                attrs[(logical_id, "Arn")] = arn
                attrs[(logical_id, "Name")] = name
            elif kind == "AWS::DynamoDB::Table":
                name = name_resolver.resolve(props.get("TableName", base))
                self.refs[logical_id] = name
                attrs[(logical_id, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
            elif kind == "AWS::S3::Bucket":
                name = name_resolver.resolve(props.get("BucketName", base.lower()))[:63]
                self.refs[logical_id] = name
                attrs[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
            elif kind == "AWS::Events::EventBus":
                name = name_resolver.resolve(props.get("Name", base))
                self.refs[logical_id] = name
                attrs[(logical_id, "Arn")] = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{name}"
            elif kind == "AWS::SQS::Queue":
                name = name_resolver.resolve(props.get("QueueName", base))
                self.refs[logical_id] = f"{self.endpoint_url}/{ACCOUNT}/{name}"  # moto's URL; set on create
                attrs[(logical_id, "Arn")] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
                attrs[(logical_id, "QueueName")] = name
            elif kind == "AWS::Logs::LogGroup":
                self.refs[logical_id] = base
                attrs[(logical_id, "Arn")] = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{base}:*"
            else:
                self.refs[logical_id] = base
        resolver = Resolver(params, self.refs, attrs, pseudo, conditions)

        iam = self.client("iam")
        role_arn = iam.create_role(
            RoleName=f"{self.stack_name}-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]

        for logical_id, res in tpl.of_type("AWS::DynamoDB::Table").items():
            self._create_table(self.refs[logical_id], resolver.resolve(res.get("Properties", {})))
        for logical_id, res in tpl.of_type("AWS::S3::Bucket").items():
            self._create_bucket(self.refs[logical_id], resolver.resolve(res.get("Properties", {})))
        for logical_id, res in tpl.of_type("AWS::SQS::Queue").items():
            self._create_queue(logical_id, attrs, resolver.resolve(res.get("Properties", {})))
        for logical_id in tpl.of_type("AWS::Events::EventBus"):
            self.client("events").create_event_bus(Name=self.refs[logical_id])
            self._subscribe_consumer(self.refs[logical_id])
        routes: list[Route] = []
        unknown = set(self._function_timeouts) - set(tpl.of_type("AWS::Serverless::Function"))
        if unknown:
            raise TemplateError(f"function_timeouts names functions the template lacks: {sorted(unknown)}")
        grants: dict[str, Grants] = {}
        for logical_id in tpl.of_type("AWS::Serverless::Function"):
            routes += self._create_function(logical_id, resolver, role_arn)
            policies = tpl.function_properties(logical_id).get("Policies")
            grants[logical_id] = grants_of(logical_id, policies, tpl, resolver)
        self.access = AccessControl(grants, region=REGION, account=ACCOUNT)
        for logical_id, res in tpl.of_type("AWS::Serverless::StateMachine").items():
            props = res["Properties"]
            text = (tpl.root / props["DefinitionUri"]).read_text(encoding="utf-8")
            definition = substitute_definition(
                text, resolver.resolve(props.get("DefinitionSubstitutions", {}))
            )
            role = grants_of(logical_id, props.get("Policies"), tpl, resolver)
            check_task_invocations(definition, role, region=REGION, account=ACCOUNT)
            self.client("stepfunctions").create_state_machine(
                name=attrs[(logical_id, "Name")],
                definition=definition,
                roleArn=role_arn,
                type=props.get("Type", "STANDARD"),
            )
        for logical_id, res in tpl.of_type("AWS::Scheduler::Schedule").items():
            props = resolver.resolve(res["Properties"])
            target = props["Target"]
            self._add_schedule(
                logical_id,
                props["ScheduleExpression"],
                target.get("Input", "{}"),
                str(target["Arn"]).rsplit(":", 1)[-1],
                role_arn,
            )
        if routes:
            self.front_door = FrontDoor(routes, self.client("lambda"))
            self.front_door.start()

    def _parameters(self) -> dict[str, str]:
        values: dict[str, str] = {}
        secrets = self.client("secretsmanager")
        for source, server in self._sandbox_servers.items():
            arn = secrets.create_secret(Name=f"{self.stack_name}/{source}", SecretString=_secret_of(server))[
                "ARN"
            ]
            if source in SECRET_PARAMETERS:
                values[SECRET_PARAMETERS[source]] = arn
        prefix = self._parameter_overrides.get("ConnectionSecretPrefix", f"{self.stack_name}/")
        values["ConnectionSecretPrefix"] = self._connection_prefix = prefix
        for connection_id, app in self._connection_apps.items():
            server = self._connection_servers.get(connection_id) or self._sandbox_servers[app.source]
            secrets.create_secret(Name=f"{prefix}{connection_id}", SecretString=_secret_of(server))
        for name, spec in self.template.parameters.items():
            if name in self._parameter_overrides:
                values[name] = str(self._parameter_overrides[name])
            elif name in values:
                continue
            elif "Default" in spec:
                values[name] = str(spec["Default"])
            else:
                raise TemplateError(f"parameter {name} has no default and no local value")
        return values

    def _create_table(self, name: str, props: dict[str, Any]) -> None:
        ddb = self.client("dynamodb")
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        ddb.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)

    def _create_bucket(self, name: str, props: dict[str, Any]) -> None:
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        if props.get("VersioningConfiguration"):
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=props["VersioningConfiguration"])
        if props.get("BucketEncryption"):
            rules = [
                {
                    "ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"],
                    "BucketKeyEnabled": r.get("BucketKeyEnabled", False),
                }
                for r in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if props.get("PublicAccessBlockConfiguration"):
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        if props.get("LifecycleConfiguration"):
            rules = []
            for rule in props["LifecycleConfiguration"]["Rules"]:
                out: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": ""}}
                if "AbortIncompleteMultipartUpload" in rule:
                    out["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
                if "NoncurrentVersionExpiration" in rule:
                    out["NoncurrentVersionExpiration"] = {
                        "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
                    }
                if "ExpirationInDays" in rule:
                    out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
                rules.append(out)
            s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})

    def _create_queue(
        self, logical_id: str, attrs: dict[tuple[str, str], Any], props: dict[str, Any]
    ) -> None:
        attributes = {k: _queue_attribute(v) for k, v in props.items() if k in _QUEUE_ATTRIBUTES}
        url = self.client("sqs").create_queue(
            QueueName=attrs[(logical_id, "QueueName")], Attributes=attributes
        )["QueueUrl"]
        self.refs[logical_id] = url
        attrs[(logical_id, "QueueUrl")] = url
        self.queues[logical_id] = url

    def _subscribe_consumer(self, bus: str) -> None:
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=f"{self.stack_name}-consumer")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events = self.client("events")
        events.put_rule(
            Name=f"{self.stack_name}-consumer",
            EventBusName=bus,
            EventPattern=json.dumps({"source": ["exportpipe"]}),
        )
        events.put_targets(
            Rule=f"{self.stack_name}-consumer", EventBusName=bus, Targets=[{"Id": "consumer", "Arn": arn}]
        )
        self.consumer_queue_url = url

    def _create_function(self, logical_id: str, resolver: Resolver, role_arn: str) -> list[Route]:
        props = self.template.function_properties(logical_id)
        name = self.refs[logical_id]
        code_dir = (self.template.root / props["CodeUri"]).resolve()
        module_file, _, attribute = str(props["Handler"]).rpartition(".")
        env = {
            k: str(v) for k, v in resolver.resolve(props.get("Environment", {}).get("Variables", {})).items()
        }
        spec = FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
            source_file=code_dir / f"{module_file.replace('.', '/')}.py",
            attribute=attribute,
            timeout_seconds=self._function_timeouts.get(logical_id, int(props.get("Timeout", 3))),
            memory_mb=int(props.get("MemorySize", 128)),
            environment=env,
        )
        self._apply_function_env(spec)
        self.client("lambda").create_function(
            FunctionName=name,
            Runtime=props.get("Runtime", "python3.12"),
            Role=role_arn,
            Handler=props["Handler"],
            Code={"ZipFile": _zip(code_dir)},
            Timeout=spec.timeout_seconds,
            MemorySize=spec.memory_mb,
            Environment={"Variables": env},
        )
        self.bridge.register(spec)
        self.functions[logical_id] = spec
        self._template_timeouts[logical_id] = int(props.get("Timeout", 3))
        routes = []
        for event_id, event in (props.get("Events") or {}).items():
            ev_props = resolver.resolve(event.get("Properties", {}))
            if event["Type"] == "Api":
                api_id = event["Properties"].get("RestApiId", {}).get("Ref")
                stage = self.template.resources.get(api_id, {}).get("Properties", {}).get("StageName", "Prod")
                routes.append(Route(ev_props["Method"], ev_props["Path"], name, str(stage)))
            elif event["Type"] in ("ScheduleV2", "Schedule"):
                self._add_schedule(
                    f"{logical_id}{event_id}",
                    ev_props["ScheduleExpression"],
                    ev_props.get("Input", "{}"),
                    name,
                    role_arn,
                )
        return routes

    def _apply_function_env(self, spec: FunctionSpec) -> None:
        # Handlers share this process, so their variables share os.environ: refuse a template in
        # which two functions give one variable different values, rather than run one with the
        # other's setting.
        for key, value in spec.environment.items():
            for other in self.functions.values():
                if other.environment.get(key, value) != value:
                    raise TemplateError(
                        f"{spec.logical_id} and {other.logical_id} set {key} differently; the local stack "
                        "runs all handlers in one process"
                    )
        self._set_env(spec.environment)

    def _add_schedule(
        self, name: str, expression: str, payload: str, function_name: str, role_arn: str
    ) -> None:
        json.loads(payload.replace("<aws.scheduler.scheduled-time>", "2000-01-01T00:00:00Z"))  # valid JSON?
        self.client("scheduler").create_schedule(
            Name=name,
            ScheduleExpression=expression,
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={
                "Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}",
                "RoleArn": role_arn,
                "Input": payload,
            },
        )
        self.schedules[name] = Schedule(name, expression, payload, function_name)

    # ---- running things ----------------------------------------------------------------------

    def fire(self, schedule: str, at: datetime | None = None, *, attempt: int = 1) -> dict[str, Any]:
        """Deliver a schedule's input to its target, as EventBridge Scheduler does at ``at``."""
        sched = self.schedules[schedule]
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        payload = (
            sched.input.replace("<aws.scheduler.scheduled-time>", moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
            .replace(
                "<aws.scheduler.schedule-arn>",
                f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/{sched.name}",
            )
            .replace("<aws.scheduler.execution-id>", str(uuid.uuid4()))
            .replace("<aws.scheduler.attempt-number>", str(attempt))
        )
        return self.invoke_function_name(sched.target_function, json.loads(payload))

    def set_function_timeout(self, logical_id: str, seconds: int | None) -> int:
        """Give a function another ``Timeout`` (whole seconds, as Lambda's) from its next invocation
        on, or its template's again with None; returns the timeout it had. The bridge answers an
        invocation that outlives it ``Sandbox.Timedout``, as Lambda does, while the handler runs on."""
        spec = self.functions[logical_id]
        previous = spec.timeout_seconds
        timeout = self._template_timeouts[logical_id] if seconds is None else int(seconds)
        if timeout < 1:
            raise ValueError("a Lambda timeout is at least 1 second")
        self.client("lambda").update_function_configuration(FunctionName=spec.name, Timeout=timeout)
        spec.timeout_seconds = timeout
        return previous

    def invoke(self, logical_id: str, event: Any) -> dict[str, Any]:
        return self.invoke_function_name(self.functions[logical_id].name, event)

    def invoke_function_name(self, name: str, event: Any) -> dict[str, Any]:
        resp = self.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event).encode())
        payload = json.loads(resp["Payload"].read() or b"null")
        if resp.get("FunctionError"):
            raise FunctionFailedError(name, payload)
        return payload  # type: ignore[no-any-return]

    def wait_for_execution(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the job's poll execution ends; return describe_execution's answer."""
        sfn = self.client("stepfunctions")
        arn = self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{job_id}"
        deadline = time.monotonic() + timeout
        while True:
            desc: dict[str, Any] = sfn.describe_execution(executionArn=arn)
            if desc["status"] != "RUNNING":
                return desc
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {job_id} still RUNNING after {timeout} s")
            time.sleep(0.2)

    def execution_states(self, job_id: str) -> list[str]:
        """Names of the states the job's execution entered, in order."""
        sfn = self.client("stepfunctions")
        arn = self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{job_id}"
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]

    def consumer_events(self, wait_seconds: float = 0.0) -> Iterator[dict[str, Any]]:
        """Drain what a consumer subscribed to the export bus has received."""
        sqs = self.client("sqs")
        deadline = time.monotonic() + wait_seconds
        while True:
            msgs = sqs.receive_message(QueueUrl=self.consumer_queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            for m in msgs:
                sqs.delete_message(QueueUrl=self.consumer_queue_url, ReceiptHandle=m["ReceiptHandle"])
                yield json.loads(m["Body"])
            if not msgs and time.monotonic() >= deadline:
                return
            if not msgs:
                time.sleep(0.1)


class FunctionFailedError(Exception):
    def __init__(self, function: str, payload: Any) -> None:
        self.function = function
        self.payload = payload
        self.error_type = payload.get("errorType") if isinstance(payload, dict) else None
        message = payload.get("errorMessage") if isinstance(payload, dict) else payload
        super().__init__(f"{function} failed: {self.error_type}: {message}")


def _secret_of(server: SandboxServer) -> str:
    handshake = server.app.handshake(server.base_url)
    return json.dumps({**handshake["credentials"], "base_url": handshake["base_url"]})


def _default_sandboxes() -> dict[str, Sandbox]:
    from exportpipe_dev.sandbox.advocate import AdvocateSandbox
    from exportpipe_dev.sandbox.pardot import PardotSandbox

    return {"pardot": PardotSandbox(), "advocate": AdvocateSandbox()}
