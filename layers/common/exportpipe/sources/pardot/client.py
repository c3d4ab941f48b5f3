"""Account Engagement (Pardot) Export API v5 client.

Auth is a Salesforce OAuth access token (password grant, or refresh-token grant when the secret
holds one) plus the ``Pardot-Business-Unit-Id`` header on every call, downloads included. The token
is cached per process and renewed once when the API answers 401 / code 184.

Tolerances for what the public record leaves open (see the sandbox's docstring for its choices):
create answers 200 or 201; the export may come bare or wrapped in ``{"export": {...}}``; ``id`` may
be a number or a string; ``resultRefs`` may be absent, a string or an array.

Window arguments: the v5 page says a procedure selects records "greater than ``*_after`` and less
than ``*_before``"; the later v4 page says "equal or greater than ... less than or equal to". Dates
have whole-second resolution, so the half-open window [start, end) is sent as after = start − 1 s,
before = end under the first reading (the default), and as after = start, before = end − 1 s under
the second (``window_bounds: "inclusive"`` in the secret). Either way consecutive windows neither
overlap nor leave a gap. Values carry the user's timezone as an explicit offset.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import requests
from pydantic import Field

from exportpipe.errors import (
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
    scrub,
)
from exportpipe.http import (
    IN_CALL_WAIT_LIMIT,
    WaitBudget,
    exact_hosts,
    guard_session,
    host_of,
    in_call_waits,
    json_object,
    make_session,
    open_download,
    request_timeout,
    time_left,
    upstream_refusal,
)
from exportpipe.models.definition import Window
from exportpipe.sources.base import ConnectionCredentials, ResultStream, UpstreamExport, UpstreamState
from exportpipe.sources.pardot.definition import CSV, PardotDefinition

EXPIRED_TOKEN_CODE = 184
CONCURRENCY_CODE = 66
DAILY_LIMIT_CODE = 122
INVALID_STATE_CODE = 178  # "The current state of the export does not allow the operation"

_STATES = {
    "waiting": UpstreamState.PENDING,
    "processing": UpstreamState.PENDING,
    "complete": UpstreamState.READY,
    "failed": UpstreamState.FAILED,
    "canceled": UpstreamState.CANCELED,
    "cancelled": UpstreamState.CANCELED,
}


class PardotCredentials(ConnectionCredentials):
    """The Secrets Manager secret's JSON."""

    label = "Pardot"

    token_url: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    username: str = Field(min_length=1)
    password: str = ""
    refresh_token: str | None = None
    business_unit_id: str = Field(pattern=r"^0Uv[A-Za-z0-9]{15}$")
    base_url: str = "https://pi.pardot.com"
    window_bounds: Literal["exclusive", "inclusive"] = "exclusive"
    # Hosts besides base_url's that result URLs may name and that need the API credentials (v4 served
    # results from www.pardot.com while the API was pi.pardot.com).
    auth_hosts: list[str] = Field(default_factory=list)


_token_lock = threading.Lock()
_tokens: dict[tuple[str, str, str], str] = {}


