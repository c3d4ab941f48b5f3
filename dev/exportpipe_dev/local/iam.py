"""IAM on the local stack: a function may make only the AWS calls its template policies allow.

AWS authorizes every call a function makes against its execution role; moto does not. The local
stack does it for the functions' handlers: each call a handler makes (on its invocation's thread,
or on a thread that one started, such as the S3 transfer manager's) is translated into the IAM
actions and resources AWS authorizes it by — a DynamoDB transaction into one action per item,
ListObjectsV2 into ``s3:ListBucket`` on the bucket, each request of a multipart upload into
``s3:PutObject`` on the key — and answered ``AccessDenied`` (HTTP 403), as AWS answers, unless an
Allow statement of the function's ``Policies`` covers every one. :attr:`AccessControl.calls` keeps
each call with its verdict.

The policies come from the template: inline statements, the template's ``AWS::IAM::ManagedPolicy``
resources named by ``Ref``, and the SAM policy templates in :data:`SAM_POLICY_TEMPLATES`, expanded
as SAM expands them. Only ``Allow`` statements with ``Action`` and ``Resource`` are read; a ``Deny``,
``NotAction``, ``NotResource``, ``Condition``, another policy template or an AWS managed policy is
refused (:class:`TemplateError`) rather than read wrongly. Resource policies, SCPs and permission
boundaries are not modelled. An operation this module cannot translate is denied, naming it, so
that it is taught here instead of slipping through.

The state machine's role is checked when the stack starts (:func:`check_task_invocations`): each
Lambda function its definition invokes must be granted ``lambda:InvokeFunction`` by its Policies.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore import handlers as botocore_handlers
from botocore.awsrequest import AWSResponse, HeadersDict

from exportpipe_dev.local.template import Resolver, Template, TemplateError

# SAM policy templates the template uses: (action, resource), with SAM's ${Parameter} placeholders.
SAM_POLICY_TEMPLATES: dict[str, tuple[str, str]] = {
    "LambdaInvokePolicy": (
        "lambda:InvokeFunction",
        "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${FunctionName}*",
    ),
    "EventBridgePutEventsPolicy": (
        "events:PutEvents",
        "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}",
    ),
}

_OWNER = "_exportpipe_iam_principal"  # the thread attribute naming the function a thread runs for
_PARAMS = "exportpipe_iam_params"  # where the call's API parameters wait in botocore's context


class UntranslatableError(Exception):
    """An AWS operation whose IAM actions and resources this module does not know."""


def _pattern(glob: str, *, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(regex, re.IGNORECASE if ignore_case else 0)


@dataclass(frozen=True)
class Statement:
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def allows(self, action: str, resource: str) -> bool:
        """IAM's matching: ``*`` any characters, ``?`` one; actions case-insensitive."""
        return any(_pattern(a, ignore_case=True).fullmatch(action) for a in self.actions) and any(
            _pattern(r, ignore_case=False).fullmatch(resource) for r in self.resources
        )


@dataclass(frozen=True)
class Grants:
    """What one principal (a function, the state machine) may do."""

    principal: str
    statements: tuple[Statement, ...]

    def allows(self, action: str, resource: str) -> bool:
        return any(s.allows(action, resource) for s in self.statements)

    @property
    def actions(self) -> set[str]:
        return {a for s in self.statements for a in s.actions}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(principal: str, document: Mapping[str, Any]) -> list[Statement]:
    out = []
    for stmt in _as_list(document.get("Statement", [])):
        unread = set(stmt) - {"Sid", "Effect", "Action", "Resource"}
        if stmt.get("Effect") != "Allow" or unread or "Action" not in stmt or "Resource" not in stmt:
            raise TemplateError(
                f"{principal}: the local stack reads Allow statements with Action and Resource only, "
                f"not {json.dumps(stmt, default=str)}"
            )
        out.append(
            Statement(tuple(map(str, _as_list(stmt["Action"]))), tuple(map(str, _as_list(stmt["Resource"]))))
        )
    return out


