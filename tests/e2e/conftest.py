"""End-to-end: schedules fired at the local stack; the real state machine (the template's ASL file,
executed by moto) drives the real handlers through the Lambda bridge against the Pardot sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox

from tests.conftest import pardot_of


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    sandbox = PardotSandbox(pickup_seconds=0.0, processing_seconds=0.5, seed=5)
    with LocalStack(sandboxes={"pardot": sandbox}) as running:
        yield running


@pytest.fixture
def pardot(stack: LocalStack) -> Iterator[PardotSandbox]:
    yield from pardot_of(stack)
