"""The done-when check: ``make demo`` (``exportpipe demo --output DIR``) delivers every scheduled export,
and what it leaves in DIR is what the manifests promise: byte counts, SHA-256 and record counts computed
here, independently of the pipeline's own verification."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _records(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = sum(1 for _ in csv.reader(fh))
    return max(rows - 1, 0)  # the header is not a record


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    # the way `make demo` runs it: the exportpipe command, in its own process, from the project root
    done = subprocess.run(
        [sys.executable, "-m", "exportpipe_dev.cli", "demo", "--output", str(out), "--timeout", "90"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    return done, out


def test_demo_exits_zero(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, _ = demo
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_every_job_is_delivered_as_its_manifest_says(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = demo
    jobs: list[dict[str, Any]] = json.loads((out / "summary.json").read_text())["jobs"]
    assert jobs, "the demo ran no job"
    records = 0
    for job in jobs:
        assert job["status"] == "DELIVERED", job
        manifest_path = out / job["manifest_key"]
        assert manifest_path.is_file(), manifest_path
        manifest = json.loads(manifest_path.read_text())
        assert manifest["job_id"] == job["job_id"]
        assert manifest["files"], f"{job['job_id']}: the manifest lists no file"
        for f in manifest["files"]:
            path = out / f["key"]
            assert path.is_file(), path
            data = path.read_bytes()
            assert len(data) == f["bytes"], f["key"]
            assert hashlib.sha256(data).hexdigest() == f["sha256"], f["key"]
            assert _records(path) == f["records"], f["key"]
            records += f["records"]
        assert sorted(f["key"] for f in job["files"]) == sorted(f["key"] for f in manifest["files"])
    assert records > 0, "no records landed: the checks above compared nothing"
