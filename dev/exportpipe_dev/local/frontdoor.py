"""The API Gateway front door: a loopback HTTP server that turns each request on a route declared in
the template (function ``Events`` of type ``Api``) into an API Gateway REST proxy event, invokes the
function through moto's Lambda (so through the bridge), and turns the proxy result back into HTTP.
Unknown routes answer 403 ``Missing Authentication Token``, as API Gateway does.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # e.g. /webhooks/{source}
    function_name: str
    stage: str

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method.upper() not in ("ANY", method.upper()):
            return None
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        m = re.match(pattern, path)
        return m.groupdict() if m else None


def proxy_event(
    route: Route,
    method: str,
    raw_path: str,
    headers: dict[str, str],
    body: bytes,
    params: dict[str, str],
    source_ip: str,
) -> dict[str, Any]:
    split = urlsplit(raw_path)
    query = parse_qs(split.query, keep_blank_values=True)
    try:
        text, is_b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode(), True
    request_id = str(uuid.uuid4())
    return {
        "resource": route.path,
        "path": split.path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.path,
            "httpMethod": method,
            "path": f"/{route.stage}{split.path}",
            "stage": route.stage,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent")},
            "accountId": "123456789012",
            "apiId": "local",
        },
        "body": text if body else None,
        "isBase64Encoded": is_b64,
    }


class FrontDoor:
    def __init__(
        self, routes: list[Route], lambda_client: Any, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.routes = routes
        self._lambda = lambda_client
        door = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, out = door.handle(
                    self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
                )
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str
    ) -> tuple[int, dict[str, str], bytes]:
        path = urlsplit(raw_path).path
        for route in self.routes:
            params = route.match(method, path)
            if params is None:
                continue
            event = proxy_event(route, method, raw_path, headers, body, params, source_ip)
            resp = self._lambda.invoke(FunctionName=route.function_name, Payload=json.dumps(event).encode())
            payload = json.loads(resp["Payload"].read() or b"null")
            if resp.get("FunctionError") or not isinstance(payload, dict) or "statusCode" not in payload:
                return 502, {"Content-Type": "application/json"}, b'{"message": "Internal server error"}'
            out_headers = {k: str(v) for k, v in (payload.get("headers") or {}).items()}
            for k, values in (payload.get("multiValueHeaders") or {}).items():
                out_headers[k] = ", ".join(str(v) for v in values)
            raw = payload.get("body") or ""
            data = base64.b64decode(raw) if payload.get("isBase64Encoded") else str(raw).encode()
            return int(payload["statusCode"]), out_headers, data
        return 403, {"Content-Type": "application/json"}, b'{"message":"Missing Authentication Token"}'
