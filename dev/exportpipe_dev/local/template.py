"""Reading ``template.yaml``: CloudFormation's YAML tags, SAM Globals, and the intrinsic functions the
template uses (Ref, Fn::GetAtt, Fn::Sub, Fn::Join, and Conditions with Fn::If and ``AWS::NoValue``),
resolved against the local resources.

The local stack derives everything it creates from this file; nothing keeps a second list.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_TAGS = {
    "!Ref": "Ref",
    "!GetAtt": "Fn::GetAtt",
    "!Sub": "Fn::Sub",
    "!Join": "Fn::Join",
    "!If": "Fn::If",
    "!Equals": "Fn::Equals",
    "!Not": "Fn::Not",
    "!And": "Fn::And",
    "!Or": "Fn::Or",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!FindInMap": "Fn::FindInMap",
    "!GetAZs": "Fn::GetAZs",
    "!ImportValue": "Fn::ImportValue",
    "!Base64": "Fn::Base64",
    "!Condition": "Condition",
}


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short-form tags."""


def _construct(fn: str) -> Callable[[yaml.Loader, yaml.Node], dict[str, Any]]:
    def build(loader: yaml.Loader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if fn == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {fn: value}

    return build


for _tag, _fn in _TAGS.items():
    _CfnLoader.add_constructor(_tag, _construct(_fn))


class TemplateError(Exception):
    """The template uses something the local stack cannot resolve."""


@dataclass
class Template:
    path: Path
    body: dict[str, Any]
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.path.parent

    @classmethod
    def load(cls, path: str | Path) -> Template:
        p = Path(path)
        with p.open(encoding="utf-8") as fh:
            body = yaml.load(fh, Loader=_CfnLoader)
        if not isinstance(body, dict) or "Resources" not in body:
            raise TemplateError(f"{p}: not a CloudFormation template")
        return cls(p, body)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.body["Resources"]
        return dict(resources)

    def of_type(self, *types: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v.get("Type") in types}

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return dict(self.body.get("Parameters", {}))

    @property
    def conditions(self) -> dict[str, Any]:
        return dict(self.body.get("Conditions", {}))

    def active(self, resolver: Resolver) -> Template:
        """The template with only the resources whose ``Condition`` holds (those without one stay)."""
        resources = {
            logical_id: res
            for logical_id, res in self.resources.items()
            if "Condition" not in res or resolver.condition(str(res["Condition"]))
        }
        return Template(self.path, {**self.body, "Resources": resources})

    def function_properties(self, logical_id: str) -> dict[str, Any]:
        """A function's properties with the SAM ``Globals.Function`` section merged in (SAM's rules:
        maps merge, the function's own scalars and lists win)."""
        glob = copy.deepcopy(self.body.get("Globals", {}).get("Function", {}))
        own = copy.deepcopy(self.resources[logical_id].get("Properties", {}))
        merged: dict[str, Any] = _merge(glob, own)
        return merged


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return over


_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


class _NoValue:
    """What ``Ref: AWS::NoValue`` stands for: the property (or list item) it is given to is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()


@dataclass
class Resolver:
    """Resolves intrinsic functions given the local values of Refs and GetAtts, and the template's
    ``Conditions`` (evaluated with the parameters)."""

    parameters: Mapping[str, Any]
    refs: Mapping[str, Any]
    attributes: Mapping[tuple[str, str], Any]
    pseudo: Mapping[str, str]
    conditions: Mapping[str, Any] = field(default_factory=dict)
    _evaluated: dict[str, bool] = field(default_factory=dict, init=False, repr=False)

    def condition(self, name: str) -> bool:
        """The value of the template's condition ``name``."""
        return self._holds({"Condition": name}, ())

    def _holds(self, node: Any, chain: tuple[str, ...]) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Condition":
                name = str(arg)
                if name in chain:
                    raise TemplateError(
                        f"condition {name!r} depends on itself: {' -> '.join((*chain, name))}"
                    )
                if name not in self._evaluated:
                    if name not in self.conditions:
                        raise TemplateError(f"condition {name!r} is not in the template's Conditions")
                    self._evaluated[name] = self._holds(self.conditions[name], (*chain, name))
                return self._evaluated[name]
            if key == "Fn::Equals":
                left, right = (self.resolve(v) for v in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                (only,) = arg
                return not self._holds(only, chain)
            if key == "Fn::And":
                return all(self._holds(v, chain) for v in arg)
            if key == "Fn::Or":
                return any(self._holds(v, chain) for v in arg)
        raise TemplateError(f"not a condition the local stack can evaluate: {node!r}")

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        for table in (self.pseudo, self.parameters, self.refs):
            if name in table:
                return table[name]
        raise TemplateError(f"Ref to {name!r}: no such parameter or local resource")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        try:
            return self.attributes[(logical_id, attribute)]
        except KeyError:
            raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute}: not available locally") from None

    def resolve(self, value: Any) -> Any:
        """``value`` with its intrinsic functions resolved; what resolves to ``AWS::NoValue`` is left
        out of its mapping or list (at the top, :data:`NO_VALUE` is returned)."""
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(arg))
            if key == "Fn::If":
                name, when_true, when_false = arg
                return self.resolve(when_true if self.condition(str(name)) else when_false)
            if key == "Fn::GetAtt":
                parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
                return self.get_att(str(parts[0]), str(parts[1]))
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                return str(sep).join(str(self.resolve(i)) for i in items)
            if key.startswith("Fn::"):
                raise TemplateError(f"{key} is not supported by the local stack")
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, extra = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, extra = arg, {}

        def replace(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in extra:
                return str(extra[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return str(self.get_att(logical_id, attribute))
            return str(self.ref(name))

        return _SUB_VAR.sub(replace, str(text))


def substitute_definition(text: str, values: Mapping[str, Any]) -> str:
    """Apply ``DefinitionSubstitutions`` to an ASL file the way CloudFormation does (``${Name}``)."""

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise TemplateError(f"ASL placeholder ${{{name}}} has no DefinitionSubstitutions entry")
        return str(values[name])

    out = _SUB_VAR.sub(replace, text)
    json.loads(out)  # the substituted definition must still be JSON
    return out
