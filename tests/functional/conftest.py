"""Functional tests: each handler called in-process with the sample events in events/, against the
local stack's AWS (moto server) and the Pardot sandbox. Workflows are not executed here, so each
test drives the handlers itself, one step at a time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.local.bridge import LambdaContext
from exportpipe_dev.sandbox.pardot import PardotSandbox

from tests.conftest import pardot_of


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    sandbox = PardotSandbox(pickup_seconds=0.0, processing_seconds=0.3, seed=11)
    with LocalStack(sandboxes={"pardot": sandbox}, execute_workflows=False) as running:
        yield running


@pytest.fixture
def pardot(stack: LocalStack) -> Iterator[PardotSandbox]:
    yield from pardot_of(stack)


@pytest.fixture
def context(stack: LocalStack) -> object:
    def make(logical_id: str) -> LambdaContext:
        return LambdaContext(stack.functions[logical_id])

    return make
