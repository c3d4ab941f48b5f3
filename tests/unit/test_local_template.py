"""The local stack's reading of a template: Conditions, Fn::If and AWS::NoValue resolve as
CloudFormation resolves them, and a resource whose Condition is false is left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from exportpipe_dev.local.template import NO_VALUE, Resolver, Template, TemplateError

TEMPLATE = """
Parameters:
  Topic: {Type: String, Default: ""}
  Mode: {Type: String, Default: create}
Conditions:
  HasTopic: !Not [!Equals [!Ref Topic, ""]]
  Create: !Equals [!Ref Mode, create]
  Both: !And [!Condition HasTopic, !Condition Create]
  Either: !Or [!Condition HasTopic, !Condition Create]
Resources:
  Alarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmActions: !If [HasTopic, [!Ref Topic], !Ref AWS::NoValue]
      OKActions: [!If [HasTopic, !Ref Topic, !Ref AWS::NoValue], fixed]
      Note: !If [Both, both, !If [Either, either, neither]]
  Role:
    Type: AWS::IAM::Role
    Condition: Create
"""


@pytest.fixture
def template(tmp_path: Path) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return Template.load(path)


def _resolver(template: Template, **parameters: str) -> Resolver:
    values = {name: spec.get("Default", "") for name, spec in template.parameters.items()}
    return Resolver({**values, **parameters}, {}, {}, {"AWS::Region": "us-east-1"}, template.conditions)


def _alarm(template: Template, **parameters: str) -> dict[str, Any]:
    props: dict[str, Any] = _resolver(template, **parameters).resolve(
        template.resources["Alarm"]["Properties"]
    )
    return props


def test_a_false_condition_takes_the_other_branch_and_no_value_removes_the_property(
    template: Template,
) -> None:
    assert _alarm(template) == {"OKActions": ["fixed"], "Note": "either"}


def test_a_true_condition_takes_its_branch(template: Template) -> None:
    arn = "arn:aws:sns:us-east-1:123456789012:ops"
    assert _alarm(template, Topic=arn) == {"AlarmActions": [arn], "OKActions": [arn, "fixed"], "Note": "both"}
    assert _alarm(template, Mode="existing")["Note"] == "neither"


def test_resources_whose_condition_is_false_are_left_out(template: Template) -> None:
    assert set(template.active(_resolver(template)).resources) == {"Alarm", "Role"}
    assert set(template.active(_resolver(template, Mode="existing")).resources) == {"Alarm"}


def test_no_value_at_the_top_is_the_marker() -> None:
    assert Resolver({}, {}, {}, {}).resolve({"Ref": "AWS::NoValue"}) is NO_VALUE


def test_unknown_and_circular_conditions_are_refused() -> None:
    with pytest.raises(TemplateError, match="'Nope' is not in the template's Conditions"):
        Resolver({}, {}, {}, {}).resolve({"Fn::If": ["Nope", 1, 2]})
    loop = {"A": {"Condition": "B"}, "B": {"Fn::Not": [{"Condition": "A"}]}}
    with pytest.raises(TemplateError, match="depends on itself: A -> B -> A"):
        Resolver({}, {}, {}, {}, loop).condition("A")
