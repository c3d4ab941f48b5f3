"""Fixtures for the sandbox tests: a frozen clock, a Pardot sandbox served on loopback, an API helper."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from exportpipe_dev.sandbox.base import Clock, SandboxServer
from exportpipe_dev.sandbox.pardot import PardotSandbox

#: 2026-03-10 11:00:00 in New York (EDT, -04:00): the frozen "now" of most tests.
NOW = datetime(2026, 3, 10, 15, 0, 0, tzinfo=UTC)


class PardotApi:
    """A thin requests-based client of the sandbox, authenticated with a directly minted token."""

    def __init__(self, sandbox: PardotSandbox, base_url: str) -> None:
        self.sandbox = sandbox
        self.base_url = base_url
        self.session = requests.Session()
        self.token = sandbox.issue_access_token()

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Pardot-Business-Unit-Id": self.sandbox.business_unit_id,
        }

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def create(self, body: dict[str, Any]) -> requests.Response:
        return self.session.post(self.url("/api/v5/exports"), json=body, headers=self.headers)

    def create_ok(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.create(body)
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    def read(self, export_id: int) -> requests.Response:
        return self.session.get(self.url(f"/api/v5/exports/{export_id}"), headers=self.headers)

    def read_ok(self, export_id: int) -> dict[str, Any]:
        resp = self.read(export_id)
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    def query(self, **params: str) -> requests.Response:
        return self.session.get(self.url("/api/v5/exports"), params=params, headers=self.headers)

    def cancel(self, export_id: int) -> requests.Response:
        return self.session.post(self.url(f"/api/v5/exports/{export_id}/do/cancel"), headers=self.headers)

    def download(self, url: str, **kwargs: Any) -> requests.Response:
        return self.session.get(url, headers=self.headers, **kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def sandbox(clock: Clock) -> PardotSandbox:
    return PardotSandbox(clock=clock)


@pytest.fixture
def server(sandbox: PardotSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox) as srv:
        yield srv


@pytest.fixture
def api(sandbox: PardotSandbox, server: SandboxServer) -> Iterator[PardotApi]:
    client = PardotApi(sandbox, server.base_url)
    yield client
    client.session.close()
