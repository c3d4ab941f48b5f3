"""The local stack's Lambda bridge enforces a function's Timeout the way Lambda does."""

from __future__ import annotations

import json
import time
from pathlib import Path

from exportpipe_dev.local.bridge import FunctionSpec, LambdaBridge

HANDLER = """
import time

finished = []


def lambda_handler(event, context):
    time.sleep(event["sleep"])
    finished.append(context.aws_request_id)
    return {"slept": event["sleep"], "left_ms": context.get_remaining_time_in_millis()}
"""


def _bridge(tmp_path: Path, timeout: int) -> LambdaBridge:
    (tmp_path / "app.py").write_text(HANDLER)
    bridge = LambdaBridge()
    bridge.register(
        FunctionSpec(
            logical_id="SleepyFunction",
            name="sleepy",
            arn="arn:aws:lambda:us-east-1:123456789012:function:sleepy",
            source_file=tmp_path / "app.py",
            attribute="lambda_handler",
            timeout_seconds=timeout,
            memory_mb=128,
        )
    )
    return bridge


def test_an_invocation_within_its_timeout_answers_the_handlers_result(tmp_path: Path) -> None:
    bridge = _bridge(tmp_path, timeout=5)

    payload, failed = bridge.call("sleepy", {"sleep": 0.05})

    assert not failed and json.loads(payload)["slept"] == 0.05
    assert [(i.function, i.timed_out, i.error) for i in bridge.invocations] == [
        ("SleepyFunction", False, None)
    ]


def test_an_invocation_past_its_timeout_is_answered_sandbox_timedout_while_the_handler_runs_on(
    tmp_path: Path,
) -> None:
    bridge = _bridge(tmp_path, timeout=1)
    started = time.monotonic()

    payload, failed = bridge.call("sleepy", {"sleep": 1.6})

    answered = time.monotonic() - started
    error = json.loads(payload)
    assert failed and error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert 1.0 <= answered < 1.5
    (record,) = bridge.invocations
    assert record.timed_out and record.seconds == 1.0
    # the zombie goes on and ends later; its context said no time was left
    assert bridge.join_timed_out(timeout=5)
    assert record.result == {"slept": 1.6, "left_ms": 0}
    assert len(bridge.invocations) == 1
