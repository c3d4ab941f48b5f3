"""The template's Advocate connection: an optional AdvocateSecretArn that, when given, is the
functions' ADVOCATE_SECRET_ARN and is in their secret grant; the local stack fills it."""

from __future__ import annotations

import re

from exportpipe_dev.local.stack import SECRET_PARAMETERS, _default_sandboxes
from exportpipe_dev.local.template import Template
from exportpipe_dev.sandbox.advocate import AdvocateSandbox

from tests.conftest import ROOT

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:exportpipe/advocate-Ab12Cd"


def test_the_advocate_secret_is_optional_and_granted_only_when_given() -> None:
    template = Template.load(ROOT / "template.yaml")
    spec = template.parameters["AdvocateSecretArn"]
    pattern = re.compile(spec["AllowedPattern"])
    assert spec["Default"] == "" and pattern.fullmatch("") and pattern.fullmatch(ARN)
    assert not pattern.fullmatch("arn:aws:secretsmanager:eu-west-1:123456789012:secret:nosuffix")
    given = {"Fn::If": ["HasAdvocateSecret", {"Ref": "AdvocateSecretArn"}, {"Ref": "AWS::NoValue"}]}
    assert template.conditions["HasAdvocateSecret"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AdvocateSecretArn"}, ""]}]
    }
    assert template.body["Globals"]["Function"]["Environment"]["Variables"]["ADVOCATE_SECRET_ARN"] == given
    grants = [
        statement
        for policy in template.of_type("AWS::IAM::ManagedPolicy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement.get("Sid") == "SourceCredentials"
    ]
    assert grants and all(given in grant["Resource"] for grant in grants)


def test_the_local_stack_runs_the_advocate_sandbox_with_its_secret() -> None:
    assert SECRET_PARAMETERS["advocate"] == "AdvocateSecretArn"
    assert isinstance(_default_sandboxes()["advocate"], AdvocateSandbox)
