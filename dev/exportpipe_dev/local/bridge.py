"""moto's Lambda, bridged in-process to the real handlers.

With ``lambda.use_docker`` off, moto's ``LambdaSimpleBackend.invoke`` returns a canned echo. The
bridge replaces that one method: it finds the function by name, imports the handler the template
names (``CodeUri`` + ``Handler``: ``functions/<name>/`` + ``app.lambda_handler``) from its file, the
way Lambda loads ``app`` from ``/var/task``, under a module name of its own per function, calls it
with the JSON event and a Lambda-like context, and answers the way Lambda does, including
``FunctionError`` on an exception. ``Event`` invocations run on a thread. Handlers run
concurrently, exactly as they would in parallel Lambda sandboxes, each on a thread of its own.

The function's ``Timeout`` is enforced as Lambda does: an invocation still running when it is up is
answered as timed out (``errorType`` ``Sandbox.Timedout``, the message Lambda writes), which is what
Step Functions sees and retries. The handler itself is not stopped (Python threads cannot be): it
goes on like a zombie, as a Lambda sandbox's in-flight requests still reach their services after the
timeout. :meth:`LambdaBridge.join_timed_out` waits for such zombies.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto.awslambda_simple.models import LambdaSimpleBackend

from exportpipe_dev.local.iam import run_as

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
    # answered Sandbox.Timedout at ``seconds``; the handler may still be running, and result / error
    # then become what it ends with
    timed_out: bool = False


class LambdaBridge:
    """Installs itself over moto's simple Lambda backend for as long as it is active."""

    def __init__(self) -> None:
        self._functions: dict[str, FunctionSpec] = {}
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._original: Any = None
        self.invocations: list[Invocation] = []
        self._threads: list[threading.Thread] = []
        self._timed_out: list[threading.Thread] = []

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
        self.join_timed_out(timeout=30)

    def join_timed_out(self, timeout: float) -> bool:
        """Wait until the handlers of timed-out invocations have ended; False if one still runs."""
        deadline = time.monotonic() + timeout
        with self._lock:
            zombies = list(self._timed_out)
        for t in zombies:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._timed_out = [t for t in self._timed_out if t.is_alive()]
            return not self._timed_out

    def call(self, name: str, event: Any) -> tuple[bytes, bool]:
        """Run the handler within the function's timeout; return (JSON payload, failed) the way
        Lambda's Invoke API does."""
        spec = self._functions[name]
        context = LambdaContext(spec)
        record = Invocation(function=spec.logical_id, event=event)
        answered: list[tuple[bytes, bool]] = []
        done = threading.Event()

        def run() -> None:
            started = time.monotonic()
            outcome = self._run(name, event, context, record)
            with self._lock:  # the answer, or (if it came too late) nothing: the caller was told
                if not record.timed_out:
                    record.seconds = time.monotonic() - started
                    self.invocations.append(record)
                    answered.append(outcome)
                    done.set()

        worker = threading.Thread(target=run, name=f"lambda-{spec.logical_id}", daemon=True)
        run_as(worker, spec.logical_id)  # its AWS calls are the function's (exportpipe_dev.local.iam)
        worker.start()
        if done.wait(spec.timeout_seconds):
            return answered[0]
        with self._lock:
            if done.is_set():  # it ended just now
                return answered[0]
            record.timed_out = True
            record.error = f"Sandbox.Timedout after {spec.timeout_seconds} s"
            record.seconds = float(spec.timeout_seconds)
            self.invocations.append(record)
            self._timed_out.append(worker)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        message = f"{stamp} {context.aws_request_id} Task timed out after {spec.timeout_seconds:.2f} seconds"
        return json.dumps({"errorMessage": message, "errorType": "Sandbox.Timedout"}).encode(), True

    def _run(self, name: str, event: Any, context: LambdaContext, record: Invocation) -> tuple[bytes, bool]:
        try:
            result = self._handlers[name](event, context)
            record.result = result
            return json.dumps(result).encode(), False
        except Exception as exc:  # any handler error becomes a Lambda function error, as in AWS
            record.error = f"{type(exc).__name__}: {exc}"
            return (
                json.dumps(
                    {
                        "errorMessage": str(exc),
                        "errorType": type(exc).__name__,
                        # as Lambda's Python runtime builds it: the frames only, no message of a
                        # chained cause (which our errors do not scrub, and Lambda never shows)
                        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
                    }
                ).encode(),
                True,
            )