class PardotClient:
    source = "pardot"

    def __init__(
        self,
        credentials: PardotCredentials,
        *,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        allowed_hosts: tuple[str, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
        concurrency_retries: int = 4,
        backoff_seconds: float = 2.0,
        rate_limit_wait: float = 1800.0,
        remaining_seconds: Callable[[], float] | None = None,
    ) -> None:
        self._creds = credentials
        self._session = session or make_session()
        self._timeout = timeout
        self._allowed = allowed_hosts
        self._sleep = sleep
        self._concurrency_retries = concurrency_retries
        self._backoff = backoff_seconds
        self._rate_limit_wait = rate_limit_wait
        self._remaining = remaining_seconds
        self._base = credentials.base_url.rstrip("/")
        self._auth_hosts = frozenset({host_of(self._base), *(h.lower() for h in credentials.auth_hosts)})
        # Hosts this client's connections may find at an internal address: its own (from the
        # secret) and the allow-list's exact entries; any other name that resolves to one is refused.
        guard_session(
            self._session, {*self._auth_hosts, host_of(credentials.token_url), *exact_hosts(allowed_hosts)}
        )
        self._token_key = (credentials.token_url, credentials.client_id, credentials.username)

    # ---- auth --------------------------------------------------------------------------------

    def _token(self, *, renew: bool = False) -> str:
        with _token_lock:
            token = _tokens.get(self._token_key)
            if token is None or renew:
                token = self._login()
                _tokens[self._token_key] = token
            return token

    def _login(self) -> str:
        c = self._creds
        if c.refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": c.refresh_token}
        else:
            form = {"grant_type": "password", "username": c.username, "password": c.password}
        form |= {"client_id": c.client_id, "client_secret": c.client_secret}
        try:
            resp = self._session.post(
                c.token_url,
                data=form,
                timeout=request_timeout(self._timeout, self._remaining),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise UpstreamUnavailableError(
                f"Salesforce token endpoint unreachable: {scrub(str(exc))}"
            ) from exc
        if resp.status_code >= 500 or resp.status_code == 429:
            raise upstream_refusal(
                resp.status_code, resp.headers, f"token endpoint answered {resp.status_code}"
            )
        body = json_object(resp)
        if resp.status_code != 200 or "access_token" not in body:
            raise UpstreamAuthError(
                f"Salesforce login failed ({resp.status_code}): "
                f"{body.get('error')}: {body.get('error_description')}",
                status=resp.status_code,
                code=body.get("error"),
            )
        return str(body["access_token"])

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Pardot-Business-Unit-Id": self._creds.business_unit_id}

    # ---- API calls ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, json_body: Any = None) -> dict[str, Any]:
        # one wait budget for the whole call: the Session's retries, a token renewal, 66 backoffs
        with in_call_waits(self._sleep) as waits:
            return self._call_within(method, path, json_body, waits)

    def _call_within(self, method: str, path: str, json_body: Any, waits: WaitBudget) -> dict[str, Any]:
        url = f"{self._base}{path}"
        renewed = False
        busy = 0
        while True:
            token = self._token()
            try:
                resp = self._session.request(
                    method,
                    url,
                    json=json_body,
                    headers=self._headers(token),
                    timeout=request_timeout(self._timeout, self._remaining),
                    # the API does not redirect; a redirect would take the business unit header along
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                raise UpstreamUnavailableError(f"Pardot {method} {path} failed: {scrub(str(exc))}") from exc
            body = json_object(resp)
            code = body.get("code")
            if resp.status_code == 401 or code == EXPIRED_TOKEN_CODE:
                if renewed:
                    raise UpstreamAuthError(
                        f"Pardot refused a fresh token: {body.get('message')}",
                        status=resp.status_code,
                        code=code,
                    )
                self._token(renew=True)
                renewed = True
                continue
            if code in (CONCURRENCY_CODE, DAILY_LIMIT_CODE):
                busy += 1
                self._limit_backoff(code, busy, f"{method} {path}", resp.status_code, waits)
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                raise upstream_refusal(
                    resp.status_code,
                    resp.headers,
                    f"Pardot {method} {path} answered {resp.status_code}: {body.get('message', '')}",
                    code=code,
                )
            if 300 <= resp.status_code < 400:
                raise UpstreamError(
                    f"Pardot {method} {path} answered {resp.status_code} (to "
                    f"{resp.headers.get('Location')!r}); API calls follow no redirects",
                    status=resp.status_code,
                    code=code,
                )
            if resp.status_code >= 400:
                raise UpstreamError(
                    f"Pardot {method} {path} answered {resp.status_code}, code {code}: "
                    f"{body.get('message', '')}",
                    status=resp.status_code,
                    code=code,
                )
            return body

    def _limit_backoff(self, code: int, tries: int, what: str, status: int, waits: WaitBudget) -> None:
        """Sleep before retrying a 66 (a few times, growing, within the call's wait budget); give up
        at once on a 122.

        A 122 means the business unit's daily allowance is spent: retrying before it resets only
        adds refused calls, so the caller is told to come back after ``rate_limit_wait``. A 66
        whose next pause does not fit the call's budget (:data:`IN_CALL_WAIT_LIMIT` in all) is
        handed to the workflow with that pause.
        """
        if code == DAILY_LIMIT_CODE:
            raise UpstreamRateLimitedError(
                f"Pardot daily API limit met (122) on {what}",
                status=status,
                code=code,
                retry_after=self._rate_limit_wait,
            )
        if tries > self._concurrency_retries:
            raise UpstreamRateLimitedError(
                f"Pardot concurrency limit (66) on {what} after {tries} tries",
                status=status,
                code=code,
                retry_after=self._backoff * 2**tries,
            )
        pause = min(self._backoff * 2 ** (tries - 1), 60.0)
        if pause > time_left(self._remaining):
            raise UpstreamRateLimitedError(
                f"Pardot concurrency limit (66) on {what}; no time left to wait in this invocation",
                status=status,
                code=code,
                retry_after=pause,
            )
        if not waits.fits(pause):
            raise UpstreamRateLimitedError(
                f"Pardot concurrency limit (66) on {what} after {tries} tries; waiting {pause:g} s more "
                f"is longer than a call may wait in the Lambda ({IN_CALL_WAIT_LIMIT:g} s in all)",
                status=status,
                code=code,
                retry_after=pause,
            )
        waits.wait(pause)

    def create_export(self, definition: PardotDefinition, window: Window) -> UpstreamExport:
        body: dict[str, Any] = {
            "object": definition.object,
            "procedure": {
                "name": definition.procedure,
                "arguments": self.window_arguments(definition, window),
            },
        }
        if definition.fields is not None:
            body["fields"] = list(definition.fields)
        return _export(self._call("POST", "/api/v5/exports", json_body=body))

    def get_export(self, upstream_id: str) -> UpstreamExport:
        return _export(self._call("GET", f"/api/v5/exports/{upstream_id}"))

    def cancel_export(self, upstream_id: str) -> bool:
        """Cancel a Waiting or Processing export (``POST /api/v5/exports/{id}/do/cancel``).

        Pardot works through a business unit's exports one at a time, oldest first: an export nobody
        waits for any more would hold up every later one. An export that already ended answers 400 /
        code 178 (its state does not allow the operation): False.
        """
        try:
            self._call("POST", f"/api/v5/exports/{upstream_id}/do/cancel")
        except UpstreamError as exc:
            if exc.code == INVALID_STATE_CODE and not isinstance(exc, UpstreamUnavailableError):
                return False
            raise
        return True

    def window_arguments(self, definition: PardotDefinition, window: Window) -> dict[str, Any]:
        zone = ZoneInfo(definition.timezone)
        second = timedelta(seconds=1)
        if self._creds.window_bounds == "inclusive":
            after, before = window.start, window.end - second
        else:
            after, before = window.start - second, window.end
        after, before = after.astimezone(zone), before.astimezone(zone)
        spec = definition.spec
        return {
            **definition.arguments,
            spec.after_arg: after.isoformat(timespec="seconds"),
            spec.before_arg: before.isoformat(timespec="seconds"),
        }

    @contextmanager
    def open_result(self, url: str) -> Iterator[ResultStream]:
        with in_call_waits(self._sleep) as waits:
            resp = self._open_within(url, waits)
        try:
            length = resp.headers.get("Content-Length")
            yield ResultStream(
                chunks=resp.iter_content(chunk_size=256 * 1024),
                content_length=int(length) if length and length.isdigit() else None,
                content_type=resp.headers.get("Content-Type", CSV.content_type).split(";")[0],
            )
        finally:
            resp.close()

    def _open_within(self, url: str, waits: WaitBudget) -> requests.Response:
        renewed = False
        busy = 0
        while True:
            try:
                return open_download(
                    self._session,
                    url,
                    auth_headers=self._headers(self._token()),
                    auth_hosts=self._auth_hosts,
                    allowed_hosts=self._allowed,
                    timeout=request_timeout(self._timeout, self._remaining),
                )
            except UpstreamError as exc:
                if (exc.status == 401 or exc.code == EXPIRED_TOKEN_CODE) and not renewed:
                    self._token(renew=True)
                    renewed = True
                    continue
                if exc.code in (CONCURRENCY_CODE, DAILY_LIMIT_CODE):
                    busy += 1
                    self._limit_backoff(int(exc.code or 0), busy, "download", exc.status or 429, waits)
                    continue
                raise

    def files_timezone(self, definition: PardotDefinition) -> str | None:
        return definition.timezone

    def close(self) -> None:
        self._session.close()


def _export(body: dict[str, Any]) -> UpstreamExport:
    data = body.get("export", body) if isinstance(body.get("export"), dict) else body
    if "id" not in data or "state" not in data:
        raise UpstreamError(f"Pardot export response lacks id/state: {str(data)[:300]}")
    raw = str(data["state"])
    state = _STATES.get(raw.lower())
    if state is None:
        raise UpstreamError(f"Pardot export {data['id']}: unknown state {raw!r}")
    refs = data.get("resultRefs")
    urls = [refs] if isinstance(refs, str) else [str(u) for u in refs] if isinstance(refs, list) else []
    if data.get("isExpired") is True:
        state = UpstreamState.EXPIRED
        urls = []
    created = data.get("createdAt")
    return UpstreamExport(
        upstream_id=str(data["id"]),
        state=state,
        raw_state=raw,
        result_urls=urls,
        created_at=str(created) if created else None,
    )
