"""moto's Lambda, bridged in-process to the real handlers.

With ``lambda.use_docker`` off, moto's ``LambdaSimpleBackend.invoke`` returns a canned echo. The
bridge replaces that one method: it finds the function by name, imports the handler the template
names (``CodeUri`` + ``Handler``: ``functions/<name>/`` + ``app.lambda_handler``) from its file, the
way Lambda loads ``app`` from ``/var/task``, under a module name of its own per function, calls it
with the JSON event and a Lambda-like context, and answers the way Lambda does, including
``FunctionError`` on an exception. ``Event`` invocations run on a thread. Handlers run on moto's
request threads, concurrently, exactly as they would in parallel Lambda sandboxes.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.awslambda_simple.models import LambdaSimpleBackend

Handler = Callable[[Any, Any], Any]


@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    source_file: Path
    attribute: str
    timeout_seconds: int
    memory_mb: int
    environment: dict[str, str] = field(default_factory=dict)

    def load(self) -> Handler:
        module_name = f"exportpipe_local_function_{self.logical_id}"
        spec = importlib.util.spec_from_file_location(module_name, self.source_file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {self.source_file}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        handler = getattr(module, self.attribute)
        if not callable(handler):
            raise TypeError(f"{self.source_file}:{self.attribute} is not callable")
        return handler  # type: ignore[no-any-return]


class LambdaContext:
    """The attributes of the Lambda runtime's context object that handlers and Powertools read."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        self.memory_limit_in_mb = spec.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self._deadline = time.monotonic() + spec.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


@dataclass
class Invocation:
    function: str
    event: Any
    result: Any = None
    error: str | None = None
    seconds: float = 0.0


class LambdaBridge:
    """Installs itself over moto's simple Lambda backend for as long as it is active."""

    def __init__(self) -> None:
        self._functions: dict[str, FunctionSpec] = {}
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._original: Any = None
        self.invocations: list[Invocation] = []
        self._threads: list[threading.Thread] = []

    def register(self, spec: FunctionSpec) -> None:
        self._functions[spec.name] = spec
        self._handlers[spec.name] = spec.load()

    def install(self) -> None:
        bridge = self
        self._original = LambdaSimpleBackend.invoke

        def invoke(
            backend: Any,
            function_name: str,
            qualifier: str | None,
            body: Any,
            headers: Any,
            response_headers: Any,
        ) -> bytes | None:
            name = function_name.rsplit(":", 1)[-1] if function_name.startswith("arn:") else function_name
            if name not in bridge._functions:
                return None  # moto answers 404 ResourceNotFound
            event = json.loads(body) if body else {}
            if (headers or {}).get("X-Amz-Invocation-Type") == "Event":
                t = threading.Thread(target=bridge.call, args=(name, event), daemon=True)
                bridge._threads.append(t)
                t.start()
                return b""
            payload, failed = bridge.call(name, event)
            if failed:
                response_headers["x-amz-function-error"] = "Unhandled"
            return payload

        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        if self._original is not None:
            LambdaSimpleBackend.invoke = self._original  # type: ignore[method-assign]
            self._original = None
        for t in self._threads:
            t.join(timeout=30)

    def call(self, name: str, event: Any) -> tuple[bytes, bool]:
        """Run the handler; return (JSON payload, failed) the way Lambda's Invoke API does."""
        spec = self._functions[name]
        record = Invocation(function=spec.logical_id, event=event)
        started = time.monotonic()
        try:
            result = self._handlers[name](event, LambdaContext(spec))
            record.result = result
            return json.dumps(result).encode(), False
        except Exception as exc:  # any handler error becomes a Lambda function error, as in AWS
            record.error = f"{type(exc).__name__}: {exc}"
            return (
                json.dumps(
                    {
                        "errorMessage": str(exc),
                        "errorType": type(exc).__name__,
                        "stackTrace": traceback.format_exception(exc)[-5:],
                    }
                ).encode(),
                True,
            )
        finally:
            record.seconds = time.monotonic() - started
            with self._lock:
                self.invocations.append(record)