def _fill(text: str, values: Mapping[str, Any], principal: str) -> str:
    def value(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise TemplateError(f"{principal}: policy template parameter {m.group(1)} is not given")
        return str(values[m.group(1)])

    return re.sub(r"\$\{([^}]+)\}", value, text)


def grants_of(principal: str, policies: Any, template: Template, resolver: Resolver) -> Grants:
    """The statements of a function's or state machine's ``Policies`` (as written in the template)."""
    statements: list[Statement] = []
    for policy in _as_list(policies) if policies is not None else []:
        if isinstance(policy, dict) and set(policy) == {"Ref"}:
            resource = template.resources.get(str(policy["Ref"]))
            if resource is None or resource.get("Type") != "AWS::IAM::ManagedPolicy":
                raise TemplateError(
                    f"{principal}: Policies names {policy['Ref']}, no managed policy of the template"
                )
            statements += _statements(principal, resolver.resolve(resource["Properties"]["PolicyDocument"]))
        elif isinstance(policy, dict) and "Statement" in policy:
            statements += _statements(principal, resolver.resolve(policy))
        elif isinstance(policy, dict) and len(policy) == 1 and next(iter(policy)) in SAM_POLICY_TEMPLATES:
            ((name, parameters),) = policy.items()
            action, resource_text = SAM_POLICY_TEMPLATES[name]
            values = {**resolver.pseudo, **resolver.resolve(parameters or {})}
            statements.append(Statement((action,), (_fill(resource_text, values, principal),)))
        else:
            raise TemplateError(f"{principal}: the local stack cannot read the policy {policy!r}")
    return Grants(principal, tuple(statements))


# ---- what a call asks AWS to authorize -------------------------------------------------------


@dataclass(frozen=True)
class Request:
    action: str
    resource: str


_S3_OBJECT = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObject": "s3:DeleteObject",
}
_S3_BUCKET = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}
_TRANSACT_WRITE = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


