"""The runtime package's layering: AWS is reached only through the adapters, and the services
depend on the ports, not on the adapters that implement them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "common" / "exportpipe"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(*parts: str) -> list[Path]:
    return sorted(PACKAGE.joinpath(*parts).rglob("*.py"))


def test_only_the_adapters_import_boto3() -> None:
    outside = [p for p in _modules() if PACKAGE / "adapters" not in p.parents]
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(
            n for n in _imports(p) if n.split(".")[0] in {"boto3", "botocore"}
        )
        for p in outside
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_services_use_the_ports_not_the_adapters() -> None:
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(n for n in _imports(p) if n.startswith("exportpipe.adapters"))
        for p in _modules("services")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
