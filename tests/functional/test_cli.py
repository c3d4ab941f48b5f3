"""The `exportpipe` command as a user runs it: the sandbox handshake and the long-running local stack."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import requests

EXPORTPIPE = Path(sys.executable).parent / "exportpipe"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _first_line(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [str(EXPORTPIPE), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def test_sandbox_command_prints_its_handshake_and_serves_a_real_client() -> None:
    port = _free_port()
    proc, info = _first_line("sandbox", "pardot", "--port", str(port))
    try:
        assert info["source"] == "pardot" and info["base_url"] == f"http://127.0.0.1:{port}"
        creds = info["credentials"]
        assert set(creds) >= {
            "token_url",
            "client_id",
            "client_secret",
            "username",
            "password",
            "business_unit_id",
        }
        token = requests.post(
            creds["token_url"],
            data={
                "grant_type": "password",
                "client_id": creds["client_id"],
                "client_secret": creds["client_secret"],
                "username": creds["username"],
                "password": creds["password"],
            },
            timeout=10,
        ).json()
        resp = requests.get(
            f"{info['base_url']}/api/v5/exports",
            timeout=10,
            headers={
                "Authorization": f"Bearer {token['access_token']}",
                "Pardot-Business-Unit-Id": creds["business_unit_id"],
            },
        )
        assert resp.status_code == 200 and "result" in resp.json()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_local_command_runs_the_stack_until_stopped() -> None:
    proc, info = _first_line("local")
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=info["endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        assert info["bucket"] in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert sorted(info["schedules"]) == info["schedules"] and info["schedules"]
        door = requests.post(f"{info['webhook_url']}/webhooks/advocate", json={}, timeout=10)
        assert door.status_code == 404  # through the front door to the webhook function
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_advocate_sandbox_command_serves_a_real_client() -> None:
    port = _free_port()
    proc, info = _first_line("sandbox", "advocate", "--port", str(port))
    try:
        creds = info["credentials"]
        base = f"{info['base_url']}/api/v1/{creds['tenant_alias']}"
        auth = ("", creds["api_key"])  # HTTP Basic, the API key as the password
        created = requests.post(f"{base}/export", json={"type": "REFERRAL"}, auth=auth, timeout=10)
        assert created.status_code == 201 and created.json()["status"] == "PENDING"
        export_id = created.json()["id"]
        deadline = time.monotonic() + 15
        while (
            requests.get(f"{base}/export/{export_id}", auth=auth, timeout=10).json()["status"] != "COMPLETED"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        download = requests.get(f"{base}/export/{export_id}/download", auth=auth, timeout=10)
        assert [r.status_code for r in download.history] == [303]
        assert download.status_code == 200 and download.text.startswith("id,programId,referredUser,")
        assert requests.get(f"{info['base_url']}/.well-known/jwks.json", timeout=10).json()["keys"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


HANDSHAKE_KEYS = {
    "pardot": {"token_url", "client_id", "client_secret", "username", "password", "business_unit_id"},
    "impact_clicks": {"account_sid", "auth_token"},
    "advocate": {"tenant_alias", "api_key"},
}


def test_every_registered_sandbox_prints_its_handshake() -> None:
    from exportpipe_dev.sandbox.base import SANDBOXES

    for source in sorted(SANDBOXES):
        port = _free_port()
        proc, info = _first_line("sandbox", source, "--port", str(port))
        try:
            assert info["source"] == source and info["base_url"] == f"http://127.0.0.1:{port}"
            assert set(info["credentials"]) == HANDSHAKE_KEYS[source]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
