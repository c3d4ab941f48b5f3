"""``make demo``: the whole pipeline on the local stack, every scheduled export end to end.

Starts the local stack (moto + the template's resources + the real state machine + sandboxes),
fires every schedule the template declares, shows each job's progress while it runs, then prints a
summary (states with timings, S3 keys, manifest), copies the landed objects to the output folder
(mirroring the bucket's keys) and writes ``summary.json``. Exit status 0 only if every job was
delivered and every file's SHA-256 matches its manifest.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exportpipe.adapters.store import DynamoJobStore
from exportpipe.models.job import Job, JobStatus
from exportpipe_dev.local import LocalStack


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(output: str, *, timeout: float = 180.0) -> int:
    out = Path(output)
    _say("exportpipe demo: starting the local stack (moto server, real state machine, sandboxes)...")
    with LocalStack(log_level="WARNING") as stack:
        _say(f"  AWS endpoint   {stack.endpoint_url}")
        for name in stack.sandboxes:
            _say(f"  {name} sandbox {stack.sandbox_url(name)}")
        store = DynamoJobStore(stack.client("dynamodb"), stack.table)
        now = datetime.now(UTC)
        job_ids: list[str] = []
        for name in sorted(stack.schedules):
            result = stack.fire(name, now)
            _say(f"\nfired schedule {name}: {result.get('status')} {result.get('job_id', '')}")
            if "job_id" in result:
                job_ids.append(result["job_id"])
        jobs = _follow(stack, store, job_ids, timeout)
        summary = _summarise(stack, jobs, out)
        _say("\nwhat a consumer subscribed to the export bus received:")
        for event in stack.consumer_events(wait_seconds=1):
            detail = event["detail"]
            _say(
                f"  {event['detail-type']:<16} {detail['job_id']}  "
                + (detail.get("manifest_uri") or f"{detail.get('status')}: {detail.get('reason')}")
            )
    ok = bool(jobs) and all(j["status"] == JobStatus.DELIVERED.value and j["verified"] for j in summary)
    _say(
        f"\n{'OK' if ok else 'FAILED'}: {sum(j['status'] == 'DELIVERED' for j in summary)}/{len(summary)} "
        f"jobs delivered; output in {out}/ (summary.json)"
    )
    return 0 if ok else 1


def _follow(stack: LocalStack, store: DynamoJobStore, job_ids: list[str], timeout: float) -> list[Job]:
    _say("\nwaiting for the exports (Step Functions poll loop):")
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while True:
        jobs = [store.get(j) for j in job_ids]
        for job in jobs:
            state = f"{job.status.value}" + (
                f" (upstream {job.upstream_state})" if job.upstream_state else ""
            )
            if seen.get(job.job_id) != state:
                seen[job.job_id] = state
                _say(f"  +{time.monotonic() - started:5.1f}s  {job.definition_name:<28} {state}")
        if all(j.status.terminal for j in jobs):
            for j in jobs:
                stack.wait_for_execution(j.job_id, timeout=30)
            return jobs
        if time.monotonic() > deadline:
            _say(f"  gave up waiting after {timeout:.0f} s")
            return jobs
        time.sleep(0.3)


def _summarise(stack: LocalStack, jobs: list[Job], out: Path) -> list[dict[str, Any]]:
    s3 = stack.client("s3")
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for job in jobs:
        _say(f"\njob {job.job_id}")
        _say(
            f"  source {job.source}  dataset {job.dataset}  window {job.window.start:%Y-%m-%d %H:%M} → "
            f"{job.window.end:%Y-%m-%d %H:%M} UTC  upstream id {job.upstream_id}"
        )
        previous = job.created_at
        for t in job.history:
            _say(
                f"  {t.at:%H:%M:%S.%f}"[:-3]
                + f"  +{(t.at - previous).total_seconds():6.2f}s  {t.status.value}"
                + (f"  ({t.reason})" if t.reason else "")
            )
            previous = t.at
        files: list[dict[str, Any]] = []
        verified = job.status is JobStatus.DELIVERED
        if job.manifest_key:
            folder = job.manifest_key.rsplit("/", 1)[0]
            listed = s3.list_objects_v2(Bucket=stack.bucket, Prefix=folder + "/").get("Contents", [])
            for obj in listed:
                local = out / obj["Key"]
                local.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(stack.bucket, obj["Key"], str(local))
            manifest = json.loads((out / job.manifest_key).read_text())
            for f in manifest["files"]:
                digest = hashlib.sha256((out / f["key"]).read_bytes()).hexdigest()
                match = digest == f["sha256"]
                verified = verified and match
                files.append({**f, "local_path": str(out / f["key"]), "sha256_verified": match})
                _say(
                    f"  s3://{stack.bucket}/{f['key']}  {f['bytes']} bytes  {f['records']} records  "
                    f"sha256 {f['sha256'][:16]}… {'✓' if match else '✗ MISMATCH'}"
                )
            _say(f"  s3://{stack.bucket}/{job.manifest_key}  (written last)")
            _say(
                "  manifest: "
                + json.dumps(
                    {
                        k: manifest[k]
                        for k in ("schema_version", "window", "totals", "timezone", "upstream_id")
                    }
                )
            )
        entries.append(
            {
                "job_id": job.job_id,
                "source": job.source,
                "dataset": job.dataset,
                "definition_name": job.definition_name,
                "status": job.status.value,
                "reason": job.reason,
                "window": job.window.model_dump(mode="json"),
                "manifest_key": job.manifest_key,
                "files": files,
                "verified": verified,
            }
        )
    (out / "summary.json").write_text(json.dumps({"jobs": entries}, indent=2) + "\n")
    return entries


if __name__ == "__main__":
    sys.exit(run_demo(sys.argv[1] if len(sys.argv) > 1 else "demo-output"))