@dataclass(frozen=True)
class _Where:
    partition: str
    region: str
    account: str

    def arn(self, service: str, rest: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{rest}"


def _s3(operation: str, params: Mapping[str, Any], where: _Where) -> Iterator[Request]:
    bucket = str(params.get("Bucket", ""))
    if operation == "DeleteObjects":
        for obj in params.get("Delete", {}).get("Objects", []):
            yield Request("s3:DeleteObject", f"arn:{where.partition}:s3:::{bucket}/{obj['Key']}")
    elif operation in _S3_OBJECT:
        yield Request(_S3_OBJECT[operation], f"arn:{where.partition}:s3:::{bucket}/{params.get('Key', '')}")
    elif operation in _S3_BUCKET:
        yield Request(_S3_BUCKET[operation], f"arn:{where.partition}:s3:::{bucket}")
    else:
        raise UntranslatableError(f"s3:{operation}")


def _dynamodb(operation: str, params: Mapping[str, Any], where: _Where) -> Iterator[Request]:
    def table(name: str, index: str | None = None) -> str:
        arn = name if name.startswith("arn:") else where.arn("dynamodb", f"table/{name}")
        return f"{arn}/index/{index}" if index else arn

    if operation == "TransactWriteItems":
        for item in params.get("TransactItems", []):
            for kind, spec in item.items():
                yield Request(f"dynamodb:{_TRANSACT_WRITE[kind]}", table(spec["TableName"]))
    elif operation == "TransactGetItems":
        for item in params.get("TransactItems", []):
            for spec in item.values():
                yield Request("dynamodb:GetItem", table(spec["TableName"]))
    elif operation in {"BatchGetItem", "BatchWriteItem"}:
        for name in params.get("RequestItems", {}):
            yield Request(f"dynamodb:{operation}", table(name))
    elif "TableName" in params:
        yield Request(f"dynamodb:{operation}", table(str(params["TableName"]), params.get("IndexName")))
    else:
        raise UntranslatableError(f"dynamodb:{operation}")


def _states(operation: str, params: Mapping[str, Any], where: _Where) -> Iterator[Request]:
    for key in ("stateMachineArn", "executionArn", "activityArn"):
        if key in params:
            yield Request(f"states:{operation}", str(params[key]))
            return
    raise UntranslatableError(f"states:{operation}")


def _secretsmanager(operation: str, params: Mapping[str, Any], where: _Where) -> Iterator[Request]:
    if "SecretId" not in params:
        raise UntranslatableError(f"secretsmanager:{operation}")
    secret = str(params["SecretId"])
    yield Request(
        f"secretsmanager:{operation}",
        secret if secret.startswith("arn:") else where.arn("secretsmanager", f"secret:{secret}"),
    )


def _events(operation: str, params: Mapping[str, Any], where: _Where) -> Iterator[Request]:
    if operation != "PutEvents":
        raise UntranslatableError(f"events:{operation}")
    for entry in params.get("Entries", []):
        bus = str(entry.get("EventBusName") or "default")
        yield Request(
            "events:PutEvents", bus if bus.startswith("arn:") else where.arn("events", f"event-bus/{bus}")
        )


def _lambda(operation: str, params: Mapping[str, Any], where: _Where) -> Iterator[Request]:
    if operation not in {"Invoke", "InvokeAsync"}:
        raise UntranslatableError(f"lambda:{operation}")
    name = str(params.get("FunctionName", ""))
    yield Request(
        "lambda:InvokeFunction", name if name.startswith("arn:") else where.arn("lambda", f"function:{name}")
    )


_TRANSLATORS: dict[str, Callable[[str, Mapping[str, Any], _Where], Iterator[Request]]] = {
    "s3": _s3,
    "dynamodb": _dynamodb,
    "states": _states,
    "secretsmanager": _secretsmanager,
    "events": _events,
    "lambda": _lambda,
}


def requests_of(
    service: str,
    operation: str,
    params: Mapping[str, Any],
    *,
    region: str,
    account: str,
    partition: str = "aws",
) -> list[Request]:
    """The (action, resource) pairs AWS authorizes the call ``service:operation(**params)`` by."""
    translate = _TRANSLATORS.get(service)
    if translate is None:
        raise UntranslatableError(f"{service}:{operation}")
    return list(translate(operation, params, _Where(partition, region, account)))


# ---- the state machine's Lambda tasks --------------------------------------------------------


def _task_functions(states: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for name, state in states.items():
        for branch in state.get("Branches", []):
            yield from _task_functions(branch.get("States", {}))
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                yield from _task_functions(state[key].get("States", {}))
        resource = str(state.get("Resource", ""))
        if state.get("Type") != "Task":
            continue
        if resource.startswith("arn:aws:states:::lambda:invoke"):
            yield name, str(state.get("Parameters", {}).get("FunctionName", ""))
        elif ":lambda:" in resource and ":function:" in resource:
            yield name, resource


def check_task_invocations(definition: str, grants: Grants, *, region: str, account: str) -> None:
    """Refuse a state machine whose role may not invoke a Lambda function its definition invokes:
    AWS would fail that task with AccessDenied at run time (and a Catch could hide it)."""
    where = _Where("aws", region, account)
    for state, function in _task_functions(json.loads(definition).get("States", {})):
        arn = function if function.startswith("arn:") else where.arn("lambda", f"function:{function}")
        if not grants.allows("lambda:InvokeFunction", arn):
            raise TemplateError(
                f"{grants.principal}: state {state} invokes {function}, but its Policies grant no "
                "lambda:InvokeFunction on it"
            )


# ---- enforcing it on the handlers' calls -----------------------------------------------------


@dataclass(frozen=True)
class AwsCall:
    principal: str  # the function's logical id
    operation: str  # e.g. "dynamodb:TransactWriteItems"
    requests: tuple[Request, ...]  # what it asked AWS to authorize (empty: not translatable)
    allowed: bool
    why: str = ""  # for a refused call, the action and resource no statement allows


_active: AccessControl | None = None
_original_start: Callable[[threading.Thread], None] | None = None


def installed() -> AccessControl | None:
    """The access control of the local stack running in this process, if one runs."""
    return _active


def run_as(thread: threading.Thread, principal: str) -> None:
    """The calls ``thread`` (and the threads it starts) makes are ``principal``'s."""
    setattr(thread, _OWNER, principal)


def _principal() -> str | None:
    owner = getattr(threading.current_thread(), _OWNER, None)
    return str(owner) if owner is not None else None


def _start(thread: threading.Thread) -> None:
    """``Thread.start`` that passes the starting thread's principal on (an S3 transfer's workers)."""
    owner = _principal()
    if owner is not None and getattr(thread, _OWNER, None) is None:
        run_as(thread, owner)
    if _original_start is not None:
        _original_start(thread)


def _remember_params(params: Mapping[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
    if _active is not None and _principal() is not None:
        context[_PARAMS] = dict(params)


def _authorize(
    model: Any, context: dict[str, Any], **kwargs: Any
) -> tuple[AWSResponse, dict[str, Any]] | None:
    control, principal = _active, _principal()
    if control is None or principal is None:
        return None
    return control.authorize(principal, model, context.get(_PARAMS, {}))


_HANDLERS: list[tuple[str, Callable[..., Any]]] = [
    ("before-parameter-build", _remember_params),
    ("before-call", _authorize),
]


class AccessControl:
    """The functions' grants, enforced on their handlers' calls while installed (one at a time)."""

    def __init__(self, grants: Mapping[str, Grants], *, region: str, account: str) -> None:
        self.grants = dict(grants)
        self.region = region
        self.account = account
        self.calls: list[AwsCall] = []
        self._lock = threading.Lock()

    @property
    def denied(self) -> list[AwsCall]:
        with self._lock:
            return [c for c in self.calls if not c.allowed]

    def actions_used(self, principal: str) -> set[str]:
        """The IAM actions ``principal``'s allowed calls needed."""
        with self._lock:
            return {
                r.action for c in self.calls if c.principal == principal and c.allowed for r in c.requests
            }

    def install(self) -> None:
        """From now on, every botocore session registers the check (builtin handlers are read when a
        session is made: clients made before keep none), and threads pass their principal on."""
        global _active, _original_start
        if _active is not None:
            raise RuntimeError("another AccessControl is installed")
        _active = self
        botocore_handlers.BUILTIN_HANDLERS.extend(_HANDLERS)
        _original_start = threading.Thread.start
        threading.Thread.start = _start  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        global _active, _original_start
        if _active is not self:
            return
        for handler in _HANDLERS:
            botocore_handlers.BUILTIN_HANDLERS.remove(handler)
        if _original_start is not None:
            threading.Thread.start = _original_start  # type: ignore[method-assign,assignment]
        _original_start = None
        _active = None

    def authorize(
        self, principal: str, model: Any, params: Mapping[str, Any]
    ) -> tuple[AWSResponse, dict[str, Any]] | None:
        """None when ``principal`` may make the call; else the response AWS gives (403 AccessDenied)."""
        service = str(model.service_model.signing_name)
        operation = f"{service}:{model.name}"
        grants = self.grants.get(principal, Grants(principal, ()))
        try:
            requests = requests_of(service, str(model.name), params, region=self.region, account=self.account)
        except UntranslatableError:
            why = (
                f"{operation} (the local stack does not know its IAM actions: teach exportpipe_dev.local.iam)"
            )
            return self._refuse(AwsCall(principal, operation, (), False, why), service)
        for request in requests:
            if not grants.allows(request.action, request.resource):
                why = f"{request.action} on resource: {request.resource}"
                return self._refuse(AwsCall(principal, operation, tuple(requests), False, why), service)
        with self._lock:
            self.calls.append(AwsCall(principal, operation, tuple(requests), True))
        return None

    def _refuse(self, call: AwsCall, service: str) -> tuple[AWSResponse, dict[str, Any]]:
        with self._lock:
            self.calls.append(call)
        message = (
            f"User: arn:aws:sts::{self.account}:assumed-role/{call.principal}Role/{call.principal} "
            f"is not authorized to perform: {call.why} because no identity-based policy allows it"
        )
        code = "AccessDenied" if service == "s3" else "AccessDeniedException"
        parsed = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 403}}
        return AWSResponse("", 403, HeadersDict(), None), parsed
