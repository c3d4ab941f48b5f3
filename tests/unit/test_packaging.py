"""Only runtime code ships to Lambda: the layer built by layers/common/Makefile holds no local stack,
sandbox, CLI or demo — because they live in another package (dev/exportpipe_dev), not because a
filter removes them — and nothing it holds imports them."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = ("exportpipe_dev", "moto", "yaml", "cryptography")
DEV_NAMES = ("local", "sandbox", "cli", "demo")


def _build_layer_package(tmp_path: Path) -> Path:
    subprocess.run(
        ["make", "-s", "-C", str(ROOT / "layers/common"), "package", f"ARTIFACTS_DIR={tmp_path}"],
        check=True,
    )
    return tmp_path / "python" / "exportpipe"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_layer_holds_runtime_code_only(tmp_path: Path) -> None:
    pkg = _build_layer_package(tmp_path)
    shipped = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()}
    assert "adapters/store.py" in shipped and "sources/pardot/client.py" in shipped
    assert not [s for s in shipped if s.startswith(("local/", "sandbox/")) or s in ("cli.py", "demo.py")]
    assert not [s for s in shipped if "__pycache__" in s]
    # nothing filters the package: the layer's Makefile copies it whole
    makefile = (ROOT / "layers/common/Makefile").read_text()
    assert not re.search(r"rm -rf[^\n]*(local|sandbox|cli|demo)", makefile)
    assert sorted(shipped) == sorted(
        p.relative_to(ROOT / "layers/common/exportpipe").as_posix()
        for p in (ROOT / "layers/common/exportpipe").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    for path in pkg.rglob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(DEV_ONLY)}
        assert not bad, f"{path.relative_to(pkg)} imports development-only {bad}"


def test_functions_hold_only_their_handler() -> None:
    for fn in (ROOT / "functions").iterdir():
        if not fn.is_dir() or fn.name == "__pycache__":
            continue
        files = {p.name for p in fn.iterdir() if p.is_file()}
        assert files <= {"app.py", "__init__.py"}, (fn.name, files)
        bad = {m for m in _imports(fn / "app.py") if m.startswith(DEV_ONLY)}
        assert not bad


def _name(requirement: str) -> str:
    return re.split(r"[=<>\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def test_layer_requirements_match_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = list(project["dependencies"])
    assert all("==" in r for r in pinned), "runtime dependencies are pinned"
    layer = [
        line.strip()
        for line in (ROOT / "layers/common/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # boto3 comes with the Lambda runtime; everything else ships in the layer, at the same pin
    assert sorted(layer) == sorted(r for r in pinned if _name(r) != "boto3")
    dev = project["optional-dependencies"]["dev"]
    assert not {_name(r) for r in dev} & {_name(r) for r in layer}


def test_the_runtime_wheel_and_the_development_package_are_apart() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = tomllib.loads((ROOT / "dev/pyproject.toml").read_text())
    assert root["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["layers/common/exportpipe"]
    assert "scripts" not in root["project"], "the exportpipe command is a development tool"
    assert dev["project"]["scripts"] == {"exportpipe": "exportpipe_dev.cli:main"}
    runtime = ROOT / "layers/common/exportpipe"
    assert not [p for p in runtime.rglob("*.py") if p.stem in DEV_NAMES or p.parent.name in DEV_NAMES]
    # the development tools' own dependencies are the development package's, not the runtime's
    runtime_deps = {_name(r) for r in root["project"]["dependencies"]}
    assert {"moto", "pyyaml", "cryptography"} <= {_name(r) for r in dev["project"]["dependencies"]}
    assert not {"moto", "pyyaml", "cryptography"} & runtime_deps


def test_the_sandbox_half_of_the_pardot_catalog_does_not_ship() -> None:
    # the request validation the sandbox answers with (error codes, argument values, dates) lives with
    # the sandbox; the runtime catalog holds the objects, procedures, arguments and fields both read
    shipped = ast.parse((ROOT / "layers/common/exportpipe/sources/pardot/catalog.py").read_text())
    names = {n.name for n in ast.walk(shipped) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    assert {"Procedure", "PardotObject", "ArgKind"} <= names
    assert not names & {"validate_export_request", "ExportRequestError", "PardotErrorCode", "one_year_after"}
